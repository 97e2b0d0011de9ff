package upstream

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// level describes one priority level of a test cluster: n endpoints of
// which the last unhealthy are not healthy.
type level struct{ n, unhealthy int }

// leveled makes a cluster "c" with the endpoints of levels, priority k for
// levels[k], and returns the priority of each address.
func leveled(levels ...level) (*config.Cluster, map[string]int) {
	var eps []config.Endpoint
	prio := map[string]int{}
	all := endpoints(64)
	for k, l := range levels {
		for i := range l.n {
			ep := all[len(eps)]
			ep.Priority = uint32(k)
			if i >= l.n-l.unhealthy {
				ep.Health = config.Unhealthy
			}
			prio[ep.Address] = k
			eps = append(eps, ep)
		}
	}
	return &config.Cluster{Name: "c", Endpoints: eps}, prio
}

// counter is a random source yielding 0, 1, 2, ...: a level draw (r % 100)
// then walks every percent once per 100 picks, so loads come out exact.
func counter() func() uint64 {
	var n atomic.Uint64
	return func() uint64 { return n.Add(1) - 1 }
}

// TestPriorityLoad checks Envoy's priority load with the overprovisioning
// factor 1.4 (the examples of Envoy's "Priority levels" page), and total
// panic, over 100 picks of a counting random source: picks[k] is how many
// went to priority k.
func TestPriorityLoad(t *testing.T) {
	pct := func(v uint32) *uint32 { return &v }
	for _, tc := range []struct {
		name      string
		levels    []level
		threshold *uint32
		picks     int
		want      []int
		wantErr   error
	}{
		{"all healthy: P0 only", []level{{4, 0}, {4, 0}}, nil, 100, []int{100, 0}, nil},
		{"P0 75% healthy is still 100% available", []level{{4, 1}, {4, 0}}, nil, 100, []int{100, 0}, nil},
		{"P0 50% healthy: 70/30", []level{{4, 2}, {4, 0}}, nil, 100, []int{70, 30}, nil},
		{"P0 20% healthy: 28/72 (Envoy's example)", []level{{5, 4}, {4, 0}}, nil, 100, []int{28, 72}, nil},
		{"three levels spill in order", []level{{5, 4}, {2, 1}, {4, 0}}, nil, 100, []int{28, 70, 2}, nil},
		{"sum below 100 is normalized", []level{{4, 3}, {4, 3}}, nil, 100, []int{50, 50}, nil},
		{"P0 none healthy: P1 takes all", []level{{2, 2}, {4, 2}}, nil, 100, []int{0, 100}, nil},
		{"total panic: by endpoint count", []level{{4, 4}, {2, 2}}, nil, 60, []int{40, 20}, nil},
		{"total panic with panic mode off: no host", []level{{4, 4}, {2, 2}}, pct(0), 1, nil, ErrNoHealthyUpstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Options{})
			defer m.Close()
			m.rng = counter()
			c, prio := leveled(tc.levels...)
			c.HealthyPanicThreshold = tc.threshold
			m.Update(gen(c))
			got := make([]int, len(tc.levels))
			for range tc.picks {
				h, err := m.Pick(c, PickOptions{})
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Pick err = %v, want %v", err, tc.wantErr)
				}
				if err != nil {
					return
				}
				got[prio[h.Addr]]++
				h.Done(Result{Status: 200})
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("picks per priority (-want +got):\n%s", d)
			}
		})
	}
}

// TestPriorityLevelPanic: a level that gets load but has fewer than 50 %
// usable endpoints balances over all of its endpoints, health ignored.
func TestPriorityLevelPanic(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	m.rng = counter()
	c, _ := leveled(level{4, 3}, level{4, 0}) // P0: 35 %, in panic
	m.Update(gen(c))
	seen := map[string]bool{}
	for range 100 {
		seen[pickAddr(t, m, c, PickOptions{})] = true
	}
	for _, ep := range c.Endpoints[:4] {
		if !seen[ep.Address] {
			t.Errorf("P0 endpoint %s (health %v) never picked; want all of P0 in panic", ep.Address, ep.Health)
		}
	}
}

// TestPriorityFailoverOnEjection: outlier ejection moves traffic down a
// priority, and back when the ejection ends.
func TestPriorityFailoverOnEjection(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	c, prio := leveled(level{1, 0}, level{1, 0}, level{1, 0})
	c.Outlier = testOutlier(time.Hour)
	m.Update(gen(c))
	st := m.state("c")
	eject := func(addr string) {
		for range 3 {
			st.pol.od.report(addr, Result{Status: 500})
		}
	}
	only := func(want int) {
		t.Helper()
		for range 20 {
			if a := pickAddr(t, m, c, PickOptions{}); prio[a] != want {
				t.Fatalf("picked %s of priority %d, want priority %d", a, prio[a], want)
			}
		}
	}
	only(0)
	eject(c.Endpoints[0].Address)
	only(1)
	eject(c.Endpoints[1].Address)
	only(2)
}

// TestLocalityWeighted: within a priority, localities share by weight
// times availability; a locality without a weight takes nothing.
func TestLocalityWeighted(t *testing.T) {
	mk := func(loc string, w uint32, n, unhealthy int, first int) []config.Endpoint {
		eps := endpoints(first + n)[first:]
		for i := range eps {
			eps[i].Locality, eps[i].LocalityWeight = loc, w
			if i >= n-unhealthy {
				eps[i].Health = config.Unhealthy
			}
		}
		return eps
	}
	for _, tc := range []struct {
		name string
		eps  [][]config.Endpoint
		want map[string]float64 // share per locality
	}{
		{"weights 1:3", [][]config.Endpoint{mk("a", 1, 2, 0, 0), mk("b", 3, 2, 0, 2)}, map[string]float64{"a": 0.25, "b": 0.75}},
		{"half healthy counts 70 %", [][]config.Endpoint{mk("a", 1, 2, 0, 0), mk("b", 1, 2, 1, 2)}, map[string]float64{"a": 100.0 / 170, "b": 70.0 / 170}},
		{"no weight, no traffic", [][]config.Endpoint{mk("a", 1, 2, 0, 0), mk("b", 0, 2, 0, 2)}, map[string]float64{"a": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Options{})
			defer m.Close()
			m.rng = rand.New(rand.NewPCG(5, 6)).Uint64
			c := &config.Cluster{Name: "c", LocalityWeighted: true}
			loc := map[string]string{}
			for _, g := range tc.eps {
				c.Endpoints = append(c.Endpoints, g...)
				for _, ep := range g {
					loc[ep.Address] = ep.Locality
				}
			}
			m.Update(gen(c))
			const n = 4000
			got := map[string]int{}
			for range n {
				got[loc[pickAddr(t, m, c, PickOptions{})]]++
			}
			for l, share := range tc.want {
				if s := float64(got[l]) / n; s < share-0.03 || s > share+0.03 {
					t.Errorf("locality %s got %.3f of picks, want %.3f ± 0.03 (%v)", l, s, share, got)
				}
			}
			for l := range got {
				if _, ok := tc.want[l]; !ok {
					t.Errorf("locality %s got %d picks, want none", l, got[l])
				}
			}
		})
	}
}

// TestAvoidPriorities checks previous_priorities' exclusion: an avoided
// level's load goes to the next levels, the picked host reports its level,
// and avoiding every level with usable endpoints is ignored.
func TestAvoidPriorities(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	m.rng = counter()
	c, prio := leveled(level{2, 0}, level{2, 0}, level{2, 2})
	m.Update(gen(c))
	for _, tc := range []struct {
		name  string
		avoid uint64
		want  int
	}{
		{"none", 0, 0},
		{"P0 avoided", 1, 1},
		{"P0 and P1 avoided: P2 has no usable endpoint, ignored", 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 {
				h, err := m.Pick(c, PickOptions{AvoidPriorities: tc.avoid})
				if err != nil {
					t.Fatal(err)
				}
				if prio[h.Addr] != tc.want || h.Priority != tc.want {
					t.Fatalf("picked %s of priority %d (Host.Priority %d), want priority %d", h.Addr, prio[h.Addr], h.Priority, tc.want)
				}
				h.Done(Result{Status: 200})
			}
		})
	}
}
