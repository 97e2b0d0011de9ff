package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

const rateLimitConfig = `apiVersion: loom.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: pp, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  limits:
  - match: {path: {exact: /productpage}, header: X-User, route: page}
    requestsPerUnit: 3
    unit: MINUTE
    scope: Global
---
apiVersion: loom.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: all, namespace: default}
spec:
  limits: [{requestsPerUnit: 5, unit: second}]
---
apiVersion: loom.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: mesh, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  limits: [{requestsPerUnit: 5, unit: second}]
---
apiVersion: loom.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: elsewhere, namespace: prod}
spec:
  limits: [{requestsPerUnit: 5, unit: second}]
`

// TestRateLimitPolicies: a policy applies to the workloads of its
// namespace its selector picks (all without one); one in the root
// namespace to those of every namespace; values are normalized.
func TestRateLimitPolicies(t *testing.T) {
	rs, errs := config.Decode("rl.yaml", []byte(rateLimitConfig))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	pc := NewPushContext(config.NewSnapshot(1, rs))
	names := func(p *Proxy) []string {
		var out []string
		for _, rp := range pc.RateLimitPoliciesForProxy(p) {
			out = append(out, rp.Namespace+"/"+rp.Name)
		}
		return out
	}
	pp := &Proxy{Namespace: "default", Labels: map[string]string{"app": "productpage"}}
	gw := &Proxy{Namespace: "default", Labels: map[string]string{"istio": "ingressgateway"}}
	other := &Proxy{Namespace: "other", Labels: map[string]string{"app": "productpage"}}
	for _, tc := range []struct {
		p    *Proxy
		want []string
	}{
		{pp, []string{"default/all", "default/pp"}},
		{gw, []string{"default/all", "istio-system/mesh"}},
		{other, nil},
	} {
		if diff := cmp.Diff(tc.want, names(tc.p)); diff != "" {
			t.Errorf("policies of %v (-want +got):\n%s", tc.p.Labels, diff)
		}
	}
	got := pc.RateLimitPoliciesForProxy(pp)[1].Limits[0]
	want := RateLimit{ID: "default/pp/0", Route: "page", PathExact: "/productpage", Header: "x-user", RequestsPerUnit: 3,
		Unit: "minute", UnitSeconds: 60, Global: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("limit (-want +got):\n%s", diff)
	}
}
