package translate

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	networking "istio.io/api/networking/v1alpha3"
)

// mergeDR has a policy at every level Istio merges: top level, top-level
// port 9080, subset v1, subset v2 with a port 9080 entry.
const mergeDR = `host: reviews
trafficPolicy:
  loadBalancer: {simple: RANDOM}
  connectionPool: {tcp: {maxConnections: 10}}
  outlierDetection: {interval: 5s}
  portLevelSettings:
  - port: {number: 9080}
    loadBalancer: {simple: ROUND_ROBIN}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1}}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    portLevelSettings:
    - port: {number: 9080}
      outlierDetection: {interval: 1s}
- name: v3
  labels: {version: v3}
`

func TestClusterTrafficPolicy(t *testing.T) {
	dr := decodeDR(t, mergeDR)
	top := dr.TrafficPolicy
	v1 := dr.Subsets[0].TrafficPolicy
	v2port := dr.Subsets[1].TrafficPolicy.PortLevelSettings[0]
	v2 := dr.Subsets[1].TrafficPolicy
	tests := []struct {
		name   string
		subset *networking.Subset
		port   uint32
		want   *networking.TrafficPolicy
	}{
		{"top level on another port", nil, 8080, &networking.TrafficPolicy{
			LoadBalancer: top.LoadBalancer, ConnectionPool: top.ConnectionPool, OutlierDetection: top.OutlierDetection}},
		{"port level replaces the top level wholesale", nil, 9080, &networking.TrafficPolicy{
			LoadBalancer: top.PortLevelSettings[0].LoadBalancer}},
		{"subset replaces the fields it sets", dr.Subsets[0], 8080, &networking.TrafficPolicy{
			LoadBalancer: top.LoadBalancer, ConnectionPool: v1.ConnectionPool, OutlierDetection: top.OutlierDetection}},
		{"subset over the port level", dr.Subsets[0], 9080, &networking.TrafficPolicy{
			LoadBalancer: top.PortLevelSettings[0].LoadBalancer, ConnectionPool: v1.ConnectionPool}},
		{"subset top level on another port", dr.Subsets[1], 8080, &networking.TrafficPolicy{
			LoadBalancer: v2.LoadBalancer, ConnectionPool: top.ConnectionPool, OutlierDetection: top.OutlierDetection}},
		{"subset port level replaces everything", dr.Subsets[1], 9080, &networking.TrafficPolicy{
			OutlierDetection: v2port.OutlierDetection}},
		{"subset without a policy", dr.Subsets[2], 8080, &networking.TrafficPolicy{
			LoadBalancer: top.LoadBalancer, ConnectionPool: top.ConnectionPool, OutlierDetection: top.OutlierDetection}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clusterTrafficPolicy(dr, tt.subset, tt.port)
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("policy (-want +got):\n%s", diff)
			}
		})
	}
}

func TestClusterTrafficPolicyOnlySubset(t *testing.T) {
	dr := decodeDR(t, "host: reviews\nsubsets:\n- name: v1\n  labels: {version: v1}\n  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n")
	if got := clusterTrafficPolicy(dr, nil, 9080); got != nil {
		t.Errorf("service cluster policy = %v, want nil", got)
	}
	got := clusterTrafficPolicy(dr, dr.Subsets[0], 9080)
	want := &networking.TrafficPolicy{LoadBalancer: dr.Subsets[0].TrafficPolicy.LoadBalancer}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("subset policy (-want +got):\n%s", diff)
	}
	if got := clusterTrafficPolicy(nil, nil, 9080); got != nil {
		t.Errorf("no DestinationRule: policy = %v, want nil", got)
	}
}

// TestClusterTrafficPolicyRetryBudget checks that retryBudget, which has no
// port-level form, survives a portLevelSettings entry and is replaced by a
// subset's own (Istio's MergeTrafficPolicy).
func TestClusterTrafficPolicyRetryBudget(t *testing.T) {
	dr := decodeDR(t, `host: reviews
trafficPolicy:
  retryBudget: {percent: 30}
  portLevelSettings:
  - port: {number: 9080}
    loadBalancer: {simple: RANDOM}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    retryBudget: {minRetryConcurrency: 7}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
`)
	top, v1 := dr.TrafficPolicy.RetryBudget, dr.Subsets[0].TrafficPolicy.RetryBudget
	for _, tt := range []struct {
		name   string
		subset *networking.Subset
		port   uint32
		want   *networking.TrafficPolicy_RetryBudget
	}{
		{"top level", nil, 8080, top},
		{"port level keeps it", nil, 9080, top},
		{"subset replaces it", dr.Subsets[0], 9080, v1},
		{"subset without one inherits", dr.Subsets[1], 8080, top},
	} {
		got := clusterTrafficPolicy(dr, tt.subset, tt.port).GetRetryBudget()
		if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
			t.Errorf("%s: retryBudget (-want +got):\n%s", tt.name, diff)
		}
	}
}
