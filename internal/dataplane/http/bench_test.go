package http_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/routestats"
	"github.com/loom-mesh/loom/internal/testutil/otlptest"
)

// BenchmarkProxyHTTP1 measures one proxied HTTP/1.1 GET with a 1 KiB
// response over loopback: client -> proxy listener -> route -> upstream
// keep-alive pool -> httptest upstream, with the access log on. Allocations
// counted include the client's and the upstream server's, which run in the
// same process.
func BenchmarkProxyHTTP1(b *testing.B) { benchProxyGET(b, nil) }

// benchProxyGET runs BenchmarkProxyHTTP1's GET through a proxy whose
// generation mutate may change first (nil: as built).
func benchProxyGET(b *testing.B, mutate func(g *config.Generation)) {
	body := strings.Repeat("x", 1024)
	up := startBackend(b, "up", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		io.WriteString(w, body)
	})
	lAddr := closedAddr(b)
	g := build(b, nil,
		[]*listenerv3.Listener{httpListener(b, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "up")))},
		[]*clusterv3.Cluster{staticCluster(b, "up", false, up.addr)})
	if mutate != nil {
		mutate(g)
	}
	p := startProxy(b, g)
	req, err := http.NewRequest("GET", "http://"+lAddr+"/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Host = "svc"
	benchGets(b, p.client, req)
}

// BenchmarkProxyHTTP1RouteStats is BenchmarkProxyHTTP1 on a route with a
// stat_prefix: the cost of Envoy's route-level stats per request
// (BenchmarkProxyHTTP1's route has none, and pays a nil check).
func BenchmarkProxyHTTP1RouteStats(b *testing.B) {
	benchProxyGET(b, func(g *config.Generation) {
		r := g.Routes["rt"].VirtualHosts[0].Routes[0]
		r.StatPrefix, r.Stats = "bench", routestats.NewFamilies().For("all", "bench")
	})
}

// BenchmarkProxyHTTP1IstioStats is BenchmarkProxyHTTP1 on a listener
// whose chain has Istio's istio.stats filter (a source reporter, no
// metadata exchange): the cost of Istio's standard metrics per request,
// the request and response sizes included.
func BenchmarkProxyHTTP1IstioStats(b *testing.B) {
	body := strings.Repeat("x", 1024)
	up := startBackend(b, "up", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		io.WriteString(w, body)
	})
	lAddr := closedAddr(b)
	g := build(b, nil,
		[]*listenerv3.Listener{statsListener(b, "l", lAddr, "rt", nil)},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "up")))},
		[]*clusterv3.Cluster{staticCluster(b, "up", false, up.addr)})
	p := startStatsProxy(b, g, istiostats.NewMetrics(0))
	req, err := http.NewRequest("GET", "http://"+lAddr+"/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Host = "svc"
	benchGets(b, p.client, req)
}

// BenchmarkDirectHTTP1 is the same request without the proxy, the baseline
// BenchmarkProxyHTTP1 is compared with.
func BenchmarkDirectHTTP1(b *testing.B) {
	body := strings.Repeat("x", 1024)
	up := startBackend(b, "up", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		io.WriteString(w, body)
	})
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest("GET", "http://"+up.addr+"/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	benchGets(b, c, req)
}

// BenchmarkProxyHTTP1TLS is BenchmarkProxyHTTP1 with the proxy listener
// terminating TLS (a keep-alive HTTPS client: handshakes are amortized)
// and, in "mtls-upstream", the proxy originating mTLS to an HTTPS upstream
// that verifies its client certificate (ISTIO_MUTUAL). Compare with
// BenchmarkProxyHTTP1 for what TLS adds per request.
func BenchmarkProxyHTTP1TLS(b *testing.B) {
	for _, upTLS := range []bool{false, true} {
		name := "plain-upstream"
		if upTLS {
			name = "mtls-upstream"
		}
		b.Run(name, func(b *testing.B) {
			m := newMesh(b)
			body := strings.Repeat("x", 1024)
			handler := func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1024")
				io.WriteString(w, body)
			}
			lAddr := closedAddr(b)
			var c *clusterv3.Cluster
			if upTLS {
				be := startTLSBackendFunc(b, m, handler)
				c = staticCluster(b, "up", false, be.addr)
				c.TransportSocket = istioMutual(b, backendSPIFFE, "http/1.1")
			} else {
				c = staticCluster(b, "up", false, startBackend(b, "up", false, handler).addr)
			}
			ls, rcs, cs := oneRoute(b, lAddr, c)
			ls[0].FilterChains[0].TransportSocket = serverTLS(b)
			startProxyWith(b, build(b, nil, ls, rcs, cs), 0, m.store)
			tr := &http.Transport{MaxIdleConnsPerHost: 16, TLSClientConfig: &tls.Config{RootCAs: m.ca.Pool, ServerName: "proxy.test"}}
			client := &http.Client{Transport: tr}
			defer tr.CloseIdleConnections()
			req, err := http.NewRequest("GET", "https://"+lAddr+"/bench", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Host = "svc"
			benchGets(b, client, req)
		})
	}
}

// benchGets times b.N requests req with c, each answered 200 with a
// 1 KiB body.
func benchGets(b *testing.B, c *http.Client, req *http.Request) {
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.ReadFull(resp.Body, buf[:1024])
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 1024 {
			b.Fatalf("got %d, %d bytes", resp.StatusCode, n)
		}
	}
}

// BenchmarkProxyHTTP1Tracing is BenchmarkProxyHTTP1 on an egress listener
// whose HTTP connection manager traces to a live OTLP receiver: "off" has
// no tracing config (the nil check only), "1pct" samples 1 % of requests
// (Istio's default), "100pct" every one. Requests carry no trace context,
// so each one takes the random sampling decision and gets a context to
// propagate.
func BenchmarkProxyHTTP1Tracing(b *testing.B) {
	for _, tc := range []struct {
		name string
		pct  float64
		on   bool
	}{{"off", 0, false}, {"1pct", 1, true}, {"100pct", 100, true}} {
		b.Run(tc.name, func(b *testing.B) {
			col := otlptest.StartOTLP(b, "127.0.0.1:0")
			body := strings.Repeat("x", 1024)
			up := startBackend(b, "up", false, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1024")
				io.WriteString(w, body)
			})
			lAddr := closedAddr(b)
			var tr *hcmv3.HttpConnectionManager_Tracing
			if tc.on {
				tr = otelTracing(b, tc.pct, false)
			}
			g := build(b, nil,
				[]*listenerv3.Listener{tracedListener(b, "l", lAddr, "rt", corev3.TrafficDirection_OUTBOUND, tr)},
				[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "up")))},
				[]*clusterv3.Cluster{staticCluster(b, "up", false, up.addr), staticCluster(b, collectorCluster, true, col.Addr)})
			p := startTracingProxy(b, g)
			req, err := http.NewRequest("GET", "http://"+lAddr+"/bench", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Host = "svc"
			benchGets(b, p.client, req)
		})
	}
}

// BenchmarkProxyHTTP1PostRetry measures one proxied HTTP/1.1 POST with a
// 4 KiB request body and a 1 KiB response on a route with Istio's default
// retry policy (2 attempts, "connect-failure,refused-stream,unavailable,
// cancelled,retriable-status-codes"; no attempt fails): the cost of
// keeping the body for a retry that is not needed ("no-retry") against
// the same POST on a route without retries ("plain"). The "h2c-" cases
// reach an h2c upstream, where the body is pumped by a goroutine of the
// request when it may be retried.
func BenchmarkProxyHTTP1PostRetry(b *testing.B) {
	for _, tc := range []struct{ retry, h2 bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		retry := tc.retry
		name := "plain"
		if retry {
			name = "no-retry"
		}
		if tc.h2 {
			name = "h2c-" + name
		}
		b.Run(name, func(b *testing.B) {
			resp := strings.Repeat("x", 1024)
			up := startBackend(b, "up", tc.h2, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Length", "1024")
				io.WriteString(w, resp)
			})
			lAddr := closedAddr(b)
			route := prefixRoute("r", "/", "up")
			if retry {
				route = withRetry(route, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", 2, 503)
			}
			g := build(b, nil,
				[]*listenerv3.Listener{httpListener(b, "l", lAddr, "rt")},
				[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, route))},
				[]*clusterv3.Cluster{staticCluster(b, "up", tc.h2, up.addr)})
			p := startProxy(b, g)
			body := strings.NewReader(strings.Repeat("b", 4096))
			req, err := http.NewRequest("POST", "http://"+lAddr+"/bench", body)
			if err != nil {
				b.Fatal(err)
			}
			req.Host = "svc"
			req.GetBody = func() (io.ReadCloser, error) { body.Seek(0, io.SeekStart); return io.NopCloser(body), nil }
			buf := make([]byte, 4096)
			b.ReportAllocs()
			b.SetBytes(4096 + 1024)
			for b.Loop() {
				body.Seek(0, io.SeekStart)
				req.Body = io.NopCloser(body)
				resp, err := p.client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.ReadFull(resp.Body, buf[:1024])
				resp.Body.Close()
				if resp.StatusCode != 200 || n != 1024 {
					b.Fatalf("got %d, %d bytes", resp.StatusCode, n)
				}
			}
		})
	}
}
