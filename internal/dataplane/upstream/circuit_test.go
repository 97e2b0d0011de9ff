package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
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
