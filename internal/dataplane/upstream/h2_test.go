package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// blockingH2C is an h2c server whose handler for "/" waits until the test
// unblocks it; other paths answer at once.
func blockingH2C(t *testing.T) (*h2cServer, func()) {
	release := make(chan struct{})
	srv := newH2CServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // before the server's Close, which waits for handlers
	return srv, unblock
}

// sendAll starts n requests to c at once and returns their errors as they
// end.
func sendAll(m *ClusterManager, c *config.Cluster, n int) chan error {
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := send(context.Background(), m, c)
			errs <- err
		}()
	}
	return errs
}

func collect(t *testing.T, errs chan error, n int) []error {
	t.Helper()
	var out []error
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case err := <-errs:
			out = append(out, err)
		case <-timeout:
			t.Fatalf("%d of %d requests never ended", n-len(out), n)
		}
	}
	return out
}

// sendPath sends a GET for path to a host of c.
func sendPath(m *ClusterManager, c *config.Cluster, path string) error {
	_, err := sendReq(context.Background(), m, c, PickOptions{}, path)
	return err
}

func h2Cluster(addr string, th *config.Thresholds, o config.ConnectionOptions) *config.Cluster {
	return &config.Cluster{Name: "c", HTTP2: true, Endpoints: []config.Endpoint{{Address: addr}},
		CircuitBreakers: config.CircuitBreakers{Thresholds: th}, Conn: o}
}

func TestH2MaxConcurrentStreams(t *testing.T) {
	srv, unblock := blockingH2C(t)
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.addr(), nil, config.ConnectionOptions{MaxConcurrentStreams: 2})
	m.Update(gen(c))

	errs := sendAll(m, c, 6)
	waitFor(t, "6 requests in the handler", func() bool { _, _, active, _ := srv.stats(); return active == 6 })
	unblock()
	for _, err := range collect(t, errs, 6) {
		if err != nil {
			t.Error(err)
		}
	}
	accepted, _, _, perConn := srv.stats()
	if accepted != 3 || perConn != 2 {
		t.Errorf("server accepted %d connections with at most %d streams on one; want 3 and 2 (max_concurrent_streams 2)", accepted, perConn)
	}
}

func TestH2MultiplexesWithinMaxConnections(t *testing.T) {
	srv, unblock := blockingH2C(t)
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.addr(), &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 100}, config.ConnectionOptions{})
	m.Update(gen(c))

	// Envoy's HTTP/2 pool multiplexes: once the connection is up, it
	// carries them all, and no request waits for a connection slot.
	if err := sendPath(m, c, "/fast"); err != nil {
		t.Fatal(err)
	}
	errs := sendAll(m, c, 5)
	waitFor(t, "5 requests in the handler", func() bool { _, _, active, _ := srv.stats(); return active == 5 })
	unblock()
	for _, err := range collect(t, errs, 5) {
		if err != nil {
			t.Error(err)
		}
	}
	if accepted, _, _, _ := srv.stats(); accepted != 1 {
		t.Errorf("server accepted %d connections, want 1", accepted)
	}
	if d := cmp.Diff(PolicyStats{}, m.PolicyStats("c")); d != "" {
		t.Errorf("PolicyStats (-want +got)\n%s", d)
	}
}

func TestH2PendingWhileConnecting(t *testing.T) {
	srv, unblock := blockingH2C(t)
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.addr(), &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 100}, config.ConnectionOptions{})
	m.Update(gen(c))

	// Envoy: max_pending_requests on HTTP/2 comes into play while the
	// connection is being established. The request that opens it is
	// not pending (as in the HTTP/1.1 pool); one more may wait for it.
	st := m.state("c")
	gate := make(chan struct{})
	tr := st.newH2CTransport()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		<-gate // the connection is being established until the test says
		return st.dial(ctx, network, addr)
	}
	st.h2c.Store(tr)
	errs := sendAll(m, c, 3)
	var overflowed int
	for _, err := range collect(t, errs, 1) {
		if errors.Is(err, ErrOverflow) {
			overflowed++
		}
	}
	close(gate)
	waitFor(t, "2 requests in the handler", func() bool { _, _, active, _ := srv.stats(); return active == 2 })
	unblock()
	for _, err := range collect(t, errs, 2) {
		if err != nil {
			t.Errorf("request within the limits: %v", err)
		}
	}
	if overflowed != 1 {
		t.Errorf("%d requests overflowed, want 1", overflowed)
	}
	if got := m.PolicyStats("c"); got.UpstreamRqPendingOverflow != 1 || got.UpstreamCxOverflow != 0 {
		t.Errorf("PolicyStats = %+v, want upstream_rq_pending_overflow 1 and upstream_cx_overflow 0", got)
	}
}

func TestH2MaxConnectionsAndPending(t *testing.T) {
	srv, unblock := blockingH2C(t)
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.addr(), &config.Thresholds{MaxConnections: 2, MaxPendingRequests: 1, MaxRequests: 100},
		config.ConnectionOptions{MaxConcurrentStreams: 1})
	m.Update(gen(c))

	// Two streams fill both connections; one request waits for a stream,
	// the fourth overflows at once.
	errs := sendAll(m, c, 2)
	waitFor(t, "2 requests in the handler", func() bool { _, _, active, _ := srv.stats(); return active == 2 })
	more := sendAll(m, c, 2)
	select {
	case err := <-more:
		if !errors.Is(err, ErrOverflow) {
			t.Fatalf("first request past the limits to end: err = %v, want ErrOverflow", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no request overflowed")
	}
	unblock()
	for _, err := range append(collect(t, errs, 2), collect(t, more, 1)...) {
		if err != nil {
			t.Errorf("request within the limits: %v", err)
		}
	}
	accepted, _, _, perConn := srv.stats()
	if accepted != 2 || perConn != 1 {
		t.Errorf("server accepted %d connections with at most %d streams on one; want 2 and 1", accepted, perConn)
	}
	want := PolicyStats{UpstreamCxOverflow: 2, UpstreamRqPendingOverflow: 1}
	if d := cmp.Diff(want, m.PolicyStats("c")); d != "" {
		t.Errorf("PolicyStats (-want +got)\n%s", d)
	}
}

func TestH2MaxRequests(t *testing.T) {
	srv, unblock := blockingH2C(t)
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.addr(), &config.Thresholds{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 2}, config.ConnectionOptions{})
	m.Update(gen(c))

	errs := sendAll(m, c, 2)
	waitFor(t, "2 requests in the handler", func() bool { _, _, active, _ := srv.stats(); return active == 2 })
	if _, err := send(context.Background(), m, c); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third outstanding request: err = %v, want ErrOverflow (max_requests 2)", err)
	}
	unblock()
	for _, err := range collect(t, errs, 2) {
		if err != nil {
			t.Error(err)
		}
	}
	if _, err := send(context.Background(), m, c); err != nil {
		t.Fatalf("after the requests ended: %v", err)
	}
	if got := m.PolicyStats("c").UpstreamRqPendingOverflow; got != 1 {
		t.Errorf("upstream_rq_pending_overflow = %d, want 1", got)
	}
}

func TestH2ConnectionOptions(t *testing.T) {
	for _, tt := range []struct {
		name      string
		conn      config.ConnectionOptions
		requests  int
		wantConns int
	}{
		{"multiplexed", config.ConnectionOptions{}, 5, 1},
		{"max_requests_per_connection 2", config.ConnectionOptions{MaxRequestsPerConnection: 2}, 5, 3},
		{"max_requests_per_connection 1", config.ConnectionOptions{MaxRequestsPerConnection: 1}, 3, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newH2CServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			m := New(Options{})
			defer m.Close()
			c := h2Cluster(srv.addr(), nil, tt.conn)
			m.Update(gen(c))
			for range tt.requests {
				if _, err := send(context.Background(), m, c); err != nil {
					t.Fatal(err)
				}
			}
			if accepted, _, _, _ := srv.stats(); accepted != tt.wantConns {
				t.Errorf("server accepted %d connections for %d requests, want %d", accepted, tt.requests, tt.wantConns)
			}
			// Drained connections close once their stream ended.
			waitFor(t, "drained connections to close", func() bool { _, open, _, _ := srv.stats(); return open <= 1 })
		})
	}
}

func TestH2MaxRequestsPerConnectionDrainsGracefully(t *testing.T) {
	srv, unblock := blockingH2C(t)
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.addr(), nil, config.ConnectionOptions{MaxRequestsPerConnection: 2})
	m.Update(gen(c))

	// Two slow streams use up the first connection; a third request goes
	// to a new one while the first keeps serving its streams.
	errs := sendAll(m, c, 2)
	waitFor(t, "2 requests in the handler", func() bool { _, _, active, _ := srv.stats(); return active == 2 })
	if err := sendPath(m, c, "/fast"); err != nil {
		t.Fatal(err)
	}
	if accepted, open, _, _ := srv.stats(); accepted != 2 || open != 2 {
		t.Fatalf("accepted %d connections, %d open; want 2 and 2 (the drained one still serves its streams)", accepted, open)
	}
	unblock()
	for _, err := range collect(t, errs, 2) {
		if err != nil {
			t.Errorf("stream on the draining connection: %v", err)
		}
	}
	waitFor(t, "the drained connection to close", func() bool { _, open, _, _ := srv.stats(); return open == 1 })
}

func TestH2MaxConnectionDuration(t *testing.T) {
	srv, unblock := blockingH2C(t)
	m := New(Options{})
	defer m.Close()
	const age = 200 * time.Millisecond
	c := h2Cluster(srv.addr(), nil, config.ConnectionOptions{MaxConnectionDuration: age})
	m.Update(gen(c))

	// A stream open when the connection reaches its age finishes on it;
	// the connection then closes and the next request opens another.
	errs := sendAll(m, c, 1)
	waitFor(t, "the request in the handler", func() bool { _, _, active, _ := srv.stats(); return active == 1 })
	waitFor(t, "the connection to drain at its age", func() bool {
		st := m.state("c")
		st.h1.mu.Lock()
		defer st.h1.mu.Unlock()
		return len(st.h2cPool.conns) == 0
	})
	if err := sendPath(m, c, "/fast"); err != nil {
		t.Fatal(err)
	}
	if accepted, _, _, _ := srv.stats(); accepted != 2 {
		t.Fatalf("accepted %d connections, want 2 (the first drained at max_connection_duration)", accepted)
	}
	unblock()
	for _, err := range collect(t, errs, 1) {
		if err != nil {
			t.Errorf("stream on the draining connection: %v", err)
		}
	}
	// Both connections close at their age once idle.
	waitFor(t, "connections past their age to close", func() bool { _, open, _, _ := srv.stats(); return open == 0 })
}

func TestH2ResponseHeaderLimits(t *testing.T) {
	srv := newH2CServer(t, func(w http.ResponseWriter, r *http.Request) {
		for i := range 101 {
			w.Header().Set(fmt.Sprintf("x-h%d", i), "v")
		}
	})
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.addr(), nil, config.ConnectionOptions{})
	m.Update(gen(c))
	_, err := send(context.Background(), m, c)
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		t.Fatalf("response with 101 headers: err = %v, want *ProtocolError", err)
	}
	// The stream was ended: the connection still serves.
	srv2 := newH2CServer(t, func(w http.ResponseWriter, r *http.Request) {})
	c2 := h2Cluster(srv2.addr(), &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 10},
		config.ConnectionOptions{MaxConcurrentStreams: 1})
	c2.Name = "c2"
	m.Update(gen(c, c2))
	for range 3 {
		if _, err := send(context.Background(), m, c2); err != nil {
			t.Fatal(err)
		}
	}
}

func TestH2GoAwayMovesToANewConnection(t *testing.T) {
	srv := newH2CServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bye" {
			// net/http's HTTP/2 server sends GOAWAY and closes the
			// connection once idle.
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "ok")
	})
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.addr(), nil, config.ConnectionOptions{})
	m.Update(gen(c))
	if err := sendPath(m, c, "/bye"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := sendPath(m, c, "/"); err != nil {
			t.Fatalf("request %d after the upstream's GOAWAY: %v", i+1, err)
		}
	}
	if accepted, _, _, _ := srv.stats(); accepted != 2 {
		t.Errorf("server accepted %d connections, want 2 (a new one after GOAWAY)", accepted)
	}
}

// TestH2Retryable: only the errors net/http itself retries on another
// connection are; a GOAWAY for streams the upstream may have processed
// is not, whatever its debug data or code says.
func TestH2Retryable(t *testing.T) {
	for _, tc := range []struct {
		err  string
		want bool
	}{
		{"http2: client conn not usable", true},
		{"http2: Transport received Server's graceful shutdown GOAWAY", true},
		{"stream error: stream ID 3; REFUSED_STREAM", true},
		{"stream error: stream ID 3; PROTOCOL_ERROR; received from peer", true},
		{"stream error: stream ID 3; PROTOCOL_ERROR", false},
		{"stream error: stream ID 3; CANCEL; received from peer", false},
		{"http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=REFUSED_STREAM, debug=\"\"", false},
		{"http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug=\"graceful shutdown GOAWAY\"", false},
		{"unexpected EOF", false},
	} {
		if got := h2Retryable(errors.New(tc.err)); got != tc.want {
			t.Errorf("h2Retryable(%q) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// sendWithin sends a GET to a host of c picked with opts, failing after d.
func sendWithin(m *ClusterManager, c *config.Cluster, opts PickOptions, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := sendReq(ctx, m, c, opts, "/")
	return err
}

// TestIdleConnectionGivesUpItsSlot: at max_connections 1, an idle
// connection of the cluster, HTTP/2 or HTTP/1.1, never leaves a request
// for another endpoint or protocol waiting for a stream that never ends:
// that request's pool has no connection and connects past the limit, as
// Envoy's (TestCircuitBreakerIdleGivesSlotToBusyHost covers an idle
// connection giving up its slot).
func TestIdleConnectionGivesUpItsSlot(t *testing.T) {
	th := &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 10, MaxRequests: 100}
	t.Run("HTTP/2 endpoints", func(t *testing.T) {
		a, b := newH2CServer(t, func(w http.ResponseWriter, r *http.Request) {}), newH2CServer(t, func(w http.ResponseWriter, r *http.Request) {})
		m := New(Options{})
		defer m.Close()
		c := h2Cluster(a.addr(), th, config.ConnectionOptions{})
		c.LBPolicy = config.LBRoundRobin
		c.Endpoints = append(c.Endpoints, config.Endpoint{Address: b.addr()})
		m.Update(gen(c))
		for i := range 4 {
			if err := sendWithin(m, c, PickOptions{}, 3*time.Second); err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		}
	})
	t.Run("HTTP/2 then HTTP/1.1", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		srv.Start()
		defer srv.Close()
		m := New(Options{})
		defer m.Close()
		c := &config.Cluster{Name: "c", DownstreamHTTP2: true, Endpoints: []config.Endpoint{{Address: strings.TrimPrefix(srv.URL, "http://")}},
			CircuitBreakers: config.CircuitBreakers{Thresholds: th}}
		m.Update(gen(c))
		for i, h2 := range []bool{true, false, true} {
			if err := sendWithin(m, c, PickOptions{DownstreamHTTP2: h2}, 3*time.Second); err != nil {
				t.Fatalf("request %d (HTTP/2 %v): %v", i+1, h2, err)
			}
		}
	})
}
