package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// testOutlier ejects on 3 consecutive 5xx for base, up to every host.
func testOutlier(base time.Duration) *config.OutlierDetection {
	return &config.OutlierDetection{Consecutive5xx: 3, EnforcingConsecutive5xx: 100, Interval: time.Hour,
		BaseEjectionTime: base, MaxEjectionTime: time.Hour, MaxEjectionPercent: 100}
}

// TestOutlierEjectsAndReturns sends round-robin traffic to three real
// upstreams, one of which answers 500.
func TestOutlierEjectsAndReturns(t *testing.T) {
	var srvs []*countingServer
	for i := range 3 {
		srvs = append(srvs, newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
			if i == 1 {
				w.WriteHeader(http.StatusInternalServerError)
			}
			io.WriteString(w, "x")
		}))
	}
	bad := addrOf(srvs[1])
	// Long enough that round 2's requests land well within base of the
	// host's return even on a loaded machine: after base of health Envoy
	// lowers the multiplier again, and round 2 would last 1 × base.
	const base = 500 * time.Millisecond
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", Outlier: testOutlier(base)}
	for _, s := range srvs {
		c.Endpoints = append(c.Endpoints, config.Endpoint{Address: addrOf(s)})
	}
	m.Update(gen(c))
	st := m.state("c")

	for round := 1; round <= 2; round++ {
		// Round robin from the first host: the bad host's third 500, the
		// 8th request, ejects it.
		for i := range 8 {
			if st.ejected(bad) {
				t.Fatalf("round %d: ejected after %d requests, want after its 3rd failure (8 requests)", round, i)
			}
			if _, err := send(context.Background(), m, c); err != nil {
				t.Fatal(err)
			}
		}
		ejectedAt := time.Now()
		if !st.ejected(bad) {
			t.Fatalf("round %d: not ejected after 3 consecutive 500s", round)
		}
		for _, s := range []*countingServer{srvs[0], srvs[2]} {
			if st.ejected(addrOf(s)) {
				t.Fatalf("healthy host %s ejected", addrOf(s))
			}
		}
		if got := m.PolicyStats("c"); got.EjectionsActive != 1 || got.EjectionsEnforcedTotal != uint64(round) {
			t.Fatalf("round %d: stats %+v, want 1 active, %d enforced", round, got, round)
		}
		waitFor(t, "the ejected host to come back", func() bool { return !st.ejected(bad) })
		// The n-th ejection lasts n × base_ejection_time.
		if d := time.Since(ejectedAt); d < time.Duration(round)*base-10*time.Millisecond {
			t.Fatalf("round %d: back after %v, want at least %v", round, d, time.Duration(round)*base)
		}
		if got := m.PolicyStats("c").EjectionsActive; got != 0 {
			t.Fatalf("ejections_active = %d after return", got)
		}
		// Realign round robin on the first host for the next round.
		for {
			h, err := m.Pick(c, PickOptions{})
			if err != nil {
				t.Fatal(err)
			}
			h.Done(Result{Status: 0})
			if h.Addr == addrOf(srvs[2]) {
				break
			}
		}
	}
}

func TestOutlierDetectors(t *testing.T) {
	lo := Result{LocalOrigin: true}
	r := func(codes ...int) []Result {
		var rs []Result
		for _, c := range codes {
			if c < 0 {
				rs = append(rs, lo)
			} else {
				rs = append(rs, Result{Status: c})
			}
		}
		return rs
	}
	with := func(f func(od *config.OutlierDetection)) *config.OutlierDetection {
		od := testOutlier(time.Hour)
		f(od)
		return od
	}
	const LO = -1
	for _, tt := range []struct {
		name    string
		od      *config.OutlierDetection
		results []Result
		want    bool
	}{
		{"3 5xx", testOutlier(time.Hour), r(500, 503, 500), true},
		{"success resets", testOutlier(time.Hour), r(500, 500, 200, 500, 500), false},
		{"4xx resets", testOutlier(time.Hour), r(500, 500, 404, 500, 500), false},
		{"no response, not local, is no signal", testOutlier(time.Hour), r(500, 500, 0, 500), true},
		{"local origin counts as 5xx unsplit", testOutlier(time.Hour), r(LO, 500, LO), true},
		{"local origin apart when split", with(func(od *config.OutlierDetection) {
			od.SplitExternalLocalOriginErrors = true
		}), r(LO, 500, LO, 500), false},
		{"consecutive local origin when split", with(func(od *config.OutlierDetection) {
			od.SplitExternalLocalOriginErrors, od.ConsecutiveLocalOriginFailure, od.EnforcingConsecutiveLocalOriginFailure = true, 2, 100
		}), r(500, LO, LO), true},
		{"answer resets local origin when split", with(func(od *config.OutlierDetection) {
			od.SplitExternalLocalOriginErrors, od.ConsecutiveLocalOriginFailure, od.EnforcingConsecutiveLocalOriginFailure = true, 2, 100
		}), r(LO, 500, LO), false},
		{"gateway failure", with(func(od *config.OutlierDetection) {
			od.Consecutive5xx, od.ConsecutiveGatewayFailure, od.EnforcingConsecutiveGatewayFailure = 0, 2, 100
		}), r(502, 504), true},
		{"500 breaks gateway run", with(func(od *config.OutlierDetection) {
			od.Consecutive5xx, od.ConsecutiveGatewayFailure, od.EnforcingConsecutiveGatewayFailure = 0, 2, 100
		}), r(502, 500, 503), false},
		{"gateway not enforced (Envoy default 0)", with(func(od *config.OutlierDetection) {
			od.Consecutive5xx, od.ConsecutiveGatewayFailure = 0, 2
		}), r(502, 502, 502), false},
		{"5xx not enforced", with(func(od *config.OutlierDetection) { od.EnforcingConsecutive5xx = 0 }), r(500, 500, 500), false},
		{"5xx detector off", with(func(od *config.OutlierDetection) { od.Consecutive5xx = 0 }), r(500, 500, 500, 500, 500, 500), false},
		{"max_ejection_percent 0", with(func(od *config.OutlierDetection) { od.MaxEjectionPercent = 0 }), r(500, 500, 500), false},
		{"always_eject_one_host", with(func(od *config.OutlierDetection) {
			od.MaxEjectionPercent, od.AlwaysEjectOneHost = 0, true
		}), r(500, 500, 500), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var o outlierState
			o.update(tt.od, []config.Endpoint{{Address: "a"}})
			for _, res := range tt.results {
				o.report("a", res)
			}
			if got := o.ejected("a"); got != tt.want {
				t.Errorf("ejected = %v after %v, want %v", got, tt.results, tt.want)
			}
		})
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	for _, tt := range []struct {
		percent      uint32
		wantEjected  int
		wantOverflow uint64
	}{
		{10, 0, 3}, // Envoy's default ejects nobody of 3 hosts
		{34, 1, 2},
		{67, 2, 1},
		{100, 3, 0},
	} {
		t.Run(fmt.Sprint(tt.percent), func(t *testing.T) {
			od := testOutlier(time.Hour)
			od.MaxEjectionPercent = tt.percent
			var o outlierState
			eps := []config.Endpoint{{Address: "a"}, {Address: "b"}, {Address: "c"}}
			o.update(od, eps)
			for range 3 {
				for _, ep := range eps {
					o.report(ep.Address, Result{Status: 503})
				}
			}
			got := 0
			for _, ep := range eps {
				if o.ejected(ep.Address) {
					got++
				}
			}
			if got != tt.wantEjected || o.overflow.Load() != tt.wantOverflow || o.active(monoNow()) != got {
				t.Errorf("ejected %d (active %d), overflow %d; want %d, %d", got, o.active(monoNow()), o.overflow.Load(), tt.wantEjected, tt.wantOverflow)
			}
		})
	}
}

// TestOutlierSurvivesUpdate keeps an ejection across generations and
// drops it with the endpoint or with outlier detection.
func TestOutlierSurvivesUpdate(t *testing.T) {
	var o outlierState
	od := testOutlier(time.Hour)
	o.update(od, []config.Endpoint{{Address: "a"}, {Address: "b"}})
	for range 3 {
		o.report("a", Result{Status: 500})
	}
	o.update(od, []config.Endpoint{{Address: "a"}, {Address: "c"}})
	got := []bool{o.ejected("a"), o.ejected("b"), o.ejected("c")}
	if d := cmp.Diff([]bool{true, false, false}, got); d != "" {
		t.Fatalf("after update (-want +got)\n%s", d)
	}
	o.update(nil, []config.Endpoint{{Address: "a"}})
	o.report("a", Result{Status: 500})
	if o.ejected("a") {
		t.Fatal("still ejected with outlier detection removed")
	}
}
