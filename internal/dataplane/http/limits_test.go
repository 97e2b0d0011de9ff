package http_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// startRawHead starts a raw HTTP/1.1 upstream that answers every request
// with head (status line and headers, without the blank line) and an
// empty body, counting the requests.
func startRawHead(t testing.TB, head func() string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					hits.Add(1)
					if _, err := io.WriteString(c, head()+"\r\nContent-Length: 0\r\n\r\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), &hits
}

// manyHeaders is n header lines "X-H<i>: <value of size bytes>".
func manyHeaders(n, size int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "\r\nX-H%d: %s", i, strings.Repeat("v", size))
	}
	return b.String()
}

// TestUpstreamHeaderLimits checks Envoy's limits on an upstream's response
// headers (max_headers_count 100, max_response_headers_kb 60) and its
// answer to an upstream that breaks them or sends no valid HTTP: 502 with
// flag UPE and upstream_reset_before_response_started{protocol_error},
// retried under retry_on reset as any reset.
func TestUpstreamHeaderLimits(t *testing.T) {
	lAddr := closedAddr(t)
	ok, _ := startRawHead(t, func() string { return "HTTP/1.1 200 OK" + manyHeaders(99, 10) })
	many, _ := startRawHead(t, func() string { return "HTTP/1.1 200 OK" + manyHeaders(101, 10) })
	big, _ := startRawHead(t, func() string { return "HTTP/1.1 200 OK" + manyHeaders(1, 61<<10) })
	huge, _ := startRawHead(t, func() string { return "HTTP/1.1 200 OK" + manyHeaders(1, 1<<20) })
	bad, badHits := startRawHead(t, func() string { return "HTTP/1.1 two hundred OK" })
	clusters := []*clusterv3.Cluster{staticCluster(t, "ok", false, ok), staticCluster(t, "many", false, many),
		staticCluster(t, "big", false, big), staticCluster(t, "huge", false, huge), staticCluster(t, "bad", false, bad)}
	var hosts []*routev3.VirtualHost
	for _, c := range []string{"ok", "many", "big", "huge", "bad"} {
		hosts = append(hosts, vhost(c, []string{c}, prefixRoute(c, "/", c)))
	}
	hosts = append(hosts, vhost("retried", []string{"retried"}, withRetry(prefixRoute("retried", "/", "bad"), "reset", 2)))
	g := build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", hosts...)}, clusters)
	p := startProxy(t, g)

	for _, tc := range []struct {
		host     string
		wantCode int
		wantLog  string
	}{
		{"ok", 200, " 200 - via_upstream "},
		{"many", 502, " 502 UPE upstream_reset_before_response_started{protocol_error} "},
		{"big", 502, " 502 UPE upstream_reset_before_response_started{protocol_error} "},
		{"huge", 502, " 502 UPE upstream_reset_before_response_started{protocol_error} "},
		{"bad", 502, " 502 UPE upstream_reset_before_response_started{protocol_error} "},
		{"retried", 502, " 502 UPE,URX upstream_reset_before_response_started{protocol_error} "},
	} {
		t.Run(tc.host, func(t *testing.T) {
			before := badHits.Load()
			r := p.do("GET", tc.host, "/", map[string]string{"X-Request-Id": "limits-" + tc.host}, nil)
			if r.code != tc.wantCode {
				t.Fatalf("status %d %q, want %d", r.code, r.body, tc.wantCode)
			}
			if tc.wantCode == 502 && r.body != "upstream connect error or disconnect/reset before headers. reset reason: protocol error" {
				t.Errorf("body %q, want Envoy's protocol error text", r.body)
			}
			if line := p.logLine("limits-" + tc.host); !strings.Contains(line, tc.wantLog) {
				t.Errorf("access log line %q: want %q", line, tc.wantLog)
			}
			if tc.host == "retried" {
				if n := badHits.Load() - before; n != 3 {
					t.Errorf("the upstream saw %d attempts, want 3 (retry_on reset retries a protocol error)", n)
				}
			}
		})
	}
}

// TestRequestHeaderLimits checks the HCM's request header limits
// (max_headers_count 100 and max_request_headers_kb 60 by default, both
// configurable): past them, 431 before any route or upstream.
func TestRequestHeaderLimits(t *testing.T) {
	be := startBackend(t, "be", false, nil)
	lAddr := closedAddr(t)
	g := build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("be", []string{"be"}, prefixRoute("be", "/", "be")))},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)})
	p := startProxy(t, g)
	hdrs := func(n, size int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("X-H%d", i)] = strings.Repeat("v", size)
		}
		return m
	}
	// A second listener with max_request_headers_kb 2 and
	// max_headers_count 10.
	small := httpListener(t, "small", closedAddr(t), "rt")
	var hcm hcmv3.HttpConnectionManager
	if err := small.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.MaxRequestHeadersKb = wrapperspb.UInt32(2)
	hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(10)}
	small.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
	p.apply(build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt"), small},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("be", []string{"be"}, prefixRoute("be", "/", "be")))},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)}))
	for _, tc := range []struct {
		name     string
		listener string
		hdr      map[string]string
		wantCode int
	}{
		{"configured: 10 headers", "small", hdrs(8, 10), 200},
		{"configured: 11 headers", "small", hdrs(9, 10), 431},
		{"configured: 3 KiB", "small", hdrs(1, 3<<10), 431},
		// The client adds User-Agent and Accept-Encoding; the proxy's own
		// X-Request-Id does not count.
		{"98 headers", "l", hdrs(96, 10), 200},
		{"101 headers", "l", hdrs(99, 10), 431},
		{"59 KiB", "l", hdrs(1, 59<<10), 200},
		{"61 KiB", "l", hdrs(1, 61<<10), 431},
		{"200 KiB", "l", hdrs(1, 200<<10), 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := be.hits.Load()
			req, _ := http.NewRequest("GET", "http://"+p.addr(tc.listener)+"/", nil)
			req.Host = "be"
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := p.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if reached := be.hits.Load() > before; reached != (tc.wantCode == 200) {
				t.Errorf("reached the upstream = %v, want %v", reached, tc.wantCode == 200)
			}
		})
	}
}

// TestUseDownstreamProtocol checks use_downstream_protocol_config (Istio's
// useClientProtocol): an HTTP/1.1 request goes upstream over HTTP/1.1 and
// an HTTP/2 (h2c) request over h2c, to the same endpoint.
func TestUseDownstreamProtocol(t *testing.T) {
	both := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	both.Config.Protocols = new(http.Protocols)
	both.Config.Protocols.SetHTTP1(true)
	both.Config.Protocols.SetUnencryptedHTTP2(true)
	both.Start()
	t.Cleanup(both.Close)
	c := staticCluster(t, "both", false, both.Listener.Addr().String())
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{config.HTTPProtocolOptionsKey: xdstest.MustAny(t, &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
			HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}})}
	lAddr := closedAddr(t)
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("both", []string{"*"}, prefixRoute("both", "/", "both")))},
		[]*clusterv3.Cluster{c}))
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   string
	}{
		{"HTTP/1.1", p.client, "HTTP/1.1"},
		{"h2c", h2cClient(), "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 3 { // the pools stay apart
				resp, err := tc.client.Get("http://" + p.addr("l") + "/")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != tc.want {
					t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, b, tc.want)
				}
			}
		})
	}
}

// TestH2CIdleTimeout checks that an h2c cluster's idle_timeout
// (common_http_protocol_options; Istio's connectionPool idleTimeout) closes
// its idle upstream connection.
func TestH2CIdleTimeout(t *testing.T) {
	var closed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := staticCluster(t, "h2", false, srv.Listener.Addr().String())
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{config.HTTPProtocolOptionsKey: xdstest.MustAny(t, &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(200 * time.Millisecond)},
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})}
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("h2", []string{"*"}, prefixRoute("h2", "/", "h2")))},
		[]*clusterv3.Cluster{c}))
	if r := p.do("GET", "h2", "/", nil, nil); r.code != 200 || r.body != "HTTP/2.0" {
		t.Fatalf("got %d %q, want 200 HTTP/2.0", r.code, r.body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle h2c connection was still open 10 s after the request (idle_timeout 200ms)")
		}
		<-time.After(20 * time.Millisecond)
	}
}
