package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/loom-mesh/loom/internal/dashboard/dashboardtest"
	"github.com/loom-mesh/loom/internal/metricnames"
	"github.com/loom-mesh/loom/internal/testutil/browsertest"
	"github.com/loom-mesh/loom/internal/testutil/promtest"
)

// The dashboard's mesh runs beside the others, on its own subnet.
const (
	dashSubnet    = "127.120.0.0/24"
	dashLoomdAddr = "127.120.0.1:15014"
	dashURL       = "http://127.120.0.1:20001/"
)

// TestDashboardBookinfo runs `loomctl demo` and checks loomd's dashboard
// over the real mesh: the demo prints its URL, `loomctl dashboard` gives
// it, its API lists Bookinfo's proxies all synced. Then, in headless
// Chromium, Bookinfo traffic through the gateway draws the graph's nodes
// and edges with non-zero rates, and Istio's ratings fault abort for jason
// turns the reviews-v2 -> ratings edge red; a screenshot is saved.
//
// The browser part reads Istio's standard metrics the proxies serve on
// 15090.
func TestDashboardBookinfo(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if _, err := os.Stat(samplesDir); err != nil {
		t.Fatalf("Istio's Bookinfo samples are missing (%v): check out shared/istio-samples beside the module", err)
	}
	m := startDemo(t, dashSubnet)
	if !strings.Contains(m.out.String(), "dashboard:  "+dashURL) {
		t.Errorf("the demo's banner does not give the dashboard's URL %s:\n%s", dashURL, m.out.String())
	}
	stdout, stderr, code := loomctlAt(t, dashLoomdAddr, "dashboard", "--no-browser")
	if code != 0 || strings.TrimSpace(stdout) != "Loom dashboard: "+dashURL {
		t.Fatalf("loomctl dashboard --no-browser: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	hc := newClient(t)
	var proxies []struct {
		Name   string `json:"name"`
		Synced bool   `json:"synced"`
	}
	pollUntil(t, "7 synced proxies in /api/proxies", func() bool {
		if err := getJSONFrom(hc, dashURL+"api/proxies", &proxies); err != nil {
			return false
		}
		synced := 0
		for _, p := range proxies {
			if p.Synced {
				synced++
			}
		}
		return synced == 7
	})

	anon, jason := newClient(t), newClient(t)
	login(t, jason, m.pageURL, "jason")
	stop := startTraffic(t, m.pageURL, anon, jason)
	defer stop()

	// Istio's metrics, or the reason to stop here.
	scrape := "http://127.120.0.11:15090/stats/prometheus"
	var body string
	ok := poll(10*time.Second, func() bool {
		body = tryGet(hc, scrape)
		return strings.Contains(body, "istio_requests_total{")
	})
	if !ok {
		t.Fatalf("productpage's proxy serves no istio_requests_total on %s after traffic. Got: %.200q", scrape, body)
	}

	// Istio's standard metrics the proxy exports are in the one list the
	// Grafana dashboards are checked against (the agent's istio_agent_*
	// are not standard metrics, and no dashboard reads them).
	fams, err := promtest.Parse(body)
	if err != nil {
		t.Fatalf("%s: %v", scrape, err)
	}
	for name, fam := range fams {
		if !strings.HasPrefix(name, "istio_request") && !strings.HasPrefix(name, "istio_response") && !strings.HasPrefix(name, "istio_tcp_") {
			continue
		}
		typ, ok := metricnames.Proxy[name]
		if got := strings.ToLower(fam.GetType().String()); !ok || string(typ) != got {
			t.Errorf("productpage's proxy exports %s (%s), which internal/metricnames.Proxy lists as %q", name, got, typ)
		}
	}

	bctx := browsertest.New(t)
	if _, err := chromedp.Run(bctx, chromedp.Navigate(dashURL+"#/graph")); err != nil {
		t.Fatal(err)
	}
	const (
		gw = "wl:istio-system/istio-ingressgateway"
		pp = "wl:default/productpage-v1"
	)
	edge := func(src, dstPrefix string) string {
		return fmt.Sprintf(`s.edges.some(e => e.source === %q && e.target.startsWith(%q) && e.rps > 0)`, src, dstPrefix)
	}
	st := dashboardtest.PollGraph(t, bctx, "Bookinfo's edges with traffic",
		edge(gw, pp)+" && "+edge(pp, "wl:default/details-v1")+" && "+edge(pp, "wl:default/reviews-v")+
			" && "+edge("wl:default/reviews-v2", "wl:default/ratings-v1"), time.Minute)
	t.Logf("graph before the fault: %d nodes, %d edges", len(st.Nodes), len(st.Edges))

	applyAt(t, dashLoomdAddr, sample("destination-rule-all.yaml"), "destinationrule.networking.istio.io/ratings ")
	applyAt(t, dashLoomdAddr, sample("virtual-service-all-v1.yaml"), "virtualservice.networking.istio.io/ratings ")
	applyAt(t, dashLoomdAddr, sample("virtual-service-reviews-test-v2.yaml"), "virtualservice.networking.istio.io/reviews ")
	applyAt(t, dashLoomdAddr, sample("virtual-service-ratings-test-abort.yaml"), "virtualservice.networking.istio.io/ratings ")
	st = dashboardtest.PollGraph(t, bctx, "the reviews-v2 -> ratings edge in red after the abort",
		fmt.Sprintf(`s.edges.some(e => e.source === "wl:default/reviews-v2" && e.target.includes("ratings") && e.state === "error" && e.color === %q)`,
			dashboardtest.ColorError), time.Minute)
	browsertest.Screenshot(t, bctx, "dashboard-graph-bookinfo.png")
	for _, e := range st.Edges {
		if e.State == "error" && !(e.Source == "wl:default/reviews-v2" && strings.Contains(e.Target, "ratings")) {
			// Requests in flight across a config push may fail too.
			t.Logf("edge %s has errors as well: %+v", e.ID, e)
		}
	}
}

// startTraffic loads the product page as anon and as jason, ten times a
// second each, for at most 3 minutes or until the returned stop is called.
func startTraffic(t *testing.T, pageURL string, clients ...*http.Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				_ = tryGet(c, pageURL)
			}
		})
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// tryGet GETs url and returns its body, "" on any error.
func tryGet(c *http.Client, url string) string {
	resp, err := c.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return string(b)
}

// getJSONFrom GETs url and decodes a 200 answer into v.
func getJSONFrom(c *http.Client, url string, v any) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
