package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

const raConfig = `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {jwtRules: [{issuer: mesh}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh-reviews, namespace: istio-system}
spec: {selector: {matchLabels: {app: reviews}}, jwtRules: [{issuer: r}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ns, namespace: default}
spec: {jwtRules: [{issuer: ns}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: reviews, namespace: default}
spec: {selector: {matchLabels: {app: reviews, version: v1}}, jwtRules: [{issuer: rv1}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: other-ns, namespace: prod}
spec: {jwtRules: [{issuer: prod}]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: waypoint, namespace: default}
spec: {targetRefs: [{kind: Service, group: "", name: reviews}], jwtRules: [{issuer: w}]}
`

// TestRequestAuthenticationsForProxy: root namespace policies apply mesh
// wide (their selector in every namespace), a namespace's to its
// workloads by selector, other namespaces' and targetRefs ones never.
func TestRequestAuthenticationsForProxy(t *testing.T) {
	rs, errs := config.Decode("ra.yaml", []byte(raConfig))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	pc := NewPushContext(config.NewSnapshot(1, rs))
	tests := []struct {
		name  string
		proxy *Proxy
		want  []string
	}{
		{"reviews v1", &Proxy{Namespace: "default", Labels: map[string]string{"app": "reviews", "version": "v1"}},
			[]string{"istio-system/mesh", "istio-system/mesh-reviews", "default/ns", "default/reviews"}},
		{"reviews v2", &Proxy{Namespace: "default", Labels: map[string]string{"app": "reviews", "version": "v2"}},
			[]string{"istio-system/mesh", "istio-system/mesh-reviews", "default/ns"}},
		{"reviews in prod", &Proxy{Namespace: "prod", Labels: map[string]string{"app": "reviews", "version": "v1"}},
			[]string{"istio-system/mesh", "istio-system/mesh-reviews", "prod/other-ns"}},
		{"gateway in the root namespace", &Proxy{Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway"}},
			[]string{"istio-system/mesh"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, view := range []*PushContext{pc, pc.ForProxy(tt.proxy)} {
				var got []string
				for _, ra := range view.RequestAuthenticationsForProxy(tt.proxy) {
					got = append(got, ra.Namespace+"/"+ra.Name)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			}
		})
	}
}
