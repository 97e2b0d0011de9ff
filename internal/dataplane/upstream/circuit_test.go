package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// send picks a host of c and runs a GET to it, reading the whole body.
func send(ctx context.Context, m *ClusterManager, c *config.Cluster) (int, error) {
	return sendReq(ctx, m, c, PickOptions{}, "/")
}

// sendReq is send with pick options and a path.
func sendReq(ctx context.Context, m *ClusterManager, c *config.Cluster, opts PickOptions, path string) (int, error) {
	h, err := m.Pick(c, opts)
	if err != nil {
		return 0, err
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+h.Addr+path, nil)
	resp, err := h.RT.RoundTrip(req)
	if err != nil {
		h.Done(Result{LocalOrigin: true})
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h.Done(Result{Status: resp.StatusCode})
	return resp.StatusCode, err
}

func addrOf(srv *countingServer) string { return strings.TrimPrefix(srv.URL, "http://") }

func TestCircuitBreakerPendingOverflow(t *testing.T) {
	release := make(chan struct{})
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	})
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // before the server's Close, which waits for handlers
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{{Address: addrOf(srv)}},
		CircuitBreakers: config.CircuitBreakers{Thresholds: &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 100, MaxRetries: 3}}}
	m.Update(gen(c))

	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := send(context.Background(), m, c)
			errs <- err
		}()
	}
	// One request holds the only connection, one waits, one overflows at once.
	timeout := time.After(5 * time.Second)
	select {
	case err := <-errs:
		if !errors.Is(err, ErrOverflow) {
			t.Fatalf("first request to end: err = %v, want ErrOverflow", err)
		}
	case <-timeout:
		t.Fatal("no request overflowed")
	}
	unblock()
	for range 2 {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("request within the limits: %v", err)
			}
		case <-timeout:
			t.Fatal("requests within the limits never ended")
		}
	}
	if n := srv.accepted(); n != 1 {
		t.Errorf("server accepted %d connections, want 1 (max_connections)", n)
	}
	got := m.PolicyStats("c")
	want := PolicyStats{UpstreamCxOverflow: 2, UpstreamRqPendingOverflow: 1}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("PolicyStats (-want +got)\n%s", d)
	}
}

func TestCircuitBreakerPendingCancelKeepsSlot(t *testing.T) {
	release := make(chan struct{})
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock)
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{{Address: addrOf(srv)}},
		CircuitBreakers: config.CircuitBreakers{Thresholds: &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 100}}}
	m.Update(gen(c))
	st := m.state("c")

	slow := make(chan error, 1)
	go func() {
		h, _ := m.Pick(c, PickOptions{})
		defer h.Done(Result{Status: 200})
		req, _ := http.NewRequest("GET", "http://"+h.Addr+"/slow", nil)
		resp, err := h.RT.RoundTrip(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	waitFor(t, "the slow request to hold the connection", func() bool { return srv.accepted() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	pending := make(chan error, 1)
	go func() {
		_, err := send(ctx, m, c)
		pending <- err
	}()
	waitFor(t, "the second request to wait", func() bool {
		st.h1.mu.Lock()
		defer st.h1.mu.Unlock()
		return len(st.h1.waiters) == 1
	})
	cancel()
	if err := <-pending; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pending request: err = %v, want context.Canceled", err)
	}
	unblock()
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	// The slot was neither leaked nor doubled: the next request reuses the
	// one connection.
	if _, err := send(context.Background(), m, c); err != nil {
		t.Fatal(err)
	}
	st.h1.mu.Lock()
	open := st.h1.open
	st.h1.mu.Unlock()
	if n := srv.accepted(); n != 1 || open != 1 {
		t.Errorf("accepted %d connections, pool counts %d open; want 1 and 1", n, open)
	}
}

func TestCircuitBreakerMaxRequests(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}},
		CircuitBreakers: config.CircuitBreakers{Thresholds: &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 2}}}
	m.Update(gen(c))
	h1, err1 := m.Pick(c, PickOptions{})
	_, err2 := m.Pick(c, PickOptions{})
	if err1 != nil || err2 != nil {
		t.Fatalf("picks within max_requests: %v, %v", err1, err2)
	}
	if _, err := m.Pick(c, PickOptions{}); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third outstanding request: err = %v, want ErrOverflow", err)
	}
	h1.Done(Result{Status: 200})
	if _, err := m.Pick(c, PickOptions{}); err != nil {
		t.Fatalf("after one request ended: %v", err)
	}
	if got := m.PolicyStats("c").UpstreamRqPendingOverflow; got != 1 {
		t.Errorf("upstream_rq_pending_overflow = %d, want 1", got)
	}
}

func TestCircuitBreakerMaxRetries(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	for _, tt := range []struct {
		name string
		cb   config.CircuitBreakers
		want int
	}{
		{"envoy default", config.CircuitBreakers{}, 3},
		{"max_retries 1", config.CircuitBreakers{Thresholds: &config.Thresholds{MaxRetries: 1}}, 1},
		{"max_retries 0", config.CircuitBreakers{Thresholds: &config.Thresholds{}}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &config.Cluster{Name: tt.name, CircuitBreakers: tt.cb}
			m.Update(gen(c))
			var releases []func()
			got := 0
			for range 5 {
				rel, ok := m.TryRetry(c)
				if ok {
					got++
					releases = append(releases, rel)
				}
			}
			if got != tt.want {
				t.Fatalf("concurrent retries allowed = %d, want %d", got, tt.want)
			}
			if n := m.PolicyStats(tt.name).UpstreamRqRetryOverflow; n != uint64(5-tt.want) {
				t.Errorf("upstream_rq_retry_overflow = %d, want %d", n, 5-tt.want)
			}
			for _, rel := range releases {
				rel()
				rel() // a second call gives nothing back
			}
			if tt.want > 0 {
				rel, ok := m.TryRetry(c)
				if !ok {
					t.Fatal("retry refused after all were released")
				}
				rel()
			}
		})
	}
}

func TestConnectionOptions(t *testing.T) {
	for _, tt := range []struct {
		name      string
		conn      config.ConnectionOptions
		requests  int
		wantConns int
	}{
		{"keep-alive", config.ConnectionOptions{}, 5, 1},
		{"max_requests_per_connection 2", config.ConnectionOptions{MaxRequestsPerConnection: 2}, 5, 3},
		{"max_requests_per_connection 1", config.ConnectionOptions{MaxRequestsPerConnection: 1}, 3, 3},
		{"max_connection_duration past", config.ConnectionOptions{MaxConnectionDuration: time.Nanosecond}, 3, 3},
		{"idle_timeout past", config.ConnectionOptions{IdleTimeout: time.Nanosecond}, 3, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{{Address: addrOf(srv)}}, Conn: tt.conn}
			m.Update(gen(c))
			for range tt.requests {
				if _, err := send(context.Background(), m, c); err != nil {
					t.Fatal(err)
				}
			}
			if n := srv.accepted(); n != tt.wantConns {
				t.Errorf("server accepted %d connections for %d requests, want %d", n, tt.requests, tt.wantConns)
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// blockedBackend is an upstream, HTTP/1.1 or h2c, whose handler for "/"
// holds each request until the test unblocks it and counts the requests
// in it now; "/close" answers at once with Connection: close (HTTP/1.1),
// other paths at once.
type blockedBackend struct {
	*countingServer
	inFlight atomic.Int32
}

func newBlockedBackends(t *testing.T, n int, h2 bool) ([]*blockedBackend, func()) {
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	var bs []*blockedBackend
	for range n {
		b := &blockedBackend{}
		h := func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/":
				b.inFlight.Add(1)
				defer b.inFlight.Add(-1)
				<-release
			case "/close":
				w.Header().Set("Connection", "close")
			}
			io.WriteString(w, "ok")
		}
		var configure func(*http.Server)
		if h2 {
			configure = func(s *http.Server) {
				s.Protocols = new(http.Protocols)
				s.Protocols.SetUnencryptedHTTP2(true)
			}
		}
		b.countingServer = newCountingServerWith(t, http.HandlerFunc(h), configure)
		bs = append(bs, b)
	}
	t.Cleanup(unblock) // before the servers' Close, which waits for handlers
	return bs, unblock
}

// checkPerPool fails the test unless the cluster's per-pool connection
// counts add up to its open count and none is negative.
func checkPerPool(t *testing.T, tr *h1Transport) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	sum := 0
	for p, n := range tr.perPool {
		if n <= 0 {
			t.Errorf("pool %q counts %d connections", p.key, n)
		}
		sum += n
	}
	if sum != tr.open {
		t.Errorf("pools count %d connections, the cluster %d", sum, tr.open)
	}
}

// TestCircuitBreakerHostWithNoConnection is Istio's circuit-breaking task
// (maxConnections 1, http1MaxPendingRequests 1) on a service with 3
// endpoints. As Envoy's connection pools (ConnPoolImplBase::
// tryCreateNewConnection), a request for an endpoint with no connection
// at max_connections counts upstream_cx_overflow and connects anyway,
// rather than queue behind another endpoint's connection or overflow: 3
// concurrent requests to the 3 endpoints are served at once, each over
// its own connection, which later requests reuse.
func TestCircuitBreakerHostWithNoConnection(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			bs, unblock := newBlockedBackends(t, 3, h2)
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", HTTP2: h2, LBPolicy: config.LBRoundRobin,
				CircuitBreakers: config.CircuitBreakers{Thresholds: &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 100, MaxRetries: 3}}}
			for _, b := range bs {
				c.Endpoints = append(c.Endpoints, config.Endpoint{Address: addrOf(b.countingServer)})
			}
			m.Update(gen(c))
			// Round robin: 3 picks, one per endpoint, sent at once.
			errs := make(chan error, 3)
			for range 3 {
				h, err := m.Pick(c, PickOptions{})
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					errs <- roundTrip(h, "/")
				}()
			}
			waitFor(t, "each endpoint to serve one request at once", func() bool {
				for _, b := range bs {
					if b.inFlight.Load() != 1 {
						return false
					}
				}
				return true
			})
			if got := m.PolicyStats("c"); got != (PolicyStats{UpstreamCxOverflow: 2}) {
				t.Errorf("with 3 connections: PolicyStats = %+v, want 2 cx overflows (the 2 connections past max_connections) and nothing else", got)
			}
			unblock()
			for _, err := range collect(t, errs, 3) {
				if err != nil {
					t.Errorf("request: %v", err)
				}
			}
			// The connections stay and serve the next requests: one per
			// endpoint, as Envoy keeps.
			for i := range 6 {
				if err := sendWithin(m, c, PickOptions{}, 3*time.Second); err != nil {
					t.Fatalf("request %d after the burst: %v", i+1, err)
				}
			}
			for i, b := range bs {
				if n := b.accepted(); n != 1 {
					t.Errorf("endpoint %d accepted %d connections, want 1", i, n)
				}
			}
			if got := m.PolicyStats("c"); got != (PolicyStats{UpstreamCxOverflow: 2}) {
				t.Errorf("after reuse: PolicyStats = %+v, want 2 cx overflows and nothing else", got)
			}
			checkPerPool(t, m.state("c").h1)
		})
	}
}

// roundTrip sends a GET for path to h and reads the whole response.
func roundTrip(h *Host, path string) error {
	req, _ := http.NewRequest("GET", "http://"+h.Addr+path, nil)
	resp, err := h.RT.RoundTrip(req)
	if err != nil {
		h.Done(Result{LocalOrigin: true})
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h.Done(Result{Status: resp.StatusCode})
	return err
}

// TestCircuitBreakerPendingForHostThatLostItsConnection: a request pending
// for an endpoint's busy connection, when that connection closes while
// other endpoints hold max_connections, gets a new connection to its
// endpoint past the limit (upstream_cx_overflow), as Envoy's pool makes one
// for its pending streams when it loses its last connection, rather than
// wait for another endpoint's connection.
func TestCircuitBreakerPendingForHostThatLostItsConnection(t *testing.T) {
	bs, unblock := newBlockedBackends(t, 2, false)
	gate := make(chan struct{})
	a := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			<-gate
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "ok")
	})
	openGate := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(openGate)
	b := bs[0]
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", LBPolicy: config.LBRoundRobin,
		Endpoints:       []config.Endpoint{{Address: addrOf(a)}, {Address: addrOf(b.countingServer)}},
		CircuitBreakers: config.CircuitBreakers{Thresholds: &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 100}}}
	m.Update(gen(c))
	tr := m.state("c").h1
	ha, hb := pickHost(t, m, c, addrOf(a)), pickHost(t, m, c, addrOf(b.countingServer))
	first := make(chan error, 1)
	go func() { first <- roundTrip(ha, "/close") }()
	waitFor(t, "endpoint a's connection", func() bool { return a.accepted() == 1 })
	slowB := make(chan error, 1)
	go func() { slowB <- roundTrip(hb, "/") }()
	waitFor(t, "endpoint b to hold a request", func() bool { return b.inFlight.Load() == 1 })
	// a's connection is busy: the next request for a waits for it.
	ha2 := pickHost(t, m, c, addrOf(a))
	second := make(chan error, 1)
	go func() { second <- roundTrip(ha2, "/") }()
	waitFor(t, "the second request for a to wait", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.waiters) == 1
	})
	// a's connection closes after its response while b's holds the
	// cluster's max_connections: the waiting request gets a new one.
	openGate()
	for _, ch := range []chan error{first, second} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the request pending for a never got a connection while b's was busy")
		}
	}
	if n := a.accepted(); n != 2 {
		t.Errorf("endpoint a accepted %d connections, want 2", n)
	}
	// b's connection past the limit, the wait, a's connection past the
	// limit: 3 cx overflows as Envoy counts them.
	if got := m.PolicyStats("c"); got != (PolicyStats{UpstreamCxOverflow: 3}) {
		t.Errorf("PolicyStats = %+v, want 3 cx overflows and nothing else", got)
	}
	unblock()
	if err := <-slowB; err != nil {
		t.Fatal(err)
	}
	checkPerPool(t, tr)
}

// pickHost picks hosts of c (round robin) until it gets addr's.
func pickHost(t *testing.T, m *ClusterManager, c *config.Cluster, addr string) *Host {
	t.Helper()
	for range len(c.Endpoints) {
		h, err := m.Pick(c, PickOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr == addr {
			return h
		}
		h.Done(Result{Status: 200})
	}
	t.Fatalf("no pick of %s", addr)
	return nil
}

// TestCircuitBreakerIdleGivesSlotToBusyHost: at max_connections, a
// request for an endpoint whose only connection is busy (for HTTP/2, at
// max_concurrent_streams) takes the slot of another endpoint's idle
// connection rather than wait (a Loom choice: Envoy would queue it); the
// idle one is closed.
func TestCircuitBreakerIdleGivesSlotToBusyHost(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			bs, unblock := newBlockedBackends(t, 2, h2)
			a, b := bs[0], bs[1]
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", HTTP2: h2, LBPolicy: config.LBRoundRobin, Conn: config.ConnectionOptions{MaxConcurrentStreams: 1},
				Endpoints:       []config.Endpoint{{Address: addrOf(a.countingServer)}, {Address: addrOf(b.countingServer)}},
				CircuitBreakers: config.CircuitBreakers{Thresholds: &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 100}}}
			m.Update(gen(c))
			if err := roundTrip(pickHost(t, m, c, addrOf(b.countingServer)), "/fast"); err != nil {
				t.Fatal(err)
			}
			slow := make(chan error, 1)
			ha := pickHost(t, m, c, addrOf(a.countingServer))
			go func() { slow <- roundTrip(ha, "/") }()
			waitFor(t, "endpoint a to hold a request", func() bool { return a.inFlight.Load() == 1 })
			fast := make(chan error, 1)
			ha2 := pickHost(t, m, c, addrOf(a.countingServer))
			go func() { fast <- roundTrip(ha2, "/fast") }()
			select {
			case err := <-fast:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the request for a's busy endpoint waited though b's connection was idle")
			}
			if n := a.accepted(); n != 2 {
				t.Errorf("endpoint a accepted %d connections, want 2", n)
			}
			waitFor(t, "b's idle connection to close", func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return len(b.live) == 0
			})
			// a's first connection past the limit; the retirement counts
			// nothing.
			if got := m.PolicyStats("c"); got != (PolicyStats{UpstreamCxOverflow: 1}) {
				t.Errorf("PolicyStats = %+v, want 1 cx overflow and nothing else", got)
			}
			unblock()
			if err := <-slow; err != nil {
				t.Fatal(err)
			}
			checkPerPool(t, m.state("c").h1)
		})
	}
}

// TestCircuitBreakerHostWithNoConnectionPendingFull: with
// max_pending_requests waiting, a request for an endpoint with no
// connection overflows (upstream_rq_pending_overflow, no connection and
// no upstream_cx_overflow), as Envoy's newStream checks pending capacity
// before it queues the request it would connect for.
func TestCircuitBreakerHostWithNoConnectionPendingFull(t *testing.T) {
	bs, unblock := newBlockedBackends(t, 2, false)
	a, b := bs[0], bs[1]
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", LBPolicy: config.LBRoundRobin,
		Endpoints:       []config.Endpoint{{Address: addrOf(a.countingServer)}, {Address: addrOf(b.countingServer)}},
		CircuitBreakers: config.CircuitBreakers{Thresholds: &config.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 100}}}
	m.Update(gen(c))
	tr := m.state("c").h1
	errs := make(chan error, 2)
	for range 2 {
		h := pickHost(t, m, c, addrOf(a.countingServer))
		go func() { errs <- roundTrip(h, "/") }()
	}
	waitFor(t, "one request on a's connection and one pending", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return a.inFlight.Load() == 1 && len(tr.waiters) == 1
	})
	if err := roundTrip(pickHost(t, m, c, addrOf(b.countingServer)), "/"); !errors.Is(err, ErrOverflow) {
		t.Fatalf("request for b with max_pending_requests waiting: err = %v, want ErrOverflow", err)
	}
	if n := b.accepted(); n != 0 {
		t.Errorf("endpoint b accepted %d connections, want 0", n)
	}
	if got := m.PolicyStats("c"); got != (PolicyStats{UpstreamCxOverflow: 1, UpstreamRqPendingOverflow: 1}) {
		t.Errorf("PolicyStats = %+v, want 1 cx overflow (the pending request) and 1 pending overflow", got)
	}
	unblock()
	for _, err := range collect(t, errs, 2) {
		if err != nil {
			t.Error(err)
		}
	}
	checkPerPool(t, tr)
}

// TestCircuitBreakerRetryBudget checks retry_budget: the concurrent retries
// allowed follow the requests outstanding on the cluster (budget_percent of
// them, never fewer than min_retry_concurrency), and max_retries no longer
// applies.
func TestCircuitBreakerRetryBudget(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{{Address: addrOf(srv)}},
		CircuitBreakers: config.CircuitBreakers{Thresholds: &config.Thresholds{MaxConnections: 100, MaxPendingRequests: 100, MaxRequests: 100,
			MaxRetries: 0, RetryBudget: &config.RetryBudget{BudgetPercent: 50, MinRetryConcurrency: 1}}}}
	m.Update(gen(c))
	allowed := func() int {
		var rels []func()
		for range 10 {
			if rel, ok := m.TryRetry(c); ok {
				rels = append(rels, rel)
			}
		}
		for _, rel := range rels {
			rel()
		}
		return len(rels)
	}
	if n := allowed(); n != 1 {
		t.Errorf("no request outstanding: %d concurrent retries allowed, want min_retry_concurrency 1", n)
	}
	var hosts []*Host
	for range 6 {
		h, err := m.Pick(c, PickOptions{})
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	if n := allowed(); n != 3 {
		t.Errorf("6 requests outstanding: %d concurrent retries allowed, want 50%% = 3", n)
	}
	for _, h := range hosts {
		h.Done(Result{Status: 200})
	}
	if n := allowed(); n != 1 {
		t.Errorf("requests done: %d concurrent retries allowed, want 1", n)
	}
}
