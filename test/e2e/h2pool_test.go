package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestCircuitBreakingH2C is Istio's circuit-breaking task on an HTTP/2
// service (port protocol HTTP2, h2c app): maxConnections 1,
// http1MaxPendingRequests 1 and maxConcurrentStreams 1, loaded by 3
// concurrent streams of one HTTP/2 client connection making 30 requests.
// The client sidecar sends one stream at a time to the service, so the app
// never serves two requests at once; the rest wait as pending or fail
// with 503 UO, counted in upstream_rq_pending_overflow.
func TestCircuitBreakingH2C(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	var mu sync.Mutex
	var active, maxActive, served int
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: p, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		active++
		served++
		maxActive = max(maxActive, active)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		active--
		mu.Unlock()
		io.WriteString(w, "h2 app")
	})}
	serveApp(t, "127.197.0.10:9080", srv.Serve, func() { srv.Close() })
	m := startAppMesh(t, "127.197.0", []appWorkload{{Name: "h2-v1", App: "h2", Version: "v1", Octet: 10, Protocol: "HTTP2"}}, "")
	m.apply(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: h2
spec:
  host: h2
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxConcurrentStreams: 1
`)
	sidecar := m.ip(clientOctet) + ":15001"
	tr := &http.Transport{Protocols: new(http.Protocols),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, sidecar)
		}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	// The DestinationRule reaches the client sidecar with the next push:
	// wait until a burst overflows before counting.
	burst := func() (ok, overflow, other int32) {
		return circuitBurst(t, func() *http.Client { return hc }, "http://h2.default.svc.cluster.local:9080/",
			func(resp *http.Response) bool { return resp.StatusCode == http.StatusOK && resp.ProtoMajor == 2 })
	}
	const cluster = "outbound|9080||h2.default.svc.cluster.local"
	var before float64
	if !poll(20*time.Second, func() bool {
		before = statValue(t, m.ip(clientOctet), "envoy_cluster_upstream_rq_pending_overflow", cluster)
		if before > 0 {
			return true
		}
		burst()
		return false
	}) {
		t.Fatalf("no request overflowed: the DestinationRule never applied?\n%s", m.tails())
	}
	mu.Lock()
	maxActive = 0
	mu.Unlock()
	logBefore := countLogFlag(t, m.logPath("client-proxy"), "503 UO")
	ok, overflow, other := burst()
	t.Logf("30 requests on 3 streams: %d 200, %d 503 overflow, %d other", ok, overflow, other)
	if ok == 0 || overflow == 0 || other != 0 {
		t.Fatalf("want some 200s over HTTP/2, some 503s marked x-envoy-overloaded, and nothing else")
	}
	mu.Lock()
	got := maxActive
	mu.Unlock()
	if got != 1 {
		t.Errorf("the app served %d requests at once, want 1 (maxConnections 1, maxConcurrentStreams 1)", got)
	}
	if !poll(5*time.Second, func() bool {
		return countLogFlag(t, m.logPath("client-proxy"), "503 UO")-logBefore == int(overflow)
	}) {
		t.Errorf("the client sidecar's access log has %d new lines with 503 UO, want %d",
			countLogFlag(t, m.logPath("client-proxy"), "503 UO")-logBefore, overflow)
	}
	if n := statValue(t, m.ip(clientOctet), "envoy_cluster_upstream_rq_pending_overflow", cluster) - before; n != float64(overflow) {
		t.Errorf("envoy_cluster_upstream_rq_pending_overflow grew by %v, want %d", n, overflow)
	}
}
