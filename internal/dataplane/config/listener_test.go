package config

import (
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// tcpChain is a filter chain named name with match m whose terminal filter
// is a tcp_proxy to cluster "c".
func tcpChain(t testing.TB, name string, m *listenerv3.FilterChainMatch) *listenerv3.FilterChain {
	tp := &tcpv3.TcpProxy{StatPrefix: "tcp_" + name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}}
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: m, Filters: []*listenerv3.Filter{{
		Name: TCPProxyFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, tp)}}}}
}

func cidr(p string, bits uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: p, PrefixLen: wrapperspb.UInt32(bits)}
}

// buildOneListener builds l alone and returns its runtime form.
func buildOneListener(t *testing.T, l *listenerv3.Listener) (*Listener, error) {
	t.Helper()
	g, err := Build(Resources{Listeners: []proto.Message{l}}, nil)
	if err != nil {
		return nil, err
	}
	return g.Listeners[l.GetName()], nil
}

func in(dst, src string, sni, transport string, alpn ...string) *MatchInput {
	if transport == "" {
		transport = TransportRawBuffer
	}
	return &MatchInput{Destination: netip.MustParseAddrPort(dst), Source: netip.MustParseAddrPort(src),
		ServerName: sni, TransportProtocol: transport, ApplicationProtocols: alpn}
}

// TestFilterChainSelection follows the examples of Envoy's
// FilterChainMatch documentation: the criteria in their order, the most
// specific match at each step, no fallback to a less specific chain once a
// step chose, and default_filter_chain when none is left.
func TestFilterChainSelection(t *testing.T) {
	type tc struct {
		in   *MatchInput
		want string // chain name; "" for none
	}
	tests := []struct {
		name   string
		chains []*listenerv3.FilterChain
		def    bool // add a default chain named "default"
		cases  []tc
	}{
		{"destination port", []*listenerv3.FilterChain{
			tcpChain(t, "p80", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80)}),
			tcpChain(t, "any", nil),
		}, false, []tc{
			{in("10.0.0.1:80", "10.0.0.9:5000", "", ""), "p80"},
			{in("10.0.0.1:81", "10.0.0.9:5000", "", ""), "any"},
		}},
		{"a step that chose is not undone by a later one", []*listenerv3.FilterChain{
			tcpChain(t, "p80-x", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80), ServerNames: []string{"x.com"}}),
			tcpChain(t, "y", &listenerv3.FilterChainMatch{ServerNames: []string{"y.com"}}),
		}, true, []tc{
			{in("10.0.0.1:80", "10.0.0.9:5000", "x.com", TransportTLS), "p80-x"},
			{in("10.0.0.1:80", "10.0.0.9:5000", "y.com", TransportTLS), "default"},
			{in("10.0.0.1:81", "10.0.0.9:5000", "y.com", TransportTLS), "y"},
		}},
		{"longest destination prefix", []*listenerv3.FilterChain{
			tcpChain(t, "wide", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0", 8)}}),
			tcpChain(t, "narrow", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.1.0.0", 16), cidr("192.168.1.1", 32)}}),
			tcpChain(t, "none", nil),
		}, false, []tc{
			{in("10.1.2.3:80", "1.1.1.1:5000", "", ""), "narrow"},
			{in("10.2.0.1:80", "1.1.1.1:5000", "", ""), "wide"},
			{in("192.168.1.1:80", "1.1.1.1:5000", "", ""), "narrow"},
			{in("172.16.0.1:80", "1.1.1.1:5000", "", ""), "none"},
			{in("[::ffff:10.1.0.1]:80", "1.1.1.1:5000", "", ""), "narrow"},
		}},
		{"server names: exact, then the longest wildcard, then none", []*listenerv3.FilterChain{
			tcpChain(t, "exact", &listenerv3.FilterChainMatch{ServerNames: []string{"www.example.com"}}),
			tcpChain(t, "wild", &listenerv3.FilterChainMatch{ServerNames: []string{"*.example.com"}}),
			tcpChain(t, "wildcom", &listenerv3.FilterChainMatch{ServerNames: []string{"*.com"}}),
			tcpChain(t, "none", nil),
		}, false, []tc{
			{in("10.0.0.1:443", "1.1.1.1:5000", "www.example.com", TransportTLS), "exact"},
			{in("10.0.0.1:443", "1.1.1.1:5000", "WWW.Example.com", TransportTLS), "exact"},
			{in("10.0.0.1:443", "1.1.1.1:5000", "api.example.com", TransportTLS), "wild"},
			{in("10.0.0.1:443", "1.1.1.1:5000", "a.b.example.com", TransportTLS), "wild"},
			{in("10.0.0.1:443", "1.1.1.1:5000", "example.com", TransportTLS), "wildcom"},
			{in("10.0.0.1:443", "1.1.1.1:5000", "example.org", TransportTLS), "none"},
			{in("10.0.0.1:443", "1.1.1.1:5000", "", TransportTLS), "none"},
		}},
		{"transport protocol", []*listenerv3.FilterChain{
			tcpChain(t, "tls", &listenerv3.FilterChainMatch{TransportProtocol: "tls"}),
			tcpChain(t, "any", nil),
		}, false, []tc{
			{in("10.0.0.1:80", "1.1.1.1:5000", "", TransportTLS), "tls"},
			{in("10.0.0.1:80", "1.1.1.1:5000", "", TransportRawBuffer), "any"},
		}},
		{"application protocols in the client's order", []*listenerv3.FilterChain{
			tcpChain(t, "h2", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"h2"}}),
			tcpChain(t, "h11", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1", "http/1.0"}}),
			tcpChain(t, "none", nil),
		}, false, []tc{
			{in("10.0.0.1:80", "1.1.1.1:5000", "", TransportTLS, "h2", "http/1.1"), "h2"},
			{in("10.0.0.1:80", "1.1.1.1:5000", "", TransportTLS, "http/1.1", "h2"), "h11"},
			{in("10.0.0.1:80", "1.1.1.1:5000", "", TransportTLS, "grpc-exp"), "none"},
			{in("10.0.0.1:80", "1.1.1.1:5000", "", TransportRawBuffer), "none"},
		}},
		{"source type", []*listenerv3.FilterChain{
			tcpChain(t, "local", &listenerv3.FilterChainMatch{SourceType: listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK}),
			tcpChain(t, "external", &listenerv3.FilterChainMatch{SourceType: listenerv3.FilterChainMatch_EXTERNAL}),
		}, false, []tc{
			{in("10.0.0.2:80", "127.0.0.1:5000", "", ""), "local"},
			{in("10.0.0.2:80", "10.0.0.2:5000", "", ""), "local"},
			{in("10.0.0.2:80", "10.0.0.3:5000", "", ""), "external"},
		}},
		{"source prefix before source port", []*listenerv3.FilterChain{
			tcpChain(t, "src", &listenerv3.FilterChainMatch{SourcePrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0", 8)}}),
			tcpChain(t, "srcport", &listenerv3.FilterChainMatch{SourcePorts: []uint32{5000}}),
			tcpChain(t, "none", nil),
		}, false, []tc{
			{in("1.1.1.1:80", "10.1.1.1:5000", "", ""), "src"},
			{in("1.1.1.1:80", "11.0.0.1:5000", "", ""), "srcport"},
			{in("1.1.1.1:80", "11.0.0.1:6000", "", ""), "none"},
		}},
		{"direct source before source type", []*listenerv3.FilterChain{
			tcpChain(t, "direct", &listenerv3.FilterChainMatch{DirectSourcePrefixRanges: []*corev3.CidrRange{cidr("127.0.0.0", 8)}}),
			tcpChain(t, "local", &listenerv3.FilterChainMatch{SourceType: listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK}),
		}, false, []tc{
			{in("127.0.0.1:80", "127.0.0.5:5000", "", ""), "direct"},
			{in("10.0.0.1:80", "10.0.0.1:5000", "", ""), "local"},
		}},
		// Istio's virtualInbound for a PERMISSIVE port: mTLS HTTP, mTLS
		// TCP, plaintext HTTP (http_inspector), plaintext TCP.
		{"istio permissive inbound", []*listenerv3.FilterChain{
			tcpChain(t, "mtls-http", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "tls",
				ApplicationProtocols: []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}}),
			tcpChain(t, "mtls-tcp", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "tls"}),
			tcpChain(t, "plain-http", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "raw_buffer",
				ApplicationProtocols: []string{"http/1.1", "h2c"}}),
			tcpChain(t, "plain-tcp", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "raw_buffer"}),
		}, true, []tc{
			{in("10.0.0.1:9080", "10.0.0.2:5000", "outbound_.9080_._.reviews", TransportTLS, "istio-peer-exchange", "istio-http/1.1"), "mtls-http"},
			{in("10.0.0.1:9080", "10.0.0.2:5000", "", TransportTLS, "istio-peer-exchange", "istio"), "mtls-tcp"},
			{in("10.0.0.1:9080", "10.0.0.2:5000", "", TransportRawBuffer, "h2c"), "plain-http"},
			{in("10.0.0.1:9080", "10.0.0.2:5000", "", TransportRawBuffer), "plain-tcp"},
			{in("10.0.0.1:9090", "10.0.0.2:5000", "", TransportRawBuffer), "default"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &listenerv3.Listener{Name: "l", Address: xdstest.SocketAddress("0.0.0.0", 15006), FilterChains: tt.chains}
			if tt.def {
				l.DefaultFilterChain = tcpChain(t, "default", nil)
			}
			rl, err := buildOneListener(t, l)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tt.cases {
				got := ""
				if fc := rl.Select(c.in); fc != nil {
					got = fc.Name
				}
				if got != c.want {
					t.Errorf("Select(dst %s, src %s, sni %q, %s, alpn %v) = %q, want %q",
						c.in.Destination, c.in.Source, c.in.ServerName, c.in.TransportProtocol, c.in.ApplicationProtocols, got, c.want)
				}
			}
		})
	}
}

func TestBuildListenerShape(t *testing.T) {
	l := &listenerv3.Listener{
		Name: "virtualInbound", Address: xdstest.SocketAddress("0.0.0.0", 15006), TrafficDirection: corev3.TrafficDirection_INBOUND,
		UseOriginalDst: wrapperspb.Bool(true), ListenerFiltersTimeout: durationpb.New(0), ContinueOnListenerFiltersTimeout: true,
		ListenerFilters: []*listenerv3.ListenerFilter{
			{Name: OriginalDstName},
			{Name: TLSInspectorName, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &tlsinspv3.TlsInspector{})}},
			{Name: HTTPInspectorName, FilterDisabled: &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_OrMatch{
				OrMatch: &listenerv3.ListenerFilterChainMatchPredicate_MatchSet{Rules: []*listenerv3.ListenerFilterChainMatchPredicate{
					{Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 3306, End: 3307}}},
					{Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 15006, End: 15007}}},
				}}}}},
		},
		FilterChains:       []*listenerv3.FilterChain{tcpChain(t, "a", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080)}), tcpChain(t, "", nil)},
		DefaultFilterChain: tcpChain(t, "", nil),
	}
	rl, err := buildOneListener(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if !rl.UseOriginalDst || !rl.BindToPort || rl.ListenerFiltersTimeout != 0 || !rl.ContinueOnListenerFiltersTimeout {
		t.Errorf("listener = %+v", rl)
	}
	var kinds []ListenerFilterKind
	for _, f := range rl.ListenerFilters {
		kinds = append(kinds, f.Kind)
	}
	if diff := cmp.Diff([]ListenerFilterKind{OriginalDst, TLSInspector, HTTPInspector}, kinds); diff != "" {
		t.Errorf("listener filters (-want +got):\n%s", diff)
	}
	d := rl.ListenerFilters[2].Disabled
	if d == nil || !d.Matches(3306) || !d.Matches(15006) || d.Matches(9080) {
		t.Errorf("http_inspector filter_disabled = %+v: want ports 3306 and 15006 only", d)
	}
	if k := rl.FilterChains[0].Key; k != "a" {
		t.Errorf("named chain key = %q, want its name", k)
	}
	if k := rl.FilterChains[1].Key; !strings.HasPrefix(k, "#") {
		t.Errorf("unnamed chain key = %q, want #digest", k)
	}
	if k := rl.DefaultFilterChain.Key; k != "#default" {
		t.Errorf("default chain key = %q", k)
	}
	if rl.Chain("a") != rl.FilterChains[0] || rl.Chain("#default") != rl.DefaultFilterChain || rl.Chain("b") != nil {
		t.Error("Chain does not find chains by key")
	}
	// The same chain in another generation has the same key and hash; a
	// changed one a new hash.
	rl2, err := buildOneListener(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if rl2.FilterChains[0].Hash != rl.FilterChains[0].Hash || rl2.FilterChains[1].Key != rl.FilterChains[1].Key {
		t.Error("an unchanged chain changed key or hash across builds")
	}
	tp := &tcpv3.TcpProxy{StatPrefix: "other", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}}
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, tp)}
	rl3, err := buildOneListener(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if rl3.FilterChains[0].Key != "a" || rl3.FilterChains[0].Hash == rl.FilterChains[0].Hash {
		t.Error("a changed chain kept its hash")
	}
}

func TestHandOffTarget(t *testing.T) {
	res := Resources{Listeners: []proto.Message{
		&listenerv3.Listener{Name: "exact", Address: xdstest.SocketAddress("10.0.0.5", 9080), BindToPort: wrapperspb.Bool(false),
			FilterChains: []*listenerv3.FilterChain{tcpChain(t, "x", nil)}},
		&listenerv3.Listener{Name: "0.0.0.0_9080", Address: xdstest.SocketAddress("0.0.0.0", 9080), BindToPort: wrapperspb.Bool(false),
			FilterChains: []*listenerv3.FilterChain{tcpChain(t, "x", nil)}},
		&listenerv3.Listener{Name: "[::]_9090", Address: xdstest.SocketAddress("::", 9090), BindToPort: wrapperspb.Bool(false),
			FilterChains: []*listenerv3.FilterChain{tcpChain(t, "x", nil)}},
	}}
	g, err := Build(res, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ dst, want string }{
		{"10.0.0.5:9080", "exact"},
		{"10.0.0.6:9080", "0.0.0.0_9080"},
		{"[fd00::1]:9090", "[::]_9090"},
		{"10.0.0.6:9090", ""},
		{"10.0.0.6:9081", ""},
	} {
		got := ""
		if l := g.HandOffTarget(netip.MustParseAddrPort(tt.dst)); l != nil {
			got = l.Name
		}
		if got != tt.want {
			t.Errorf("HandOffTarget(%s) = %q, want %q", tt.dst, got, tt.want)
		}
	}
	if g.Listeners["exact"].BindToPort {
		t.Error("bind_to_port false was not read")
	}
}
