package translate

import (
	"os"
	"path/filepath"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// egressPortConfig gives productpage a Sidecar whose egress listener on
// port 9080 (bound to 127.0.0.2) imports reviews alone and whose
// catch-all listener imports ratings (also on 9080) and api.example.com
// (8080).
const egressPortConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.211}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.2
    hosts: ["./reviews.default.svc.cluster.local"]
  - hosts: ["./ratings.default.svc.cluster.local", "./api.example.com"]
`

// TestSidecarEgressPort: a Sidecar egress listener with a port scopes that
// port's routes to its own hosts and the catch-all listener's hosts serve
// the other ports, while the clusters are the union, as Istio's
// per-egress-listener buildSidecarOutboundListeners and route
// configurations; the listener's bind names and addresses the port's
// listener in both modes.
func TestSidecarEgressPort(t *testing.T) {
	const (
		reviews = "outbound|9080||reviews.default.svc.cluster.local"
		ratings = "outbound|9080||ratings.default.svc.cluster.local"
		api     = "outbound|8080||api.example.com"
	)
	f := filepath.Join(t.TempDir(), "egress.yaml")
	if err := os.WriteFile(f, []byte(egressPortConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	pc := loadPushContext(t, meshFile, f)
	route := func(t *testing.T, r *Resources, name string) *routev3.RouteConfiguration {
		t.Helper()
		for _, rc := range r.Routes {
			if rc.GetName() == name {
				return rc
			}
		}
		t.Fatalf("no route %q", name)
		return nil
	}
	clusters := func(t *testing.T, r *Resources) {
		t.Helper()
		have := map[string]bool{}
		for _, c := range r.Clusters {
			have[c.GetName()] = true
		}
		for _, c := range []string{reviews, ratings, api} {
			if !have[c] {
				t.Errorf("no cluster %s: clusters are the union of the egress listeners", c)
			}
		}
		if have["outbound|9080||details.default.svc.cluster.local"] {
			t.Errorf("cluster of details, which no egress listener imports")
		}
	}
	type want struct {
		req request
		dst string
	}
	check := func(t *testing.T, rc *routev3.RouteConfiguration, cases ...want) {
		t.Helper()
		for _, c := range cases {
			if got := simulate(t, rc, c.req); got != c.dst {
				t.Errorf("route %s: %s: routed to %q, want %q", rc.GetName(), c.req.authority, got, c.dst)
			}
		}
	}
	port9080 := []want{
		{request{"reviews.default.svc.cluster.local:9080", "/", nil}, reviews},
		{request{"ratings.default.svc.cluster.local:9080", "/", nil}, PassthroughCluster},
	}

	t.Run("explicit", func(t *testing.T) {
		r := mustGenerate(t, pc, productpageSidecar())
		clusters(t, r)
		check(t, route(t, r, xdsapi.HTTPProxyRoute), append(port9080,
			want{request{"api.example.com:8080", "/", nil}, api})...)
		l := findListener(r, "127.0.0.2_9080")
		if l == nil {
			t.Fatal("no listener 127.0.0.2_9080 of the egress listener's bind and port")
		}
		if a := l.GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.2" || a.GetPortValue() != 9080 {
			t.Errorf("listener 127.0.0.2_9080 at %s:%d", a.GetAddress(), a.GetPortValue())
		}
		check(t, route(t, r, "9080"), port9080...)
	})

	t.Run("redirect", func(t *testing.T) {
		r := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
		clusters(t, r)
		if findListener(r, "127.0.0.2_9080") == nil || findListener(r, "0.0.0.0_9080") != nil {
			t.Error("want the 9080 listener at the egress listener's bind, 127.0.0.2_9080, not 0.0.0.0_9080")
		}
		check(t, route(t, r, "9080"), port9080...)
		check(t, route(t, r, "8080"),
			want{request{"api.example.com:8080", "/", nil}, api},
			want{request{"reviews.default.svc.cluster.local:8080", "/", nil}, PassthroughCluster})
	})
}
