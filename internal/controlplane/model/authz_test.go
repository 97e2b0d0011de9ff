package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

const authzConfig = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-httpbin-audit, namespace: istio-system}
spec: {action: AUDIT, selector: {matchLabels: {app: httpbin}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-v2, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin, version: v2}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: foo, annotations: {istio.io/dry-run: "TRUE"}}
spec: {action: CUSTOM, provider: {name: p}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gateway-api, namespace: foo}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}], rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: bar}
spec: {}
`

func TestAuthorizationPoliciesFor(t *testing.T) {
	rs, errs := config.Decode("a.yaml", []byte(authzConfig))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	pc := NewPushContext(config.NewSnapshot(1, rs))
	names := func(ps []*AuthorizationPolicy) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Namespace+"/"+p.Name)
		}
		return out
	}
	tests := []struct {
		name   string
		ns     string
		labels map[string]string
		want   map[string][]string
	}{
		{"httpbin v1 in foo", "foo", map[string]string{"app": "httpbin", "version": "v1"}, map[string][]string{
			"custom": {"foo/ext"}, "deny": {"istio-system/mesh-deny"}, "allow": {"foo/allow-nothing"}, "audit": {"istio-system/mesh-httpbin-audit"}}},
		{"httpbin v2 in foo", "foo", map[string]string{"app": "httpbin", "version": "v2"}, map[string][]string{
			"custom": {"foo/ext"}, "deny": {"istio-system/mesh-deny"}, "allow": {"foo/allow-nothing", "foo/httpbin-v2"}, "audit": {"istio-system/mesh-httpbin-audit"}}},
		{"sleep in bar", "bar", map[string]string{"app": "sleep"}, map[string][]string{"deny": {"istio-system/mesh-deny"}, "allow": {"bar/other"}}},
		{"gateway in istio-system", "istio-system", map[string]string{"istio": "ingressgateway"}, map[string][]string{"deny": {"istio-system/mesh-deny"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Views answer as the mesh-wide context does.
			got := pc.ForNamespace(tt.ns).AuthorizationPoliciesFor(tt.ns, tt.labels)
			have := map[string][]string{}
			for k, v := range map[string][]string{"custom": names(got.Custom), "deny": names(got.Deny), "allow": names(got.Allow), "audit": names(got.Audit)} {
				if len(v) > 0 {
					have[k] = v
				}
			}
			if diff := cmp.Diff(tt.want, have); diff != "" {
				t.Errorf("policies (-want +got):\n%s", diff)
			}
		})
	}
	if got := pc.AuthorizationPoliciesFor("foo", map[string]string{"app": "httpbin"}).Custom; len(got) != 1 || !got[0].DryRun {
		t.Errorf("dry-run annotation \"TRUE\" not read as true: %v", got)
	}
	if pc.AuthorizationPoliciesFor("baz", nil).Empty() {
		t.Error("a namespace with only the mesh-wide DENY has no policy")
	}
}
