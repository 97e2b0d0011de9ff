package translate

import (
	"net/netip"
	"testing"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// egressProxyConfig sends productpage's unknown outbound traffic to the
// ServiceEntry'd egress.example.com:3128, which its egress hosts import,
// and gives it a TCP service of an address range (a 0.0.0.0_5432 with a
// catch-all chain in redirect mode).
const egressProxyConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egress, namespace: default}
spec:
  hosts: [egress.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 3128, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.54.0.210}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  addresses: [10.1.0.0/16]
  location: MESH_EXTERNAL
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: NONE
---
` + productpageSidecarHead + `  - hosts: ["./*"]
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.example.com, port: {number: 3128}}
`

// TestSidecarEgressProxy: under a Sidecar's egressProxy, unknown outbound
// traffic goes to the egress proxy's cluster instead of
// PassthroughCluster, as Istio's BuildCatchAllVirtualHost and
// buildOutboundCatchAllNetworkFiltersOnly: the HTTP catch-all route in
// both modes, virtualOutbound's catch-all chain and a 0.0.0.0_PORT's
// fallthrough chain in redirect mode. Known hosts are routed as before.
func TestSidecarEgressProxy(t *testing.T) {
	const egress = "outbound|3128||egress.example.com"
	pc := docPushContext(t, egressProxyConfig)

	hasCluster := func(t *testing.T, r *Resources) {
		t.Helper()
		for _, c := range r.Clusters {
			if c.GetName() == egress {
				return
			}
		}
		t.Errorf("no cluster %s", egress)
	}

	t.Run("explicit", func(t *testing.T) {
		r := mustGenerate(t, pc, productpageSidecar())
		hasCluster(t, r)
		rc := routeConfig(t, r, xdsapi.HTTPProxyRoute)
		for _, tt := range []struct {
			req  request
			want string
		}{
			{request{"unknown.example.org", "/", nil}, egress},
			{request{"10.9.9.9:8080", "/x", nil}, egress},
			{request{"reviews.default.svc.cluster.local:9080", "/", nil}, "outbound|9080||reviews.default.svc.cluster.local"},
		} {
			if got := simulate(t, rc, tt.req); got != tt.want {
				t.Errorf("%s%s: routed to %q, want %q", tt.req.authority, tt.req.path, got, tt.want)
			}
		}
	})

	t.Run("redirect", func(t *testing.T) {
		r := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
		hasCluster(t, r)
		if got := simulate(t, routeConfig(t, r, "9080"), request{"unknown.example.org:9080", "/", nil}); got != egress {
			t.Errorf("route 9080, unknown host: routed to %q, want %q", got, egress)
		}
		for name, dst := range map[string]string{
			xdsapi.VirtualOutboundListener: "203.0.113.7:443",
			"0.0.0.0_5432":                 "10.2.0.1:5432",
		} {
			l := findListener(r, name)
			if l == nil {
				t.Fatalf("no listener %s", name)
			}
			fc := selectChain(l, netip.MustParseAddrPort(dst), false, "")
			if fc.GetName() != virtualOutboundCatchAllTCP {
				t.Fatalf("%s: %s takes chain %q, want %s", name, dst, fc.GetName(), virtualOutboundCatchAllTCP)
			}
			fs := fc.GetFilters()
			tp := &tcpv3.TcpProxy{}
			if err := fs[len(fs)-1].GetTypedConfig().UnmarshalTo(tp); err != nil {
				t.Fatal(err)
			}
			if got := tp.GetCluster(); got != egress {
				t.Errorf("%s: %s goes to %q, want %q", name, dst, got, egress)
			}
		}
	})
}
