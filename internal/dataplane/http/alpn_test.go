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
	"google.golang.org/protobuf/types/known/structpb"
	alpnpb "istio.io/api/envoy/config/filter/http/alpn/v2alpha1"

	"github.com/loom-mesh/loom/internal/dataplane/config"
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
