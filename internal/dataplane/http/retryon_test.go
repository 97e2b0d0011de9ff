package http_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// TestRetryOnResponseConditions checks which first responses each of
// Envoy's x-envoy-retry-on conditions retries. The upstream answers the
// first attempt of each request (by X-Request-Id) with the case's status
// and headers, later attempts with 200.
func TestRetryOnResponseConditions(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	first := map[string]func(w http.ResponseWriter){}
	be := startBackend(t, "be", false, func(w http.ResponseWriter, r *http.Request) {
		rid := r.Header.Get("X-Request-Id")
		mu.Lock()
		seen[rid]++
		n, f := seen[rid], first[rid]
		mu.Unlock()
		if n == 1 && f != nil {
			f(w)
			return
		}
		w.Write([]byte("ok"))
	})
	status := func(code int, hdr ...string) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			w.WriteHeader(code)
		}
	}
	tests := []struct {
		name, retryOn string
		codes         []uint32
		first         func(w http.ResponseWriter)
		wantRetry     bool
	}{
		{"5xx retries 500", "5xx", nil, status(500), true},
		{"5xx leaves 429", "5xx", nil, status(429), false},
		{"gateway-error retries 502", "gateway-error", nil, status(502), true},
		{"gateway-error retries 504", "gateway-error", nil, status(504), true},
		{"gateway-error leaves 500", "gateway-error", nil, status(500), false},
		{"retriable-4xx retries 409", "retriable-4xx", nil, status(409), true},
		{"retriable-4xx leaves 429", "retriable-4xx", nil, status(429), false},
		{"retriable-status-codes", "retriable-status-codes", []uint32{418}, status(418), true},
		{"retriable-status-codes other", "retriable-status-codes", []uint32{418}, status(503), false},
		{"envoy-ratelimited retries a marked 429", "envoy-ratelimited", nil, status(429, "X-Envoy-Ratelimited", "true"), true},
		{"envoy-ratelimited leaves an unmarked 429", "envoy-ratelimited", nil, status(429), false},
		{"unavailable retries grpc-status 14", "unavailable", nil, status(200, "Content-Type", "application/grpc", "Grpc-Status", "14"), true},
		{"resource-exhausted retries grpc-status 8", "resource-exhausted", nil, status(200, "Content-Type", "application/grpc", "Grpc-Status", "8"), true},
		{"cancelled leaves grpc-status 14", "cancelled", nil, status(200, "Content-Type", "application/grpc", "Grpc-Status", "14"), false},
		{"connect-failure leaves 503", "connect-failure", nil, status(503), false},
	}
	var hosts []*routev3.VirtualHost
	for i, tc := range tests {
		h := "h" + strconv.Itoa(i)
		hosts = append(hosts, vhost(h, []string{h}, withRetry(prefixRoute(h, "/", "be"), tc.retryOn, 1, tc.codes...)))
	}
	lAddr := closedAddr(t)
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", hosts...)},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)}))
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rid := "retryon-" + strconv.Itoa(i)
			mu.Lock()
			first[rid] = tc.first
			mu.Unlock()
			p.do("GET", "h"+strconv.Itoa(i), "/", map[string]string{"X-Request-Id": rid}, nil)
			mu.Lock()
			n := seen[rid]
			mu.Unlock()
			if got := n == 2; got != tc.wantRetry {
				t.Errorf("retry_on %q: the upstream saw %d attempts, want retried = %v", tc.retryOn, n, tc.wantRetry)
			}
		})
	}
}

// TestRetryPreviousPriorities checks retry_priority previous_priorities
// (Istio's retryRemoteLocalities, update_frequency 2): the priority-0
// endpoint always fails; after two attempts there the third goes to the
// priority-1 endpoint. Without the retry priority every attempt stays on
// priority 0, whose endpoint is healthy to the balancer.
func TestRetryPreviousPriorities(t *testing.T) {
	bad := startBackend(t, "bad", false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	good := startBackend(t, "good", false, nil)
	c := staticCluster(t, "c", false, bad.addr)
	c.LoadAssignment.Endpoints = append(c.LoadAssignment.Endpoints, staticCluster(t, "x", false, good.addr).LoadAssignment.Endpoints[0])
	c.LoadAssignment.Endpoints[1].Priority = 1
	prio := func(r *routev3.Route, every uint32) *routev3.Route {
		r.GetRoute().RetryPolicy.RetryPriority = &routev3.RetryPolicy_RetryPriority{Name: config.PreviousPrioritiesName,
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: xdstest.MustAny(t, &previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: int32(every)})}}
		return r
	}
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("two", []string{"two"}, prio(withRetry(prefixRoute("two", "/", "c"), "5xx", 2), 2)),
			vhost("one", []string{"one"}, prio(withRetry(prefixRoute("one", "/", "c"), "5xx", 1), 2)),
			vhost("none", []string{"none"}, withRetry(prefixRoute("none", "/", "c"), "5xx", 2)))},
		[]*clusterv3.Cluster{c}))
	for _, tc := range []struct {
		host string
		want int
	}{{"two", 200}, {"one", 503}, {"none", 503}} {
		for i := range 3 {
			if r := p.do("GET", tc.host, "/", nil, nil); r.code != tc.want {
				t.Errorf("%s, request %d: %d %q, want %d", tc.host, i, r.code, r.body, tc.want)
			}
		}
	}
}

// TestGRPCRetryStreamedBody checks that a gRPC request whose body has no
// length (as every gRPC call's) is retried from the proxy's copy when the
// upstream fails it with a retriable grpc-status after the whole body
// arrived: the retry carries the same body.
func TestGRPCRetryStreamedBody(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	be := startBackend(t, "be", true, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		n := len(bodies)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/grpc")
		if n == 1 {
			w.Header().Set("Grpc-Status", "14") // trailers-only UNAVAILABLE
			w.WriteHeader(200)
			return
		}
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		w.Write(b)
		w.Header().Set("Grpc-Status", "0")
	})
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("g", []string{"*"}, withRetry(prefixRoute("g", "/", "be"), "unavailable", 2)))},
		[]*clusterv3.Cluster{staticCluster(t, "be", true, be.addr)}))
	msg := strings.Repeat("m", 3000)
	req, _ := http.NewRequest("POST", "http://"+p.addr("l")+"/svc/Unary", io.MultiReader(strings.NewReader(msg[:1000]), strings.NewReader(msg[1000:])))
	req.Header.Set("Content-Type", "application/grpc")
	req.ContentLength = -1
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Trailer.Get("Grpc-Status") != "0" || string(got) != msg {
		t.Fatalf("got %d grpc-status %q body %d bytes, want 200, 0 and the request body echoed", resp.StatusCode, resp.Trailer.Get("Grpc-Status"), len(got))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || bodies[0] != msg || bodies[1] != msg {
		t.Fatalf("the upstream saw %d attempts, want 2 with the whole body each", len(bodies))
	}
}

// TestRetryBudget checks a cluster's circuit_breakers retry_budget (Istio
// trafficPolicy.retryBudget) over real sockets: it replaces max_retries. A
// budget of 100% of the one outstanding request lets its retry through
// although max_retries is 0; a budget of 0% with min_retry_concurrency 0
// refuses every retry although max_retries is 100.
func TestRetryBudget(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	be := startBackend(t, "be", false, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Host]++
		n := seen[r.Host]
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(503)
			return
		}
		w.Write([]byte("ok"))
	})
	budget := func(name string, maxRetries uint32, pct float64) *clusterv3.Cluster {
		c := staticCluster(t, name, false, be.addr)
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxRetries: wrapperspb.UInt32(maxRetries),
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent: &typev3.Percent{Value: pct}, MinRetryConcurrency: wrapperspb.UInt32(0)}}}}
		return c
	}
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("full", []string{"full"}, withRetry(prefixRoute("full", "/", "full"), "5xx", 1)),
			vhost("empty", []string{"empty"}, withRetry(prefixRoute("empty", "/", "empty"), "5xx", 1)))},
		[]*clusterv3.Cluster{budget("full", 0, 100), budget("empty", 100, 0)}))
	for _, tc := range []struct {
		host string
		want int
	}{{"full", 200}, {"empty", 503}} {
		if r := p.do("GET", tc.host, "/", nil, nil); r.code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.host, r.code, r.body, tc.want)
		}
	}
}

// TestRetryRetriableHeaders checks retry_on retriable-headers over real
// sockets: a response matching the route's retriable_headers is retried
// under that condition, and not under another one, as Envoy consults
// retriable_headers only when retriable-headers is active.
func TestRetryRetriableHeaders(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	be := startBackend(t, "be", false, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Host]++
		n := seen[r.Host]
		mu.Unlock()
		if n == 1 {
			w.Header().Set("X-Retry-Me", "yes")
		}
		w.Write([]byte("ok"))
	})
	hdr := func(r *routev3.Route) *routev3.Route {
		r.GetRoute().RetryPolicy.RetriableHeaders = []*routev3.HeaderMatcher{{Name: "x-retry-me",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}
		return r
	}
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("on", []string{"on"}, hdr(withRetry(prefixRoute("on", "/", "be"), "retriable-headers", 1))),
			vhost("off", []string{"off"}, hdr(withRetry(prefixRoute("off", "/", "be"), "5xx", 1))))},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)}))
	for _, tc := range []struct {
		host string
		want int
	}{{"on", 2}, {"off", 1}} {
		if r := p.do("GET", tc.host, "/", nil, nil); r.code != 200 {
			t.Errorf("%s: %d %q, want 200", tc.host, r.code, r.body)
		}
		mu.Lock()
		n := seen[tc.host]
		mu.Unlock()
		if n != tc.want {
			t.Errorf("%s: the upstream saw %d attempts, want %d", tc.host, n, tc.want)
		}
	}
}
