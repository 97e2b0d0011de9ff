package http_test

import (
	"bufio"
	"context"
	"errors"
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
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// startRawEarly starts a raw HTTP/1.1 upstream that answers 200 "ok" as
// soon as it has the request head, then reads the body to its end and
// serves the next request on the connection.
func startRawEarly(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
						return
					}
					if _, err := io.Copy(io.Discard, req.Body); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestEarlyResponseSlowBody: upstreams that answer before they read a
// slowly streamed chunked request body. net/http's HTTP/2 transport keeps
// reading and closes the body after RoundTrip returned; the proxy must not
// recycle what it handed over (run with -race).
func TestEarlyResponseSlowBody(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	h2 := startBackend(t, "h2", true, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/413" {
			// A status above 299 makes the transport abort the body write
			// and close the body on a goroutine of its own.
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		}
		io.WriteString(w, "ok")
	})
	stall := startBackend(t, "stall", true, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	raw := startRawEarly(t)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("h2", []string{"h2"}, prefixRoute("h2", "/", "h2")),
			vhost("h2-retry", []string{"h2-retry"}, withRetry(prefixRoute("h2-retry", "/", "h2"), "5xx", 2)),
			// The route timeout fires while the transport still reads the
			// body: RoundTrip returns at once, the body is closed later.
			vhost("h2-timeout", []string{"h2-timeout"}, withTimeout(prefixRoute("h2-timeout", "/", "stall"), 30*time.Millisecond)),
			vhost("h1", []string{"h1"}, prefixRoute("h1", "/", "h1")),
			vhost("h1-retry", []string{"h1-retry"}, withRetry(prefixRoute("h1-retry", "/", "h1"), "5xx", 2)),
		)},
		[]*clusterv3.Cluster{staticCluster(t, "h2", true, h2.addr), staticCluster(t, "stall", true, stall.addr), staticCluster(t, "h1", false, raw)})
	p := startProxy(t, g)
	// An h2c client: net/http's HTTP/1 server would drain the request
	// body before writing the response, which hides the race.
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	send := func(host, path string, want int) error {
		pr, pw := io.Pipe()
		go func() {
			// Pace the body so that the upstream transport is still
			// waiting for it when the proxy's handler has returned.
			for i := 0; i < 5; i++ {
				if _, err := pw.Write([]byte(strings.Repeat("b", 512))); err != nil {
					return
				}
				<-time.After(20 * time.Millisecond)
			}
			pw.Close()
		}()
		defer pr.Close()
		req, err := http.NewRequest("POST", "http://"+p.addr("l")+path, pr)
		if err != nil {
			return err
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if wantBody := map[bool]string{true: "upstream request timeout", false: "ok"}[want == 504]; resp.StatusCode != want || string(b) != wantBody {
			return fmt.Errorf("got %d %q, want %d %q", resp.StatusCode, b, want, wantBody)
		}
		return nil
	}
	tests := []struct {
		host, path string
		want       int
	}{
		{"h2", "/", 200},
		{"h2", "/413", 413},
		{"h2-retry", "/", 200},
		{"h2-retry", "/413", 413},
		{"h2-timeout", "/", 504},
		{"h1", "/", 200},
		{"h1-retry", "/", 200},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.path, func(t *testing.T) {
			const n, par = 40, 8
			errs := make(chan error, n)
			var wg sync.WaitGroup
			sem := make(chan struct{}, par)
			for range n {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					errs <- send(tt.host, tt.path, tt.want)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestRetriedResponseKeepsConnection: the body of a retried 503 is read
// before it is closed, so the keep-alive connection is reused.
func TestRetriedResponseKeepsConnection(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		io.WriteString(w, "upstream unavailable")
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("all", []string{"*"}, withRetry(prefixRoute("r", "/", "bad"), "5xx", 2)))},
		[]*clusterv3.Cluster{staticCluster(t, "bad", false, s.Listener.Addr().String())})
	p := startProxy(t, g)
	for i := range 10 { // 10 requests x 3 attempts
		if r := p.do("GET", "x", "/", nil, nil); r.code != 503 {
			t.Fatalf("request %d: status %d, want 503", i, r.code)
		}
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("upstream accepted %d connections for 30 sequential attempts, want at most 2 (keep-alive reuse)", n)
	}
}

// TestNoDefaultUserAgent: a request without User-Agent reaches the
// upstream without one (no Go-http-client default); one with it keeps it.
func TestNoDefaultUserAgent(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	h1 := startBackend(t, "h1", false, nil)
	h2 := startBackend(t, "h2", true, nil)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("h1", []string{"h1"}, prefixRoute("h1", "/", "h1")),
			vhost("h2", []string{"h2"}, prefixRoute("h2", "/", "h2")),
		)},
		[]*clusterv3.Cluster{staticCluster(t, "h1", false, h1.addr), staticCluster(t, "h2", true, h2.addr)})
	p := startProxy(t, g)
	backends := map[string]*backend{"h1": h1, "h2": h2}
	tests := []struct {
		name, host string
		ua         []string // sent by the client; {""} sends none
		want       []string // seen by the upstream; nil: absent
	}{
		{name: "h1 none", host: "h1", ua: []string{""}},
		{name: "h2c none", host: "h2", ua: []string{""}},
		{name: "h1 curl", host: "h1", ua: []string{"curl/8"}, want: []string{"curl/8"}},
		{name: "h2c curl", host: "h2", ua: []string{"curl/8"}, want: []string{"curl/8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", "http://"+p.addr("l")+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host
			req.Header["User-Agent"] = tt.ua
			resp, err := p.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			got := backends[tt.host].last.Load().Header["User-Agent"]
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("upstream User-Agent %q, want %q", got, tt.want)
			}
		})
	}
}

// TestMalformedRequestBody: bad chunked encoding from a client that is
// still connected gets a local 400 DPE, not an empty 200.
func TestMalformedRequestBody(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	a := startBackend(t, "a", false, nil)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("stream", []string{"stream"}, prefixRoute("stream", "/", "a")),
			vhost("buffer", []string{"buffer"}, withRetry(prefixRoute("buffer", "/", "a"), "5xx", 2)),
		)},
		[]*clusterv3.Cluster{staticCluster(t, "a", false, a.addr)})
	p := startProxy(t, g)
	for _, host := range []string{"stream", "buffer"} {
		t.Run(host, func(t *testing.T) {
			c, err := net.Dial("tcp", p.addr("l"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rid := "malformed-" + host
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: %s\r\nX-Request-Id: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", host, rid)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
			if line := p.logLine(rid); !strings.Contains(line, " 400 DPE ") {
				t.Errorf("access log line %q: want 400 DPE", line)
			}
		})
	}
}

// TestBackoff: a client that leaves during the retry back-off is logged as
// DC; a route timeout is reached by the back-off, not anticipated.
func TestBackoff(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	bad := startBackend(t, "bad", false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	const timeout = 150 * time.Millisecond
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("dc", []string{"dc"}, withRetry(prefixRoute("dc", "/", "bad"), "5xx", 100)),
			vhost("ut", []string{"ut"}, withTimeout(withRetry(prefixRoute("ut", "/", "bad"), "5xx", 100), timeout)),
		)},
		[]*clusterv3.Cluster{staticCluster(t, "bad", false, bad.addr)})
	p := startProxy(t, g)

	t.Run("downstream disconnect", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr("l")+"/", nil)
		req.Host = "dc"
		req.Header.Set("X-Request-Id", "backoff-dc")
		if resp, err := p.client.Do(req); !errors.Is(err, context.DeadlineExceeded) {
			if err == nil {
				resp.Body.Close()
			}
			t.Fatalf("client got %v, want its own deadline", err)
		}
		if line := p.logLine("backoff-dc"); !strings.Contains(line, " 0 DC downstream_remote_disconnect ") {
			t.Errorf("access log line %q: want 0 DC", line)
		}
	})
	t.Run("route timeout", func(t *testing.T) {
		for i := range 5 {
			start := time.Now()
			rid := fmt.Sprint("backoff-ut-", i)
			r := p.do("GET", "ut", "/", map[string]string{"X-Request-Id": rid}, nil)
			if d := time.Since(start); d < timeout {
				t.Errorf("request %d: 504 after %v, before the route timeout of %v", i, d, timeout)
			}
			if r.code != 504 {
				t.Errorf("request %d: status %d, want 504", i, r.code)
			}
			if line := p.logLine(rid); !strings.Contains(line, " 504 UT ") {
				t.Errorf("access log line %q: want 504 UT", line)
			}
		}
	})
}

// TestTimeoutWhileStreaming: a route or per-try timeout that fires while
// the response body streams is logged as UT, not UC.
func TestTimeoutWhileStreaming(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	stall := startBackend(t, "stall", false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	perTry := withRetry(prefixRoute("pertry", "/", "stall"), "5xx", 1)
	perTry.GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(100 * time.Millisecond)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("route", []string{"route"}, withTimeout(prefixRoute("route", "/", "stall"), 100*time.Millisecond)),
			vhost("pertry", []string{"pertry"}, perTry),
		)},
		[]*clusterv3.Cluster{staticCluster(t, "stall", false, stall.addr)})
	p := startProxy(t, g)
	tests := []struct{ host, want string }{
		{"route", " 200 UT upstream_response_timeout "},
		{"pertry", " 200 UT upstream_per_try_timeout "},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			rid := "streaming-" + tt.host
			req, _ := http.NewRequest("GET", "http://"+p.addr("l")+"/", nil)
			req.Host = tt.host
			req.Header.Set("X-Request-Id", rid)
			resp, err := p.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if line := p.logLine(rid); !strings.Contains(line, tt.want) {
				t.Errorf("access log line %q: want %q", line, tt.want)
			}
		})
	}
}

// TestTruncatedUpstreamBodyResetsDownstream: an upstream that dies in the
// middle of a chunked body must not look like a complete response to the
// client (Envoy resets the downstream stream; a clean end would let the
// client take "part" as the whole body).
func TestTruncatedUpstreamBodyResetsDownstream(t *testing.T) {
	lAddr := closedAddr(t)
	cut := startBackend(t, "cut", false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part")
		w.(http.Flusher).Flush() // chunked, headers and one chunk sent
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close() // no terminating chunk
		}
	})
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("cut", []string{"cut"}, prefixRoute("cut", "/", "cut")))},
		[]*clusterv3.Cluster{staticCluster(t, "cut", false, cut.addr)})
	p := startProxy(t, g)
	req, _ := http.NewRequest("GET", "http://"+p.addr("l")+"/", nil)
	req.Host = "cut"
	req.Header.Set("X-Request-Id", "truncated")
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("read %q and a clean end of body; want an error (the upstream cut the body short)", body)
	}
	if line := p.logLine("truncated"); !strings.Contains(line, " 200 UC upstream_reset_after_response_started ") {
		t.Errorf("access log line %q: want 200 UC upstream_reset_after_response_started", line)
	}
}
