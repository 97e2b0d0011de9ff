package translate

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// sidecarIngressInput is bookinfo plus testdata/sidecar-ingress: a second
// service port 9090 on productpage's workload and a Sidecar whose ingress
// listeners are 9080 (HTTP, app on 8080), 7070 (TCP, no service, app on
// 7071) and 7080 (HTTP, no service, no defaultEndpoint).
func sidecarIngressInput(t *testing.T) *model.PushContext {
	dir := filepath.Join("testdata", "sidecar-ingress")
	return loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), filepath.Join(dir, "sidecar.yaml"))
}

// inboundClusterSummary is "name TYPE endpoint service" per inbound
// cluster of r, in order.
func inboundClusterSummary(r *Resources) []string {
	var out []string
	for _, c := range r.Clusters {
		if !strings.HasPrefix(c.GetName(), "inbound|") {
			continue
		}
		s := c.GetName() + " " + c.GetType().String()
		if lbs := c.GetLoadAssignment().GetEndpoints(); len(lbs) > 0 {
			sa := lbs[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			s += " " + netip.AddrPortFrom(netip.MustParseAddr(sa.GetAddress()), uint16(sa.GetPortValue())).String()
		}
		if svcs := c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["services"].GetListValue().GetValues(); len(svcs) > 0 {
			s += " " + svcs[0].GetStructValue().GetFields()["host"].GetStringValue()
		}
		if b := c.GetUpstreamBindConfig().GetSourceAddress().GetAddress(); b != "" {
			s += " bind=" + b
		}
		out = append(out, s)
	}
	return out
}

// TestSidecarIngressRedirect: under Sidecar ingress listeners,
// virtualInbound's port chains and the inbound clusters come from the
// listeners (port, protocol, defaultEndpoint), as Istio's
// buildInboundChainConfigs and buildInboundClustersFromSidecar: a port no
// service has is served, TCP or HTTP as the listener's protocol says, and
// the service port 9090 that is not listed falls to the passthrough
// chains.
func TestSidecarIngressRedirect(t *testing.T) {
	r := mustGenerate(t, sidecarIngressInput(t), redirectSidecar(productpageSidecar()))
	tests := []struct {
		name string
		c    conn
		want string
	}{
		{"listed service port", conn{dst: "127.0.0.11:9080", http: "productpage:9080"}, "virtualInbound/0.0.0.0_9080 -> inbound|9080||"},
		{"TCP port with no service", conn{dst: "127.0.0.11:7070"}, "virtualInbound/0.0.0.0_7070 -> inbound|7070||"},
		{"TCP port carrying HTTP stays TCP", conn{dst: "127.0.0.11:7070", http: "x:7070"}, "virtualInbound/0.0.0.0_7070 -> inbound|7070||"},
		{"HTTP port with no service", conn{dst: "127.0.0.11:7080", http: "x:7080"}, "virtualInbound/0.0.0.0_7080 -> inbound|7080||"},
		{"unlisted service port", conn{dst: "127.0.0.11:9090", http: "pp-admin:9090"}, "virtualInbound/virtualInbound-catchall-http -> InboundPassthroughCluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := simulateConn(t, r, xdsapi.VirtualInboundListener, tt.c); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	want := []string{
		// To the workload's own IP from 127.0.0.6, which iptables lets
		// through instead of sending it back to 15006.
		"inbound|7070|| STATIC 127.0.0.11:7071 productpage.default bind=127.0.0.6",
		"inbound|7080|| ORIGINAL_DST productpage.default bind=127.0.0.6",
		"inbound|9080|| STATIC 127.0.0.1:8080 productpage.default.svc.cluster.local",
	}
	if diff := cmp.Diff(want, inboundClusterSummary(r)); diff != "" {
		t.Errorf("inbound clusters (-want +got):\n%s", diff)
	}
	// The TCP port's chains proxy TCP; the HTTP ports' chains all run an
	// HTTP connection manager.
	vi := findListener(r, xdsapi.VirtualInboundListener)
	for _, fc := range vi.GetFilterChains() {
		last := fc.GetFilters()[len(fc.GetFilters())-1].GetName()
		switch fc.GetName() {
		case "0.0.0.0_7070":
			if last != tcpProxyFilter {
				t.Errorf("chain %s ends with %s, want tcp_proxy", fc.GetName(), last)
			}
		case "0.0.0.0_9080", "0.0.0.0_7080":
			if last != httpConnectionManagerFilter {
				t.Errorf("chain %s ends with %s, want the HTTP connection manager", fc.GetName(), last)
			}
		case "0.0.0.0_9090":
			t.Errorf("virtualInbound has chain %s for the unlisted service port", fc.GetName())
		}
	}
}

// TestSidecarIngressExplicit: in explicit mode the inbound table's
// virtual hosts and the inbound clusters come from the ingress
// listeners, and each listener port whose app is elsewhere gets Istio's
// bound inbound listener on PROXY_IP:PORT (the TCP port no service has
// included); the unlisted service port 9090 gets nothing.
func TestSidecarIngressExplicit(t *testing.T) {
	pc := sidecarIngressInput(t)
	r := mustGenerate(t, pc, productpageSidecar())

	want := []string{
		"inbound|7070|| STATIC 127.0.0.11:7071 productpage.default",
		"inbound|7080|| STATIC 127.0.0.11:7080 productpage.default",
		"inbound|9080|| STATIC 127.0.0.11:8080 productpage.default.svc.cluster.local",
	}
	if diff := cmp.Diff(want, inboundClusterSummary(r)); diff != "" {
		t.Errorf("inbound clusters (-want +got):\n%s", diff)
	}

	var inbound []string
	for _, rc := range r.Routes {
		if rc.GetName() != xdsapi.InboundRoute {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			inbound = append(inbound, vh.GetName())
		}
		for _, tt := range []struct{ authority, want string }{
			{"productpage:9080", "inbound|9080||"},
			{"127.0.0.11:7080", "inbound|7080||"},
			{"pp-admin:9090", "inbound|7080||"}, // the catch-all: the lowest HTTP port
		} {
			if got := simulate(t, rc, request{authority: tt.authority, path: "/"}); got != tt.want {
				t.Errorf("inbound|http: %s routes to %s, want %s", tt.authority, got, tt.want)
			}
		}
	}
	if diff := cmp.Diff([]string{"inbound|http|*", "inbound|http|7080", "inbound|http|9080"}, inbound); diff != "" {
		t.Errorf("inbound|http virtual hosts (-want +got):\n%s", diff)
	}

	var bound []string
	for _, l := range r.Listeners {
		if l.GetTrafficDirection().String() == "INBOUND" && l.GetName() != xdsapi.VirtualInboundListener {
			bound = append(bound, l.GetName())
		}
	}
	if diff := cmp.Diff([]string{"127.0.0.11_7070", "127.0.0.11_9080"}, bound); diff != "" {
		t.Errorf("bound inbound listeners (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		listener string
		c        conn
		want     string
	}{
		{"127.0.0.11_7070", conn{dst: "127.0.0.11:7070"}, "127.0.0.11_7070/127.0.0.11_7070 -> inbound|7070||"},
		{"127.0.0.11_9080", conn{dst: "127.0.0.11:9080", http: "productpage:9080"}, "127.0.0.11_9080/127.0.0.11_9080 -> inbound|9080||"},
	} {
		if got := simulateConn(t, r, tt.listener, tt.c); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
	for _, l := range r.Listeners {
		if l.GetName() != xdsapi.VirtualInboundListener && slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool { return f.GetName() == originalDstListenerFilter }) {
			t.Errorf("listener %s has original_dst; nothing redirects to it", l.GetName())
		}
	}
}

// TestSidecarIngressAbsentKeepsServicePorts: without ingress listeners the
// workload's inbound side is its services' ports, 9090 included (the base
// the tests above differ from).
func TestSidecarIngressAbsentKeepsServicePorts(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "sidecar-ingress", "services.yaml"))
	want := []string{
		"inbound|9080|| STATIC 127.0.0.11:9080 productpage.default.svc.cluster.local",
		"inbound|9090|| STATIC 127.0.0.11:9090 pp-admin.default.svc.cluster.local",
	}
	if diff := cmp.Diff(want, inboundClusterSummary(mustGenerate(t, pc, productpageSidecar()))); diff != "" {
		t.Errorf("explicit inbound clusters (-want +got):\n%s", diff)
	}
	r := mustGenerate(t, pc, redirectSidecar(productpageSidecar()))
	if got, want := simulateConn(t, r, xdsapi.VirtualInboundListener, conn{dst: "127.0.0.11:9090", http: "pp-admin:9090"}),
		"virtualInbound/0.0.0.0_9090 -> inbound|9090||"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestIngressEndpoint: a defaultEndpoint's host resolved as Istio's
// buildInboundClustersFromSidecar, with explicit mode's local-mode reading
// of the loopback.
func TestIngressEndpoint(t *testing.T) {
	tests := []struct {
		ep       string
		explicit bool
		want     string
	}{
		{"127.0.0.1:8080", false, "127.0.0.1:8080"},
		{"127.0.0.1:8080", true, "10.0.0.5:8080"},
		{"[::1]:8080", false, "[::1]:8080"},
		{"0.0.0.0:8080", false, "10.0.0.5:8080"},
		{"[::]:8080", true, "10.0.0.5:8080"},
		{":8080", false, "10.0.0.5:8080"},
		{"", false, "invalid AddrPort"},
		{"unix:///var/run/app.sock", false, "invalid AddrPort"},
		{"10.1.1.1:8080", false, "invalid AddrPort"},
		{"127.0.0.1:0", false, "invalid AddrPort"},
	}
	for _, tt := range tests {
		if got := ingressEndpoint(tt.ep, "10.0.0.5", tt.explicit).String(); got != tt.want {
			t.Errorf("ingressEndpoint(%q, explicit %v) = %s, want %s", tt.ep, tt.explicit, got, tt.want)
		}
	}
}

// movedSidecar is the transparent-mode sidecar of
// testdata/sidecar-ingress-redirect's moved-v1, at a global unicast IP.
func movedSidecar() *model.Proxy {
	return &model.Proxy{
		Type:             model.SidecarProxy,
		ID:               "sidecar~10.78.0.31~moved-v1.default~default.svc.cluster.local",
		IP:               "10.78.0.31",
		Name:             "moved-v1",
		Namespace:        "default",
		Labels:           map[string]string{"app": "moved", "version": "v1"},
		ServiceAccount:   "moved",
		InterceptionMode: xdsapi.InterceptionRedirect,
	}
}

func sidecarIngressRedirectInput(t *testing.T) *model.PushContext {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	return loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), filepath.Join(dir, "sidecar.yaml"))
}

// chainHCM is the HTTP connection manager ending fc, nil when fc ends
// otherwise.
func chainHCM(t *testing.T, fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	t.Helper()
	f := fc.GetFilters()[len(fc.GetFilters())-1]
	if f.GetName() != httpConnectionManagerFilter {
		return nil
	}
	var h hcmv3.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
		t.Fatal(err)
	}
	return &h
}

// TestSidecarIngressRedirectNames: under REDIRECT, a Sidecar ingress
// listener's chains are named after its bind and port, as Istio's
// inboundChainConfig.Name with getSidecarInboundBindIPs (the proxy's
// global unicast IP), not after a service's wildcard "0.0.0.0_PORT"; the
// HTTP chain's stat prefix follows ("inbound_BIND_PORT") and its trace
// decorator names the SidecarScope ("moved.default:9080/*"), while the
// inbound cluster's istio.services metadata names the service whose
// target port it is (Istio's findOrCreateService). Service ports keep
// their "0.0.0.0_PORT" chains.
func TestSidecarIngressRedirectNames(t *testing.T) {
	r := mustGenerate(t, sidecarIngressRedirectInput(t), movedSidecar())
	for _, tt := range []struct {
		name string
		c    conn
		want string
	}{
		{"HTTP ingress port", conn{dst: "10.78.0.31:9080", http: "moved:9080"}, "virtualInbound/10.78.0.31_9080 -> inbound|9080||"},
		{"TCP ingress port", conn{dst: "10.78.0.31:9081"}, "virtualInbound/10.78.0.31_9081 -> inbound|9081||"},
	} {
		if got := simulateConn(t, r, xdsapi.VirtualInboundListener, tt.c); got != tt.want {
			t.Errorf("%s: got  %s\nwant %s", tt.name, got, tt.want)
		}
	}
	vi := findListener(r, xdsapi.VirtualInboundListener)
	i := slices.IndexFunc(vi.GetFilterChains(), func(fc *listenerv3.FilterChain) bool {
		return fc.GetName() == "10.78.0.31_9080" && chainHCM(t, fc) != nil
	})
	if i < 0 {
		t.Fatal("virtualInbound has no HTTP chain 10.78.0.31_9080")
	}
	h := chainHCM(t, vi.GetFilterChains()[i])
	if got, want := h.GetStatPrefix(), "inbound_10.78.0.31_9080"; got != want {
		t.Errorf("chain 10.78.0.31_9080 stat_prefix = %q, want %q", got, want)
	}
	if got, want := h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetDecorator().GetOperation(), "moved.default:9080/*"; got != want {
		t.Errorf("chain 10.78.0.31_9080 decorator = %q, want Istio's SidecarScope name %q", got, want)
	}
	want := []string{
		"inbound|9080|| STATIC 127.0.0.1:8080 moved.default.svc.cluster.local",
		// The pod IP from 127.0.0.6: iptables would otherwise send the
		// proxy's own connection back to 15006.
		"inbound|9081|| STATIC 10.78.0.31:8081 moved.default bind=127.0.0.6",
		"inbound|9082|| STATIC 127.0.0.1:8082 moved.default",
	}
	if diff := cmp.Diff(want, inboundClusterSummary(r)); diff != "" {
		t.Errorf("inbound clusters (-want +got):\n%s", diff)
	}

	// Without the Sidecar, the service's ports are wildcard chains.
	base := loadPushContext(t, meshFile, filepath.Join("testdata", "sidecar-ingress-redirect", "services.yaml"))
	if got, want := simulateConn(t, mustGenerate(t, base, movedSidecar()), xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9080", http: "moved:9080"}),
		"virtualInbound/0.0.0.0_9080 -> inbound|9080||"; got != want {
		t.Errorf("without the Sidecar: got  %s\nwant %s", got, want)
	}
}

// TestSidecarIngressRedirectCaptureNone: under REDIRECT, an ingress
// listener of captureMode NONE is not captured (Istio's getBindToPort): it
// gets a listener of its own bound to POD_IP:PORT, named so, with the
// port's chains and no original_dst, and no chain in virtualInbound (a
// connection redirected there takes the passthrough chains, whose
// InboundPassthroughCluster reaches the bound listener from 127.0.0.6).
// DEFAULT and IPTABLES ports stay virtualInbound chains with nothing bound.
func TestSidecarIngressRedirectCaptureNone(t *testing.T) {
	r := mustGenerate(t, sidecarIngressRedirectInput(t), movedSidecar())
	var bound []string
	for _, l := range r.Listeners {
		if l.GetTrafficDirection().String() == "INBOUND" && l.GetName() != xdsapi.VirtualInboundListener {
			bound = append(bound, l.GetName())
		}
	}
	if diff := cmp.Diff([]string{"10.78.0.31_9082"}, bound); diff != "" {
		t.Fatalf("bound inbound listeners (-want +got):\n%s", diff)
	}
	l := findListener(r, "10.78.0.31_9082")
	if sa := l.GetAddress().GetSocketAddress(); sa.GetAddress() != "10.78.0.31" || sa.GetPortValue() != 9082 {
		t.Errorf("listener 10.78.0.31_9082 address = %s:%d, want 10.78.0.31:9082", sa.GetAddress(), sa.GetPortValue())
	}
	if l.GetBindToPort() != nil && !l.GetBindToPort().GetValue() {
		t.Error("listener 10.78.0.31_9082 has bind_to_port false")
	}
	if slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool { return f.GetName() == originalDstListenerFilter }) {
		t.Error("listener 10.78.0.31_9082 has original_dst; nothing redirects to it")
	}
	for _, tt := range []struct {
		entry string
		c     conn
		want  string
	}{
		{"10.78.0.31_9082", conn{dst: "10.78.0.31:9082", http: "moved:9082"}, "10.78.0.31_9082/10.78.0.31_9082 -> inbound|9082||"},
		{xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9082", http: "moved:9082"}, "virtualInbound/virtualInbound-catchall-http -> InboundPassthroughCluster"},
		{xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9090", http: "moved:9090"}, "virtualInbound/virtualInbound-catchall-http -> InboundPassthroughCluster"},
	} {
		if got := simulateConn(t, r, tt.entry, tt.c); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

// TestIngressBindToPort: Istio's getBindToPort per captureMode and
// interception, and which bound configs get a listener (isBound): none
// without a defaultEndpoint (its cluster would be the listener itself or
// the app's own socket) or with one that is the socket the listener would
// take.
func TestIngressBindToPort(t *testing.T) {
	for _, tt := range []struct {
		mode     networking.CaptureMode
		explicit bool
		want     bool
	}{
		{networking.CaptureMode_DEFAULT, true, true},
		{networking.CaptureMode_DEFAULT, false, false},
		{networking.CaptureMode_IPTABLES, true, false},
		{networking.CaptureMode_IPTABLES, false, false},
		{networking.CaptureMode_NONE, true, true},
		{networking.CaptureMode_NONE, false, true},
	} {
		if got := bindToPort(tt.mode, tt.explicit); got != tt.want {
			t.Errorf("bindToPort(%s, explicit %v) = %v, want %v", tt.mode, tt.explicit, got, tt.want)
		}
	}
	for _, tt := range []struct {
		bind, endpoint string
		want           bool
	}{
		{"10.0.0.5", "127.0.0.1:8080", true},
		{"10.0.0.5", "127.0.0.1:9080", true},
		{"10.0.0.5", "10.0.0.5:8080", true},
		{"10.0.0.5", "10.0.0.5:9080", false},
		{"0.0.0.0", "127.0.0.1:9080", false},
		{"0.0.0.0", "127.0.0.1:8080", true},
		{"10.0.0.5", "", false},
	} {
		cc := inboundChainConfig{targetPort: 9080, bind: tt.bind, bindToPort: true}
		if tt.endpoint != "" {
			cc.endpoint = netip.MustParseAddrPort(tt.endpoint)
		}
		if got := cc.isBound("10.0.0.5"); got != tt.want {
			t.Errorf("bind %s endpoint %q: isBound = %v, want %v", tt.bind, tt.endpoint, got, tt.want)
		}
		cc.bindToPort = false
		if cc.isBound("10.0.0.5") {
			t.Errorf("bind %s endpoint %q: bound without bindToPort", tt.bind, tt.endpoint)
		}
	}
}
