package http_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// TestH2OverTLSConnectionPool: Istio's connectionPool on an HTTP/2
// cluster over TLS (ISTIO_MUTUAL, ALPN h2): maxConcurrentStreams 1 and
// maxConnections 2 let two requests run, on two connections; with
// http1MaxPendingRequests 1 a third waits and a fourth is refused with
// 503 UO and x-envoy-overloaded.
func TestH2OverTLSConnectionPool(t *testing.T) {
	m := newMesh(t)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	var mu sync.Mutex
	var inHandler int
	be := startTLSBackendWith(t, m, true, true, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inHandler++
		mu.Unlock()
		<-release
		io.WriteString(w, r.Proto)
	})
	t.Cleanup(unblock) // before the backend's Close, which waits for handlers
	lAddr := closedAddr(t)
	c := staticCluster(t, "reviews", true, be.addr)
	c.TransportSocket = istioMutual(t, backendSPIFFE, "h2")
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{config.HTTPProtocolOptionsKey: xdstest.MustAny(t, &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				MaxConcurrentStreams: wrapperspb.UInt32(1)}}}}})}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(2), MaxPendingRequests: wrapperspb.UInt32(1), MaxRequests: wrapperspb.UInt32(100)}}}
	ls, rcs, cs := oneRoute(t, lAddr, c)
	p := startProxyWith(t, build(t, nil, ls, rcs, cs), 0, m.store)

	type result struct {
		code       int
		body       string
		overloaded string
	}
	results := make(chan result, 4)
	get := func() {
		req, _ := http.NewRequest("GET", "http://"+lAddr+"/", nil)
		resp, err := p.client.Do(req)
		if err != nil {
			results <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		results <- result{resp.StatusCode, string(b), resp.Header.Get("x-envoy-overloaded")}
	}
	for range 2 {
		go get()
	}
	waitUntil(t, "two requests at the upstream", func() bool { mu.Lock(); defer mu.Unlock(); return inHandler == 2 })
	for range 2 {
		go get()
	}
	select {
	case r := <-results:
		if r.code != http.StatusServiceUnavailable || r.overloaded != "true" {
			t.Fatalf("first request to end: %d %q overloaded=%q, want 503 with x-envoy-overloaded: true", r.code, r.body, r.overloaded)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no request overflowed")
	}
	unblock()
	for range 3 {
		select {
		case r := <-results:
			if r.code != http.StatusOK || r.body != "HTTP/2.0" {
				t.Errorf("request within the limits: %d %q, want 200 over HTTP/2", r.code, r.body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("requests within the limits never ended")
		}
	}
	if n := be.conns.Load(); n != 2 {
		t.Errorf("upstream accepted %d connections, want 2 (maxConnections, one stream each)", n)
	}
	p.log.Flush()
	if !strings.Contains(p.logBuf.String(), " UO ") {
		t.Errorf("no access log line with response flag UO in:\n%s", p.logBuf.String())
	}
}

// waitUntil polls cond until it holds, failing the test after 10s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
