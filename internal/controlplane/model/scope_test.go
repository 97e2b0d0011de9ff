package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

const scopeConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: internal, namespace: team}
spec:
  exportTo: [.]
  hosts: [internal.team.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shared, namespace: default}
spec:
  hosts: [shared.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shared, namespace: team}
spec:
  hosts: [shared.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: team}
spec:
  exportTo: ["~"]
  hosts: [hidden.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata:
  name: billing
  namespace: team
  annotations: {networking.istio.io/exportTo: " ., web "}
spec:
  ports: [{port: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: vault
  namespace: team
  annotations: {networking.istio.io/exportTo: "~"}
spec:
  ports: [{port: 8200, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: open, namespace: team}
spec:
  ports: [{port: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-private, namespace: team}
spec: {host: reviews.default.svc.cluster.local, exportTo: [.]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details-private, namespace: default}
spec: {host: details.default.svc.cluster.local, exportTo: [.]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: istio-system}
spec: {host: "*"}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: other}
spec: {host: ratings.default.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  exportTo: [.]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-for-team, namespace: default}
spec:
  hosts: [reviews]
  exportTo: [team]
  http: [{route: [{destination: {host: reviews}}]}]
`

func scopePushContext(t *testing.T) *PushContext {
	t.Helper()
	rs, errs := config.Decode("scope.yaml", []byte(scopeConfig))
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return NewPushContext(config.NewSnapshot(1, rs))
}

func TestForNamespaceServices(t *testing.T) {
	pc := scopePushContext(t)
	tests := []struct {
		ns   string
		want []string // "host ns" of each visible service
	}{
		// A Kubernetes Service's networking.istio.io/exportTo
		// annotation scopes it as a ServiceEntry's exportTo: billing
		// to its namespace and web, vault ("~") to none, open (no
		// annotation) to all.
		{"default", []string{"open.team.svc.cluster.local team", "ratings.default.svc.cluster.local default", "reviews.default.svc.cluster.local default", "shared.example.com default"}},
		{"team", []string{"billing.team.svc.cluster.local team", "internal.team.svc.cluster.local team", "open.team.svc.cluster.local team", "ratings.default.svc.cluster.local default", "reviews.default.svc.cluster.local default", "shared.example.com team"}},
		{"web", []string{"billing.team.svc.cluster.local team", "open.team.svc.cluster.local team", "ratings.default.svc.cluster.local default", "reviews.default.svc.cluster.local default", "shared.example.com default"}},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			v := pc.ForNamespace(tt.ns)
			var got []string
			for _, s := range v.Services() {
				got = append(got, s.Hostname+" "+s.Namespace)
				if v.ServiceForHost(s.Hostname) != s {
					t.Errorf("ServiceForHost(%q) is not the listed service", s.Hostname)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("services (-want +got):\n%s", diff)
			}
			for _, h := range []string{"hidden.example.com", "vault.team.svc.cluster.local"} {
				if v.ServiceForHost(h) != nil {
					t.Errorf(`%s, exported to "~", is visible`, h)
				}
			}
		})
	}
	if len(pc.Services()) != 9-1 { // mesh-wide: one per host, exportTo ignored
		t.Errorf("mesh-wide services: %d, want 8", len(pc.Services()))
	}
	if v := pc.ForNamespace("team"); v != pc.ForNamespace("team") || v.ForNamespace("team") != v || v.ForNamespace("web") != pc.ForNamespace("web") {
		t.Error("views are not cached per namespace")
	}
}

func TestForNamespaceDestinationRule(t *testing.T) {
	pc := scopePushContext(t)
	tests := []struct{ ns, host, want string }{
		{"default", "reviews.default.svc.cluster.local", "default/reviews"},
		{"team", "reviews.default.svc.cluster.local", "team/reviews-private"},       // the proxy's namespace first
		{"web", "reviews.default.svc.cluster.local", "default/reviews"},             // then the service's
		{"web", "ratings.default.svc.cluster.local", "istio-system/all"},            // then the root namespace; other/ratings never
		{"other", "ratings.default.svc.cluster.local", "other/ratings"},             // but in its own namespace
		{"default", "details.default.svc.cluster.local", "default/details-private"}, // private, own namespace
		{"web", "details.default.svc.cluster.local", "istio-system/all"},            // private to default
		{"istio-system", "reviews.default.svc.cluster.local", "istio-system/all"},   // a proxy of the root namespace
		{"web", "unknown.example.com", "istio-system/all"},
	}
	for _, tt := range tests {
		got := ""
		if dr := pc.ForNamespace(tt.ns).DestinationRule(tt.host); dr != nil {
			got = dr.Namespace + "/" + dr.Name
		}
		if got != tt.want {
			t.Errorf("ForNamespace(%q).DestinationRule(%q) = %q, want %q", tt.ns, tt.host, got, tt.want)
		}
	}
}

func TestForNamespaceVirtualServices(t *testing.T) {
	pc := scopePushContext(t)
	tests := []struct{ ns, want string }{
		{"default", "default/reviews"},
		{"team", "default/reviews-for-team"},
		{"web", ""},
	}
	for _, tt := range tests {
		got := ""
		if vs := pc.ForNamespace(tt.ns).VirtualServiceForHost(MeshGateway, "reviews.default.svc.cluster.local"); vs != nil {
			got = vs.Namespace + "/" + vs.Name
		}
		if got != tt.want {
			t.Errorf("ForNamespace(%q).VirtualServiceForHost(reviews) = %q, want %q", tt.ns, got, tt.want)
		}
	}
}

func TestVisibility(t *testing.T) {
	tests := []struct {
		exportTo []string
		ns       string
		want     bool
	}{
		{nil, "a", true},
		{[]string{"*"}, "a", true},
		{[]string{"."}, "own", true},
		{[]string{"."}, "a", false},
		{[]string{"a", "b"}, "b", true},
		{[]string{"~"}, "own", false},
	}
	for _, tt := range tests {
		if got := NewVisibility(tt.exportTo, "own").VisibleTo(tt.ns); got != tt.want {
			t.Errorf("NewVisibility(%q, own).VisibleTo(%q) = %v, want %v", tt.exportTo, tt.ns, got, tt.want)
		}
	}
}
