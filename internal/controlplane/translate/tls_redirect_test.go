package translate

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// tlsRedirectDoc has TLS services a transparent sidecar reaches by SNI:
// a.example.com and b.example.com (no VIP) split 90/10 by a tls route,
// c.example.com (HTTPS, no VIP) by its own name, and secure (VIP
// 240.240.0.50) whose tls route sends SNI v2.secure.example to the v2
// subset, its other connections to its service cluster.
const tlsRedirectDoc = tlsRoutesDoc + `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.default.svc.cluster.local]
  addresses: [240.240.0.50]
  ports: [{number: 8443, name: tls, protocol: TLS}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{address: 10.77.0.50, labels: {version: v1}}, {address: 10.77.0.51, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: default}
spec:
  host: secure.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.default.svc.cluster.local]
  tls:
  - match: [{sniHosts: [v2.secure.example]}]
    route: [{destination: {host: secure.default.svc.cluster.local, subset: v2}}]
`

// TestRedirectTLSRoutes checks the transparent sidecar's outbound TLS
// listeners, as Istio builds them: a wildcard 0.0.0.0_443 matching by
// SNI, with a last chain to PassthroughCluster for names nobody claims,
// and a VIP listener whose tls route takes its SNI and whose service
// takes every other connection. Then it follows connections by original
// destination and SNI.
func TestRedirectTLSRoutes(t *testing.T) {
	r := mustGenerate(t, docPushContext(t, tlsRedirectDoc), redirectSidecar(productpageSidecar()))
	got := listenerDigest(r, "0.0.0.0_443", "240.240.0.50_8443")
	want := []string{
		"listener 0.0.0.0_443 0.0.0.0:443",
		"  listener filter envoy.filters.listener.tls_inspector",
		`  chain "tls.443.default.ext.tls[1].match[0]" sni=a.example.com,b.example.com`,
		"  filter envoy.filters.network.tcp_proxy -> [outbound|443||a.example.com=90 outbound|443||b.example.com=10]",
		`  chain "outbound|443||c.example.com" sni=c.example.com`,
		"  filter envoy.filters.network.tcp_proxy -> outbound|443||c.example.com",
		"  filter envoy.filters.network.tcp_proxy -> PassthroughCluster",
		"listener 240.240.0.50_8443 240.240.0.50:8443",
		"  listener filter envoy.filters.listener.tls_inspector",
		`  chain "tls.8443.default.secure.tls[0].match[0]" sni=v2.secure.example`,
		"  filter envoy.filters.network.tcp_proxy -> outbound|8443|v2|secure.default.svc.cluster.local",
		"  filter envoy.filters.network.tcp_proxy -> outbound|8443||secure.default.svc.cluster.local",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TLS listeners (-want +got):\n%s", diff)
	}
	for _, l := range r.Listeners {
		if (l.GetName() == "0.0.0.0_443" || l.GetName() == "240.240.0.50_8443") && (l.GetBindToPort() == nil || l.GetBindToPort().GetValue()) {
			t.Errorf("listener %s binds its port; want only virtualOutbound's hand-off", l.GetName())
		}
	}

	for _, tt := range []struct {
		dst, sni, want string
	}{
		{"203.0.113.7:443", "a.example.com", "0.0.0.0_443/tls.443.default.ext.tls[1].match[0]"},
		{"203.0.113.7:443", "c.example.com", "0.0.0.0_443/outbound|443||c.example.com -> outbound|443||c.example.com"},
		{"203.0.113.7:443", "www.example.org", "0.0.0.0_443/virtualOutbound-catchall-tcp -> PassthroughCluster"},
		{"240.240.0.50:8443", "v2.secure.example", "240.240.0.50_8443/tls.8443.default.secure.tls[0].match[0] -> outbound|8443|v2|secure.default.svc.cluster.local"},
		{"240.240.0.50:8443", "secure.default.svc.cluster.local", "240.240.0.50_8443/outbound|8443||secure.default.svc.cluster.local -> outbound|8443||secure.default.svc.cluster.local"},
		{"10.1.2.3:8443", "v2.secure.example", "virtualOutbound/virtualOutbound-catchall-tcp -> PassthroughCluster"},
	} {
		if got := simulateConn(t, r, xdsapi.VirtualOutboundListener, conn{dst: tt.dst, sni: tt.sni}); got != tt.want {
			t.Errorf("TLS to %s with SNI %s:\ngot  %s\nwant %s", tt.dst, tt.sni, got, tt.want)
		}
	}
}
