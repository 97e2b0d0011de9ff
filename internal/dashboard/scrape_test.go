package dashboard

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a scraper clock the test steps.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                  { return c.t }
func (c *clock) advance(d time.Duration)         { c.t = c.t.Add(d) }
func newClock() *clock                           { return &clock{t: time.Unix(1_800_000_000, 0)} }
func staticTargets(ts ...Target) func() []Target { return func() []Target { return ts } }

func newTestScraper(t *testing.T, opts ScraperOptions, c *clock) *Scraper {
	t.Helper()
	s, err := NewScraper(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.now = c.now
	return s
}

// nanEqual compares floats with NaN equal to NaN and a relative margin.
var nanEqual = cmp.Comparer(func(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(a))
})

// TestScraperRates scrapes two real endpoints serving Istio's metrics:
// productpage's proxy reports its calls to reviews as the source, reviews'
// proxy reports them as the destination, over mutual TLS. The first scrape
// is the baseline; the second, 10 s later, gives rates, error share, p95
// and mTLS from the increases.
func TestScraperRates(t *testing.T) {
	for _, format := range []string{"protobuf", "text"} {
		t.Run(format, func(t *testing.T) { testScraperRates(t, format == "text") })
	}
}

func testScraperRates(t *testing.T, text bool) {
	pp, rv := newFakeProxy(t), newFakeProxy(t)
	if text {
		pp.textOnly()
		rv.textOnly()
	}
	c := newClock()
	s := newTestScraper(t, ScraperOptions{Targets: staticTargets(
		Target{ID: "productpage", URLs: []string{pp.url()}}, Target{ID: "reviews", URLs: []string{rv.url()}})}, c)
	ctx := context.Background()

	// Before the baseline: traffic that must not count.
	pp.record(call{reporter: "source", src: "productpage-v1", dst: "reviews-v1", service: "reviews", code: "200", ms: 20, n: 100})
	s.ScrapeOnce(ctx)
	if e, _ := s.Edges(ctx, time.Minute); len(e) != 0 {
		t.Fatalf("edges after the baseline scrape: %+v", e)
	}

	pp.record(call{reporter: "source", src: "productpage-v1", dst: "reviews-v1", service: "reviews", code: "200", ms: 20, n: 50})
	pp.record(call{reporter: "source", src: "productpage-v1", dst: "reviews-v1", service: "reviews", code: "500", ms: 300, n: 10})
	// The destination's report knows the caller by name only: still the
	// same edge.
	rv.record(call{reporter: "destination", src: "productpage-v1", dst: "reviews-v1", service: "reviews", code: "200", mtls: true, ms: 18, n: 60,
		bareSource: true})
	// A caller outside the mesh, only the destination knows of.
	pp.record(call{reporter: "destination", src: unknown, dst: "productpage-v1", service: "productpage", code: "200", ms: 5, n: 20})
	c.advance(10 * time.Second)
	s.ScrapeOnce(ctx)

	got, err := s.Edges(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := []EdgeStats{
		{EdgeKey: EdgeKey{Source: wl("productpage-v1"), Dest: wl("reviews-v1"), Service: "reviews.default.svc.cluster.local"},
			Protocol: "http", RequestRate: 6, ErrorRate: 1,
			// 50 requests in (10,25], 10 in (250,500]: the 57th is 7/10 into
			// the (250,500] bucket.
			P95: 250 + 250*0.7, MTLS: 1},
		{EdgeKey: EdgeKey{Source: wl(unknown), Dest: wl("productpage-v1"), Service: "productpage.default.svc.cluster.local"},
			// 20 requests in (1,5]: the 19th is 19/20 into it.
			Protocol: "http", RequestRate: 2, P95: 1 + 4*0.95, MTLS: 0},
	}
	if d := cmp.Diff(want, got, nanEqual); d != "" {
		t.Fatalf("edges (-want +got)\n%s", d)
	}

	// A window shorter than the last interval sees the same last slot.
	if e, _ := s.Edges(ctx, time.Second); len(e) != 2 {
		t.Errorf("1s window: %d edges, want the last scrape's 2", len(e))
	}

	pts, err := s.Series(ctx, Query{Direction: Outbound, Namespace: "default", Workloads: []string{"productpage-v1"}}, time.Minute, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) == 0 || pts[len(pts)-1].RequestRate != 6 || pts[len(pts)-1].ErrorRate != 1 {
		t.Fatalf("outbound series of productpage-v1: %+v, want the last point at 6 rps, 1 failing", pts)
	}
	in, _ := s.Series(ctx, Query{Direction: Inbound, Namespace: "default", Service: "reviews.default.svc.cluster.local"}, time.Minute, 10*time.Second)
	if len(in) == 0 || in[len(in)-1].RequestRate != 6 || in[len(in)-1].ErrorRate != 0 {
		t.Fatalf("inbound series of reviews: %+v, want 6 rps as its proxy reported", in)
	}
}

// TestScraperCounterReset: a proxy that restarted reports smaller
// counters; its new values count as the increase, as Prometheus's rate.
func TestScraperCounterReset(t *testing.T) {
	p := newFakeProxy(t)
	c := newClock()
	s := newTestScraper(t, ScraperOptions{Targets: staticTargets(Target{ID: "pp", URLs: []string{p.url()}})}, c)
	ctx := context.Background()
	edge := call{reporter: "source", src: "productpage-v1", dst: "reviews-v1", service: "reviews", code: "200", ms: 3}
	edge.n = 1000
	p.record(edge)
	s.ScrapeOnce(ctx)
	// The proxy restarts: a new process, the same address.
	p.restart()
	edge.n = 30
	p.record(edge)
	c.advance(10 * time.Second)
	s.ScrapeOnce(ctx)
	got, _ := s.Edges(ctx, time.Minute)
	if len(got) != 1 || got[0].RequestRate != 3 {
		t.Fatalf("after a reset to 30: %+v, want 3 rps", got)
	}
}

// TestScraperTargets: a target's URLs are tried in order; a failing target
// is reported in its health and does not stop the others; a target that
// hangs is cut at the timeout.
func TestScraperTargets(t *testing.T) {
	good := newFakeProxy(t)
	bad := newFakeProxy(t)
	bad.fail(http.StatusServiceUnavailable)
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/stats/prometheus"
	l.Close()
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(hang)

	c := newClock()
	s := newTestScraper(t, ScraperOptions{Interval: time.Second, Targets: staticTargets(
		Target{ID: "a", URLs: []string{refused, good.url()}},
		Target{ID: "b", URLs: []string{bad.url()}},
		Target{ID: "c", URLs: []string{slow.URL}},
	)}, c)
	start := time.Now()
	s.ScrapeOnce(context.Background())
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("a scrape with a hanging target took %v; the timeout is 1s", el)
	}
	got := s.Health()
	if len(got) != 3 {
		t.Fatalf("health of %d targets, want 3: %+v", len(got), got)
	}
	if got[0].URL != good.url() || got[0].Error != "" || got[0].LastSuccess.IsZero() {
		t.Errorf("target a: %+v, want served by its second URL", got[0])
	}
	if !strings.Contains(got[1].Error, "503") {
		t.Errorf("target b: %+v, want its 503", got[1])
	}
	if !strings.Contains(got[2].Error, "deadline exceeded") {
		t.Errorf("target c: %+v, want a timeout", got[2])
	}

	// A target no longer listed is forgotten.
	s.opts.Targets = staticTargets(Target{ID: "a", URLs: []string{good.url()}})
	s.ScrapeOnce(context.Background())
	if h := s.Health(); len(h) != 1 || h[0].ID != "a" {
		t.Errorf("after b and c went away: %+v", h)
	}
}

// TestScraperBounds: the series of one target, the ring and the scrape
// interval and timeout are bounded.
func TestScraperBounds(t *testing.T) {
	p := newFakeProxy(t)
	for _, code := range []string{"200", "201", "202", "203", "204"} {
		p.record(call{reporter: "source", src: "productpage-v1", dst: "reviews-v1", service: "reviews", code: code, ms: 1, n: 1})
	}
	c := newClock()
	s := newTestScraper(t, ScraperOptions{Interval: time.Hour, Timeout: time.Hour, Retention: 24 * time.Hour, MaxSeries: 3,
		Targets: staticTargets(Target{ID: "pp", URLs: []string{p.url()}})}, c)
	if s.opts.Interval != MaxScrapeInterval || s.opts.Timeout != maxScrapeTimeout || s.opts.Retention != MaxRetention {
		t.Errorf("interval %v, timeout %v, retention %v: want them cut to %v, %v, %v",
			s.opts.Interval, s.opts.Timeout, s.opts.Retention, MaxScrapeInterval, maxScrapeTimeout, MaxRetention)
	}
	s.ScrapeOnce(context.Background())
	h := s.Health()[0]
	// 5 request series and 5 histograms of 20 buckets (+Inf included)
	// each, cut to 3.
	if h.Series != 3 || h.Dropped != 5+5*20-3 {
		t.Errorf("series %d, dropped %d: want 3 and %d", h.Series, h.Dropped, 5+5*20-3)
	}
	p.record(call{reporter: "source", src: "productpage-v1", dst: "reviews-v1", service: "reviews", code: "200", ms: 1, n: 1})
	c.advance(s.opts.Interval)
	s.ScrapeOnce(context.Background())
	if len(s.keys) == 0 {
		t.Fatal("a scrape with new requests interned no series")
	}
	for range 3 * s.cap {
		c.advance(s.opts.Interval)
		s.merge(c.now(), nil)
	}
	if len(s.ring) != s.cap || s.cap != int(MaxRetention/MaxScrapeInterval)+1 {
		t.Errorf("ring of %d slots (cap %d) after %d scrapes", len(s.ring), s.cap, 3*s.cap+1)
	}
	// Once the scrape that had them left the ring, its series are
	// forgotten.
	if len(s.keys) != 0 || len(s.keyIndex) != 0 {
		t.Errorf("%d interned series remain after their slots left the ring", len(s.keys))
	}
	fast, err := NewScraper(ScraperOptions{Interval: time.Millisecond, Targets: staticTargets()})
	if err != nil {
		t.Fatal(err)
	}
	if fast.opts.Interval != MinScrapeInterval || fast.opts.Retention != DefaultRetention {
		t.Errorf("1ms interval: got %v and retention %v", fast.opts.Interval, fast.opts.Retention)
	}
}

// TestScraperRun: Run scrapes at once and on its interval, and stops with
// its context.
func TestScraperRun(t *testing.T) {
	p := newFakeProxy(t)
	s, err := NewScraper(ScraperOptions{Interval: time.Second, Targets: staticTargets(Target{ID: "pp", URLs: []string{p.url()}})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Health()) == 0 || s.Health()[0].LastSuccess.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("Run never scraped")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestWantedLines: the text format's other families are dropped before
// parsing, and what is kept parses as the full exposition's wanted
// families do.
func TestWantedLines(t *testing.T) {
	const text = `# HELP go_goroutines Goroutines.
# TYPE go_goroutines gauge
go_goroutines 12
# HELP istio_requests_total Requests.
# TYPE istio_requests_total counter
istio_requests_total{reporter="source",response_code="200"} 7
istio_requests_total{reporter="source",response_code="503"} 1
# TYPE istio_request_bytes histogram
istio_request_bytes_bucket{le="+Inf"} 3
istio_request_bytes_sum 3
istio_request_bytes_count 3
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{reporter="source",le="1"} 2
istio_request_duration_milliseconds_bucket{reporter="source",le="+Inf"} 8
istio_request_duration_milliseconds_sum{reporter="source"} 40
istio_request_duration_milliseconds_count{reporter="source"} 8
# an odd comment
istio_tcp_sent_bytes_total{reporter="source"} 1024`
	got, err := decodeFamilies([]byte(text), expfmt.NewFormat(expfmt.TypeTextPlain))
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	all, err := parser.TextToMetricFamilies(strings.NewReader(text + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*dto.MetricFamily{}
	for name, mf := range all {
		if wantedFamilies[name] {
			want[name] = mf
		}
	}
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("wanted families (-want +got)\n%s", d)
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64
	}{
		{"empty", 0.95, nil, math.NaN()},
		{"no observations", 0.95, map[float64]float64{1: 0, inf: 0}, math.NaN()},
		{"no +Inf bucket", 0.95, map[float64]float64{1: 1}, math.NaN()},
		// Prometheus: the lowest bucket starts at 0.
		{"first bucket", 0.5, map[float64]float64{10: 4, 20: 4, inf: 4}, 5},
		{"interpolated", 0.95, map[float64]float64{25: 50, 500: 60, inf: 60}, 25 + (500-25)*(57-50)/10.0},
		{"in +Inf: highest finite bound", 0.99, map[float64]float64{10: 1, 20: 2, inf: 100}, 20},
		{"non-monotonic counts are evened", 0.5, map[float64]float64{10: 4, 20: 3, inf: 4}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, quantile(tt.q, tt.buckets), nanEqual); d != "" {
				t.Errorf("quantile (-want +got)\n%s", d)
			}
		})
	}
}
