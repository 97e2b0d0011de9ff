package listener

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// httpL is a bound listener whose one filter chain is an HCM.
func httpL(name, addr string) *config.Listener {
	return &config.Listener{Name: name, Address: addr, BindToPort: true,
		FilterChains: []*config.FilterChain{{Hash: 1, RouteConfigName: "r"}}}
}

// tcpL is a bound listener whose one filter chain is a tcp_proxy.
func tcpL(name, addr string) *config.Listener {
	return &config.Listener{Name: name, Address: addr, BindToPort: true,
		FilterChains: []*config.FilterChain{{Hash: 2, TCPProxy: &config.TCPProxy{}}}}
}

func gen(ls ...*config.Listener) *config.Generation {
	g := &config.Generation{Listeners: map[string]*config.Listener{}}
	for _, l := range ls {
		g.Listeners[l.Name] = l
	}
	return g
}

// rawGet sends GET / on an open connection and returns the body.
func rawGet(t *testing.T, c net.Conn, br *bufio.Reader) string {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestSocketsSurviveAndDrain(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	m, err := New(Options{Handler: func(l *config.Listener, _ *config.FilterChain) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				entered <- struct{}{}
				<-release
			}
			io.WriteString(w, l.Name)
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := httpL("a", addrA)
	if err := m.Update(gen(a)); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", addrA)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	if got := rawGet(t, conn, br); got != "a" {
		t.Fatalf("got %q", got)
	}

	// Generation 2 adds b and keeps a: a's socket and its open connection stay.
	if err := m.Update(gen(a, httpL("b", addrB))); err != nil {
		t.Fatal(err)
	}
	if got := rawGet(t, conn, br); got != "a" {
		t.Fatalf("after update, on the old connection: got %q", got)
	}
	if got := m.Addrs(); got["a"] != addrA || got["b"] != addrB {
		t.Fatalf("Addrs() = %v", got)
	}

	// A request in flight on a, then generation 3 drops a: a stops
	// accepting, the request completes.
	done := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addrA + "/slow")
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- string(b)
	}()
	<-entered
	if err := m.Update(gen(httpL("b", addrB))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addrA)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("removed listener still accepts")
		}
		<-time.After(10 * time.Millisecond)
	}
	close(release)
	if got := <-done; got != "a" {
		t.Fatalf("in-flight request on the drained listener: %q", got)
	}
	resp, err := http.Get("http://" + addrB + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "b" {
		t.Fatalf("b answered %q", b)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestBindError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	m, err := New(Options{Handler: func(*config.Listener, *config.FilterChain) http.Handler { return http.NotFoundHandler() }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	ok := httpL("ok", freeAddr(t))
	err = m.Update(gen(ok, httpL("busy", busy.Addr().String())))
	if err == nil || !strings.Contains(err.Error(), `"busy"`) {
		t.Fatalf("Update error = %v, want a bind error naming busy", err)
	}
	if _, bound := m.Addrs()["ok"]; !bound {
		t.Fatal("the listener that could bind is not bound")
	}
}

func TestRenameOnSameAddress(t *testing.T) {
	m, err := New(Options{Handler: func(l *config.Listener, _ *config.FilterChain) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, l.Name) })
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	addr := freeAddr(t)
	// A new connection per request: a kept-alive one would reach the
	// draining listener.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, name := range []string{"old", "new", "newer"} {
		// One Update removes the previous name and adds this one on the
		// same address: the old socket must be closed before the bind.
		if err := m.Update(gen(httpL(name, addr))); err != nil {
			t.Fatalf("update to %q: %v", name, err)
		}
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != name {
			t.Fatalf("listener answered %q, want %q", b, name)
		}
		if got := m.Addrs(); len(got) != 1 || got[name] != addr {
			t.Fatalf("Addrs() = %v, want only %s on %s", got, name, addr)
		}
	}
}

// echoConns is a ConnHandler that echoes each line prefixed with the
// listener's name, and closes the connection when ctx ends.
func echoConns(l *config.Listener, _ *config.FilterChain) ConnHandler {
	return func(ctx context.Context, c net.Conn) {
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.Close() })
		defer stop()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, l.Name+" "+line); err != nil {
				return
			}
		}
	}
}

func TestTCPListener(t *testing.T) {
	m, err := New(Options{
		Handler: func(l *config.Listener, _ *config.FilterChain) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "http") })
		},
		TCP:          echoConns,
		DrainTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	addr := freeAddr(t)
	tcp := tcpL("l", addr)
	if err := m.Update(gen(tcp)); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	io.WriteString(conn, "hi\n")
	if got, err := br.ReadString('\n'); err != nil || got != "l hi\n" {
		t.Fatalf("TCP listener answered %q, %v", got, err)
	}

	// The same name and address turn HTTP: a new socket serves HTTP, and
	// the open TCP connection is closed when the 200 ms drain is over.
	start := time.Now()
	if err := m.Update(gen(httpL("l", addr))); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "http" {
		t.Fatalf("after the switch to HTTP: %q", b)
	}
	io.WriteString(conn, "still\n")
	if got, err := br.ReadString('\n'); err != nil || got != "l still\n" {
		t.Fatalf("the draining TCP connection answered %q, %v", got, err)
	}
	if _, err := br.ReadString('\n'); err == nil || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("draining TCP connection ended after %v with %v, want EOF after the 200 ms drain", time.Since(start), err)
	}
}

func TestTCPListenerWithoutHandler(t *testing.T) {
	m, err := New(Options{Handler: func(*config.Listener, *config.FilterChain) http.Handler { return http.NotFoundHandler() }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	addr := freeAddr(t)
	if err := m.Update(gen(tcpL("t", addr))); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read = %d, %v; want EOF: a tcp_proxy chain without a TCP handler closes its connections", n, err)
	}
}
