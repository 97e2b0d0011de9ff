package routestats

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// A route without a stat_prefix holds a nil *Stats: every count is a nil
// check, with no allocation. A route with one allocates nothing either once
// its response code's series exists.
func TestCountsDoNotAllocate(t *testing.T) {
	count := func(s *Stats) {
		s.UpstreamRequest()
		s.Retry()
		s.RetrySuccess()
		s.RetryLimitExceeded()
		s.RetryOverflow()
		s.Timeout()
		s.Completed(200)
		s.Time(3 * time.Millisecond)
	}
	var none *Stats
	if n := testing.AllocsPerRun(100, func() { count(none) }); n != 0 {
		t.Errorf("nil Stats: %v allocations per request, want 0", n)
	}
	s := NewFamilies().For("vh", "p")
	count(s) // makes the 200, 2xx and upstream_rq_time series
	if n := testing.AllocsPerRun(100, func() { count(s) }); n != 0 {
		t.Errorf("Stats: %v allocations per request, want 0", n)
	}
}

// For returns one Stats per virtual host and prefix, so that counts
// survive generations and routes sharing a name share counters.
func TestForSharesByName(t *testing.T) {
	f := NewFamilies()
	reg := prometheus.NewRegistry()
	reg.MustRegister(f.Collectors()...)
	a, b, other := f.For("vh", "p"), f.For("vh", "p"), f.For("vh2", "p")
	if a != b || a == other {
		t.Fatalf("For: same name gave %p and %p, other vhost %p", a, b, other)
	}
	a.Completed(503)
	b.Completed(503)
	other.Completed(0) // no code: completed only
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]*dto.Metric{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()
	}
	if ms := got["envoy_vhost_route_upstream_rq"]; len(ms) != 1 || ms[0].GetCounter().GetValue() != 2 {
		t.Errorf("envoy_vhost_route_upstream_rq = %v, want one series (vh, p, 503) at 2: a code-less completion makes none", ms)
	}
	var completed float64
	for _, m := range got["envoy_vhost_route_upstream_rq_completed"] {
		completed += m.GetCounter().GetValue()
	}
	if completed != 3 {
		t.Errorf("upstream_rq_completed sum = %v, want 3", completed)
	}
}

// Retain drops the series of routes gone from the config, and a route
// that comes back starts again from its ALL_ROUTE_STATS counters at 0.
func TestRetain(t *testing.T) {
	f := NewFamilies()
	reg := prometheus.NewRegistry()
	reg.MustRegister(f.Collectors()...)
	kept, gone := f.For("vh", "kept"), f.For("vh", "gone")
	kept.Completed(200)
	gone.Completed(200)
	gone.Time(time.Millisecond)
	f.Retain(func(vhost, prefix string) bool { return prefix == "kept" })
	routes := func() map[string]bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == LabelRoute {
						seen[lp.GetValue()] = true
					}
				}
			}
		}
		return seen
	}
	if got := routes(); !got["kept"] || got["gone"] {
		t.Fatalf("routes with series after Retain: %v, want kept only", got)
	}
	if back := f.For("vh", "gone"); back == gone || !routes()["gone"] {
		t.Errorf("For after Retain: same handle %v, series %v; want a new handle with its counters", back == gone, routes())
	}
}

// A request still running on a generation whose route Retain dropped
// counts on the old Stats: its first response code and upstream_rq_time
// must make no series, which no later Retain would drop.
func TestRetainedStatsMakeNoSeries(t *testing.T) {
	f := NewFamilies()
	reg := prometheus.NewRegistry()
	reg.MustRegister(f.Collectors()...)
	old := f.For("vh", "gone")
	f.Retain(func(vhost, prefix string) bool { return false })
	old.Completed(503)
	old.Time(time.Millisecond)
	old.UpstreamRequest()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			t.Errorf("series after Retain dropped the route: %s %v", mf.GetName(), m.GetLabel())
		}
	}
}
