package translate

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// ratingsSelectorDRs are two DestinationRules for ratings in default: one
// without workloadSelector (subset v1) and one for the productpage
// workloads only (RANDOM, no subsets).
const ratingsSelectorDRs = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-for-productpage, namespace: default}
spec:
  host: ratings
  workloadSelector: {matchLabels: {app: productpage}}
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
`

// TestDestinationRuleWorkloadSelector: a DestinationRule with a
// workloadSelector shapes the outbound clusters of the proxies it selects
// only, in place of the rule without selector, as Istio's
// SidecarScope.DestinationRule; the other proxies keep the rule without
// selector.
func TestDestinationRuleWorkloadSelector(t *testing.T) {
	pc := loadPushContext(t, meshFile, configFile(t, ratingsSelectorDRs))
	reviews := productpageSidecar()
	reviews.ID = "sidecar~127.0.0.12~reviews-v1.default~default.svc.cluster.local"
	reviews.IP, reviews.Name = "127.0.0.12", "reviews-v1"
	reviews.Labels = map[string]string{"app": "reviews", "version": "v1"}
	const host = "ratings.default.svc.cluster.local"
	tests := []struct {
		name       string
		p          *model.Proxy
		wantLB     clusterv3.Cluster_LbPolicy
		wantSubset bool
	}{
		{"selected", productpageSidecar(), clusterv3.Cluster_RANDOM, false},
		{"not selected", reviews, clusterv3.Cluster_LEAST_REQUEST, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clusters := map[string]*clusterv3.Cluster{}
			for _, c := range mustGenerate(t, pc, tt.p).Clusters {
				clusters[c.GetName()] = c
			}
			c := clusters["outbound|9080||"+host]
			if c == nil {
				t.Fatalf("no cluster for %s", host)
			}
			if got := c.GetLbPolicy(); got != tt.wantLB {
				t.Errorf("lb_policy = %v, want %v", got, tt.wantLB)
			}
			if _, got := clusters["outbound|9080|v1|"+host]; got != tt.wantSubset {
				t.Errorf("subset v1 cluster present = %v, want %v", got, tt.wantSubset)
			}
		})
	}
}

// TestDestinationRuleMergeSubsets: two DestinationRules for one host in
// one namespace, each with a subset, merge as Istio's
// mergeDestinationRule: both subsets get clusters, and the first rule's
// trafficPolicy applies to them.
func TestDestinationRuleMergeSubsets(t *testing.T) {
	const drs = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-v1, namespace: default}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-v2, namespace: default}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets: [{name: v2, labels: {version: v2}}]
`
	pc := loadPushContext(t, meshFile, configFile(t, drs))
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range mustGenerate(t, pc, productpageSidecar()).Clusters {
		clusters[c.GetName()] = c
	}
	for _, name := range []string{"outbound|9080||", "outbound|9080|v1|", "outbound|9080|v2|"} {
		c := clusters[name+"ratings.default.svc.cluster.local"]
		if c == nil {
			t.Errorf("no cluster %sratings.default.svc.cluster.local", name)
			continue
		}
		if got := c.GetLbPolicy(); got != clusterv3.Cluster_RANDOM {
			t.Errorf("%s: lb_policy = %v, want RANDOM (the first rule's)", c.GetName(), got)
		}
	}
}
