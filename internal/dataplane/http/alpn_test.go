package http_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	alpnpb "istio.io/api/envoy/config/filter/http/alpn/v2alpha1"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/listener"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// withALPNFilter puts istiod's istio.alpn filter before l's router.
func withALPNFilter(t testing.TB, l *listenerv3.Listener) *listenerv3.Listener {
	t.Helper()
	f := l.FilterChains[0].Filters[0]
	var hcm hcmv3.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	alpn := &alpnpb.FilterConfig{AlpnOverride: []*alpnpb.FilterConfig_AlpnOverride{
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP10, AlpnOverride: []string{"istio-http/1.0"}},
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP11, AlpnOverride: []string{"istio-http/1.1"}},
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP2, AlpnOverride: []string{"istio-h2"}},
	}}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: config.ALPNFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, alpn)}}}, hcm.HttpFilters...)
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
	return l
}

// startALPNBackend is an mTLS HTTP/1.1 backend that answers with the
// ALPN protocols the client offered (negotiating none, as a sidecar's
// HTTP chain does with istio-http/*); it counts its connections.
func startALPNBackend(t testing.TB, m *mesh) (addr string, conns *atomic.Int64) {
	t.Helper()
	conns = &atomic.Int64{}
	var offered sync.Map // remote address -> []string
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := offered.Load(r.RemoteAddr)
		fmt.Fprintf(w, "alpn=%s", strings.Join(v.([]string), ","))
	}))
	leaf := m.ca.Issue(t, testutil.LeafOptions{DNS: []string{"reviews.test"}, URIs: []string{backendSPIFFE}})
	s.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: m.ca.Pool,
		NextProtos: []string{}, // negotiate none
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			offered.Store(chi.Conn.RemoteAddr().String(), chi.SupportedProtos)
			return nil, nil
		}}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String(), conns
}

// TestALPNFilter: a request through an HCM with istio.alpn goes over an
// ISTIO_MUTUAL connection offering istio-http/1.1 instead of the cluster's ALPN, in pools of its own; the same cluster
// from an HCM without the filter, and a cluster whose metadata says
// istio.alpn_override "false", keep the cluster's.
func TestALPNFilter(t *testing.T) {
	m := newMesh(t)
	be, conns := startALPNBackend(t, m)
	mtls := staticCluster(t, "reviews", false, be)
	mtls.TransportSocket = istioMutual(t, backendSPIFFE, "istio-peer-exchange", "istio")
	optOut := staticCluster(t, "simple", false, be)
	optOut.TransportSocket = istioMutual(t, backendSPIFFE, "istio-peer-exchange", "istio")
	optOut.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
		"alpn_override": structpb.NewStringValue("false")}}}}
	rt := routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("opt-out", "/simple", "simple"), prefixRoute("r", "/", "reviews")))
	g := build(t, nil, []*listenerv3.Listener{withALPNFilter(t, httpListener(t, "l", closedAddr(t), "rt")), httpListener(t, "plain", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{rt}, []*clusterv3.Cluster{mtls, optOut})
	p := startProxyWith(t, g, 0, m.store)
	get := func(listener, path string, http10 bool) string {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+p.addr(listener)+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if http10 {
			// net/http's client speaks HTTP/1.1 only: send 1.0 by hand.
			c, err := net.Dial("tcp", p.addr(listener))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: reviews\r\n\r\n", path)
			b, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			resp := string(b)
			return resp[strings.LastIndex(resp, "alpn="):]
		}
		req.Host = "reviews"
		resp, err := p.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %q", listener, path, resp.StatusCode, b)
		}
		return string(b)
	}
	for range 3 {
		if got := get("l", "/", false); got != "alpn=istio-http/1.1" {
			t.Errorf("with istio.alpn: %q, want alpn=istio-http/1.1", got)
		}
		if got := get("plain", "/", false); got != "alpn=istio-peer-exchange,istio" {
			t.Errorf("without istio.alpn: %q, want alpn=istio-peer-exchange,istio", got)
		}
		if got := get("l", "/simple", false); got != "alpn=istio-peer-exchange,istio" {
			t.Errorf("alpn_override false: %q, want alpn=istio-peer-exchange,istio", got)
		}
	}
	// One keep-alive connection per (cluster, ALPN): reviews with and
	// without the override, simple without.
	if n := conns.Load(); n != 3 {
		t.Errorf("9 requests took %d upstream connections, want 3 (one pool per ALPN)", n)
	}
	// Envoy's upstreamHttpProtocol: HTTP/1.0 only for a cluster that
	// follows the downstream's protocol; this one speaks HTTP/1.1.
	if got := get("l", "/", true); got != "alpn=istio-http/1.1" {
		t.Errorf("HTTP/1.0 to an HTTP/1.1 cluster with istio.alpn: %q, want alpn=istio-http/1.1", got)
	}
}

// startSidecarInbound is a Loom listener shaped as an Istio sidecar's
// mTLS inbound port: tls_inspector, then chains by the client's ALPN:
// "istio-h2" and "istio-http" (Istio's mtlsHTTPALPNs split in two, to see
// which one the client offered) and "other-tls" for any other; each
// terminates mTLS with the server ALPN Istio sets (h2, http/1.1) and
// answers "<chain> <proto> tls=<r.TLS set> principal=<peer>". conns
// counts the connections each chain served requests on.
func startSidecarInbound(t testing.TB, m *mesh) (addr string, conns func(chain string) int) {
	t.Helper()
	addr = closedAddr(t)
	var mu sync.Mutex
	seen := map[string]map[string]bool{} // chain -> client addresses
	conns = func(chain string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen[chain])
	}
	up, err := listener.New(listener.Options{Secrets: m.store,
		Handler: func(_ *config.Listener, fc *config.FilterChain) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				if seen[fc.Name] == nil {
					seen[fc.Name] = map[string]bool{}
				}
				seen[fc.Name][r.RemoteAddr] = true
				mu.Unlock()
				fmt.Fprintf(w, "%s %s tls=%v principal=%s", fc.Name, r.Proto, r.TLS != nil, filter.RequestConnection(r).PeerPrincipal())
			})
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Shutdown(t.Context()) })
	serverTLS := xdstest.TLSSocket(t, &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"h2", "http/1.1"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA)}}})
	chain := func(name string, alpn ...string) *listenerv3.FilterChain {
		fc := httpListener(t, "x", addr, "r").FilterChains[0]
		fc.Name = name
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls", ApplicationProtocols: alpn}
		fc.TransportSocket = serverTLS
		return fc
	}
	l := &listenerv3.Listener{Name: "inbound", Address: xdstest.HostPortAddress(t, addr),
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: config.TLSInspectorName}},
		FilterChains: []*listenerv3.FilterChain{chain("istio-h2", "istio-h2"), chain("istio-http", "istio-http/1.0", "istio-http/1.1"),
			chain("other-tls")}}
	if err := up.Update(build(t, nil, []*listenerv3.Listener{l}, nil, nil)); err != nil {
		t.Fatal(err)
	}
	return addr, conns
}

// TestALPNFilterHTTP2: through an HCM with istio.alpn, a request to an
// HTTP/2 ISTIO_MUTUAL cluster goes over a connection offering istio-h2
// (not the cluster's istio-peer-exchange, istio, h2), which a sidecar's
// inbound matches on its HTTP chain and serves as HTTP/2 though ALPN
// negotiated nothing; so does an HTTP/2 request to a cluster following the
// downstream's protocol (a port of unknown protocol), whose ALPN has no
// h2. A cluster with istio.alpn_override "false" keeps its ALPN (h2).
func TestALPNFilterHTTP2(t *testing.T) {
	m := newMesh(t)
	in, conns := startSidecarInbound(t, m)
	h2 := staticCluster(t, "grpc", true, in)
	h2.TransportSocket = istioMutual(t, proxySPIFFE, "istio-peer-exchange", "istio", "h2")
	optOut := staticCluster(t, "simple", true, in)
	optOut.TransportSocket = istioMutual(t, proxySPIFFE, "istio-peer-exchange", "istio", "h2")
	optOut.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
		"alpn_override": structpb.NewStringValue("false")}}}}
	sniffed := staticCluster(t, "sniffed", false, in)
	sniffed.TransportSocket = istioMutual(t, proxySPIFFE, "istio-peer-exchange", "istio")
	sniffed.TypedExtensionProtocolOptions = map[string]*anypb.Any{config.HTTPProtocolOptionsKey: xdstest.MustAny(t, &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}})}
	rt := routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("opt-out", "/simple", "simple"),
		prefixRoute("sniffed", "/sniffed", "sniffed"), prefixRoute("grpc", "/", "grpc")))
	p := startProxyWith(t, build(t, nil, []*listenerv3.Listener{withALPNFilter(t, httpListener(t, "l", closedAddr(t), "rt"))},
		[]*routev3.RouteConfiguration{rt}, []*clusterv3.Cluster{h2, optOut, sniffed}), 0, m.store)
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2c.CloseIdleConnections)
	get := func(c *http.Client, path string) string {
		t.Helper()
		resp, err := c.Get("http://" + p.addr("l") + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, b)
		}
		return string(b)
	}
	const over = " tls=true principal=" + proxySPIFFE
	for range 3 {
		if got, want := get(p.client, "/"), "istio-h2 HTTP/2.0"+over; got != want {
			t.Errorf("HTTP/2 cluster with istio.alpn: %q, want %q", got, want)
		}
		if got, want := get(p.client, "/simple"), "other-tls HTTP/2.0"+over; got != want {
			t.Errorf("HTTP/2 cluster with alpn_override false: %q, want %q", got, want)
		}
		if got, want := get(&http.Client{Transport: h2c}, "/sniffed"), "istio-h2 HTTP/2.0"+over; got != want {
			t.Errorf("HTTP/2 downstream, cluster following it: %q, want %q", got, want)
		}
		if got, want := get(p.client, "/sniffed"), "istio-http HTTP/1.1"+over; got != want {
			t.Errorf("HTTP/1.1 downstream, cluster following it: %q, want %q", got, want)
		}
	}
	// The istio-h2 connections are pooled: one per cluster.
	if n := conns("istio-h2"); n != 2 {
		t.Errorf("6 HTTP/2 requests to 2 clusters came over %d connections, want 2", n)
	}
}
