package listener

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// ---- xDS builders ----

func hcmChain(t testing.TB, name string, m *listenerv3.FilterChainMatch) *listenerv3.FilterChain {
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: "s_" + name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r", ConfigSource: xdstest.ADS()}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: config.RouterFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &routerv3.Router{})}}}}
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: m, Filters: []*listenerv3.Filter{{
		Name: config.HCMFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, hcm)}}}}
}

func tcpChain(t testing.TB, name string, m *listenerv3.FilterChainMatch) *listenerv3.FilterChain {
	tp := &tcpv3.TcpProxy{StatPrefix: "s_" + name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}}
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: m, Filters: []*listenerv3.Filter{{
		Name: config.TCPProxyFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, tp)}}}}
}

func lf(names ...string) []*listenerv3.ListenerFilter {
	var out []*listenerv3.ListenerFilter
	for _, n := range names {
		out = append(out, &listenerv3.ListenerFilter{Name: n})
	}
	return out
}

func buildGen(t testing.TB, ls ...*listenerv3.Listener) *config.Generation {
	t.Helper()
	var res config.Resources
	for _, l := range ls {
		res.Listeners = append(res.Listeners, l)
	}
	g, err := config.Build(res, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// istioServerTLS is a DownstreamTlsContext with the agent's "default"
// certificate and "ROOTCA" trust bundle; requireClient asks for mTLS.
func istioServerTLS(t testing.TB, requireClient bool, alpn ...string) *corev3.TransportSocket {
	return xdstest.TLSSocket(t, &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(requireClient),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA)},
		},
	})
}

// ---- harness ----

// chainHandler answers every request with "chain-name principal proto tls".
func chainHandler(l *config.Listener, fc *config.FilterChain) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := filter.RequestConnection(r)
		principal := "-"
		if p := c.PeerPrincipal(); p != "" {
			principal = p
		}
		fmt.Fprintf(w, "%s %s %s %v %s", fc.Name, principal, r.Proto, r.TLS != nil, r.RemoteAddr)
	})
}

// seen is what a TCP chain's handler recorded of one connection.
type seen struct {
	chain, sni, first string
	conn              *filter.Connection
}

// recordingTCP records each connection's chain, SNI and first bytes, and
// answers "chain\n".
func recordingTCP(ch chan<- seen) func(*config.Listener, *config.FilterChain) ConnHandler {
	return func(_ *config.Listener, fc *config.FilterChain) ConnHandler {
		return func(ctx context.Context, c net.Conn) {
			defer c.Close()
			conn := filter.ConnectionFrom(ctx)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 5)
			n, _ := io.ReadFull(c, b)
			io.WriteString(c, fc.Name+"\n")
			ch <- seen{chain: fc.Name, sni: conn.ServerName, first: string(b[:n]), conn: conn}
		}
	}
}

func startManager(t testing.TB, opts Options) *Manager {
	t.Helper()
	if opts.Handler == nil {
		opts.Handler = chainHandler
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return m
}

func get(t testing.TB, c *http.Client, url string) (string, *http.Response) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp
}

// workloadSecrets is a store with "default" (a certificate with SPIFFE ID
// spiffe://cluster.local/ns/default/sa/server) and "ROOTCA".
func workloadSecrets(t testing.TB, ca *testutil.CA) *secret.Store {
	t.Helper()
	store := secret.NewStore()
	setCert(t, store, secret.WorkloadCertificate, ca.Issue(t, testutil.LeafOptions{DNS: []string{"server.test"},
		URIs: []string{"spiffe://cluster.local/ns/default/sa/server"}}))
	roots, err := secret.ParseRoots(secret.RootCA, ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	store.Set(roots)
	return store
}

func setCert(t testing.TB, store *secret.Store, name string, l *testutil.Leaf) {
	t.Helper()
	s, err := secret.ParseCertificate(name, l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	store.Set(s)
}

// dial connects to addr with a 5s deadline; the connection is closed at
// the end of the test.
func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// ---- tests ----

// TestTLSInspectorSelectsBySNI: tls_inspector reads the ClientHello's SNI
// without consuming it (the chain's handler reads the ClientHello from the
// first byte), and chains are chosen by it; plaintext falls to the
// raw_buffer chain, and its first bytes are replayed too.
func TestTLSInspectorSelectsBySNI(t *testing.T) {
	ch := make(chan seen, 1)
	m := startManager(t, Options{TCP: recordingTCP(ch)})
	addr := freeAddr(t)
	g := buildGen(t, &listenerv3.Listener{Name: "gw", Address: xdstest.HostPortAddress(t, addr),
		ListenerFilters: lf(config.TLSInspectorName),
		FilterChains: []*listenerv3.FilterChain{
			tcpChain(t, "exact", &listenerv3.FilterChainMatch{ServerNames: []string{"a.example.com"}}),
			tcpChain(t, "wild", &listenerv3.FilterChainMatch{ServerNames: []string{"*.example.com"}}),
			tcpChain(t, "tls-other", &listenerv3.FilterChainMatch{TransportProtocol: "tls"}),
			tcpChain(t, "plain", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}),
		}})
	if err := m.Update(g); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ sni, want string }{
		{"a.example.com", "exact"}, {"b.example.com", "wild"}, {"x.b.example.com", "wild"}, {"other.test", "tls-other"}, {"", "tls-other"},
	} {
		c := dial(t, addr)
		tc := tls.Client(c, &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // no server cert here
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		_ = tc.Handshake() // the chain's handler answers plaintext: the handshake fails
		c.Close()
		s := <-ch
		if s.chain != tt.want || s.sni != tt.sni || s.first[0] != 0x16 {
			t.Errorf("SNI %q: chain %q, sni %q, first byte %#x; want %q, the SNI, and the ClientHello replayed", tt.sni, s.chain, s.sni, s.first[0], tt.want)
		}
	}
	c := dial(t, addr)
	defer c.Close()
	io.WriteString(c, "hello")
	if s := <-ch; s.chain != "plain" || s.first != "hello" {
		t.Errorf("plaintext: chain %q, first bytes %q; want plain, hello", s.chain, s.first)
	}
}

// TestHTTPInspector: http_inspector tells HTTP/1.1 from h2c prior
// knowledge and from anything else.
func TestHTTPInspector(t *testing.T) {
	ch := make(chan seen, 1)
	m := startManager(t, Options{TCP: recordingTCP(ch)})
	addr := freeAddr(t)
	g := buildGen(t, &listenerv3.Listener{Name: "in", Address: xdstest.HostPortAddress(t, addr),
		ListenerFilters: lf(config.TLSInspectorName, config.HTTPInspectorName),
		FilterChains: []*listenerv3.FilterChain{
			hcmChain(t, "h1", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1", "http/1.0"}}),
			hcmChain(t, "h2c", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"h2c"}}),
			tcpChain(t, "tcp", nil),
		}})
	if err := m.Update(g); err != nil {
		t.Fatal(err)
	}
	h1 := &http.Client{Transport: &http.Transport{}}
	defer h1.CloseIdleConnections()
	if body, _ := get(t, h1, "http://"+addr+"/"); !strings.HasPrefix(body, "h1 - HTTP/1.1 false") {
		t.Errorf("HTTP/1.1 served by %q", body)
	}
	h2c := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}}
	h2c.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	if body, _ := get(t, h2c, "http://"+addr+"/"); !strings.HasPrefix(body, "h2c - HTTP/2.0 false") {
		t.Errorf("h2c served by %q", body)
	}
	c := dial(t, addr)
	defer c.Close()
	io.WriteString(c, "\x00\x01binary")
	if s := <-ch; s.chain != "tcp" || s.first != "\x00\x01bin" {
		t.Errorf("binary: chain %q, first %q", s.chain, s.first)
	}
}

func TestClassifyHTTP(t *testing.T) {
	tests := []struct {
		in      string
		proto   string
		decided bool
	}{
		{"GET / HTTP/1.1\r\n", protoHTTP11, true},
		{"POST /a?b HTTP/1.0\r\n", protoHTTP10, true},
		{"M-SEARCH * HTTP/1.1\r\n", protoHTTP11, true},
		{"GET / HTTP/1.", "", false},
		{"GET", "", false},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", protoH2C, true},
		{"PRI * HTTP/2.0\r\n", "", false},
		{"GET / HTTP/2.0\r\n", "", true},
		{"\x16\x03\x01", "", true},
		{"SSH-2.0-OpenSSH_9.6\r\n", "", true},
		{"SSH-2.0-OpenSSH", "", false},
		{"GET /a b HTTP/1.1", "", true},
		{" GET / HTTP/1.1", "", true},
	}
	for _, tt := range tests {
		proto, decided := classifyHTTP([]byte(tt.in))
		if proto != tt.proto || decided != tt.decided {
			t.Errorf("classifyHTTP(%q) = %q, %v; want %q, %v", tt.in, proto, decided, tt.proto, tt.decided)
		}
	}
}

// TestTLSTermination: a chain terminates TLS with the agent's secrets,
// requires and verifies a client certificate, and shows the peer's SPIFFE
// ID to the request's filters (filter.RequestConnection(r).PeerPrincipal())
// with r.TLS set; ALPN h2 serves HTTP/2 over TLS.
func TestTLSTermination(t *testing.T) {
	ca := testutil.NewCA(t, "mesh root")
	store := workloadSecrets(t, ca)
	m := startManager(t, Options{Secrets: store})
	addr := freeAddr(t)
	fc := hcmChain(t, "mtls", nil)
	fc.TransportSocket = istioServerTLS(t, true, "h2", "http/1.1")
	if err := m.Update(buildGen(t, &listenerv3.Listener{Name: "in", Address: xdstest.HostPortAddress(t, addr),
		FilterChains: []*listenerv3.FilterChain{fc}})); err != nil {
		t.Fatal(err)
	}
	clientCert := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/sleep"}})
	client := func(cert *tls.Certificate, h2 bool) *http.Client {
		cfg := &tls.Config{RootCAs: ca.Pool, ServerName: "server.test"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(!h2)
		tr.Protocols.SetHTTP2(h2)
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	body, _ := get(t, client(&clientCert.TLS, false), "https://"+addr+"/")
	if !strings.HasPrefix(body, "mtls spiffe://cluster.local/ns/default/sa/sleep HTTP/1.1 true") {
		t.Errorf("mTLS HTTP/1.1: %q", body)
	}
	body, _ = get(t, client(&clientCert.TLS, true), "https://"+addr+"/")
	if !strings.HasPrefix(body, "mtls spiffe://cluster.local/ns/default/sa/sleep HTTP/2.0 true") {
		t.Errorf("mTLS HTTP/2: %q", body)
	}
	if _, err := client(nil, false).Get("https://" + addr + "/"); err == nil {
		t.Error("a client without certificate was served")
	}
	stranger := testutil.NewCA(t, "other").Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/sleep"}})
	if _, err := client(&stranger.TLS, false).Get("https://" + addr + "/"); err == nil {
		t.Error("a client certificate from another CA was accepted")
	}
	if m.Stats().HandshakeErrors == 0 {
		t.Error("failed handshakes were not counted")
	}
}

// TestIstioMTLSALPNs: an Istio sidecar client's mTLS offers istio-h2 or
// istio-http/1.1 (istio.alpn) to an inbound HTTP chain that matches them
// (application_protocols, Istio's mtlsHTTPALPNs) and lists h2 and
// http/1.1: ALPN negotiates nothing, the client speaks HTTP/2 with prior
// knowledge after istio-h2 (Envoy's HTTP/2 codec), and the chain serves
// it as HTTP/2 by its preface (Envoy's codec_type AUTO), else HTTP/1.1;
// either way the request sees the connection's TLS and peer.
func TestIstioMTLSALPNs(t *testing.T) {
	ca := testutil.NewCA(t, "mesh root")
	m := startManager(t, Options{Secrets: workloadSecrets(t, ca)})
	addr := freeAddr(t)
	fc := hcmChain(t, "mtls-http", &listenerv3.FilterChainMatch{TransportProtocol: "tls",
		ApplicationProtocols: []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}})
	fc.TransportSocket = istioServerTLS(t, true, "h2", "http/1.1")
	if err := m.Update(buildGen(t, &listenerv3.Listener{Name: "in", Address: xdstest.HostPortAddress(t, addr),
		ListenerFilters: lf(config.TLSInspectorName), FilterChains: []*listenerv3.FilterChain{fc}})); err != nil {
		t.Fatal(err)
	}
	leaf := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/sleep"}})
	handshake := func(alpn string) *tls.Conn {
		t.Helper()
		c := tls.Client(dial(t, addr), &tls.Config{RootCAs: ca.Pool, ServerName: "server.test",
			Certificates: []tls.Certificate{leaf.TLS}, NextProtos: []string{alpn}})
		if err := c.Handshake(); err != nil {
			t.Fatalf("ALPN %s: %v", alpn, err)
		}
		if p := c.ConnectionState().NegotiatedProtocol; p != "" {
			t.Fatalf("ALPN %s negotiated %q, want none", alpn, p)
		}
		return c
	}
	const want = "mtls-http spiffe://cluster.local/ns/default/sa/sleep "

	cc, err := (&http2.Transport{}).NewClientConn(handshake("istio-h2"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for range 2 {
		req, _ := http.NewRequest("GET", "https://server.test/", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("HTTP/2 after istio-h2: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(b), want+"HTTP/2.0 true") {
			t.Errorf("HTTP/2 after istio-h2: %q, want %q", b, want+"HTTP/2.0 true")
		}
	}

	c := handshake("istio-http/1.1")
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: server.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("HTTP/1.1 after istio-http/1.1: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), want+"HTTP/1.1 true") {
		t.Errorf("HTTP/1.1 after istio-http/1.1: %q, want %q", b, want+"HTTP/1.1 true")
	}
}

// TestRotationUnderLoad replaces "default" in the store while clients
// open new connections (no keep-alive) from four goroutines: no request
// fails, and every handshake that starts after the replacement sees the
// new certificate's serial.
func TestRotationUnderLoad(t *testing.T) {
	ca := testutil.NewCA(t, "mesh root")
	store := workloadSecrets(t, ca)
	oldSerial := store.Get(secret.WorkloadCertificate).Certificate.Leaf.SerialNumber
	m := startManager(t, Options{Secrets: store})
	addr := freeAddr(t)
	fc := hcmChain(t, "tls", nil)
	fc.TransportSocket = istioServerTLS(t, false)
	if err := m.Update(buildGen(t, &listenerv3.Listener{Name: "in", Address: xdstest.HostPortAddress(t, addr),
		FilterChains: []*listenerv3.FilterChain{fc}})); err != nil {
		t.Fatal(err)
	}
	next := ca.Issue(t, testutil.LeafOptions{DNS: []string{"server.test"}, URIs: []string{"spiffe://cluster.local/ns/default/sa/server"}})
	const workers, perWorker = 4, 50
	var (
		rotated  atomic.Bool
		done     atomic.Int64
		mu       sync.Mutex
		failures []error
		stale    int // handshakes started after the rotation that saw the old serial
		sawOld   int
		sawNew   int
	)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "server.test"}}}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				after := rotated.Load()
				resp, err := client.Get("https://" + addr + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				done.Add(1)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err)
				case resp.TLS.PeerCertificates[0].SerialNumber.Cmp(next.Cert.SerialNumber) == 0:
					sawNew++
				case resp.TLS.PeerCertificates[0].SerialNumber.Cmp(oldSerial) == 0:
					sawOld++
					if after {
						stale++
					}
				}
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for done.Load() < workers*perWorker/2 && time.Now().Before(deadline) {
		<-time.After(time.Millisecond)
	}
	setCert(t, store, secret.WorkloadCertificate, next)
	rotated.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed during the rotation; first: %v", len(failures), workers*perWorker, failures[0])
	}
	if stale > 0 || sawOld == 0 || sawNew == 0 {
		t.Errorf("old serial %d times (%d after the rotation), new serial %d times: want both, and none old after", sawOld, stale, sawNew)
	}
}

// denyFilter is a network filter that refuses every connection.
type denyFilter struct{ calls atomic.Int64 }

func (d *denyFilter) OnConnection(_ context.Context, c *filter.Connection) error {
	d.calls.Add(1)
	return errors.New("rbac_access_denied_matched_policy[none]")
}

// allowFilter records the connection it saw.
type allowFilter struct {
	got atomic.Pointer[filter.Connection]
}

func (a *allowFilter) OnConnection(_ context.Context, c *filter.Connection) error {
	a.got.Store(c)
	return nil
}

// TestNetworkFilters: a chain's network filters run before its terminal
// filter with the connection's facts; a refusal closes the connection.
func TestNetworkFilters(t *testing.T) {
	ch := make(chan seen, 1)
	m := startManager(t, Options{TCP: recordingTCP(ch)})
	deny, allow := &denyFilter{}, &allowFilter{}
	addrD, addrA := freeAddr(t), freeAddr(t)
	g := &config.Generation{Listeners: map[string]*config.Listener{
		"deny": {Name: "deny", Address: addrD, BindToPort: true, FilterChains: []*config.FilterChain{{Name: "d", Key: "d", Hash: 1,
			TCPProxy: &config.TCPProxy{}, NetworkFilters: []config.NetworkFilter{{Name: "envoy.filters.network.rbac", Filter: deny}}}}},
		"allow": {Name: "allow", Address: addrA, BindToPort: true, FilterChains: []*config.FilterChain{{Name: "a", Key: "a", Hash: 1,
			TCPProxy: &config.TCPProxy{}, NetworkFilters: []config.NetworkFilter{{Name: "envoy.filters.network.rbac", Filter: allow}}}}},
	}}
	if err := m.Update(g); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addrD)
	if _, err := c.Read(make([]byte, 1)); err != io.EOF || deny.calls.Load() != 1 {
		t.Errorf("denied connection: read %v, filter called %d times; want EOF after one call", err, deny.calls.Load())
	}
	c.Close()
	c = dial(t, addrA)
	defer c.Close()
	io.WriteString(c, "hello")
	s := <-ch
	got := allow.got.Load()
	if s.chain != "a" || got == nil || got != s.conn || got.FilterChain != "a" || got.Source.String() != c.LocalAddr().String() {
		t.Errorf("allowed connection: chain %q, filter saw %+v, handler saw %+v", s.chain, got, s.conn)
	}
}

// TestNoFilterChainCloses: a connection no chain matches is closed
// (Envoy's NR for L4) and counted.
func TestNoFilterChainCloses(t *testing.T) {
	m := startManager(t, Options{})
	addr := freeAddr(t)
	if err := m.Update(buildGen(t, &listenerv3.Listener{Name: "l", Address: xdstest.HostPortAddress(t, addr),
		ListenerFilters: lf(config.TLSInspectorName),
		FilterChains:    []*listenerv3.FilterChain{hcmChain(t, "tls-only", &listenerv3.FilterChainMatch{TransportProtocol: "tls"})}})); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr)
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection no chain matches was served")
	}
	if m.Stats().NoFilterChain != 1 {
		t.Errorf("NoFilterChain = %d, want 1", m.Stats().NoFilterChain)
	}
}

// TestListenerFiltersTimeout: a client that sends nothing is closed when
// listener_filters_timeout passes, or, with
// continue_on_listener_filters_timeout, served by the chain that matches
// what was found (a server-first protocol).
func TestListenerFiltersTimeout(t *testing.T) {
	banner := func(*config.Listener, *config.FilterChain) ConnHandler {
		return func(_ context.Context, c net.Conn) {
			defer c.Close()
			io.WriteString(c, "220 ready\n")
		}
	}
	m := startManager(t, Options{TCP: banner})
	addrClose, addrGoOn := freeAddr(t), freeAddr(t)
	mk := func(name, addr string, goOn bool) *listenerv3.Listener {
		return &listenerv3.Listener{Name: name, Address: xdstest.HostPortAddress(t, addr), ListenerFilters: lf(config.TLSInspectorName),
			ListenerFiltersTimeout: durationpb.New(100 * time.Millisecond), ContinueOnListenerFiltersTimeout: goOn,
			FilterChains: []*listenerv3.FilterChain{tcpChain(t, "raw", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"})}}
	}
	if err := m.Update(buildGen(t, mk("close", addrClose, false), mk("go-on", addrGoOn, true))); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr string
		want string
	}{{addrClose, ""}, {addrGoOn, "220 ready\n"}} {
		c := dial(t, tt.addr)
		start := time.Now()
		got, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if got != tt.want || time.Since(start) < 80*time.Millisecond { // the server's clock starts at its accept
			t.Errorf("%s: read %q after %v; want %q after the 100ms timeout", tt.addr, got, time.Since(start), tt.want)
		}
	}
}

// TestFilterChainOnlyUpdate: a new generation that changes one filter
// chain drains that chain's connections only; the socket and the other
// chain's connections stay.
func TestFilterChainOnlyUpdate(t *testing.T) {
	m := startManager(t, Options{DrainTimeout: 2 * time.Second})
	addr := freeAddr(t)
	mk := func(h2cPrefix string) *config.Generation {
		h2c := hcmChain(t, "h2c", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"h2c"}})
		if h2cPrefix != "" {
			var hcm hcmv3.HttpConnectionManager
			if err := h2c.Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
			hcm.StatPrefix = h2cPrefix
			h2c.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
		}
		return buildGen(t, &listenerv3.Listener{Name: "in", Address: xdstest.HostPortAddress(t, addr),
			ListenerFilters: lf(config.HTTPInspectorName),
			FilterChains:    []*listenerv3.FilterChain{hcmChain(t, "h1", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1"}}), h2c}})
	}
	if err := m.Update(mk("")); err != nil {
		t.Fatal(err)
	}
	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer h1.CloseIdleConnections()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	remote := func(body string) string { f := strings.Fields(body); return f[len(f)-1] }

	b1, _ := get(t, h1, "http://"+addr+"/")
	b2, _ := get(t, h2c, "http://"+addr+"/")
	if !strings.HasPrefix(b1, "h1 ") || !strings.HasPrefix(b2, "h2c ") {
		t.Fatalf("before the update: %q, %q", b1, b2)
	}
	if err := m.Update(mk("changed")); err != nil {
		t.Fatal(err)
	}
	// The h2c chain's server drains: its idle connection gets GOAWAY and
	// closes; the client's next request dials again.
	deadline := time.Now().Add(5 * time.Second)
	var b2after string
	for {
		b2after, _ = get(t, h2c, "http://"+addr+"/")
		if remote(b2after) != remote(b2) || time.Now().After(deadline) {
			break
		}
		<-time.After(10 * time.Millisecond)
	}
	if remote(b2after) == remote(b2) {
		t.Errorf("the changed chain's connection %s was not drained", remote(b2))
	}
	b1after, _ := get(t, h1, "http://"+addr+"/")
	if remote(b1after) != remote(b1) || !strings.HasPrefix(b1after, "h1 ") {
		t.Errorf("the unchanged chain's connection was dropped: %q then %q", b1, b1after)
	}
}

// TestNetworkRBACOnMTLSChain: Istio's TCP AuthorizationPolicy shape, a
// network RBAC filter before tcp_proxy on an mTLS chain: the filter reads
// the peer's SPIFFE ID from the connection the listener built.
func TestNetworkRBACOnMTLSChain(t *testing.T) {
	ca := testutil.NewCA(t, "mesh root")
	ch := make(chan seen, 1)
	m := startManager(t, Options{Secrets: workloadSecrets(t, ca), TCP: recordingTCP(ch)})
	addr := freeAddr(t)
	policy := &rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"ns[default]-policy[tcp]-rule[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
				PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/default/sa/sleep"}}}}}},
		}}}}
	fc := tcpChain(t, "tcp-mtls", nil)
	fc.TransportSocket = istioServerTLS(t, true)
	fc.Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.rbac",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, policy)}}}, fc.Filters...)
	if err := m.Update(buildGen(t, &listenerv3.Listener{Name: "in", Address: xdstest.HostPortAddress(t, addr),
		FilterChains: []*listenerv3.FilterChain{fc}})); err != nil {
		t.Fatal(err)
	}
	try := func(sa string) (string, error) {
		leaf := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/" + sa}})
		c := tls.Client(dial(t, addr), &tls.Config{RootCAs: ca.Pool, ServerName: "server.test", Certificates: []tls.Certificate{leaf.TLS}})
		defer c.Close()
		if _, err := io.WriteString(c, "hello"); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}
	if got, err := try("sleep"); err != nil || got != "tcp-mtls\n" {
		t.Fatalf("allowed identity: %q, %v", got, err)
	}
	if s := <-ch; s.conn.PeerPrincipal() != "spiffe://cluster.local/ns/default/sa/sleep" || s.first != "hello" {
		t.Errorf("handler saw principal %q, first bytes %q", s.conn.PeerPrincipal(), s.first)
	}
	if got, err := try("intruder"); err == nil {
		t.Errorf("a denied identity was proxied: %q", got)
	}
}

// TestConnectionAccessLogFacts: what the access log reads off a
// connection: a process-unique id per connection, the downstream TLS
// handshake's duration (none for plaintext), and every URI SAN of the
// peer's and the proxy's certificates, joined with "," as Envoy's
// DOWNSTREAM_PEER_URI_SAN and DOWNSTREAM_LOCAL_URI_SAN.
func TestConnectionAccessLogFacts(t *testing.T) {
	ca := testutil.NewCA(t, "mesh root")
	ch := make(chan seen, 1)
	m := startManager(t, Options{Secrets: workloadSecrets(t, ca), TCP: recordingTCP(ch)})
	mtlsAddr, plainAddr := freeAddr(t), freeAddr(t)
	fc := tcpChain(t, "tcp-mtls", nil)
	fc.TransportSocket = istioServerTLS(t, true)
	if err := m.Update(buildGen(t,
		&listenerv3.Listener{Name: "in", Address: xdstest.HostPortAddress(t, mtlsAddr), FilterChains: []*listenerv3.FilterChain{fc}},
		&listenerv3.Listener{Name: "plain", Address: xdstest.HostPortAddress(t, plainAddr), FilterChains: []*listenerv3.FilterChain{tcpChain(t, "tcp", nil)}},
	)); err != nil {
		t.Fatal(err)
	}
	leaf := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/sleep", "spiffe://other.domain/x"}})
	connect := func(addr string, tlsOn bool) *filter.Connection {
		t.Helper()
		var c net.Conn = dial(t, addr)
		if tlsOn {
			c = tls.Client(c, &tls.Config{RootCAs: ca.Pool, ServerName: "server.test", Certificates: []tls.Certificate{leaf.TLS}})
		}
		defer c.Close()
		if _, err := io.WriteString(c, "hello"); err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		return (<-ch).conn
	}
	a, b, plain := connect(mtlsAddr, true), connect(mtlsAddr, true), connect(plainAddr, false)
	if a.ID == 0 || b.ID == 0 || plain.ID == 0 || a.ID == b.ID || b.ID == plain.ID {
		t.Errorf("connection ids %d, %d, %d; want distinct, non-zero", a.ID, b.ID, plain.ID)
	}
	if a.HandshakeDuration <= 0 || plain.HandshakeDuration != 0 {
		t.Errorf("handshake durations: mTLS %v, plaintext %v", a.HandshakeDuration, plain.HandshakeDuration)
	}
	peer, local := a.URISANs()
	if peer != "spiffe://cluster.local/ns/default/sa/sleep,spiffe://other.domain/x" || local != "spiffe://cluster.local/ns/default/sa/server" {
		t.Errorf("URI SANs: peer %q, local %q", peer, local)
	}
	if peer, local := plain.URISANs(); peer != "" || local != "" {
		t.Errorf("plaintext URI SANs: %q, %q", peer, local)
	}
}
