package dashboard

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startPrometheus runs Debian's prometheus binary (make test-deps
// installs it) on a free loopback port with its own storage, scraping
// targets ("http://127.0.0.1:PORT/stats/prometheus") every second, and
// returns its URL once it is ready. The test's cleanup stops it by PID.
// Without the binary the test skips, and fails under CI.
func startPrometheus(t *testing.T, targets ...string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		msg := fmt.Sprintf("prometheus is not installed (make test-deps installs Debian's prometheus): %v", err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	var hosts []string
	path := ""
	for _, tg := range targets {
		u, err := url.Parse(tg)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, fmt.Sprintf("%q", u.Host))
		path = u.Path
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: envoy-stats
    metrics_path: %s
    static_configs:
      - targets: [%s]
`, path, strings.Join(hosts, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	logTail := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	base := "http://" + addr
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		select {
		case <-done:
			t.Fatalf("prometheus on %s exited at start:\n%s", addr, logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus on %s is not ready after 20 s (%v):\n%s", addr, err, logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRealPrometheus runs the Prometheus source's PromQL against a real
// Prometheus server scraping fake proxies: productpage-v1 -> reviews-v2
// over mutual TLS, and reviews-v2 -> ratings-v1 in plain text with one
// request in four answered 500.
func TestRealPrometheus(t *testing.T) {
	pp, rv, rt := newFakeProxy(t), newFakeProxy(t), newFakeProxy(t)
	const ms = 30 // in Envoy's bucket (25, 50]
	tick := func() {
		for _, c := range []struct {
			p *fakeProxy
			c call
		}{
			{pp, call{reporter: reporterSource, src: "productpage-v1", dst: "reviews-v2", service: "reviews", code: "200", mtls: true, ms: ms, n: 4}},
			{rv, call{reporter: reporterDestination, src: "productpage-v1", dst: "reviews-v2", service: "reviews", code: "200", mtls: true, ms: ms, n: 4}},
			{rv, call{reporter: reporterSource, src: "reviews-v2", dst: "ratings-v1", service: "ratings", code: "200", ms: ms, n: 3}},
			{rv, call{reporter: reporterSource, src: "reviews-v2", dst: "ratings-v1", service: "ratings", code: "500", ms: ms, n: 1}},
			{rt, call{reporter: reporterDestination, src: "reviews-v2", dst: "ratings-v1", service: "ratings", code: "200", ms: ms, n: 3}},
			{rt, call{reporter: reporterDestination, src: "reviews-v2", dst: "ratings-v1", service: "ratings", code: "500", ms: ms, n: 1}},
		} {
			c.p.record(c.c)
		}
	}
	// Traffic keeps flowing: rate() of a counter that stops is 0. Every
	// series exists before the first scrape.
	tick()
	const every = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				tick()
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	// Requests per second each edge's source records.
	const sentRPS = 4 * float64(time.Second/every)

	start := time.Now()
	promURL := startPrometheus(t, pp.url(), rv.url(), rt.url())
	t.Logf("prometheus ready after %v", time.Since(start).Round(time.Millisecond))
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	t.Cleanup(client.CloseIdleConnections)
	p, err := NewPrometheus(PrometheusOptions{URL: promURL, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	hs := testServer(t, &fakeConfig{snap: bookinfoConfig(t)}, fakeProxies{}, p)
	t.Cleanup(hs.Client().CloseIdleConnections)

	// Poll the dashboard's graph until both edges have a rate and the
	// destinations' mTLS share: rate needs two scrapes with an increase.
	edgeOf := func(g Graph, service string) *GraphEdge {
		for i := range g.Edges {
			if g.Edges[i].Service == service+".default.svc.cluster.local" {
				return &g.Edges[i]
			}
		}
		return nil
	}
	var g Graph
	deadline := time.Now().Add(30 * time.Second)
	for {
		g = Graph{}
		getJSON(t, hs, "/api/graph?window=1m", &g)
		reviews, ratings := edgeOf(g, "reviews"), edgeOf(g, "ratings")
		if len(g.Warnings) == 0 && reviews != nil && ratings != nil && reviews.RPS > 0 && ratings.RPS > 0 &&
			ratings.ErrorRate > 0 && reviews.MTLS != nil && ratings.MTLS != nil && reviews.P95Ms != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("graph after 30 s: %+v", g)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("edges after %v: reviews %.3g rps, ratings %.3g rps (sent %v)", time.Since(start).Round(time.Millisecond), edgeOf(g, "reviews").RPS, edgeOf(g, "ratings").RPS, sentRPS)

	if g.Source != "prometheus" || len(g.Edges) != 2 {
		t.Fatalf("graph: source %q, %d edges, want prometheus and 2: %+v", g.Source, len(g.Edges), g.Edges)
	}
	reviews, ratings := edgeOf(g, "reviews"), edgeOf(g, "ratings")
	if reviews.Source != workloadNodeID("default", "productpage-v1") || reviews.Target != workloadNodeID("default", "reviews-v2") ||
		ratings.Source != workloadNodeID("default", "reviews-v2") || ratings.Target != workloadNodeID("default", "ratings-v1") {
		t.Errorf("edge ends: reviews %s -> %s, ratings %s -> %s", reviews.Source, reviews.Target, ratings.Source, ratings.Target)
	}
	for _, e := range []*GraphEdge{reviews, ratings} {
		// Over a 1m window a series only seconds old has a rate below
		// what was sent (rate divides by the whole window), never above.
		if e.Protocol != "http" || e.RPS <= 0 || e.RPS > 1.5*sentRPS {
			t.Errorf("edge %s: protocol %q, %v rps, want http and (0, %v]", e.Service, e.Protocol, e.RPS, 1.5*sentRPS)
		}
		if e.P95Ms == nil || *e.P95Ms <= 25 || *e.P95Ms > 50 {
			t.Errorf("edge %s: p95 %v ms, want within Envoy's bucket (25, 50] of the %d ms requests", e.Service, deref(e.P95Ms), ms)
		}
	}
	if reviews.ErrorRate != 0 || reviews.State != "ok" || deref(reviews.MTLS) != any(1.0) {
		t.Errorf("reviews edge: error share %v, state %s, mtls %v, want 0, ok, 1", reviews.ErrorRate, reviews.State, deref(reviews.MTLS))
	}
	// The 200 and 500 counters grow 3:1 on one proxy, scraped together.
	if math.Abs(ratings.ErrorRate-0.25) > 0.02 || ratings.State != "error" || deref(ratings.MTLS) != any(0.0) {
		t.Errorf("ratings edge: error share %v, state %s, mtls %v, want 0.25, error, 0", ratings.ErrorRate, ratings.State, deref(ratings.MTLS))
	}

	// The series: ratings' inbound (as ratings-v1 reported it) and
	// reviews-v2's outbound both count the ratings edge.
	for _, q := range []Query{
		{Direction: Inbound, Namespace: "default", Service: "ratings.default.svc.cluster.local"},
		{Direction: Outbound, Namespace: "default", Workloads: []string{"reviews-v2"}},
	} {
		// The newest point is at a whole step, which may precede the
		// second scrape of the destination: poll.
		var last Point
		for {
			pts, err := p.Series(context.Background(), q, 10*time.Second, time.Second)
			if err != nil {
				t.Fatalf("series %+v: %v", q, err)
			}
			if len(pts) > 0 {
				last = pts[len(pts)-1]
				if last.RequestRate > 0 && last.ErrorRate > 0 && !math.IsNaN(last.P95) {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("series %+v after 30 s: %+v", q, pts)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if math.Abs(last.ErrorRate/last.RequestRate-0.25) > 0.02 || last.P95 <= 25 || last.P95 > 50 {
			t.Errorf("series %+v: last point %+v, want 1 in 4 failed, p95 in (25, 50]", q, last)
		}
	}
	t.Logf("done after %v", time.Since(start).Round(time.Millisecond))
}

func deref(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}
