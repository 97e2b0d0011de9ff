package upstream

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
)

// endpoints makes n healthy endpoints 10.0.0.1:80 ... with weight 1.
func endpoints(n int) []config.Endpoint {
	eps := make([]config.Endpoint, n)
	for i := range eps {
		eps[i] = config.Endpoint{Address: fmt.Sprintf("10.0.0.%d:80", i+1), Weight: 1}
	}
	return eps
}

// seq returns a random source that yields vs in turn, then repeats them.
func seq(vs ...uint64) func() uint64 {
	var mu sync.Mutex
	i := 0
	return func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		v := vs[i%len(vs)]
		i++
		return v
	}
}

func pickAddr(t testing.TB, m *ClusterManager, c *config.Cluster, opts PickOptions) string {
	t.Helper()
	h, err := m.Pick(c, opts)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	h.Done(Result{Status: 200})
	return h.Addr
}

func TestWeightedRoundRobinExactOverCycle(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", LBPolicy: config.LBRoundRobin, Endpoints: []config.Endpoint{
		{Address: "a:1", Weight: 1}, {Address: "b:1", Weight: 2}, {Address: "x:1", Weight: 9, Health: config.Unhealthy}, {Address: "c:1", Weight: 3},
	}}
	m.Update(gen(c))
	var got []string
	for range 12 {
		got = append(got, pickAddr(t, m, c, PickOptions{}))
	}
	// Earliest deadline first: c at 1/3, b at 1/2, c at 2/3, then a, b, c
	// all at 1 (ties in endpoint order); the cycle repeats.
	want := []string{"c:1", "b:1", "c:1", "a:1", "b:1", "c:1", "c:1", "b:1", "c:1", "a:1", "b:1", "c:1"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("schedule (-want +got)\n%s", d)
	}
}

func TestWeightedRoundRobinLargeWeights(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	// gcd 1000 reduces the cycle to 3+1; huge sums are scaled to maxSchedule.
	c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{{Address: "a:1", Weight: 3000}, {Address: "b:1", Weight: 1000}}}
	m.Update(gen(c))
	counts := map[string]int{}
	for range 400 {
		counts[pickAddr(t, m, c, PickOptions{})]++
	}
	if d := cmp.Diff(map[string]int{"a:1": 300, "b:1": 100}, counts); d != "" {
		t.Errorf("counts (-want +got)\n%s", d)
	}
	big := &config.Cluster{Name: "big", Endpoints: []config.Endpoint{{Address: "a:1", Weight: 4000000000}, {Address: "b:1", Weight: 1999999999}}}
	m.Update(gen(big))
	if n := len(m.state("big").lb.table.Load().healthy.sched); n > maxSchedule {
		t.Errorf("schedule length %d > %d", n, maxSchedule)
	}
}

func TestLeastRequestPrefersFewerActive(t *testing.T) {
	m := New(Options{})
	// Host i of 2 is drawn by rng values i, 2+i, ...
	m.rng = seq(0, 1, 0, 1, 0, 0)
	defer m.Close()
	c := &config.Cluster{Name: "c", LBPolicy: config.LBLeastRequest, Endpoints: endpoints(2)}
	m.Update(gen(c))
	busy, err := m.Pick(c, PickOptions{}) // draws 0, 1: both idle, the first wins
	if err != nil || busy.Addr != "10.0.0.1:80" {
		t.Fatalf("first Pick = %v, %v", busy, err)
	}
	// 10.0.0.1 has one active request: drawn first, it still loses to
	// 10.0.0.2.
	if a := pickAddr(t, m, c, PickOptions{}); a != "10.0.0.2:80" {
		t.Errorf("draw (0, 1): got %s, want 10.0.0.2:80", a)
	}
	// Drawing the busy host twice leaves no choice.
	if a := pickAddr(t, m, c, PickOptions{}); a != "10.0.0.1:80" {
		t.Errorf("draw (0, 0): got %s, want 10.0.0.1:80", a)
	}
	busy.Done(Result{Status: 200})
	m.rng = nil
	st := m.state("c")
	for i, a := range st.lb.table.Load().active {
		if a.Load() != 0 {
			t.Errorf("active[%d] = %d after every Done, want 0", i, a.Load())
		}
	}
}

func TestLeastRequestStatistical(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", LBPolicy: config.LBLeastRequest,
		LeastRequest: &config.LeastRequestConfig{ChoiceCount: 2, ActiveRequestBias: 1}, Endpoints: endpoints(4)}
	m.Update(gen(c))
	// Hold 3 requests on 10.0.0.1: P2C picks it only when both draws are
	// it, 1/16 of the time.
	var held []*Host
	for len(held) < 3 {
		h, err := m.Pick(c, PickOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr == "10.0.0.1:80" {
			held = append(held, h)
		} else {
			h.Done(Result{})
		}
	}
	busy := 0
	const n = 4000
	for range n {
		if pickAddr(t, m, c, PickOptions{}) == "10.0.0.1:80" {
			busy++
		}
	}
	if busy > n/8 { // expected n/16
		t.Errorf("busy host got %d of %d picks, want about %d", busy, n, n/16)
	}
	for _, h := range held {
		h.Done(Result{})
	}
}

func TestRandomOnlyHealthy(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	eps := endpoints(4)
	eps[3].Health = config.Unhealthy
	c := &config.Cluster{Name: "c", LBPolicy: config.LBRandom, Endpoints: eps}
	m.Update(gen(c))
	counts := map[string]int{}
	for range 3000 {
		counts[pickAddr(t, m, c, PickOptions{})]++
	}
	if counts["10.0.0.4:80"] != 0 || len(counts) != 3 {
		t.Fatalf("counts = %v, want the 3 healthy hosts", counts)
	}
	for a, n := range counts {
		if n < 800 || n > 1200 {
			t.Errorf("%s got %d of 3000 picks, want about 1000", a, n)
		}
	}
}

// hashOwners maps n keys to the address each one picks.
func hashOwners(t *testing.T, m *ClusterManager, c *config.Cluster, n int) []string {
	t.Helper()
	out := make([]string, n)
	for k := range n {
		out[k] = pickAddr(t, m, c, PickOptions{Hash: config.XXHash64(fmt.Sprint("user-", k), 0), HasHash: true})
	}
	return out
}

func TestConsistentHash(t *testing.T) {
	for _, tc := range []struct {
		name     string
		c        config.Cluster
		maxMoved float64 // share of the keys of the remaining hosts that may move
		balanced bool    // each host owns about 1/N of the keys
	}{
		// Envoy sizes the ring from the smallest weight share: 9 hosts get
		// 114 entries each where 10 got 103, and the new entries take a
		// few keys from the others.
		{"ring hash", config.Cluster{LBPolicy: config.LBRingHash}, 0.08, true},
		{"ring hash small ring", config.Cluster{LBPolicy: config.LBRingHash, RingHash: &config.RingHashConfig{MinRingSize: 16, MaxRingSize: 64}}, 0.15, false},
		{"maglev", config.Cluster{LBPolicy: config.LBMaglev}, 0.03, true},
		{"maglev small table", config.Cluster{LBPolicy: config.LBMaglev, Maglev: &config.MaglevConfig{TableSize: 251}}, 0.1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Options{})
			defer m.Close()
			const nHosts, nKeys = 10, 5000
			c := tc.c
			c.Name, c.Endpoints = "c", endpoints(nHosts)
			m.Update(gen(&c))
			before := hashOwners(t, m, &c, nKeys)
			if again := hashOwners(t, m, &c, nKeys); !cmp.Equal(before, again) {
				t.Fatal("the same keys mapped to different hosts on a second pass")
			}
			share := map[string]int{}
			for _, a := range before {
				share[a]++
			}
			for a, n := range share {
				if !tc.balanced {
					break
				}
				if n < nKeys/nHosts/2 || n > nKeys/nHosts*2 {
					t.Errorf("%s owns %d of %d keys, want about %d", a, n, nKeys, nKeys/nHosts)
				}
			}
			// Remove one host: its keys move, the others' keys (almost) stay.
			c2 := c
			c2.Endpoints = append(endpoints(nHosts)[:3:3], endpoints(nHosts)[4:]...)
			m.Update(gen(&c2))
			after := hashOwners(t, m, &c2, nKeys)
			moved, kept := 0, 0
			for k := range nKeys {
				if before[k] == "10.0.0.4:80" {
					if after[k] == "10.0.0.4:80" {
						t.Fatalf("key %d still maps to the removed host", k)
					}
					continue
				}
				kept++
				if after[k] != before[k] {
					moved++
				}
			}
			if got := float64(moved) / float64(kept); got > tc.maxMoved {
				t.Errorf("%.3f of the other hosts' keys moved, want <= %.3f", got, tc.maxMoved)
			}
		})
	}
}

func TestConsistentHashWeights(t *testing.T) {
	for _, policy := range []string{config.LBRingHash, config.LBMaglev} {
		t.Run(policy, func(t *testing.T) {
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", LBPolicy: policy, Endpoints: []config.Endpoint{{Address: "10.0.0.1:80", Weight: 3}, {Address: "10.0.0.2:80", Weight: 1}}}
			m.Update(gen(c))
			share := map[string]int{}
			for _, a := range hashOwners(t, m, c, 4000) {
				share[a]++
			}
			if n := share["10.0.0.1:80"]; n < 2700 || n > 3300 {
				t.Errorf("weight-3 host owns %d of 4000 keys, want about 3000", n)
			}
		})
	}
}

func TestConsistentHashWithoutHashIsRandom(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", LBPolicy: config.LBRingHash, Endpoints: endpoints(3)}
	m.Update(gen(c))
	seen := map[string]bool{}
	for range 300 {
		seen[pickAddr(t, m, c, PickOptions{})] = true
	}
	if len(seen) != 3 {
		t.Errorf("picks without a hash reached %v, want all 3 hosts", seen)
	}
}

func TestPanicThreshold(t *testing.T) {
	pct := func(v uint32) *uint32 { return &v }
	for _, tc := range []struct {
		name      string
		unhealthy int // of 4 endpoints, the last ones
		threshold *uint32
		wantAll   bool // the unhealthy endpoints are picked too
		wantErr   error
	}{
		{"half healthy is not below 50%", 2, nil, false, nil},
		{"one healthy of four: panic", 3, nil, true, nil},
		{"none healthy: panic", 4, nil, true, nil},
		{"threshold 80%", 1, pct(80), true, nil},
		{"panic disabled", 3, pct(0), false, nil},
		{"panic disabled, none healthy", 4, pct(0), false, ErrNoHealthyUpstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Options{})
			defer m.Close()
			eps := endpoints(4)
			for i := 4 - tc.unhealthy; i < 4; i++ {
				eps[i].Health = config.Unhealthy
			}
			c := &config.Cluster{Name: "c", HealthyPanicThreshold: tc.threshold, Endpoints: eps}
			m.Update(gen(c))
			seen := map[string]bool{}
			for range 8 {
				h, err := m.Pick(c, PickOptions{})
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Pick err = %v, want %v", err, tc.wantErr)
				}
				if err != nil {
					return
				}
				seen[h.Addr] = true
				h.Done(Result{})
			}
			want := 4 - tc.unhealthy
			if tc.wantAll {
				want = 4
			}
			if len(seen) != want {
				t.Errorf("picked %v, want %d hosts", seen, want)
			}
		})
	}
}

func TestPickAvoidsPreviousHosts(t *testing.T) {
	for _, policy := range []string{config.LBRoundRobin, config.LBLeastRequest, config.LBRandom, config.LBRingHash, config.LBMaglev} {
		t.Run(policy, func(t *testing.T) {
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", LBPolicy: policy, Endpoints: endpoints(3)}
			m.Update(gen(c))
			for k := range uint64(50) {
				opts := PickOptions{Hash: k * 0x9E3779B97F4A7C15, HasHash: true}
				first := pickAddr(t, m, c, opts)
				opts.Avoid = []string{first}
				second := pickAddr(t, m, c, opts)
				if second == first {
					t.Fatalf("retry picked %s again, avoiding %v", second, opts.Avoid)
				}
				opts.Avoid = append(opts.Avoid, second)
				if third := pickAddr(t, m, c, opts); third == first || third == second {
					t.Fatalf("second retry picked %s, avoiding %v", third, opts.Avoid)
				}
				// Every host avoided: one is picked anyway.
				opts.Avoid = []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
				pickAddr(t, m, c, opts)
			}
		})
	}
}

func TestActiveRequestsSurviveGenerations(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", LBPolicy: config.LBLeastRequest, Endpoints: endpoints(2)}
	m.Update(gen(c))
	h, err := m.Pick(c, PickOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The next generation puts h's endpoint at another index.
	eps := endpoints(3)
	eps[0], eps[1], eps[2] = eps[2], eps[0], eps[1]
	c2 := &config.Cluster{Name: "c", LBPolicy: config.LBLeastRequest, Endpoints: eps}
	m.Update(gen(c2))
	tab := m.state("c").lb.table.Load()
	i := tab.index[h.Addr]
	if got := tab.active[i].Load(); got != 1 {
		t.Fatalf("active of %s in the new generation = %d, want 1", h.Addr, got)
	}
	h.Done(Result{})
	if got := tab.active[i].Load(); got != 0 {
		t.Fatalf("active after Done = %d, want 0", got)
	}
	// A host whose endpoint left: Done is harmless.
	h2, _ := m.Pick(c2, PickOptions{})
	m.Update(gen(&config.Cluster{Name: "c", Endpoints: endpoints(0)}))
	h2.Done(Result{})
	if _, err := m.Pick(c2, PickOptions{}); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("Pick with no endpoints: err = %v", err)
	}
}

func TestPickDoesNotAllocateBeyondHost(t *testing.T) {
	for _, policy := range []string{config.LBRoundRobin, config.LBLeastRequest, config.LBRandom, config.LBRingHash, config.LBMaglev} {
		m := New(Options{})
		c := &config.Cluster{Name: "c", LBPolicy: policy, Endpoints: endpoints(5)}
		m.Update(gen(c))
		opts := PickOptions{Hash: 42, HasHash: true, Avoid: []string{"10.0.0.3:80"}}
		allocs := testing.AllocsPerRun(200, func() {
			h, err := m.Pick(c, opts)
			if err != nil {
				t.Fatal(err)
			}
			h.Done(Result{})
		})
		if allocs > 1 {
			t.Errorf("%s: Pick+Done allocates %.1f times, want 1 (the Host)", policy, allocs)
		}
		m.Close()
	}
}

func TestPickConcurrentWithUpdate(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	cs := []*config.Cluster{
		{Name: "c", LBPolicy: config.LBLeastRequest, Endpoints: endpoints(3)},
		{Name: "c", LBPolicy: config.LBRingHash, Endpoints: endpoints(4)},
		{Name: "c", LBPolicy: config.LBRoundRobin, Endpoints: endpoints(2)},
		{Name: "c", LBPolicy: config.LBRoundRobin, Endpoints: endpoints(5),
			SlowStart: &config.SlowStartConfig{Window: time.Hour, Aggression: 1, MinWeightPercent: 10}},
	}
	m.Update(gen(cs[0]))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := uint64(0); ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				h, err := m.Pick(cs[(k+uint64(g))%uint64(len(cs))], PickOptions{Hash: k, HasHash: true})
				if err != nil {
					t.Error(err)
					return
				}
				h.Done(Result{})
			}
		}()
	}
	for i := range 30 {
		m.Update(gen(cs[i%len(cs)]))
	}
	close(stop)
	wg.Wait()
	for i, a := range m.state("c").lb.table.Load().active {
		if a.Load() != 0 {
			t.Errorf("active[%d] = %d after all requests ended", i, a.Load())
		}
	}
}

// fakeClock is a settable lbState.clock (monotonic nanoseconds).
type fakeClock struct {
	mu  sync.Mutex
	now int64
}

func (c *fakeClock) read() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = int64(d)
}

// share picks n times and returns how many picks reached addr.
func share(t *testing.T, m *ClusterManager, c *config.Cluster, addr string, n int) int {
	t.Helper()
	got := 0
	for range n {
		if pickAddr(t, m, c, PickOptions{}) == addr {
			got++
		}
	}
	t.Logf("%s: %d of %d picks", addr, got, n)
	return got
}

func TestSlowStartFactor(t *testing.T) {
	const window = 100 * time.Second
	for _, tc := range []struct {
		name       string
		aggression float64
		minPct     float64
		added      int64
		age        time.Duration
		want       float64
	}{
		{"first endpoint", 1, 10, 0, 0, 1},
		{"linear", 1, 10, 1, 25 * time.Second, 0.25},
		{"aggression 2 ramps faster", 2, 10, 1, 25 * time.Second, 0.5},
		{"aggression 0.5 ramps slower", 0.5, 10, 1, 50 * time.Second, 0.25},
		{"min weight percent", 1, 10, 1, time.Second, 0.1},
		{"age at least 1ms", 1, 0, 1, 0, 1e-5},
		{"window over", 1, 10, 1, window, 1},
		{"min weight 100", 1, 100, 1, time.Second, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := &lbTable{slowStart: &config.SlowStartConfig{Window: window, Aggression: tc.aggression, MinWeightPercent: tc.minPct}}
			const added = int64(1000 * time.Second)
			a := tc.added * added
			got := tab.slowStartFactor(a, added+int64(tc.age))
			if d := cmp.Diff(tc.want, got, cmpApprox); d != "" {
				t.Errorf("factor (-want +got)\n%s", d)
			}
		})
	}
}

var cmpApprox = cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })

// TestSlowStart adds a fourth endpoint to a cluster of three equal ones
// with a 60 s slow_start_window. With factor f its share is f/(3+f),
// Envoy's weight*factor share: 3.2 % of the picks at f = 0.1
// (min_weight_percent, 6 s in), 14.3 % at f = 0.5 (30 s in), 25 % after
// the window. The first three endpoints are never in slow start. The
// draws use a seeded generator, so the counts are fixed; the bounds are
// still wide (about ±5 standard deviations of 10000 picks) so that they
// hold for any fair generator.
func TestSlowStart(t *testing.T) {
	for _, policy := range []string{config.LBRoundRobin, config.LBLeastRequest} {
		t.Run(policy, func(t *testing.T) {
			m := New(Options{})
			m.rng = rand.New(rand.NewPCG(1, 2)).Uint64
			defer m.Close()
			ss := &config.SlowStartConfig{Window: time.Minute, Aggression: 1, MinWeightPercent: 10}
			c := &config.Cluster{Name: "c", LBPolicy: policy, SlowStart: ss, Endpoints: endpoints(3)}
			clk := &fakeClock{}
			clk.set(time.Hour)
			m.state("c").lb.clock = clk.read
			m.Update(gen(c))
			// The cluster's first endpoints are not in slow start.
			if got := share(t, m, c, "10.0.0.1:80", 3000); got < 900 || got > 1100 {
				t.Errorf("first endpoint got %d of 3000 picks, want about 1000", got)
			}

			const n = 10000
			newAddr := "10.0.0.4:80"
			// 10 s later: were the first endpoints in slow start, they
			// would still be at 16 s, and take less than 3/3.1 of the picks.
			clk.set(time.Hour + 10*time.Second)
			c2 := &config.Cluster{Name: "c", LBPolicy: policy, SlowStart: ss, Endpoints: endpoints(4)}
			m.Update(gen(c2))
			clk.set(time.Hour + 16*time.Second)
			if got := share(t, m, c2, newAddr, n); got < 200 || got > 450 { // expect 323
				t.Errorf("6s into slow start: new endpoint got %d of %d picks, want about %d", got, n, n/31)
			}
			// A later generation (endpoints reordered) keeps the time the
			// endpoint joined.
			clk.set(time.Hour + 40*time.Second)
			eps := endpoints(4)
			eps[0], eps[3] = eps[3], eps[0]
			c3 := &config.Cluster{Name: "c", LBPolicy: policy, SlowStart: ss, Endpoints: eps}
			m.Update(gen(c3))
			if got := share(t, m, c3, newAddr, n); got < 1150 || got > 1700 { // expect 1429
				t.Errorf("30s into slow start: new endpoint got %d of %d picks, want about %d", got, n, n/7)
			}
			clk.set(time.Hour + 70*time.Second)
			if got := share(t, m, c3, newAddr, n); got < 2200 || got > 2800 {
				t.Errorf("after the window: new endpoint got %d of %d picks, want about %d", got, n, n/4)
			}
			if u := m.state("c").lb.table.Load().slowUntil.Load(); u != 0 {
				t.Errorf("slowUntil = %d after every slow start ended, want 0", u)
			}
		})
	}
}

// TestSlowStartAllNew: endpoints that join together keep equal shares
// (each is turned down only relative to the oldest of the set).
func TestSlowStartAllNew(t *testing.T) {
	m := New(Options{})
	m.rng = rand.New(rand.NewPCG(3, 4)).Uint64
	defer m.Close()
	ss := &config.SlowStartConfig{Window: time.Minute, Aggression: 1, MinWeightPercent: 10}
	clk := &fakeClock{}
	m.state("c").lb.clock = clk.read
	m.Update(gen(&config.Cluster{Name: "c", SlowStart: ss, Endpoints: []config.Endpoint{{Address: "10.0.0.9:80", Weight: 1}}}))
	clk.set(time.Second)
	c := &config.Cluster{Name: "c", SlowStart: ss, Endpoints: endpoints(2)}
	m.Update(gen(c))
	if got := share(t, m, c, "10.0.0.1:80", 1000); got != 500 {
		t.Errorf("first of two new endpoints got %d of 1000 round-robin picks, want 500", got)
	}
}

// TestEjectedCount checks the O(1) ejected count against the hosts and
// the panic threshold it feeds.
func TestEjectedCount(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	const base = 100 * time.Millisecond
	c := &config.Cluster{Name: "c", Outlier: testOutlier(time.Hour), Endpoints: endpoints(4)}
	m.Update(gen(c))
	st := m.state("c")
	eject := func(addr string) {
		for range 3 {
			st.pol.od.report(addr, Result{Status: 500})
		}
	}
	picked := func() map[string]bool {
		seen := map[string]bool{}
		for range 16 {
			seen[pickAddr(t, m, c, PickOptions{})] = true
		}
		return seen
	}
	if n := st.ejectedCount(); n != 0 {
		t.Fatalf("ejectedCount = %d before any ejection", n)
	}
	eject("10.0.0.1:80")
	eject("10.0.0.2:80")
	if n := st.ejectedCount(); n != 2 {
		t.Fatalf("ejectedCount = %d, want 2", n)
	}
	if seen := picked(); len(seen) != 2 || seen["10.0.0.1:80"] || seen["10.0.0.2:80"] {
		t.Fatalf("2 of 4 ejected: picked %v, want the other 2", seen)
	}
	eject("10.0.0.3:80") // 1 usable of 4 is below 50 %: panic
	if seen := picked(); len(seen) != 4 {
		t.Fatalf("3 of 4 ejected: picked %v, want all 4 (panic)", seen)
	}
	// An ejected host that leaves the cluster leaves the count.
	c2 := &config.Cluster{Name: "c", Outlier: c.Outlier, Endpoints: endpoints(4)[1:]}
	m.Update(gen(c2))
	if n := st.ejectedCount(); n != 2 {
		t.Fatalf("ejectedCount = %d after an ejected host left, want 2", n)
	}

	// An ejection that ends leaves the count while another goes on: the
	// ejection time is the base_ejection_time of when it started.
	c3 := &config.Cluster{Name: "c3", Outlier: testOutlier(base), Endpoints: endpoints(3)}
	m.Update(gen(c3))
	st3 := m.state("c3")
	eject3 := func(addr string) {
		for range 3 {
			st3.pol.od.report(addr, Result{Status: 500})
		}
	}
	eject3("10.0.0.1:80")
	c3.Outlier = testOutlier(time.Hour)
	m.Update(gen(c3))
	eject3("10.0.0.2:80")
	if n := st3.ejectedCount(); n != 2 {
		t.Fatalf("ejectedCount = %d, want 2", n)
	}
	waitFor(t, "the short ejection to end", func() bool { return st3.ejectedCount() == 1 })
	if !st3.ejected("10.0.0.2:80") || st3.pol.od.active(monoNow()) != 1 {
		t.Fatalf("after the short ejection: 10.0.0.2 ejected %v, active %d; want true, 1",
			st3.ejected("10.0.0.2:80"), st3.pol.od.active(monoNow()))
	}
}

// TestEjectedUnhealthyEndpoint: an ejected endpoint that is not healthy
// does not count against the usable ones (2 of 4 usable is not panic).
func TestEjectedUnhealthyEndpoint(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	eps := endpoints(4)
	eps[3].Health = config.Unhealthy
	c := &config.Cluster{Name: "c", Outlier: testOutlier(time.Hour), Endpoints: eps}
	m.Update(gen(c))
	st := m.state("c")
	for _, a := range []string{"10.0.0.1:80", "10.0.0.4:80"} {
		for range 3 {
			st.pol.od.report(a, Result{Status: 500})
		}
	}
	seen := map[string]bool{}
	for range 16 {
		seen[pickAddr(t, m, c, PickOptions{})] = true
	}
	if d := cmp.Diff(map[string]bool{"10.0.0.2:80": true, "10.0.0.3:80": true}, seen); d != "" {
		t.Errorf("picked (-want +got)\n%s", d)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, policy := range []string{config.LBRoundRobin, config.LBLeastRequest, config.LBRandom, config.LBRingHash, config.LBMaglev} {
		b.Run(policy, func(b *testing.B) {
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", LBPolicy: policy, Endpoints: endpoints(20)}
			m.Update(gen(c))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				k := uint64(0)
				for pb.Next() {
					k++
					h, err := m.Pick(c, PickOptions{Hash: k * 0x9E3779B97F4A7C15, HasHash: true})
					if err != nil {
						b.Error(err)
						return
					}
					h.Done(Result{})
				}
			})
		})
	}
}

func BenchmarkUpdateLB(b *testing.B) {
	for _, policy := range []string{config.LBRingHash, config.LBMaglev} {
		b.Run(policy, func(b *testing.B) {
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", LBPolicy: policy, Endpoints: endpoints(100)}
			for b.Loop() {
				m.Update(gen(c))
			}
		})
	}
}

// A new generation's endpoints carry new telemetry metadata pointers:
// that alone must not rebuild rings and tables.
func TestSameLBIgnoresTelemetryMetadata(t *testing.T) {
	ep := func(w uint32) config.Endpoint {
		return config.Endpoint{Address: "10.0.0.1:80", Weight: w, Workload: &istiostats.Peer{Workload: "reviews-v1"}}
	}
	a := &config.Cluster{LBPolicy: config.LBRingHash, Endpoints: []config.Endpoint{ep(1)}}
	b := &config.Cluster{LBPolicy: config.LBRingHash, Endpoints: []config.Endpoint{ep(1)}}
	if !sameLB(a, b) {
		t.Error("endpoints differing only in their telemetry metadata's pointer balance differently")
	}
	b.Endpoints[0].Weight = 2
	if sameLB(a, b) {
		t.Error("a changed weight balances alike")
	}
}

// TestPickOverTLSWithALPNDoesNotAllocateBeyondHost: picking a host of a
// TLS cluster whose request carries an istio.alpn override finds the
// override's transport for the cluster's protocol (istio-h2 for HTTP/2)
// without building its key.
func TestPickOverTLSWithALPNDoesNotAllocateBeyondHost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		http2 bool
		key   string
	}{
		{"HTTP/1.1", false, "mtls|alpn=istio-http/1.1"},
		{"HTTP/2", true, "mtls|alpn=istio-h2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Options{})
			defer m.Close()
			c := &config.Cluster{Name: "c", LBPolicy: config.LBRoundRobin, Endpoints: endpoints(3), HTTP2: tc.http2,
				Transports: []config.UpstreamTransport{{TLS: &config.UpstreamTLS{CommonTLS: config.CommonTLS{ALPN: []string{"istio-peer-exchange", "istio"}}}, Key: "mtls"}}}
			m.Update(gen(c))
			opts := PickOptions{ALPN: config.NewALPNOverride([]string{"istio-http/1.0"}, []string{"istio-http/1.1"}, []string{"istio-h2"})}
			h, err := m.Pick(c, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.tls.key; got != tc.key || h.HTTP2 != tc.http2 {
				t.Fatalf("transport key %q, HTTP/2 %v: want %q, %v", got, h.HTTP2, tc.key, tc.http2)
			}
			h.Done(Result{})
			allocs := testing.AllocsPerRun(200, func() {
				h, err := m.Pick(c, opts)
				if err != nil {
					t.Fatal(err)
				}
				h.Done(Result{})
			})
			if allocs > 1 {
				t.Errorf("Pick+Done over TLS with an ALPN override allocates %.1f times, want 1 (the Host)", allocs)
			}
		})
	}
}
