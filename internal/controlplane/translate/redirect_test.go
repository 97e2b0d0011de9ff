package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
)

// conn is an intercepted connection as the proxy sees it once
// original_dst has restored its destination.
type conn struct {
	dst string // original destination "ip:port"
	// http is the request's authority when the connection carries
	// plaintext HTTP/1.1 (http_inspector reports "http/1.1"); "" for
	// opaque TCP.
	http string
	// headers are the request's headers, lowercase names.
	headers map[string]string
	// sni, when set, makes the connection TLS with that server name.
	sni string
}

// simulateConn follows a connection through r as Envoy would: on the
// listener whose address is exactly the destination, else the 0.0.0.0
// listener of its port (use_original_dst handoff, bind_to_port false
// listeners included), else on the listener it was redirected to
// (entry); then the filter chain Envoy selects, then the tcp_proxy's
// cluster or the HCM's route table. It returns "listener/chain -> cluster"
// ("NR" when no route matches, "no chain" when none matches; a weighted
// tcp_proxy: "listener/chain").
func simulateConn(t *testing.T, r *Resources, entry string, c conn) string {
	t.Helper()
	byName := map[string]*listenerv3.Listener{}
	byAddr := map[string]*listenerv3.Listener{}
	for _, l := range r.Listeners {
		byName[l.GetName()] = l
		sa := l.GetAddress().GetSocketAddress()
		byAddr[netip.AddrPortFrom(netip.MustParseAddr(sa.GetAddress()), uint16(sa.GetPortValue())).String()] = l
	}
	dst := netip.MustParseAddrPort(c.dst)
	l := byName[entry]
	if l == nil {
		t.Fatalf("no listener %q", entry)
	}
	if l.GetUseOriginalDst().GetValue() {
		if h := byAddr[dst.String()]; h != nil {
			l = h
		} else if h := byAddr[netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port()).String()]; h != nil {
			l = h
		}
	}
	fc := selectChain(l, dst, c.http != "", c.sni)
	if fc == nil {
		return l.GetName() + "/no chain"
	}
	where := l.GetName() + "/" + fc.GetName()
	f := fc.GetFilters()[len(fc.GetFilters())-1]
	switch f.GetName() {
	case tcpProxyFilter:
		var tp tcpv3.TcpProxy
		if err := f.GetTypedConfig().UnmarshalTo(&tp); err != nil {
			t.Fatal(err)
		}
		if tp.GetCluster() == "" {
			return where
		}
		return where + " -> " + tp.GetCluster()
	case httpConnectionManagerFilter:
		var h hcmv3.HttpConnectionManager
		if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		if c.http == "" {
			return where + " -> (HTTP manager on opaque TCP)"
		}
		rc := h.GetRouteConfig()
		if name := h.GetRds().GetRouteConfigName(); name != "" {
			i := slices.IndexFunc(r.Routes, func(rc *routev3.RouteConfiguration) bool { return rc.GetName() == name })
			if i < 0 {
				t.Fatalf("listener %s: no route %q", l.GetName(), name)
			}
			rc = r.Routes[i]
		}
		return where + " -> " + simulate(t, rc, request{authority: c.http, path: "/", headers: c.headers})
	}
	t.Fatalf("listener %s chain %s: terminal filter %s", l.GetName(), fc.GetName(), f.GetName())
	return ""
}

// selectChain is Envoy's filter chain selection on the fields transparent
// mode sets: destination port, then destination IP (prefix_ranges, the
// longest range containing it), then server names (sni; an exact name
// before a wildcard), then transport protocol (tls when sni is set, else
// raw_buffer), then application protocols ("http/1.1" when http), keeping
// at each step the chains that match most specifically; the default
// chain when none is left. It fails t on any other match field.
func selectChain(l *listenerv3.Listener, dst netip.AddrPort, http bool, sni string) *listenerv3.FilterChain {
	port := dst.Port()
	cand := slices.Clone(l.GetFilterChains())
	transport := rawBufferTransport
	if sni != "" {
		transport = "tls"
	}
	steps := []func(m *listenerv3.FilterChainMatch) int{
		func(m *listenerv3.FilterChainMatch) int {
			switch p := m.GetDestinationPort(); {
			case p == nil:
				return 0
			case p.GetValue() == uint32(port):
				return 1
			}
			return -1
		},
		func(m *listenerv3.FilterChainMatch) int {
			if len(m.GetPrefixRanges()) == 0 {
				return 0
			}
			best := -1
			for _, r := range m.GetPrefixRanges() {
				pfx, err := netip.ParseAddr(r.GetAddressPrefix())
				if err != nil {
					panic(err)
				}
				bits := int(r.GetPrefixLen().GetValue())
				if p, err := pfx.Prefix(bits); err == nil && p.Contains(dst.Addr()) {
					best = max(best, bits+1)
				}
			}
			return best
		},
		func(m *listenerv3.FilterChainMatch) int {
			names := m.GetServerNames()
			switch {
			case len(names) == 0:
				return 0
			case sni == "":
				return -1
			case slices.Contains(names, sni):
				return 2
			case slices.ContainsFunc(names, func(n string) bool {
				return strings.HasPrefix(n, "*.") && strings.HasSuffix(sni, n[1:])
			}):
				return 1
			}
			return -1
		},
		func(m *listenerv3.FilterChainMatch) int {
			switch m.GetTransportProtocol() {
			case "":
				return 0
			case transport:
				return 1
			}
			return -1
		},
		func(m *listenerv3.FilterChainMatch) int {
			switch {
			case len(m.GetApplicationProtocols()) == 0:
				return 0
			case http && slices.Contains(m.GetApplicationProtocols(), "http/1.1"):
				return 1
			}
			return -1
		},
	}
	for _, score := range steps {
		best := -1
		for _, fc := range cand {
			best = max(best, score(fc.GetFilterChainMatch()))
		}
		cand = slices.DeleteFunc(cand, func(fc *listenerv3.FilterChain) bool { return score(fc.GetFilterChainMatch()) != best || best < 0 })
		if len(cand) == 0 {
			return l.GetDefaultFilterChain()
		}
	}
	return cand[0]
}

// redirectInput is the mixed mesh of testdata/redirect: the explicit-mode
// bookinfo workloads, a REDIRECT reviews-v4 and a REDIRECT tcp-echo.
func redirectInput(t *testing.T) *model.PushContext {
	return loadPushContext(t, meshFile, filepath.Join("testdata", "redirect", "input.yaml"))
}

// TestRedirectOutboundSimulation follows the app's connections, as
// iptables redirects them to 15001, through a REDIRECT sidecar.
func TestRedirectOutboundSimulation(t *testing.T) {
	r := mustGenerate(t, redirectInput(t), redirectSidecar(productpageSidecar()))
	tests := []struct {
		name string
		c    conn
		want string
	}{
		{"http by service name", conn{dst: "240.240.0.2:9080", http: "reviews:9080"},
			"0.0.0.0_9080/ -> outbound|9080|v1|reviews.default.svc.cluster.local"},
		{"http header routes to v2", conn{dst: "240.240.0.2:9080", http: "reviews:9080", headers: map[string]string{"end-user": "jason"}},
			"0.0.0.0_9080/ -> outbound|9080|v2|reviews.default.svc.cluster.local"},
		{"http to a host outside the mesh on a mesh port: allow_any", conn{dst: "203.0.113.9:9080", http: "example.com:9080"},
			"0.0.0.0_9080/ -> PassthroughCluster"},
		{"tcp to the service VIP", conn{dst: "240.240.0.9:9000"},
			"240.240.0.9_9000/ -> outbound|9000||tcp-echo.default.svc.cluster.local"},
		{"tcp to another IP on the VIP's port: no listener, passthrough", conn{dst: "10.1.2.3:9000"},
			"virtualOutbound/virtualOutbound-catchall-tcp -> PassthroughCluster"},
		{"tcp to a service without VIP: 0.0.0.0 listener", conn{dst: "192.0.2.7:5432"},
			"0.0.0.0_5432/ -> outbound|5432||db.legacy.example.com"},
		{"tcp outside the mesh", conn{dst: "203.0.113.9:443"},
			"virtualOutbound/virtualOutbound-catchall-tcp -> PassthroughCluster"},
		{"a connection to 15001 itself", conn{dst: "10.77.0.11:15001"},
			"virtualOutbound/virtualOutbound-blackhole -> BlackHoleCluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := simulateConn(t, r, xdsapi.VirtualOutboundListener, tt.c); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestRedirectRegistryOnly: under REGISTRY_ONLY the catch-alls block.
func TestRedirectRegistryOnly(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "redirect-tcp", "input.yaml"))
	r := mustGenerate(t, pc, redirectSidecar(tcpEchoSidecar()))
	for _, tt := range []struct {
		c    conn
		want string
	}{
		{conn{dst: "203.0.113.9:443"}, "virtualOutbound/virtualOutbound-catchall-tcp -> BlackHoleCluster"},
		{conn{dst: "203.0.113.9:9080", http: "example.com"}, "0.0.0.0_9080/ -> direct 502 "},
		{conn{dst: "240.240.0.9:9001"}, "240.240.0.9_9001/ -> outbound|9001||tcp-echo.default.svc.cluster.local"},
		{conn{dst: "240.240.0.1:9080", http: "details:9080"}, "0.0.0.0_9080/ -> outbound|9080||details.default.svc.cluster.local"},
		{conn{dst: "240.240.0.1:9080", http: "240.240.0.1"}, "0.0.0.0_9080/ -> direct 502 "},
		{conn{dst: "10.77.0.21:9000", http: "tcp-echo:9000"}, "virtualOutbound/virtualOutbound-catchall-tcp -> BlackHoleCluster"},
		{conn{dst: "240.240.0.9:9000", http: "tcp-echo:9000"}, "240.240.0.9_9000/ -> outbound|9000||tcp-echo.default.svc.cluster.local"},
	} {
		if got := simulateConn(t, r, xdsapi.VirtualOutboundListener, tt.c); got != tt.want {
			t.Errorf("%+v:\ngot  %s\nwant %s", tt.c, got, tt.want)
		}
	}
}

// TestRedirectInboundSimulation follows connections that iptables
// redirected to 15006 through virtualInbound.
func TestRedirectInboundSimulation(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "redirect-tcp", "input.yaml"))
	tcp := mustGenerate(t, pc, redirectSidecar(tcpEchoSidecar()))
	http := mustGenerate(t, redirectInput(t), redirectSidecar(productpageSidecar()))
	tests := []struct {
		name string
		r    *Resources
		c    conn
		want string
	}{
		{"declared TCP port", tcp, conn{dst: "10.77.0.21:9000"}, "virtualInbound/0.0.0.0_9000 -> inbound|9000||"},
		{"declared TCP port carrying HTTP stays TCP", tcp, conn{dst: "10.77.0.21:9001", http: "x"}, "virtualInbound/0.0.0.0_9001 -> inbound|9001||"},
		{"undeclared port, TCP", tcp, conn{dst: "10.77.0.21:7777"}, "virtualInbound/virtualInbound -> InboundPassthroughCluster"},
		{"undeclared port, HTTP", tcp, conn{dst: "10.77.0.21:7777", http: "a:7777"}, "virtualInbound/virtualInbound-catchall-http -> InboundPassthroughCluster"},
		{"declared HTTP port", http, conn{dst: "127.0.0.11:9080", http: "productpage:9080"}, "virtualInbound/0.0.0.0_9080 -> inbound|9080||"},
		{"a connection to 15006 itself", http, conn{dst: "127.0.0.11:15006"}, "virtualInbound/virtualInbound-blackhole -> BlackHoleCluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := simulateConn(t, tt.r, xdsapi.VirtualInboundListener, tt.c); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestMixedModes: an explicit client reaches a REDIRECT server at its
// app's port (iptables there sends it to the server's sidecar), and a
// REDIRECT client reaches an explicit server's HTTP port at 15006 (its
// inbound listener) and its TCP port at the app.
func TestMixedModes(t *testing.T) {
	pc := redirectInput(t)
	explicit := mustGenerate(t, pc, productpageSidecar())
	redirect := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
	wantReviews := []string{"10.77.0.17:9080", "127.0.0.13:15006", "127.0.0.14:15006", "127.0.0.15:15006"}
	for name, r := range map[string]*Resources{"explicit client": explicit, "redirect client": redirect} {
		if diff := cmp.Diff(wantReviews, endpointsOf(t, r, "outbound|9080||reviews.default.svc.cluster.local")); diff != "" {
			t.Errorf("%s: reviews endpoints (-want +got):\n%s", name, diff)
		}
		if diff := cmp.Diff([]string{"10.77.0.21:9000"}, endpointsOf(t, r, "outbound|9000||tcp-echo.default.svc.cluster.local")); diff != "" {
			t.Errorf("%s: tcp-echo endpoints (-want +got):\n%s", name, diff)
		}
	}
	// The explicit client's route to reviews is the same either way; its
	// TCP listener for tcp-echo is on its own IP.
	rc := explicit.Routes[slices.IndexFunc(explicit.Routes, func(rc *routev3.RouteConfiguration) bool { return rc.GetName() == xdsapi.HTTPProxyRoute })]
	if got := simulate(t, rc, request{authority: "reviews.default.svc.cluster.local:9080", path: "/"}); got != "outbound|9080|v1|reviews.default.svc.cluster.local" {
		t.Errorf("explicit client to reviews: %s", got)
	}
	if got := simulateConn(t, explicit, "127.0.0.11_9000", conn{dst: "127.0.0.11:9000"}); !strings.HasSuffix(got, "-> outbound|9000||tcp-echo.default.svc.cluster.local") {
		t.Errorf("explicit client to tcp-echo: %s", got)
	}
}

// TestRedirectOnlyForRedirectMode: a sidecar whose INTERCEPTION_MODE is
// absent or NONE keeps the explicit layout.
func TestRedirectOnlyForRedirectMode(t *testing.T) {
	pc := redirectInput(t)
	for _, mode := range []string{"", "NONE", "TPROXY"} {
		p := productpageSidecar()
		p.InterceptionMode = mode
		r := mustGenerate(t, pc, p)
		for _, l := range r.Listeners {
			if l.GetName() == xdsapi.VirtualOutboundListener && l.GetUseOriginalDst().GetValue() {
				t.Errorf("mode %q: virtualOutbound has use_original_dst", mode)
			}
		}
	}
}

// TestRedirectInboundAuthz: with interception TCP has an inbound hop, so
// an AuthorizationPolicy on a TCP workload puts Istio's network RBAC
// before the tcp_proxy of its port's chain and of the passthrough chain,
// and the HTTP RBAC into the inbound HTTP managers; the blackhole chain
// gets none, as Istio's.
func TestRedirectInboundAuthz(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: tcp-policy
  namespace: default
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: ALLOW
  rules:
  - to:
    - operation:
        ports: ["9000"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "redirect-tcp", "input.yaml"), policy)
	r := mustGenerate(t, pc, redirectSidecar(tcpEchoSidecar()))
	var vi *listenerv3.Listener
	for _, l := range r.Listeners {
		if l.GetName() == xdsapi.VirtualInboundListener {
			vi = l
		}
	}
	got := map[string][]string{}
	for _, fc := range vi.GetFilterChains() {
		var names []string
		for _, f := range fc.GetFilters() {
			names = append(names, f.GetName())
			if f.GetName() == httpConnectionManagerFilter {
				var h hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
					t.Fatal(err)
				}
				names = append(names, h.GetHttpFilters()[0].GetName())
			}
		}
		got[fc.GetName()] = names
	}
	want := map[string][]string{
		"virtualInbound-blackhole":     {tcpProxyFilter},
		"virtualInbound-catchall-http": {httpConnectionManagerFilter, "envoy.filters.http.rbac"},
		"virtualInbound":               {mxFilterName, "envoy.filters.network.rbac", statspb.FilterName, tcpProxyFilter},
		"0.0.0.0_9000":                 {mxFilterName, "envoy.filters.network.rbac", statspb.FilterName, tcpProxyFilter},
		"0.0.0.0_9001":                 {mxFilterName, "envoy.filters.network.rbac", statspb.FilterName, tcpProxyFilter},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("virtualInbound chain filters (-want +got):\n%s", diff)
	}
}

// TestRedirectInboundClusterMetadata: a REDIRECT sidecar's inbound
// clusters carry Istio's filter_metadata.istio.services of their port's
// service, as explicit-mode ones do, so that the destination reporter's
// destination_service is the service and not unknown.
func TestRedirectInboundClusterMetadata(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "redirect-tcp", "input.yaml"))
	tcp := mustGenerate(t, pc, redirectSidecar(tcpEchoSidecar()))
	http := mustGenerate(t, redirectInput(t), redirectSidecar(productpageSidecar()))
	for _, tt := range []struct {
		r                  *Resources
		cluster            string
		host, name, namesp string
	}{
		{tcp, "inbound|9000||", "tcp-echo.default.svc.cluster.local", "tcp-echo", "default"},
		{tcp, "inbound|9001||", "tcp-echo.default.svc.cluster.local", "tcp-echo", "default"},
		{http, "inbound|9080||", "productpage.default.svc.cluster.local", "productpage", "default"},
	} {
		var c *clusterv3.Cluster
		for _, x := range tt.r.Clusters {
			if x.GetName() == tt.cluster {
				c = x
			}
		}
		if c == nil {
			t.Fatalf("no cluster %q", tt.cluster)
		}
		svcs := c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["services"].GetListValue().GetValues()
		if len(svcs) != 1 {
			t.Fatalf("%s: istio.services = %v, want one service", tt.cluster, svcs)
		}
		f := svcs[0].GetStructValue().GetFields()
		if got := [3]string{f["host"].GetStringValue(), f["name"].GetStringValue(), f["namespace"].GetStringValue()}; got != [3]string{tt.host, tt.name, tt.namesp} {
			t.Errorf("%s: istio.services[0] host, name, namespace = %q, want %q", tt.cluster, got, [3]string{tt.host, tt.name, tt.namesp})
		}
	}
}
