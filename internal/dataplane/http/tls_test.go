package http_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	mxpb "istio.io/api/envoy/config/filter/network/metadata_exchange"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	dphttp "github.com/loom-mesh/loom/internal/dataplane/http"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/listener"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/testutil/promtest"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const (
	proxySPIFFE   = "spiffe://cluster.local/ns/default/sa/productpage"
	backendSPIFFE = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
)

// mesh is a CA and the proxy's secret store holding "default" (the
// proxy's certificate, proxySPIFFE) and "ROOTCA".
type mesh struct {
	ca    *testutil.CA
	store *secret.Store
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	m := &mesh{ca: testutil.NewCA(t, "mesh root"), store: secret.NewStore()}
	own := m.ca.Issue(t, testutil.LeafOptions{DNS: []string{"proxy.test"}, URIs: []string{proxySPIFFE}})
	s, err := secret.ParseCertificate(secret.WorkloadCertificate, own.CertPEM, own.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	m.store.Set(s)
	roots, err := secret.ParseRoots(secret.RootCA, m.ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	m.store.Set(roots)
	return m
}

// tlsBackend is an HTTPS upstream with a certificate for backendSPIFFE
// that requires a client certificate of the mesh when mtls, and answers
// "<client principal> <proto>". It counts its TLS connections.
type tlsBackend struct {
	addr  string
	conns atomic.Int64
}

func startTLSBackend(t testing.TB, m *mesh, mtls, h2 bool) *tlsBackend {
	t.Helper()
	return startTLSBackendWith(t, m, mtls, h2, func(w http.ResponseWriter, r *http.Request) {
		peer := "-"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
			peer = r.TLS.PeerCertificates[0].URIs[0].String()
		}
		fmt.Fprintf(w, "%s %s tls=%v", peer, r.Proto, r.TLS != nil)
	})
}

// startTLSBackendFunc is an mTLS HTTP/1.1 backend answering with h.
func startTLSBackendFunc(t testing.TB, m *mesh, h http.HandlerFunc) *tlsBackend {
	t.Helper()
	return startTLSBackendWith(t, m, true, false, h)
}

func startTLSBackendWith(t testing.TB, m *mesh, mtls, h2 bool, h http.HandlerFunc) *tlsBackend {
	t.Helper()
	b := &tlsBackend{}
	s := httptest.NewUnstartedServer(h)
	leaf := m.ca.Issue(t, testutil.LeafOptions{DNS: []string{"reviews.test"}, URIs: []string{backendSPIFFE}})
	s.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	if mtls {
		s.TLS.ClientAuth, s.TLS.ClientCAs = tls.RequireAndVerifyClientCert, m.ca.Pool
	}
	s.EnableHTTP2 = h2
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			b.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	b.addr = s.Listener.Addr().String()
	return b
}

// istioMutual is the UpstreamTlsContext of Istio's ISTIO_MUTUAL to a
// service whose identity is san.
func istioMutual(t testing.TB, san string, alpn ...string) *corev3.TransportSocket {
	return xdstest.TLSSocket(t, &tlsv3.UpstreamTlsContext{
		Sni: "outbound_.9080_._.reviews.default.svc.cluster.local",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}}}},
				ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA),
			}},
		},
	})
}

func tlsMode(v string) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{config.TransportSocketMatchKey: {
		Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(v)}}}}
}

// autoMTLS is Istio's auto mTLS: tlsMode-istio endpoints get transport,
// the others plaintext.
func autoMTLS(t testing.TB, c *clusterv3.Cluster, transport *corev3.TransportSocket) *clusterv3.Cluster {
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{Name: "tlsMode-istio", Match: &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}}, TransportSocket: transport},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer"}},
	}
	return c
}

// buildOne builds oneRoute's resources.
func buildOne(t testing.TB, lAddr string, c *clusterv3.Cluster) *config.Generation {
	ls, rcs, cs := oneRoute(t, lAddr, c)
	return build(t, nil, ls, rcs, cs)
}

func oneRoute(t testing.TB, lAddr string, c *clusterv3.Cluster) ([]*listenerv3.Listener, []*routev3.RouteConfiguration, []*clusterv3.Cluster) {
	return []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", c.GetName())))},
		[]*clusterv3.Cluster{c}
}

// TestUpstreamMTLS: ISTIO_MUTUAL to an upstream that verifies the client
// certificate; keep-alive connections are reused by the HTTP/1.1 pool; a
// server identity the SAN matcher refuses is a 503 UF with the TLS error
// in the access log.
func TestUpstreamMTLS(t *testing.T) {
	m := newMesh(t)
	be := startTLSBackend(t, m, true, false)
	lAddr := closedAddr(t)
	good := staticCluster(t, "reviews", false, be.addr)
	good.TransportSocket = istioMutual(t, backendSPIFFE, "http/1.1")
	bad := staticCluster(t, "wrong-identity", false, be.addr)
	bad.TransportSocket = istioMutual(t, "spiffe://cluster.local/ns/default/sa/someone-else")
	g := build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"},
			prefixRoute("bad", "/bad", "wrong-identity"), prefixRoute("good", "/", "reviews")))},
		[]*clusterv3.Cluster{good, bad})
	p := startProxyWith(t, g, 0, m.store)
	for range 5 {
		r := p.do("GET", "reviews", "/", nil, nil)
		if r.code != 200 || r.body != proxySPIFFE+" HTTP/1.1 tls=true" {
			t.Fatalf("mTLS request: %d %q", r.code, r.body)
		}
	}
	if n := be.conns.Load(); n != 1 {
		t.Errorf("5 requests took %d upstream TLS connections, want 1 (keep-alive)", n)
	}
	r := p.do("GET", "reviews", "/bad", map[string]string{"X-Request-Id": "san-mismatch"}, nil)
	if r.code != http.StatusServiceUnavailable {
		t.Fatalf("SAN mismatch: %d %q, want 503", r.code, r.body)
	}
	line := p.logLine("san-mismatch")
	if !strings.Contains(line, " 503 UF ") || !strings.Contains(line, "TLS_error:_") {
		t.Errorf("access log line %q: want 503 UF and the TLS error", line)
	}
}

// TestTransportSocketMatches: Istio's auto mTLS sends TLS to the endpoint
// labelled tlsMode: istio and plaintext to the other, in one cluster.
func TestTransportSocketMatches(t *testing.T) {
	m := newMesh(t)
	tlsBE := startTLSBackend(t, m, true, false)
	plain := startBackend(t, "plain", false, nil)
	lAddr := closedAddr(t)
	c := autoMTLS(t, staticCluster(t, "reviews", false, tlsBE.addr, plain.addr), istioMutual(t, backendSPIFFE))
	c.LoadAssignment.Endpoints[0].LbEndpoints[0].Metadata = tlsMode("istio")
	p := startProxyWith(t, buildOne(t, lAddr, c), 0, m.store)
	got := map[string]int{}
	for range 6 {
		r := p.do("GET", "reviews", "/", nil, nil)
		if r.code != 200 {
			t.Fatalf("%d %q", r.code, r.body)
		}
		got[r.body]++
	}
	if got[proxySPIFFE+" HTTP/1.1 tls=true"] != 3 || got["plain"] != 3 {
		t.Errorf("answers %v: want 3 over mTLS and 3 plaintext", got)
	}
}

// TestPoolsKeyedByTransport: two endpoints on one address, one over TLS
// and one plaintext (the upstream is a Loom listener that tells them
// apart with tls_inspector): connections never cross pools.
func TestPoolsKeyedByTransport(t *testing.T) {
	m := newMesh(t)
	upAddr := closedAddr(t)
	up, err := listener.New(listener.Options{Secrets: m.store,
		Handler: func(_ *config.Listener, fc *config.FilterChain) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s tls=%v principal=%s", fc.Name, r.TLS != nil, filter.RequestConnection(r).PeerPrincipal())
			})
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Shutdown(t.Context()) })
	tlsChain := httpListener(t, "x", upAddr, "r").FilterChains[0]
	tlsChain.Name = "tls"
	tlsChain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	tlsChain.TransportSocket = xdstest.TLSSocket(t, &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA)}}})
	plainChain := httpListener(t, "x", upAddr, "r").FilterChains[0]
	plainChain.Name = "plain"
	plainChain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
	upL := &listenerv3.Listener{Name: "up", Address: xdstest.HostPortAddress(t, upAddr),
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: config.TLSInspectorName}},
		FilterChains:    []*listenerv3.FilterChain{tlsChain, plainChain}}
	if err := up.Update(build(t, nil, []*listenerv3.Listener{upL}, nil, nil)); err != nil {
		t.Fatal(err)
	}

	lAddr := closedAddr(t)
	c := autoMTLS(t, staticCluster(t, "same-address", false, upAddr, upAddr), istioMutual(t, "spiffe://cluster.local/ns/default/sa/productpage"))
	c.LoadAssignment.Endpoints[0].LbEndpoints[0].Metadata = tlsMode("istio")
	p := startProxyWith(t, buildOne(t, lAddr, c), 0, m.store)
	got := map[string]int{}
	for range 10 {
		r := p.do("GET", "svc", "/", nil, nil)
		if r.code != 200 {
			t.Fatalf("%d %q", r.code, r.body)
		}
		got[r.body]++
	}
	want := map[string]int{"tls tls=true principal=" + proxySPIFFE: 5, "plain tls=false principal=": 5}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("answers %v, want %v", got, want)
	}
}

// serverTLS is a DownstreamTlsContext with the proxy's "default"
// certificate, offering h2 and http/1.1.
func serverTLS(t testing.TB) *corev3.TransportSocket {
	return xdstest.TLSSocket(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols:                  []string{"h2", "http/1.1"},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)}}})
}

// TestH2OverTLSBothSides: a client speaks HTTP/2 over TLS (ALPN h2) to a
// TLS filter chain, and the proxy speaks HTTP/2 over TLS to an HTTP/2
// cluster.
func TestH2OverTLSBothSides(t *testing.T) {
	m := newMesh(t)
	be := startTLSBackend(t, m, true, true)
	lAddr := closedAddr(t)
	c := staticCluster(t, "reviews", true, be.addr)
	c.TransportSocket = istioMutual(t, backendSPIFFE, "h2")
	ls, rcs, cs := oneRoute(t, lAddr, c)
	ls[0].FilterChains[0].TransportSocket = serverTLS(t)
	startProxyWith(t, build(t, nil, ls, rcs, cs), 0, m.store)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: m.ca.Pool, ServerName: "proxy.test"}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	for range 3 {
		resp, err := client.Get("https://" + lAddr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Proto != "HTTP/2.0" || string(b) != proxySPIFFE+" HTTP/2.0 tls=true" {
			t.Fatalf("downstream %s, upstream answered %q: want HTTP/2 over TLS on both sides", resp.Proto, b)
		}
	}
	if n := be.conns.Load(); n != 1 {
		t.Errorf("3 requests took %d upstream connections, want 1 HTTP/2 connection", n)
	}
}

// TestMissingSecretFailsCleanly: a cluster whose client certificate has
// not arrived answers 503 UF at once (no warming), and serves as soon as
// it is stored.
func TestMissingSecretFailsCleanly(t *testing.T) {
	m := newMesh(t)
	be := startTLSBackend(t, m, true, false)
	lAddr := closedAddr(t)
	c := staticCluster(t, "reviews", false, be.addr)
	c.TransportSocket = istioMutual(t, backendSPIFFE)
	uc := &tlsv3.UpstreamTlsContext{}
	if err := c.TransportSocket.GetTypedConfig().UnmarshalTo(uc); err != nil {
		t.Fatal(err)
	}
	uc.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{xdstest.SDS("kubernetes://late")}
	c.TransportSocket = xdstest.TLSSocket(t, uc)
	p := startProxyWith(t, buildOne(t, lAddr, c), 0, m.store)
	r := p.do("GET", "reviews", "/", map[string]string{"X-Request-Id": "late"}, nil)
	if line := p.logLine("late"); r.code != 503 || !strings.Contains(line, "secret_not_available") {
		t.Fatalf("before the secret: %d, log %q", r.code, line)
	}
	own := m.ca.Issue(t, testutil.LeafOptions{URIs: []string{proxySPIFFE}})
	s, err := secret.ParseCertificate("kubernetes://late", own.CertPEM, own.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	m.store.Set(s)
	if r := p.do("GET", "reviews", "/", nil, nil); r.code != 200 {
		t.Fatalf("after the secret arrived: %d %q", r.code, r.body)
	}
}

// TestXFCC: forward_client_cert_details as Istio's sidecars (APPEND_FORWARD
// with Subject and URI) and gateways (SANITIZE_SET) set it, and the
// default (SANITIZE), with the header a client sent.
func TestXFCC(t *testing.T) {
	m := newMesh(t)
	be := startBackend(t, "up", false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Client-Cert"))
	})
	client := m.ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/sleep"}})
	sum := sha256.Sum256(client.Cert.Raw)
	hash := hex.EncodeToString(sum[:])
	tests := []struct {
		name string
		mode hcmv3.HttpConnectionManager_ForwardClientCertDetails
		mtls bool
		want string
	}{
		{"sanitize", hcmv3.HttpConnectionManager_SANITIZE, true, ""},
		{"append forward", hcmv3.HttpConnectionManager_APPEND_FORWARD, true,
			`By=spiffe://a;Hash=b,By=` + proxySPIFFE + `;Hash=` + hash + `;Subject="";URI=spiffe://cluster.local/ns/default/sa/sleep`},
		{"sanitize set", hcmv3.HttpConnectionManager_SANITIZE_SET, true,
			`By=` + proxySPIFFE + `;Hash=` + hash + `;Subject="";URI=spiffe://cluster.local/ns/default/sa/sleep`},
		{"forward only", hcmv3.HttpConnectionManager_FORWARD_ONLY, true, "By=spiffe://a;Hash=b"},
		{"append forward without mTLS", hcmv3.HttpConnectionManager_APPEND_FORWARD, false, ""},
		{"always forward only without mTLS", hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY, false, "By=spiffe://a;Hash=b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lAddr := closedAddr(t)
			ls, rcs, cs := oneRoute(t, lAddr, staticCluster(t, "up", false, be.addr))
			withHCM(t, ls[0], func(h *hcmv3.HttpConnectionManager) {
				h.ForwardClientCertDetails = tt.mode
				h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Uri: true}
			})
			ls[0].FilterChains[0].TransportSocket = xdstest.TLSSocket(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA)}}})
			startProxyWith(t, build(t, nil, ls, rcs, cs), 0, m.store)
			cfg := &tls.Config{RootCAs: m.ca.Pool, ServerName: "proxy.test"}
			if tt.mtls {
				cfg.Certificates = []tls.Certificate{client.TLS}
			}
			tr := &http.Transport{TLSClientConfig: cfg}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest("GET", "https://"+lAddr+"/", nil)
			req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://a;Hash=b")
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != tt.want {
				t.Errorf("upstream saw XFCC\n %q\nwant\n %q", b, tt.want)
			}
		})
	}
}

// TestHTTPOverMetadataExchange: an HTTP/1.1 cluster whose mTLS connection
// negotiates Istio's istio-peer-exchange (a port the peer serves as TCP)
// runs the TCP metadata exchange underneath, and the pool still reads the
// connection's TLS state (the source reporter's destination principal)
// and reuses it.
func TestHTTPOverMetadataExchange(t *testing.T) {
	m := newMesh(t)
	// A TCP-served port's server, as a peer's TCP chain in front of an
	// HTTP app: ALPN istio-peer-exchange, then HTTP/1.1 over the
	// decrypted stream, with no frame of its own (Envoy's filter lets
	// frame-less bytes through, and so does Loom's).
	leaf := m.ca.Issue(t, testutil.LeafOptions{URIs: []string{backendSPIFFE}})
	tln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf.TLS},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: m.ca.Pool, NextProtos: []string{"istio-peer-exchange"}})
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "app %s", r.Proto) }),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns.Add(1)
			}
		}}
	go srv.Serve(plainListener{tln})
	t.Cleanup(func() { srv.Close() })
	lAddr := closedAddr(t)
	c := staticCluster(t, "reviews", false, tln.Addr().String())
	c.TransportSocket = istioMutual(t, backendSPIFFE, "istio-peer-exchange", "istio")
	c.Filters = []*clusterv3.Filter{{Name: istiostats.MXFilterName,
		TypedConfig: xdstest.MustAny(t, &mxpb.MetadataExchange{Protocol: istiostats.MXProtocol})}}
	g := build(t, nil, []*listenerv3.Listener{statsListener(t, "l", lAddr, "rt", nil)},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "reviews")))},
		[]*clusterv3.Cluster{c})
	stats := istiostats.NewMetrics(0)
	p := startProxyOpts(t, g, m.store, func(*upstream.ClusterManager) dphttp.Options {
		return dphttp.Options{IstioStats: stats}
	}, nil)
	for range 5 {
		r := p.do("GET", "reviews", "/", nil, nil)
		if r.code != 200 || r.body != "app HTTP/1.1" {
			t.Fatalf("request: %d %q", r.code, r.body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 requests took %d upstream connections, want 1 (keep-alive)", n)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(stats)
	fams, err := promtest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := fams.Value("istio_requests_total", map[string]string{"reporter": "source",
		"destination_principal": backendSPIFFE, "source_principal": proxySPIFFE}); v != 5 {
		t.Errorf("istio_requests_total with both principals: %v, want 5 (the pool must read the TLS state under the exchange)", v)
	}
}

// plainListener hands http.Server its TLS connections as plain ones, as a
// TCP proxy hands an app the decrypted stream (http.Server refuses a
// *tls.Conn whose ALPN it has no handler for).
type plainListener struct{ net.Listener }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}
