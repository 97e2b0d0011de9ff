package http_test

import (
	"net/http"
	"strconv"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
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
