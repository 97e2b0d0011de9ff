package http_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/goleak"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	"github.com/loom-mesh/loom/internal/dataplane/config"
	dphttp "github.com/loom-mesh/loom/internal/dataplane/http"
	"github.com/loom-mesh/loom/internal/dataplane/listener"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/transport"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// proxy is a running proxy: listener manager, connection manager, cluster
// manager and access log, over real sockets.
type proxy struct {
	t        testing.TB
	gen      atomic.Pointer[config.Generation]
	clusters *upstream.ClusterManager
	logBuf   *testutil.SyncBuffer
	log      *telemetry.AccessLog
	lm       *listener.Manager
	client   *http.Client
	metrics  *telemetry.Metrics
}

func startProxy(t testing.TB, g *config.Generation) *proxy {
	t.Helper()
	return startProxyMirrors(t, g, 0)
}

// startProxyMirrors is startProxy with at most maxMirrors mirrored
// requests in flight (0: the default).
func startProxyMirrors(t testing.TB, g *config.Generation, maxMirrors int) *proxy {
	t.Helper()
	return startProxyWith(t, g, maxMirrors, nil)
}

// startProxyWith is startProxy with at most maxMirrors mirrored requests
// in flight (0: the default) and the TLS secrets of secrets (nil: none).
func startProxyWith(t testing.TB, g *config.Generation, maxMirrors int, secrets *secret.Store) *proxy {
	t.Helper()
	return startProxyOpts(t, g, secrets, func(*upstream.ClusterManager) dphttp.Options {
		return dphttp.Options{MaxMirrorsInFlight: maxMirrors}
	}, nil)
}

// startProxyOpts starts a proxy serving g with TLS secrets secrets (nil:
// none) whose connection manager has the options opts makes from the
// proxy's cluster manager, with the proxy's generation, clusters, access
// log and metrics set; stop (nil: none) runs at cleanup once the listeners
// are shut down, before the cluster manager closes.
func startProxyOpts(t testing.TB, g *config.Generation, secrets *secret.Store, opts func(*upstream.ClusterManager) dphttp.Options, stop func()) *proxy {
	t.Helper()
	p := &proxy{t: t, logBuf: &testutil.SyncBuffer{}, metrics: telemetry.NewMetrics()}
	var ts transport.Secrets
	if secrets != nil {
		ts = secrets
	}
	p.clusters = upstream.New(upstream.Options{Secrets: ts})
	p.log = telemetry.NewAccessLog(telemetry.AccessLogOptions{Writer: p.logBuf})
	o := opts(p.clusters)
	o.Generation, o.Clusters, o.AccessLog, o.Metrics = &p.gen, p.clusters, p.log, p.metrics
	cm, err := dphttp.New(o)
	if err != nil {
		t.Fatal(err)
	}
	p.lm, err = listener.New(listener.Options{Secrets: ts,
		Handler: func(l *config.Listener, fc *config.FilterChain) http.Handler { return cm.Handler(l.Name, fc) }})
	if err != nil {
		t.Fatal(err)
	}
	p.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(func() {
		cm.Close()
		p.client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.lm.Shutdown(ctx); err != nil {
			t.Errorf("listener shutdown: %v", err)
		}
		if stop != nil {
			stop()
		}
		p.clusters.Close()
	})
	p.apply(g)
	return p
}

// apply publishes g as the proxy's main does: clusters, pointer, listeners.
func (p *proxy) apply(g *config.Generation) {
	p.t.Helper()
	logEveryChain(g)
	p.clusters.Update(g)
	p.gen.Store(g)
	if err := p.lm.Update(g); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proxy) addr(listener string) string {
	p.t.Helper()
	a, ok := p.lm.Addrs()[listener]
	if !ok {
		p.t.Fatalf("listener %q not bound", listener)
	}
	return a
}

type reply struct {
	code   int
	body   string
	header http.Header
}

// do sends method url with host and headers to the proxy's listener "l" and
// reads the whole reply.
func (p *proxy) do(method, host, path string, hdr map[string]string, body io.Reader) reply {
	p.t.Helper()
	req, err := http.NewRequest(method, "http://"+p.addr("l")+path, body)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	return reply{resp.StatusCode, string(b), resp.Header}
}

// logLine waits for the access log line that has request ID rid.
func (p *proxy) logLine(rid string) string {
	p.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.log.Flush()
		for _, l := range strings.Split(p.logBuf.String(), "\n") {
			if strings.Contains(l, `"`+rid+`"`) {
				return l
			}
		}
		pollPause()
	}
	p.t.Fatalf("no access log line for request %s in:\n%s", rid, p.logBuf.String())
	return ""
}

// metricValue sums the samples of the counter family name.
func metricValue(t testing.TB, p *proxy, name string) float64 {
	t.Helper()
	mfs, err := p.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// pollPause spaces the polls of a deadline-bounded loop.
func pollPause() { <-time.After(time.Millisecond) }

// backend is an upstream test server that answers with its name.
type backend struct {
	name string
	addr string
	hits atomic.Int64
	last atomic.Pointer[http.Request]
}

func startBackend(t testing.TB, name string, h2c bool, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.last.Store(r)
		w.Header().Set("X-Upstream", name)
		w.Header().Set("X-Upstream-Proto", r.Proto)
		if h != nil {
			h(w, r)
			return
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
	if h2c {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	s.Start()
	t.Cleanup(s.Close)
	b.addr = s.Listener.Addr().String()
	return b
}

// closedAddr returns a loopback address where nothing listens (a free
// port for a listener, or an endpoint that refuses connections).
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestRouting(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	a := startBackend(t, "a", false, nil)
	b1 := startBackend(t, "b-v1", false, nil)
	b2 := startBackend(t, "b-v2", true, nil)
	api := startBackend(t, "b-api", false, nil)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("a", []string{"a.example", "a.example:80"}, prefixRoute("a-all", "/", "a")),
			vhost("b", []string{"b.example"},
				withHeader(prefixRoute("b-v2", "/", "b-v2"), "end-user", "jason"),
				prefixRoute("b-api", "/api/", "b-api"),
				prefixRoute("b-v1", "/", "b-v1")),
		)},
		[]*clusterv3.Cluster{
			staticCluster(t, "a", false, a.addr),
			staticCluster(t, "b-v1", false, b1.addr),
			staticCluster(t, "b-v2", true, b2.addr),
			staticCluster(t, "b-api", false, api.addr),
		})
	p := startProxy(t, g)

	tests := []struct {
		name      string
		host      string
		path      string
		hdr       map[string]string
		wantBody  string
		wantProto string
		wantRoute string
	}{
		{name: "exact host", host: "a.example", path: "/x", wantBody: "a", wantProto: "HTTP/1.1", wantRoute: "a-all"},
		{name: "host with port", host: "a.example:80", path: "/", wantBody: "a", wantProto: "HTTP/1.1", wantRoute: "a-all"},
		{name: "header match to h2c upstream", host: "b.example", path: "/api/x", hdr: map[string]string{"End-User": "jason"}, wantBody: "b-v2", wantProto: "HTTP/2.0", wantRoute: "b-v2"},
		{name: "path prefix", host: "b.example", path: "/api/x", wantBody: "b-api", wantProto: "HTTP/1.1", wantRoute: "b-api"},
		{name: "fallback route", host: "b.example", path: "/other", hdr: map[string]string{"End-User": "bob"}, wantBody: "b-v1", wantProto: "HTTP/1.1", wantRoute: "b-v1"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rid := fmt.Sprintf("routing-%d", i)
			hdr := map[string]string{"X-Request-Id": rid}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			r := p.do("GET", tt.host, tt.path, hdr, nil)
			if r.code != 200 || r.body != tt.wantBody {
				t.Fatalf("got %d %q, want 200 %q", r.code, r.body, tt.wantBody)
			}
			if got := r.header.Get("X-Upstream-Proto"); got != tt.wantProto {
				t.Errorf("upstream protocol %q, want %q", got, tt.wantProto)
			}
			if r.header.Get("X-Envoy-Upstream-Service-Time") == "" {
				t.Error("no x-envoy-upstream-service-time")
			}
			line := p.logLine(rid)
			if !strings.Contains(line, " 200 - via_upstream ") || !strings.HasSuffix(line, " "+tt.wantRoute) {
				t.Errorf("access log line %q: want 200 via_upstream and route %s", line, tt.wantRoute)
			}
		})
	}
}

func TestExplicitProxyAndHeaders(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	a := startBackend(t, "a", false, nil)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("a", []string{"reviews", "reviews:9080"}, prefixRoute("r", "/", "a")))},
		[]*clusterv3.Cluster{staticCluster(t, "a", false, a.addr)})
	p := startProxy(t, g)

	// As an app with HTTP_PROXY: absolute-form request line.
	pu, _ := url.Parse("http://" + p.addr("l"))
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://reviews:9080/reviews/0?x=1", nil)
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "secret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	up := a.last.Load()
	if up.Host != "reviews:9080" || up.URL.RequestURI() != "/reviews/0?x=1" {
		t.Errorf("upstream saw host %q uri %q", up.Host, up.URL.RequestURI())
	}
	rid := up.Header.Get("X-Request-Id")
	if len(rid) != 36 || rid[14] != '4' {
		t.Errorf("x-request-id %q: want a UUID v4", rid)
	}
	if got := up.Header.Get("Traceparent"); got != req.Header.Get("Traceparent") {
		t.Errorf("traceparent %q not propagated", got)
	}
	if got := up.Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("x-forwarded-proto %q", got)
	}
	if up.Header.Get("X-Hop") != "" || up.Header.Get("Proxy-Connection") != "" {
		t.Errorf("hop-by-hop headers forwarded: %v", up.Header)
	}
	line := p.logLine(rid)
	if !strings.Contains(line, `"GET /reviews/0?x=1 HTTP/1.1" 200`) || !strings.Contains(line, `"reviews:9080"`) {
		t.Errorf("access log line %q", line)
	}
}

func TestWeightedSplit(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	v1 := startBackend(t, "v1", false, nil)
	v2 := startBackend(t, "v2", false, nil)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("all", []string{"*"}, weightedRoute("split", "/", map[string]uint32{"v1": 80, "v2": 20})))},
		[]*clusterv3.Cluster{staticCluster(t, "v1", false, v1.addr), staticCluster(t, "v2", false, v2.addr)})
	p := startProxy(t, g)
	const n = 1000
	for range n {
		if r := p.do("GET", "x", "/", nil, nil); r.code != 200 {
			t.Fatalf("status %d", r.code)
		}
	}
	// 80/20 over 1000 draws: the standard deviation is ~12.6; allow 4 sigma.
	if got := v1.hits.Load(); got < 750 || got > 850 {
		t.Errorf("v1 got %d of %d, want 800±50 (v2 %d)", got, n, v2.hits.Load())
	}
	if v1.hits.Load()+v2.hits.Load() != n {
		t.Errorf("hits %d+%d != %d", v1.hits.Load(), v2.hits.Load(), n)
	}
}

func TestLocalReplies(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	slow := startBackend(t, "slow", false, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only when the proxy gives up
	})
	down := closedAddr(t)
	unhealthy := staticCluster(t, "unhealthy", false, slow.addr)
	unhealthy.LoadAssignment.Endpoints[0].LbEndpoints[0].HealthStatus = 3 // UNHEALTHY
	// Envoy's panic mode (healthy_panic_threshold, 50 % by default) would
	// send to the unhealthy host; at 0 % a cluster with no healthy host
	// answers UH.
	unhealthy.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("nc", []string{"nc"}, prefixRoute("nc", "/", "missing")),
			vhost("uh", []string{"uh"}, prefixRoute("uh", "/", "unhealthy")),
			vhost("empty", []string{"empty"}, prefixRoute("empty", "/", "empty")),
			vhost("uf", []string{"uf"}, prefixRoute("uf", "/", "down")),
			vhost("urx", []string{"urx"}, withRetry(prefixRoute("urx", "/", "down"), "connect-failure", 2)),
			vhost("ut", []string{"ut"}, withTimeout(prefixRoute("ut", "/", "slow"), 100*time.Millisecond)),
			vhost("nr", []string{"nr"}, prefixRoute("nr", "/only", "slow")),
		)},
		[]*clusterv3.Cluster{
			unhealthy,
			staticCluster(t, "empty", false),
			staticCluster(t, "down", false, down),
			staticCluster(t, "slow", false, slow.addr),
		})
	p := startProxy(t, g)
	tests := []struct {
		host      string
		wantCode  int
		wantFlags string
	}{
		{"unknown.example", 404, "NR"},
		{"nr", 404, "NR"},
		{"nc", 503, "NC"},
		{"uh", 503, "UH"},
		{"empty", 503, "UH"},
		{"uf", 503, "UF"},
		{"urx", 503, "UF,URX"},
		{"ut", 504, "UT"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			rid := "local-" + tt.host
			r := p.do("GET", tt.host, "/", map[string]string{"X-Request-Id": rid}, nil)
			if r.code != tt.wantCode {
				t.Errorf("status %d, want %d (%q)", r.code, tt.wantCode, r.body)
			}
			line := p.logLine(rid)
			if want := fmt.Sprintf(" %d %s ", tt.wantCode, tt.wantFlags); !strings.Contains(line, want) {
				t.Errorf("access log line %q: want %q", line, want)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	bad := startBackend(t, "bad", false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(503)
	})
	var gotBody atomic.Value
	good := startBackend(t, "good", false, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotBody.Store(string(b))
		io.WriteString(w, "good")
	})
	bad2 := startBackend(t, "bad2", false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("mixed", []string{"mixed"}, withRetry(prefixRoute("mixed", "/", "mixed"), "retriable-status-codes", 2, 503)),
			vhost("allbad", []string{"allbad"}, withRetry(prefixRoute("allbad", "/", "allbad"), "5xx", 2)),
		)},
		[]*clusterv3.Cluster{
			staticCluster(t, "mixed", false, bad.addr, good.addr),
			staticCluster(t, "allbad", false, bad.addr, bad2.addr),
		})
	p := startProxy(t, g)

	for i := range 4 {
		body := strings.Repeat("x", 1000+i)
		r := p.do("POST", "mixed", "/", map[string]string{"X-Request-Id": fmt.Sprint("retry-", i)}, strings.NewReader(body))
		if r.code != 200 || r.body != "good" {
			t.Fatalf("request %d: got %d %q, want 200 good", i, r.code, r.body)
		}
		if got, _ := gotBody.Load().(string); got != body {
			t.Fatalf("request %d: upstream body of %d bytes, want %d", i, len(got), len(body))
		}
	}
	if bad.hits.Load() == 0 {
		t.Error("the 503 endpoint was never tried: retry not exercised")
	}

	r := p.do("GET", "allbad", "/", map[string]string{"X-Request-Id": "retry-exhausted"}, nil)
	if r.code != 503 {
		t.Fatalf("status %d, want 503", r.code)
	}
	if line := p.logLine("retry-exhausted"); !strings.Contains(line, " 503 URX via_upstream ") {
		t.Errorf("access log line %q: want 503 URX via_upstream", line)
	}
}

func TestGenerationSwapInFlight(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	old := startBackend(t, "old", false, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "old")
	})
	nw := startBackend(t, "new", false, nil)
	mk := func(prev *config.Generation, cluster string) *config.Generation {
		return build(t, prev,
			[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
			[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", cluster)))},
			[]*clusterv3.Cluster{staticCluster(t, cluster, false, map[string]string{"old": old.addr, "new": nw.addr}[cluster])})
	}
	g1 := mk(nil, "old")
	p := startProxy(t, g1)
	addr := p.addr("l")

	done := make(chan reply, 1)
	go func() { done <- p.do("GET", "x", "/", nil, nil) }()
	<-entered
	p.apply(mk(g1, "new"))
	if got := p.addr("l"); got != addr {
		t.Fatalf("listener moved from %s to %s across generations", addr, got)
	}
	if r := p.do("GET", "x", "/", nil, nil); r.body != "new" {
		t.Fatalf("request after swap reached %q, want new", r.body)
	}
	close(release)
	if r := <-done; r.code != 200 || r.body != "old" {
		t.Fatalf("in-flight request: %d %q, want 200 old", r.code, r.body)
	}
}

func TestH2CDownstream(t *testing.T) {
	lAddr := closedAddr(t) // a free port for the proxy listener
	a := startBackend(t, "a", false, nil)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "a")))},
		[]*clusterv3.Cluster{staticCluster(t, "a", false, a.addr)})
	p := startProxy(t, g)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + p.addr("l") + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "a" {
		t.Fatalf("got %s %q, want HTTP/2.0 a", resp.Proto, b)
	}
	rid := a.last.Load().Header.Get("X-Request-Id")
	if line := p.logLine(rid); !strings.Contains(line, `"GET /h2 HTTP/2" 200`) {
		t.Errorf("access log line %q", line)
	}
}

// logEveryChain gives each chain of g without access_log one line per
// request in Istio's default format to /dev/stdout, as loomd's default
// mesh config (accessLogFile /dev/stdout) asks for.
func logEveryChain(g *config.Generation) {
	if g == nil {
		return
	}
	f, _ := accesslog.ParseTextFormat(accesslog.IstioTextFormat, accesslog.FormatOptions{})
	for _, l := range g.Listeners {
		for _, fc := range append(append([]*config.FilterChain{}, l.FilterChains...), l.DefaultFilterChain) {
			if fc != nil && fc.AccessLogs == nil {
				fc.AccessLogs = []*accesslog.AccessLogger{{Path: "/dev/stdout", Format: f}}
			}
		}
	}
}
