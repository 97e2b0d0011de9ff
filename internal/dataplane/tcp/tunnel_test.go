package tcp

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	proxyproto "github.com/pires/go-proxyproto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// seenRequest is what the test's HTTP proxy saw of one tunnel request.
type seenRequest struct {
	method, requestURI, host string
	header                   http.Header
}

// httpProxy is an HTTP/1.1 proxy written with net/http: a request it
// accepts (accept returns 0) is answered with status and the hijacked
// connection is piped to target; any other status is answered as it is.
// It records the requests it saw.
type httpProxy struct {
	addr  string
	mu    sync.Mutex
	seen  []seenRequest
	conns int // connections accepted
}

func (p *httpProxy) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

func (p *httpProxy) requests() []seenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]seenRequest(nil), p.seen...)
}

// startHTTPProxy serves an httpProxy on 127.0.0.1 that answers every
// request with status then, for a 2xx, first sends banner and then pipes
// the connection to target.
func startHTTPProxy(t *testing.T, status int, banner, target string) *httpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &httpProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	srv := &http.Server{ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.mu.Lock()
			p.conns++
			p.mu.Unlock()
		}
	}, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, seenRequest{method: r.Method, requestURI: r.RequestURI, host: r.Host, header: r.Header.Clone()})
		p.mu.Unlock()
		if status/100 != 2 {
			w.WriteHeader(status)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		up, err := net.Dial("tcp", target)
		if err != nil {
			t.Errorf("proxy dial %s: %v", target, err)
			return
		}
		defer up.Close()
		if _, err := io.WriteString(conn, "HTTP/1.1 "+strconv.Itoa(status)+" "+http.StatusText(status)+"\r\n\r\n"+banner); err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(up, brw) // whatever the client sent after the head, then the rest
			up.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(conn, up)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return p
}

func tunneled(name string, tc *tcpv3.TcpProxy_TunnelingConfig) *tcpv3.TcpProxy {
	tp := oneCluster(name)
	tp.TunnelingConfig = tc
	return tp
}

// TestTunnelConnect: a tcp_proxy with tunneling_config asks the cluster's
// endpoint, an HTTP proxy, for "CONNECT hostname HTTP/1.1" with Host
// hostname and nothing else the proxy did not add, and the connection's
// bytes flow through the tunnel once it answers 2xx; bytes the proxy sent
// right after its response head reach the client first.
func TestTunnelConnect(t *testing.T) {
	target := server(t, echo("echo:"))
	for _, tt := range []struct {
		name   string
		status int
		banner string
	}{
		{"200", http.StatusOK, ""},
		{"any 2xx, and bytes after the head", http.StatusAccepted, "hi:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startHTTPProxy(t, tt.status, tt.banner, target)
			h := start(t, tunneled("proxy", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "example.com:443"}), cluster(t, "proxy", nil, p.addr))
			c := dial(t, h.addr)
			if _, err := io.WriteString(c, "hello"); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.banner + "echo:hello"; string(got) != want {
				t.Errorf("client read %q, want %q", got, want)
			}
			reqs := p.requests()
			if len(reqs) != 1 {
				t.Fatalf("proxy saw %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodConnect || r.requestURI != "example.com:443" || r.host != "example.com:443" || len(r.header) != 0 {
				t.Errorf("proxy saw %+v, want CONNECT example.com:443 with Host example.com:443 and no header", r)
			}
			if f := field(h.waitLog(t, 1)[0], 5); f != "-" {
				t.Errorf("response flags %q, want -", f)
			}
		})
	}
}

// startPostDecap serves on 127.0.0.1 what a POST tunnel's far end is: a
// plain net/http handler that pipes the request body (r.Body, decoded by
// net/http by its framing) to target and streams what target answers as
// the response body, flushing as it goes. As a Go decapsulator would, it
// binds the target connection to r.Context(): net/http cancels that when
// the client's connection reaches EOF after the body, and the handler's
// answer is then cut. framing picks the response's:
// "chunked" (net/http's default), "length" (Content-Length: length) or
// "close" (Transfer-Encoding: identity, the body ends with the
// connection).
func startPostDecap(t *testing.T, target, framing string, length int) *httpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &httpProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		h := r.Header.Clone()
		h["Transfer-Encoding"] = r.TransferEncoding
		p.seen = append(p.seen, seenRequest{method: r.Method, requestURI: r.RequestURI, host: r.Host, header: h})
		p.mu.Unlock()
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("full duplex: %v", err)
			return
		}
		var d net.Dialer
		up, err := d.DialContext(r.Context(), "tcp", target)
		if err != nil {
			t.Errorf("decap dial %s: %v", target, err)
			return
		}
		defer up.Close()
		stop := context.AfterFunc(r.Context(), func() { _ = up.Close() })
		defer stop()
		switch framing {
		case "length":
			w.Header().Set("Content-Length", strconv.Itoa(length))
		case "close":
			w.Header().Set("Transfer-Encoding", "identity")
		}
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
		testutil.RelayPOST(w, r.Body, up, &wg)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return p
}

// echoThenBye is echo(prefix) that answers "bye" to the end of its input
// before it ends its own.
func echoThenBye(prefix string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		_, _ = io.Copy(prefixWriter{c, prefix}, c)
		_, _ = io.WriteString(c, "bye")
	}
}

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte(p.prefix), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// TestTunnelPost: with use_post the request is "POST post_path" (default
// "/") with Host hostname and Transfer-Encoding: chunked, the
// connection's bytes go as chunks (as Envoy's HTTP/1.1 codec sends a body
// without Content-Length) and the response body is read by its framing:
// a net/http handler reading r.Body and streaming its answer carries the
// connection both ways. The client's half-close ends the request body
// with the last chunk and leaves the connection open (no FIN): the
// target's answer to its end ("bye") still comes back, which a FIN to the
// decapsulator would cut by cancelling r.Context().
func TestTunnelPost(t *testing.T) {
	target := server(t, echoThenBye("echo:"))
	for _, tt := range []struct{ name, path, want, framing string }{
		{"default path, chunked response", "", "/", "chunked"},
		{"post_path, chunked response", "/tunnel", "/tunnel", "chunked"},
		{"Content-Length response", "", "/", "length"},
		{"response until close", "", "/", "close"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startPostDecap(t, target, tt.framing, len("echo:hello")+len("echo:worldbye"))
			h := start(t, tunneled("proxy", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "db.example:5432", UsePost: true, PostPath: tt.path}),
				cluster(t, "proxy", nil, p.addr))
			c := dial(t, h.addr)
			// Two writes, the first answered before the second is sent:
			// the bytes stream both ways, not only at the end.
			io.WriteString(c, "hello")
			br := bufio.NewReader(c)
			first := make([]byte, len("echo:hello"))
			if _, err := io.ReadFull(br, first); err != nil || string(first) != "echo:hello" {
				t.Fatalf("client read %q, %v; want echo:hello", first, err)
			}
			io.WriteString(c, "world")
			c.CloseWrite()
			got, err := io.ReadAll(br)
			if err != nil || string(got) != "echo:worldbye" {
				t.Errorf("client read %q, %v after the first answer; want echo:worldbye then the end", got, err)
			}
			reqs := p.requests()
			if len(reqs) != 1 || reqs[0].method != http.MethodPost || reqs[0].requestURI != tt.want || reqs[0].host != "db.example:5432" {
				t.Fatalf("proxy saw %+v, want POST %s with Host db.example:5432", reqs, tt.want)
			}
			if te := reqs[0].header["Transfer-Encoding"]; len(te) != 1 || te[0] != "chunked" {
				t.Errorf("request Transfer-Encoding %q, want chunked", te)
			}
			if f := field(h.waitLog(t, 1)[0], 5); f != "-" {
				t.Errorf("response flags %q, want -", f)
			}
		})
	}
}

// TestTunnelRefused: a proxy that does not answer 2xx, or a cluster that
// speaks HTTP/2 (whose HTTP/2 CONNECT Loom does not speak; refused before
// any connection to it), closes the downstream connection without a byte,
// flag UF.
func TestTunnelRefused(t *testing.T) {
	target := server(t, echo(""))
	h2 := func(c *clusterv3.Cluster) {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": xdstest.MustAny(t, &httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})}
	}
	for _, tt := range []struct {
		name   string
		status int
		mut    func(*clusterv3.Cluster)
		reason string
	}{
		{"403", http.StatusForbidden, nil, "answered_403"},
		{"407", http.StatusProxyAuthRequired, nil, "answered_407"},
		{"HTTP/2 cluster", http.StatusOK, h2, "HTTP/2_is_not_supported"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := startHTTPProxy(t, tt.status, "", target)
			var logs syncBuffer
			h := startOpts(t, upstream.New(upstream.Options{}), harnessOptions{format: "%RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n",
				logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))},
				tunneled("proxy", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "example.com:443"}), cluster(t, "proxy", tt.mut, p.addr))
			for i := 1; i <= 2; i++ {
				c := dial(t, h.addr)
				io.WriteString(c, "hello")
				got, _ := io.ReadAll(c)
				if len(got) != 0 {
					t.Errorf("client read %q, want nothing", got)
				}
				line := h.waitLog(t, i)[i-1]
				if !strings.HasPrefix(line, "UF ") || !strings.Contains(line, tt.reason) {
					t.Errorf("access log %q, want UF and %q", line, tt.reason)
				}
			}
			warns := strings.Count(logs.String(), "level=WARN")
			if want := map[bool]int{true: 1, false: 0}[tt.mut != nil]; warns != want {
				t.Errorf("%d Warn lines over 2 connections, want %d:\n%s", warns, want, logs.String())
			}
			if tt.mut != nil && p.accepted() != 0 {
				t.Errorf("the proxy accepted %d connections, want none for an HTTP/2 cluster", p.accepted())
			}
		})
	}
}

// TestTunnelOpenErrors: openTunnel's failures close the downstream
// connection without a byte, flag UF: a proxy that never answers is given
// up after the cluster's connect_timeout (a local connection failure), and
// one that answers something that is no HTTP/1.1 response, or a response
// head longer than Envoy's 60 KiB max_response_headers_kb, is a 502 from
// the proxy, named in %UPSTREAM_TRANSPORT_FAILURE_REASON%. The proxies
// keep their connection open, so that only the timeout or the reader's
// limit can end the wait.
func TestTunnelOpenErrors(t *testing.T) {
	holdOpen := func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) } // until the tcp_proxy closes
	for _, tt := range []struct {
		name    string
		timeout time.Duration // the cluster's connect_timeout
		answer  func(c *net.TCPConn)
		reason  string
	}{
		{"never answers", 50 * time.Millisecond, func(c *net.TCPConn) {}, "connection_failure"},
		{"garbage", 10 * time.Second, func(c *net.TCPConn) {
			_, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
		}, "tunnel:_no_valid_response_from_the_upstream_proxy:_malformed_HTTP_response"},
		{"head over 60 KiB", 10 * time.Second, func(c *net.TCPConn) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", maxTunnelHead)+"\r\n\r\n")
		}, "tunnel:_no_valid_response_from_the_upstream_proxy:_unexpected_EOF"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The request line the proxy read: sent before it answers, and
			// waited for below, since with "never answers" the tcp_proxy
			// may give up before this goroutine has run.
			reqs := make(chan string, 1)
			addr := server(t, func(c *net.TCPConn) {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					t.Errorf("proxy read: %v", err)
					return
				}
				reqs <- req.Method + " " + req.RequestURI
				tt.answer(c)
				holdOpen(c)
			})
			h := startOpts(t, upstream.New(upstream.Options{}), harnessOptions{format: "%RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON% %BYTES_SENT%\n"},
				tunneled("proxy", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "example.com:443"}),
				cluster(t, "proxy", func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(tt.timeout) }, addr))
			c := dial(t, h.addr)
			got, err := io.ReadAll(c)
			if err != nil || len(got) != 0 {
				t.Errorf("client read %q, %v; want nothing, then the end", got, err)
			}
			line := h.waitLog(t, 1)[0]
			if f := strings.Fields(line); len(f) != 3 || f[0] != "UF" || !strings.HasPrefix(f[1], tt.reason) || f[2] != "0" {
				t.Errorf("access log %q, want UF, a reason starting %q and 0 bytes sent", line, tt.reason)
			}
			select {
			case r := <-reqs:
				if r != "CONNECT example.com:443" {
					t.Errorf("proxy saw %q, want CONNECT example.com:443", r)
				}
			case <-time.After(5 * time.Second):
				t.Error("the proxy read no request within 5 s")
			}
		})
	}
}

// proxyProtocolCluster wraps the cluster's transport socket (raw_buffer) in
// an upstream_proxy_protocol socket of version v, as istiod does for a
// DestinationRule's trafficPolicy.proxyProtocol.
func proxyProtocolCluster(t *testing.T, v corev3.ProxyProtocolConfig_Version) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		c.TransportSocket = &corev3.TransportSocket{
			Name: "envoy.transport_sockets.upstream_proxy_protocol",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(t, &proxyprotocolv3.ProxyProtocolUpstreamTransport{
				Config: &corev3.ProxyProtocolConfig{Version: v},
				TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
					ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(t, &rawbufv3.RawBuffer{})}},
			})},
		}
	}
}

// proxyProtocolServer reads a PROXY protocol header (with go-proxyproto)
// from each connection and sends it back as text, then echoes.
func proxyProtocolServer(t *testing.T) string {
	return server(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			io.WriteString(c, "no header: "+err.Error()+"\n")
			return
		}
		line := "v" + strconv.Itoa(int(h.Version)) + " " + command(h.Command)
		if src, dst, ok := h.TCPAddrs(); ok {
			line += " " + src.String() + " " + dst.String()
		}
		io.WriteString(c, line+"\n")
		rest, _ := io.ReadAll(br)
		c.Write(rest)
	})
}

// TestProxyProtocol: a cluster whose transport socket is an
// upstream_proxy_protocol starts each connection with a PROXY protocol
// header carrying the downstream connection's source and (original)
// destination, as Envoy's; with no downstream connection, version 1 names
// the upstream connection's own addresses and version 2 is LOCAL.
func TestProxyProtocol(t *testing.T) {
	up := proxyProtocolServer(t)
	down := &filter.Connection{Source: netip.MustParseAddrPort("192.0.2.7:4242"), Destination: netip.MustParseAddrPort("10.1.2.3:9000"), OriginalDst: true}
	for _, tt := range []struct {
		name string
		v    corev3.ProxyProtocolConfig_Version
		conn *filter.Connection
		want string // "" : V1's own addresses
	}{
		{"v1", corev3.ProxyProtocolConfig_V1, down, "v1 PROXY 192.0.2.7:4242 10.1.2.3:9000"},
		{"v2", corev3.ProxyProtocolConfig_V2, down, "v2 PROXY 192.0.2.7:4242 10.1.2.3:9000"},
		{"v2 no downstream", corev3.ProxyProtocolConfig_V2, nil, "v2 LOCAL"},
		{"v1 no downstream", corev3.ProxyProtocolConfig_V1, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startOpts(t, upstream.New(upstream.Options{}), harnessOptions{conn: tt.conn}, oneCluster("pp"),
				cluster(t, "pp", proxyProtocolCluster(t, tt.v), up))
			c := dial(t, h.addr)
			io.WriteString(c, "payload")
			c.CloseWrite()
			got, _ := io.ReadAll(c)
			first, rest, _ := strings.Cut(string(got), "\n")
			want := tt.want
			if want == "" {
				// The proxy's own connection: from 127.0.0.1:<ephemeral> to
				// the upstream.
				if !strings.HasPrefix(first, "v1 PROXY 127.0.0.1:") || !strings.HasSuffix(first, " "+up) {
					t.Errorf("header %q, want v1 PROXY 127.0.0.1:<port> %s", first, up)
				}
			} else if first != want {
				t.Errorf("header %q, want %q", first, want)
			}
			if rest != "payload" {
				t.Errorf("after the header the upstream got %q, want payload", rest)
			}
		})
	}
}

func command(c proxyproto.ProtocolVersionAndCommand) string {
	if c.IsLocal() {
		return "LOCAL"
	}
	return "PROXY"
}

// bufConn reads through br (which may hold bytes read past a header)
// and writes to the connection.
type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// TestProxyProtocolBeforeTLS: the header wraps the TLS socket, as Istio's
// applyUpstreamProxyProtocol wraps a DestinationRule's TLS origination:
// it comes first on the connection, then the TLS handshake.
func TestProxyProtocolBeforeTLS(t *testing.T) {
	ca := testutil.NewCA(t, "root")
	cert := ca.Issue(t, testutil.LeafOptions{DNS: []string{"db.example.com"}}).TLS
	up := server(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			return
		}
		src, _, _ := h.TCPAddrs()
		tc := tls.Server(bufConn{c, br}, &tls.Config{Certificates: []tls.Certificate{cert}})
		if tc.Handshake() != nil {
			return
		}
		line, _ := bufio.NewReader(tc).ReadString('\n')
		io.WriteString(tc, src.String()+" "+line)
	})
	tlsPP := func(c *clusterv3.Cluster) {
		c.TransportSocket = &corev3.TransportSocket{
			Name: "envoy.transport_sockets.upstream_proxy_protocol",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(t, &proxyprotocolv3.ProxyProtocolUpstreamTransport{
				Config: &corev3.ProxyProtocolConfig{Version: corev3.ProxyProtocolConfig_V2},
				TransportSocket: xdstest.TLSSocket(t, &tlsv3.UpstreamTlsContext{Sni: "db.example.com",
					CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
						ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: xdstest.InlineBytes(ca.PEM)}}}}),
			})},
		}
	}
	down := &filter.Connection{Source: netip.MustParseAddrPort("[2001:db8::7]:4242"), Destination: netip.MustParseAddrPort("[2001:db8::1]:5432")}
	h := startOpts(t, upstream.New(upstream.Options{}), harnessOptions{conn: down}, oneCluster("db"), cluster(t, "db", tlsPP, up))
	c := dial(t, h.addr)
	io.WriteString(c, "hello\n")
	got, _ := bufio.NewReader(c).ReadString('\n')
	if got != "[2001:db8::7]:4242 hello\n" {
		t.Errorf("upstream answered %q, want the client's address then hello over TLS", got)
	}
}

// TestTunnelPostStalledChunk: a POST tunnel whose response stops inside
// a chunk (its size line, or its data without the CRLF) after the client
// half-closed is still closed by idle_timeout, both sides: the chunked
// decoder's wait is bounded by the connection's last activity.
func TestTunnelPostStalledChunk(t *testing.T) {
	for _, tt := range []struct{ name, body string }{
		{"chunk size only", "5"},
		{"chunk data without its CRLF", "5\r\nhello\r"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proxyDone := make(chan struct{})
			addr := server(t, func(c *net.TCPConn) {
				defer close(proxyDone)
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					t.Errorf("proxy read: %v", err)
					return
				}
				if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+tt.body); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, br) // until the tcp_proxy closes
			})
			tp := tunneled("proxy", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "db.example:5432", UsePost: true})
			tp.IdleTimeout = durationpb.New(200 * time.Millisecond)
			h := start(t, tp, cluster(t, "proxy", nil, addr))
			c := dial(t, h.addr) // its 10 s deadline bounds the wait
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(c); err != nil {
				t.Fatalf("client read %q, %v; want the idle connection closed", got, err)
			}
			select {
			case <-proxyDone:
			case <-time.After(5 * time.Second):
				t.Fatal("the connection to the upstream proxy is still open 5 s after the client's was closed")
			}
		})
	}
}

// TestTunnelPostChunkWaitsWhileActive: a response chunk cut short does
// not time out while bytes still move the other way: the decoder's wait
// ends at idle_timeout after the last byte either way, not after its own
// last read. The client writes a byte every 100 ms for 1.5 s (past the
// 1 s idle_timeout; a 10x margin per gap for a loaded -race run) while
// the proxy holds back the chunk's data.
func TestTunnelPostChunkWaitsWhileActive(t *testing.T) {
	const writes = 15
	addr := server(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Errorf("proxy read: %v", err)
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5"); err != nil {
			return
		}
		if _, err := io.ReadFull(req.Body, make([]byte, writes)); err != nil {
			t.Errorf("proxy read of the body: %v", err)
			return
		}
		if _, err := io.WriteString(c, "\r\nhello\r\n0\r\n\r\n"); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, br)
	})
	tp := tunneled("proxy", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "db.example:5432", UsePost: true})
	tp.IdleTimeout = durationpb.New(time.Second)
	h := start(t, tp, cluster(t, "proxy", nil, addr))
	c := dial(t, h.addr)
	for i := range writes {
		if _, err := c.Write([]byte{'a'}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		<-time.After(100 * time.Millisecond)
	}
	got := make([]byte, len("hello"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
		t.Fatalf("client read %q, %v; want hello, the chunk held back while the client wrote", got, err)
	}
}

// TestPostTunnelChunks: each Write is one chunk, its size in lower-case
// hex (RFC 9112 7.1), CloseWrite the last chunk and an empty trailer
// section, whatever the size (past the 32 KiB buffer included); net/http's
// decoder reads back what was written, and a Write allocates nothing.
func TestPostTunnelChunks(t *testing.T) {
	var wire strings.Builder
	pt := &postTunnel{bw: bufio.NewWriterSize(&wire, 32<<10+32), size: make([]byte, 0, 18)}
	var want []byte
	for _, n := range []int{1, 15, 16, 255, 32 << 10, 100 << 10} {
		p := []byte(strings.Repeat(string(rune('a'+n%26)), n))
		if k, err := pt.Write(p); err != nil || k != n {
			t.Fatalf("Write(%d bytes) = %d, %v", n, k, err)
		}
		want = append(want, p...)
	}
	if err := pt.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	raw := wire.String()
	if head := "1\r\nb\r\nf\r\n" + strings.Repeat("p", 15) + "\r\n10\r\n"; !strings.HasPrefix(raw, head) ||
		!strings.Contains(raw, "\r\nff\r\n") || !strings.Contains(raw, "\r\n8000\r\n") || !strings.HasSuffix(raw, "\r\n0\r\n\r\n") {
		t.Errorf("wire starts %q, ends %q; want chunks of sizes 1, f, 10, ff, 8000, 19000, then the last chunk", raw[:min(len(raw), 40)], raw[max(0, len(raw)-12):])
	}
	got, err := io.ReadAll(httputil.NewChunkedReader(strings.NewReader(raw)))
	if err != nil || string(got) != string(want) {
		t.Errorf("decoded %d bytes, %v; want the %d written", len(got), err, len(want))
	}

	pt = &postTunnel{bw: bufio.NewWriterSize(io.Discard, 32<<10+32), size: make([]byte, 0, 18)}
	p := make([]byte, 32<<10)
	if a := testing.AllocsPerRun(100, func() { _, _ = pt.Write(p) }); a != 0 {
		t.Errorf("a 32 KiB Write allocates %v times, want 0", a)
	}
}

// TestWarnedClusters: the set of clusters warned of says "first" once per
// cluster while it stays in the config, forgets a cluster when a
// generation without it is seen (so it never outgrows one config's
// clusters), and warns again of a cluster that came back.
func TestWarnedClusters(t *testing.T) {
	gen := func(n uint64, clusters ...string) *config.Generation {
		g := &config.Generation{Number: n, Clusters: map[string]*config.Cluster{}}
		for _, c := range clusters {
			g.Clusters[c] = &config.Cluster{Name: c}
		}
		return g
	}
	var w warnedClusters
	for i, step := range []struct {
		gen   *config.Generation
		name  string
		first bool
		size  int // names held after the step
	}{
		{gen(1, "a", "b"), "a", true, 1},
		{gen(1, "a", "b"), "a", false, 1},
		{gen(1, "a", "b"), "b", true, 2},
		{gen(2, "a", "b", "c"), "a", false, 2}, // a new generation keeps what is still there
		{gen(3, "c"), "c", true, 1},            // a and b left
		{gen(4, "a", "c"), "a", true, 2},       // a came back: warned again
		{gen(4, "a", "c"), "c", false, 2},
	} {
		if got := w.first(step.gen, step.name); got != step.first {
			t.Errorf("step %d: first(gen %d, %q) = %v, want %v", i, step.gen.Number, step.name, got, step.first)
		}
		if len(w.names) != step.size {
			t.Errorf("step %d: %d names held %v, want %d", i, len(w.names), w.names, step.size)
		}
	}
}
