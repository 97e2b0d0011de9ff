package dashboard

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// policiesYAML has, for the bookinfo workloads of namespace default, a
// mesh-wide, two namespace-wide and a workload PeerAuthentication, and a
// root-namespace, a namespace-wide and a workload Sidecar.
const policiesYAML = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns-wide, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns-wide-later, namespace: default}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings-ports, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  portLevelMtls: {"9080": {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: mesh, namespace: istio-system}
spec: {egress: [{hosts: ["*/*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress: [{hosts: ["./*", "istio-system/*"]}]
`

// TestWorkloadPoliciesInEffect: a workload's config lists only the
// PeerAuthentications and the Sidecar the control plane applies to it, as
// Istio selects them: a workload selector beats the namespace-wide
// resource, which beats the root namespace's mesh-wide one; of several
// namespace-wide ones only the first counts.
func TestWorkloadPoliciesInEffect(t *testing.T) {
	base := bookinfoConfig(t)
	extra, errs := config.Decode("policies.yaml", []byte(policiesYAML))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	snap := config.NewSnapshot(8, append(base.All(), extra...))
	hs := testServer(t, &fakeConfig{snap: snap}, fakeProxies{}, &fakeTraffic{})

	for _, tc := range []struct {
		workload string
		want     []string
	}{
		// The workload policy sets the mode: the namespace and mesh
		// ones are overridden; the workload Sidecar wins.
		{"reviews-v1", []string{"PeerAuthentication default/reviews selector", "Sidecar default/reviews selector"}},
		// The workload policy sets only port 9080's mode: the mode comes
		// from the first namespace-wide policy.
		{"ratings-v1", []string{"PeerAuthentication default/ns-wide namespace-wide", "PeerAuthentication default/ratings-ports selector",
			"Sidecar default/default namespace-wide"}},
		{"details-v1", []string{"PeerAuthentication default/ns-wide namespace-wide", "Sidecar default/default namespace-wide"}},
	} {
		t.Run(tc.workload, func(t *testing.T) {
			var d WorkloadDetail
			getJSON(t, hs, "/api/workloads/default/"+tc.workload, &d)
			var got []string
			for _, r := range d.Config {
				if r.Kind == string(config.KindPeerAuthentication) || r.Kind == string(config.KindSidecar) {
					got = append(got, r.Kind+" "+r.Namespace+"/"+r.Name+" "+r.Why)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("policies of %s (-want +got):\n%s", tc.workload, diff)
			}
		})
	}

	// A service lists what is in effect for its workloads.
	var d ServiceDetail
	getJSON(t, hs, "/api/services/default/reviews.default.svc.cluster.local", &d)
	for _, r := range d.Config {
		if r.Kind == string(config.KindPeerAuthentication) && r.Name != "reviews" || r.Kind == string(config.KindSidecar) && r.Name != "reviews" {
			t.Errorf("reviews service lists %s %s/%s (%s), not in effect for its workloads", r.Kind, r.Namespace, r.Name, r.Why)
		}
	}
	if !slices.ContainsFunc(d.Config, func(r ConfigRef) bool { return r.Kind == "Sidecar" && r.Name == "reviews" }) {
		t.Errorf("reviews service config %+v lacks its Sidecar", d.Config)
	}
}
