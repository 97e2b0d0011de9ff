package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingServer is an httptest server that counts the connections it
// accepts, so tests can tell reuse from redial.
type countingServer struct {
	*httptest.Server
	mu    sync.Mutex
	conns int
	live  map[net.Conn]bool
}

func newCountingServer(t *testing.T, h http.HandlerFunc) *countingServer {
	return newCountingServerWith(t, h, nil)
}

// newCountingServerWith is newCountingServer with the server's config
// changed by configure (nil: none) before it starts.
func newCountingServerWith(t testing.TB, h http.Handler, configure func(*http.Server)) *countingServer {
	cs := &countingServer{live: map[net.Conn]bool{}}
	cs.Server = httptest.NewUnstartedServer(h)
	if configure != nil {
		configure(cs.Config)
	}
	cs.Config.ConnState = func(c net.Conn, s http.ConnState) {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		switch s {
		case http.StateNew:
			cs.conns++
			cs.live[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(cs.live, c)
		}
	}
	cs.Start()
	t.Cleanup(cs.Close)
	return cs
}

func (cs *countingServer) accepted() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.conns
}

// closeIdle closes the server's side of every connection, as an upstream
// with a short keep-alive timeout would.
func (cs *countingServer) closeIdle() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.live {
		c.Close()
	}
}

func testTransport() *h1Transport {
	d := &net.Dialer{Timeout: time.Second}
	return newH1Transport(func(ctx context.Context, n, a string) (net.Conn, error) {
		c, err := d.DialContext(ctx, n, a)
		if err != nil {
			return nil, &ConnectError{Addr: a, Err: err}
		}
		return c, nil
	}, 4, time.Minute)
}

func do(t *testing.T, rt http.RoundTripper, ctx context.Context, method, url string, body io.Reader) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b), nil
}

func TestH1KeepAliveReuse(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.(http.Flusher).Flush() // forces chunked encoding
			io.WriteString(w, "chunk")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		default:
			b, _ := io.ReadAll(r.Body)
			io.WriteString(w, r.Method+" "+string(b))
		}
	})
	tr := testTransport()
	defer tr.close()
	ctx := context.Background()
	for i, tc := range []struct{ method, path, body, want string }{
		{"GET", "/", "", "GET "},
		{"POST", "/", "hello", "POST hello"},
		{"GET", "/chunked", "", "chunk"},
		{"HEAD", "/", "", ""},
		{"GET", "/nocontent", "", ""},
		{"PUT", "/", strings.Repeat("x", 100000), "PUT " + strings.Repeat("x", 100000)},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		_, got, err := do(t, tr, ctx, tc.method, srv.URL+tc.path, body)
		if err != nil {
			t.Fatalf("request %d %s %s: %v", i, tc.method, tc.path, err)
		}
		if got != tc.want {
			t.Fatalf("request %d: body %q, want %q", i, got, tc.want)
		}
	}
	if n := srv.accepted(); n != 1 {
		t.Fatalf("server accepted %d connections for 6 sequential requests, want 1 (keep-alive reuse)", n)
	}
}

func TestH1StaleIdleConnectionIsReplaced(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tr := testTransport()
	defer tr.close()
	ctx := context.Background()
	if _, _, err := do(t, tr, ctx, "GET", srv.URL, nil); err != nil {
		t.Fatal(err)
	}
	srv.closeIdle()
	// The closed connection is noticed (peek, or a failed replayable
	// attempt) and a new one is dialled: the caller never sees an error.
	deadline := time.Now().Add(5 * time.Second)
	for srv.accepted() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no new connection after the server closed the idle one")
		}
		if _, got, err := do(t, tr, ctx, "GET", srv.URL, nil); err != nil || got != "ok" {
			t.Fatalf("request after idle close: %q, %v", got, err)
		}
	}
	// A non-replayable body on a stale connection must be caught by the peek.
	srv.closeIdle()
	// Wait until the server's FIN reached the pooled connection; the peek
	// in getIdle is what is tested, not a failed attempt.
	addr := strings.TrimPrefix(srv.URL, "http://")
	for deadline := time.Now().Add(5 * time.Second); ; {
		tr.mu.Lock()
		l := tr.idle[addr]
		gone := len(l) == 1 && !connAlive(l[0].nc)
		tr.mu.Unlock()
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pooled connection never saw the server's close")
		}
		runtime.Gosched()
	}
	req, _ := http.NewRequest("POST", srv.URL, io.NopCloser(strings.NewReader("once")))
	req.ContentLength = 4
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("streamed POST after idle close: %v (the liveness peek should have skipped the dead connection)", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func TestH1EarlyCloseDoesNotReuse(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("y", 1<<20))
	})
	tr := testTransport()
	defer tr.close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	io.ReadFull(resp.Body, buf)
	resp.Body.Close() // gives up mid-body: the connection cannot be reused
	if _, _, err := do(t, tr, context.Background(), "GET", srv.URL, nil); err != nil {
		t.Fatal(err)
	}
	if n := srv.accepted(); n != 2 {
		t.Fatalf("accepted %d connections, want 2 (a half-read connection must not be reused)", n)
	}
}

func TestH1CancelInterruptsRead(t *testing.T) {
	release := make(chan struct{})
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tr := testTransport()
	defer tr.close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := do(t, tr, ctx, "GET", srv.URL, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cancellation took %v", d)
	}
}

func TestH1DialErrorIsConnectError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	tr := testTransport()
	defer tr.close()
	_, _, err = do(t, tr, context.Background(), "GET", "http://"+addr+"/", nil)
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *ConnectError", err)
	}
}

func TestH1Skips100Continue(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		c.Read(buf)
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
	}()
	tr := testTransport()
	defer tr.close()
	resp, body, err := do(t, tr, context.Background(), "GET", "http://"+ln.Addr().String()+"/", nil)
	if err != nil || resp.StatusCode != 200 || body != "done" {
		t.Fatalf("got %v %q %v, want 200 \"done\"", resp, body, err)
	}
}

func TestH1EarlyResponseWhileWritingBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// Read some of the request, answer 413 and close without reading
		// the rest: the unread body makes the close a reset.
		buf := make([]byte, 4096)
		c.Read(buf)
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
		c.Close()
	}()
	tr := testTransport()
	defer tr.close()
	body := strings.Repeat("x", 32<<20) // far more than the socket buffers hold
	resp, got, err := do(t, tr, context.Background(), "POST", "http://"+ln.Addr().String()+"/", strings.NewReader(body))
	<-done
	if err != nil {
		t.Fatalf("round trip: %v, want the upstream's 413", err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || got != "too big!" {
		t.Fatalf("got %d %q, want 413 \"too big!\"", resp.StatusCode, got)
	}
}
