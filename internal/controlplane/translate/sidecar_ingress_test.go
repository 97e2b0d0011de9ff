package translate

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/google/go-cmp/cmp"

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
		{"127.0.0.11_7070", conn{dst: "127.0.0.11:7070"}, "127.0.0.11_7070/0.0.0.0_7070 -> inbound|7070||"},
		{"127.0.0.11_9080", conn{dst: "127.0.0.11:9080", http: "productpage:9080"}, "127.0.0.11_9080/0.0.0.0_9080 -> inbound|9080||"},
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
