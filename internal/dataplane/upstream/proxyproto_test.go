package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
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
func ppHTTPServer(t *testing.T, h2 bool) (addr string, accepted func() int) {
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
			h := newProxyHeader(v, &filter.Connection{Source: netip.MustParseAddrPort(tt.src), Destination: netip.MustParseAddrPort(tt.dst)})
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
