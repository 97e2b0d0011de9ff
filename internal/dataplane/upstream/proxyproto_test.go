package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// ppHTTPServer is an HTTP server (h2c too when h2) behind a listener that
// reads each connection's PROXY protocol header (go-proxyproto): a
// request's RemoteAddr is the header's source, and its handler answers
// it. It counts the connections it accepts.
func ppHTTPServer(t testing.TB, h2 bool) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.RemoteAddr)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				mu.Lock()
				n++
				mu.Unlock()
			}
		},
	}
	if h2 {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go srv.Serve(&proxyproto.Listener{Listener: ln, Policy: func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }})
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestProxyProtocolHTTP: over a transport socket with a PROXY protocol
// header, each HTTP request's connection carries its downstream
// connection's source address, HTTP/1.1 and HTTP/2 alike, and requests of
// two clients never share a connection, while one client's reuse theirs
// (Envoy keys its pools by the header's addresses).
func TestProxyProtocolHTTP(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "http1.1"
		if h2 {
			name = "h2c"
		}
		t.Run(name, func(t *testing.T) {
			addr, accepted := ppHTTPServer(t, h2)
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", HTTP2: h2, Endpoints: []config.Endpoint{{Address: addr}},
				Transports: []config.UpstreamTransport{{ProxyProtocol: 2, Key: "pp2|"}}}
			m.Update(gen(c))
			get := func(src string) string {
				t.Helper()
				ctx := filter.WithConnection(context.Background(), &filter.Connection{
					Source: netip.MustParseAddrPort(src), Destination: netip.MustParseAddrPort("10.0.0.1:80")})
				h, err := m.Pick(c, PickOptions{})
				if err != nil {
					t.Fatal(err)
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+h.Addr+"/", nil)
				resp, err := h.RT.RoundTrip(req)
				if err != nil {
					h.Done(Result{LocalOrigin: true})
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				h.Done(Result{Status: resp.StatusCode})
				return string(b)
			}
			for i, src := range []string{"192.0.2.1:1111", "192.0.2.1:1111", "192.0.2.2:2222", "192.0.2.1:1111"} {
				if got := get(src); got != src {
					t.Errorf("request %d: upstream saw source %s, want %s", i, got, src)
				}
			}
			if n := accepted(); n != 2 {
				t.Errorf("upstream accepted %d connections, want 2 (one per client)", n)
			}
		})
	}
}

// TestProxyHeaderFamilies: the header names both addresses in one family,
// IPv4 when both are (IPv4-mapped ones unmapped), else IPv6, where version
// 2 maps the IPv4 one and version 1 says PROXY UNKNOWN; go-proxyproto
// reads back what was written.
func TestProxyHeaderFamilies(t *testing.T) {
	for _, tt := range []struct {
		src, dst, wantSrc, wantDst string
		fam                        proxyproto.AddressFamilyAndProtocol
	}{
		{"192.0.2.1:1", "10.0.0.1:80", "192.0.2.1:1", "10.0.0.1:80", proxyproto.TCPv4},
		{"[::ffff:192.0.2.1]:1", "10.0.0.1:80", "192.0.2.1:1", "10.0.0.1:80", proxyproto.TCPv4},
		{"[2001:db8::1]:1", "[2001:db8::2]:80", "[2001:db8::1]:1", "[2001:db8::2]:80", proxyproto.TCPv6},
		// Two families: IPv6 with the mapped IPv4 (which net.IP prints
		// as IPv4) in version 2; PROXY UNKNOWN in version 1.
		{"192.0.2.1:1", "[2001:db8::2]:80", "192.0.2.1:1", "[2001:db8::2]:80", proxyproto.TCPv6},
	} {
		for _, v := range []uint8{1, 2} {
			h := newProxyHeader(v, &filter.Connection{Source: netip.MustParseAddrPort(tt.src), Destination: netip.MustParseAddrPort(tt.dst)}, "")
			a, b := net.Pipe()
			go func() { _ = h.write(a); a.Close() }()
			got, err := proxyproto.Read(bufio.NewReader(b))
			b.Close()
			if err != nil {
				t.Fatalf("v%d %s %s: %v", v, tt.src, tt.dst, err)
			}
			src, dst, ok := got.TCPAddrs()
			if v == 1 && tt.fam == proxyproto.TCPv6 && !strings.HasPrefix(tt.src, "[") {
				// Two families: version 1 says PROXY UNKNOWN.
				if ok || got.TransportProtocol != proxyproto.UNSPEC {
					t.Errorf("v1 %s %s: read %+v, want PROXY UNKNOWN", tt.src, tt.dst, got)
				}
				continue
			}
			if !ok || got.Version != v || !got.Command.IsProxy() || got.TransportProtocol != tt.fam || src.String() != tt.wantSrc || dst.String() != tt.wantDst {
				t.Errorf("v%d %s %s: read %+v, want %s %s", v, tt.src, tt.dst, got, tt.wantSrc, tt.wantDst)
			}
		}
	}
}

// BenchmarkProxyProtocolHTTP measures one request of one client over a
// transport socket with a PROXY protocol header (v1), HTTP/1.1 and h2c:
// Pick, RoundTrip, body read to EOF, Done, on the client's pooled
// connection.
func BenchmarkProxyProtocolHTTP(b *testing.B) {
	for _, h2 := range []bool{false, true} {
		name := "http1.1"
		if h2 {
			name = "h2c"
		}
		b.Run(name, func(b *testing.B) {
			addr, _ := ppHTTPServer(b, h2)
			m := New(Options{})
			b.Cleanup(func() { m.Close() })
			c := &config.Cluster{Name: "c", HTTP2: h2, Endpoints: []config.Endpoint{{Address: addr}},
				Transports: []config.UpstreamTransport{{ProxyProtocol: 1, Key: "pp1|"}}}
			m.Update(gen(c))
			ctx := filter.WithConnection(context.Background(), &filter.Connection{
				Source: netip.MustParseAddrPort("192.0.2.1:1111"), Destination: netip.MustParseAddrPort("10.0.0.1:80")})
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
			b.ReportAllocs()
			for b.Loop() {
				h, err := m.Pick(c, PickOptions{})
				if err != nil {
					b.Fatal(err)
				}
				resp, err := h.RT.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				h.Done(Result{Status: resp.StatusCode})
			}
		})
	}
}

// TestProxyProtocolPickAllocs: a pick of an endpoint whose transport
// socket writes a PROXY protocol header allocates only its Host, as any
// pick: the round trippers are made once per cluster or TLS transport,
// not per pick.
func TestProxyProtocolPickAllocs(t *testing.T) {
	for _, tt := range []struct {
		name string
		h2   bool
		tls  *config.UpstreamTLS
	}{
		{"http1.1", false, nil},
		{"h2c", true, nil},
		{"http1.1 over TLS", false, &config.UpstreamTLS{}},
		{"h2 over TLS", true, &config.UpstreamTLS{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Options{})
			defer m.Close()
			key := "pp1|"
			if tt.tls != nil {
				key = "pp1|tls-1"
			}
			c := &config.Cluster{Name: "c", HTTP2: tt.h2, Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}},
				Transports: []config.UpstreamTransport{{ProxyProtocol: 1, Key: key, TLS: tt.tls}}}
			m.Update(gen(c))
			pick := func() {
				h, err := m.Pick(c, PickOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := h.RT.(*proxyProtocolRT); !ok {
					t.Fatalf("round tripper %T, want *proxyProtocolRT", h.RT)
				}
				h.Done(Result{Status: http.StatusOK})
			}
			pick() // the TLS transport is made on first use
			if n := testing.AllocsPerRun(100, pick); n > 1 {
				t.Errorf("%v allocations per pick, want 1 (the Host)", n)
			}
		})
	}
}

// TestProxyProtocolHTTPOverTLS: over an upstream_proxy_protocol socket
// wrapping TLS, the header goes first and the TLS handshake after it,
// HTTP/1.1 and HTTP/2 alike, and the upstream reads the client's address
// from it.
func TestProxyProtocolHTTPOverTLS(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "http1.1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.Proto+" "+r.RemoteAddr)
			}))
			srv.Listener = &proxyproto.Listener{Listener: srv.Listener, Policy: func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }}
			srv.EnableHTTP2 = h2
			srv.StartTLS()
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "https://")
			tlsCfg := &config.UpstreamTLS{}
			if h2 {
				tlsCfg.ALPN = []string{"h2"}
			}
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", HTTP2: h2, Endpoints: []config.Endpoint{{Address: addr}},
				Transports: []config.UpstreamTransport{{ProxyProtocol: 2, Key: "pp2|tls-1", TLS: tlsCfg}}}
			m.Update(gen(c))
			ctx := filter.WithConnection(context.Background(), &filter.Connection{
				Source: netip.MustParseAddrPort("192.0.2.7:7777"), Destination: netip.MustParseAddrPort("10.0.0.1:443")})
			h, err := m.Pick(c, PickOptions{})
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+h.Addr+"/", nil)
			resp, err := h.RT.RoundTrip(req)
			if err != nil {
				h.Done(Result{LocalOrigin: true})
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			h.Done(Result{Status: resp.StatusCode})
			want := "HTTP/1.1 192.0.2.7:7777"
			if h2 {
				want = "HTTP/2.0 192.0.2.7:7777"
			}
			if string(b) != want || resp.TLS == nil {
				t.Errorf("upstream answered %q (TLS %v), want %q over TLS", b, resp.TLS != nil, want)
			}
		})
	}
}
