package dashboard

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/loom-mesh/loom/internal/dashboard/dashboardtest"
	"github.com/loom-mesh/loom/internal/testutil/browsertest"
)

// TestBrowserGraph drives the real page in headless Chromium against the
// embedded scraper of four real metrics endpoints that serve Istio's
// metrics for Bookinfo's gateway -> productpage -> reviews-v2 -> ratings
// calls (over mutual TLS, as the destinations report): the graph shows the
// nodes and edges with non-zero rates, green; a fault abort on
// reviews-v2 -> ratings turns that edge red; the proxies, config and
// service pages render. Screenshots are saved as artifacts.
func TestBrowserGraph(t *testing.T) {
	if !BundleBuilt() {
		browsertest.SkipOrFail(t, "the dashboard's front end is not built into this test binary: run make ui (make test does)")
	}
	gw, pp, rv, rt := newFakeProxy(t), newFakeProxy(t), newFakeProxy(t), newFakeProxy(t)
	var abort atomic.Bool
	trafficCtx, stopTraffic := context.WithCancel(context.Background())
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		// Bounded: at most 3 minutes of 10 ticks a second.
		for range 1800 {
			select {
			case <-trafficCtx.Done():
				return
			case <-tick.C:
			}
			for _, c := range []struct {
				p        *fakeProxy
				src, dst string
				service  string
			}{{gw, "istio-ingressgateway-v1", "productpage-v1", "productpage"}, {pp, "productpage-v1", "reviews-v2", "reviews"}} {
				c.p.record(call{reporter: "source", src: c.src, dst: c.dst, service: c.service, code: "200", ms: 12, n: 2})
			}
			pp.record(call{reporter: "destination", src: "istio-ingressgateway-v1", dst: "productpage-v1", service: "productpage", code: "200", mtls: true, ms: 11, n: 2})
			rv.record(call{reporter: "destination", src: "productpage-v1", dst: "reviews-v2", service: "reviews", code: "200", mtls: true, ms: 10, n: 2})
			if abort.Load() {
				// Istio's ratings-test-abort: the client's proxy answers 500
				// (FI) without choosing a ratings workload.
				rv.record(call{reporter: "source", src: "reviews-v2", dst: unknown, service: "ratings", code: "500", ms: 0.2, n: 2})
				continue
			}
			rv.record(call{reporter: "source", src: "reviews-v2", dst: "ratings-v1", service: "ratings", code: "200", ms: 4, n: 2})
			rt.record(call{reporter: "destination", src: "reviews-v2", dst: "ratings-v1", service: "ratings", code: "200", mtls: true, ms: 3, n: 2})
		}
	}()
	t.Cleanup(func() { stopTraffic(); <-trafficDone })

	scraper, err := NewScraper(ScraperOptions{Interval: time.Second, Targets: staticTargets(
		Target{ID: "gw", URLs: []string{gw.url()}}, Target{ID: "pp", URLs: []string{pp.url()}},
		Target{ID: "rv", URLs: []string{rv.url()}}, Target{ID: "rt", URLs: []string{rt.url()}})})
	if err != nil {
		t.Fatal(err)
	}
	proxies := fakeProxies{proxyStatus("productpage-v1", "127.0.0.11", ""), proxyStatus("reviews-v2", "127.0.0.14", ""),
		proxyStatus("ratings-v1", "127.0.0.16", "")}
	srv, err := New(Options{Addr: "127.0.0.1:0", Config: &fakeConfig{snap: bookinfoConfig(t, "destination-rule-all.yaml")},
		Proxies: proxies, Traffic: scraper, Health: scraper.Health})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { scraper.Run(ctx); done <- struct{}{} }()
	go func() { srv.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })

	bctx := browsertest.New(t)
	if _, err := chromedp.Run(bctx, chromedp.Navigate(srv.URL()+"#/graph")); err != nil {
		t.Fatal(err)
	}
	const (
		gwN = "wl:default/istio-ingressgateway-v1"
		ppN = "wl:default/productpage-v1"
		rvN = "wl:default/reviews-v2"
		rtN = "wl:default/ratings-v1"
	)
	edge := func(src, dst string) string {
		return fmt.Sprintf(`s.edges.some(e => e.source === %q && e.target === %q && e.rps > 0 && e.state === "ok")`, src, dst)
	}
	st := dashboardtest.PollGraph(t, bctx, "the Bookinfo edges with traffic",
		edge(gwN, ppN)+" && "+edge(ppN, rvN)+" && "+edge(rvN, rtN), 45*time.Second)
	for _, e := range st.Edges {
		if e.Color != dashboardtest.ColorOK {
			t.Errorf("edge %s drawn %s, want green %s", e.ID, e.Color, dashboardtest.ColorOK)
		}
		if e.Source == ppN && (e.MTLS == nil || *e.MTLS != 1) {
			t.Errorf("productpage -> reviews-v2 mTLS %v, want 1 (a lock)", e.MTLS)
		}
	}
	for _, n := range []string{"wl:default/details-v1", "wl:default/reviews-v1", rtN} {
		found := false
		for _, x := range st.Nodes {
			found = found || x == n
		}
		if !found {
			t.Errorf("node %s missing from %v", n, st.Nodes)
		}
	}

	abort.Store(true)
	const bad = "svc:ratings.default.svc.cluster.local"
	st = dashboardtest.PollGraph(t, bctx, "the aborted reviews-v2 -> ratings edge in red",
		fmt.Sprintf(`s.edges.some(e => e.source === %q && e.target === %q && e.state === "error" && e.color === %q)`, rvN, bad, dashboardtest.ColorError), 45*time.Second)
	for _, e := range st.Edges {
		if e.Source == rvN && e.Target == bad && (e.ErrorRate != 1 || e.RPS <= 0) {
			t.Errorf("aborted edge %+v: want every request failing", e)
		}
	}
	// The edge table says the same to a reader.
	rows, err := chromedp.Run(bctx, chromedp.Poll[int](`document.querySelectorAll("#edge-table tr.edge.error").length`,
		chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || rows < 1 {
		t.Errorf("edge table shows %d failing edges (%v)", rows, err)
	}
	browsertest.Screenshot(t, bctx, "dashboard-graph-fake-metrics.png")

	pages := []struct{ hash, ready, shot string }{
		{"#/proxies", `document.querySelectorAll("#proxies tbody tr.proxy.synced").length === 3`, ""},
		{"#/config", `document.querySelectorAll("#config tbody tr.resource.valid").length > 10`, ""},
		{"#/workloads", `document.querySelectorAll("#workloads tbody tr").length >= 6`, ""},
		{"#/service/default/reviews.default.svc.cluster.local",
			`document.querySelectorAll(".chart canvas").length >= 2 && document.body.textContent.includes("DestinationRule")`,
			"dashboard-service-fake-metrics.png"},
		{"#/workload/default/reviews-v2",
			`document.querySelector("h1") !== null && document.querySelector("h1").textContent.startsWith("Workload reviews-v2") && ` +
				`document.querySelectorAll(".chart canvas").length >= 2 && document.body.textContent.includes("DestinationRule") && ` +
				`document.body.textContent.includes("subset v2") && document.querySelectorAll("table tr.proxy.synced").length === 1`,
			"dashboard-workload-fake-metrics.png"},
	}
	for _, p := range pages {
		// A same-document navigation: the page's router takes it.
		if _, err := chromedp.Run(bctx, chromedp.Evaluate[any](fmt.Sprintf("location.hash = %q", p.hash))); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](p.ready, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			body, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Errorf("page %s never satisfied %s: %v\n%s", p.hash, p.ready, err, body)
			continue
		}
		if p.shot != "" {
			browsertest.Screenshot(t, bctx, p.shot)
		}
	}
}
