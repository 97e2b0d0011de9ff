package upstream

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// Bounds of the balancer's precomputed tables and searches.
const (
	// maxSchedule bounds a weighted round-robin cycle; larger weight sums
	// are scaled down to it (the shares stay within 1/maxSchedule).
	maxSchedule = 1 << 16
	// maxRingWalk bounds how far a ring-hash pick walks the ring, and how
	// many rehashes a Maglev or random pick tries, past hosts it must skip
	// (ejected, or avoided by a retry) before scanning the set in order.
	maxRingWalk = 64
	// maxSlowStartTries bounds the draws a pick makes while it turns down
	// endpoints in slow start; the last draw is taken as it is.
	maxSlowStartTries = 16
)

// lbState is a cluster's load-balancer state across generations: the
// table precomputed for its latest generation (swapped whole by updateLB,
// read without a lock by Pick), the random source and the clock.
type lbState struct {
	table atomic.Pointer[lbTable]
	rng   func() uint64 // nil: math/rand/v2
	clock func() int64  // monotonic nanoseconds; nil: monoNow (tests set it before use)
}

// lbTable is what updateLB precomputes for one generation of a cluster.
// It is immutable but for the active-request counters.
type lbTable struct {
	src  *config.Cluster
	lazy bool // built by Pick for a cluster Update never saw
	eps  []config.Endpoint
	// active counts each endpoint's requests in flight (LEAST_REQUEST);
	// a counter is carried to the next table while its address stays.
	active []*atomic.Int64
	// added is when each endpoint joined the cluster (lbState.clock), 0
	// for the endpoints of the cluster's first table with any: only
	// endpoints added later go through slow start, as in Envoy. It is
	// carried to the next table while the address stays.
	added []int64
	// slowStart is the cluster's slow_start_config (nil: none);
	// slowUntil is when the last slow start of an endpoint of this table
	// ends (clock), 0 once none is left.
	slowStart *config.SlowStartConfig
	slowUntil atomic.Int64
	index     map[string]int // address -> index in eps
	// healthy balances over the healthy endpoints, all over every endpoint
	// (panic mode); all == healthy when every endpoint is healthy.
	healthy, all *lbSet
	panicPct     uint32 // 0 disables panic mode
	lr           config.LeastRequestConfig
	policy       string
	// levels are the cluster's priority levels, highest first, when it
	// has more than one priority or is locality weighted; nil otherwise
	// (healthy and all then balance over every endpoint).
	levels []*lbLevel
}

// lbLevel is one priority level of a cluster (Envoy's host set): its
// endpoints' sets and, for a locality-weighted cluster, its localities.
type lbLevel struct {
	n            int // endpoints
	healthy, all *lbSet
	// localities are the level's localities with a weight (a locality
	// without one takes no traffic, as in Envoy), LocalityWeighted only.
	localities []*lbLocality
}

// lbLocality is one locality of a priority level.
type lbLocality struct {
	weight  uint64 // LocalityLbEndpoints.load_balancing_weight, >= 1
	n       int    // endpoints
	healthy *lbSet
}

// lbSet is one balancing set with the precomputed tables of its policy.
type lbSet struct {
	hosts []int32 // indexes into lbTable.eps
	equal bool    // all weights equal
	// sched is one cycle of the weighted round-robin schedule (ROUND_ROBIN).
	sched []int32
	// cum[i] is the sum of weights of hosts[:i+1] (weighted LEAST_REQUEST).
	cum []uint64
	// ring is the ketama ring sorted by hash (RING_HASH).
	ring []ringEntry
	// maglev is the lookup table (MAGLEV).
	maglev []int32
	// oldest is the earliest lbTable.added of the hosts when every one of
	// them is a healthy endpoint added after the first ones (it can be in
	// slow start), else 0: the largest slow-start factor in the set is
	// the factor of oldest (1 for 0).
	oldest int64
}

type ringEntry struct {
	hash uint64
	ep   int32
}

// updateLB takes the load-balancing settings of a new generation of c:
// it precomputes the schedules, rings and tables Pick reads and keeps the
// active-request counters of the endpoints that stay.
func (st *clusterState) updateLB(c *config.Cluster) {
	st.lb.table.Store(newLBTable(c, st.lb.table.Load(), false, st.now()))
}

// now reads the balancer's clock (monotonic nanoseconds).
func (st *clusterState) now() int64 {
	if st.lb.clock != nil {
		return st.lb.clock()
	}
	return monoNow()
}

// tableFor returns the table Pick balances c with: the one of the latest
// Update (a request of an older generation uses the newest endpoints, as
// Envoy's clusters are updated in place), or one built now for a cluster
// no Update has seen.
func (st *clusterState) tableFor(c *config.Cluster) *lbTable {
	t := st.lb.table.Load()
	if t != nil && (!t.lazy || t.src == c) {
		return t
	}
	nt := newLBTable(c, t, true, st.now())
	if st.lb.table.CompareAndSwap(t, nt) {
		return nt
	}
	return st.lb.table.Load()
}

// newLBTable builds the table of c at now (clock) from the previous one.
func newLBTable(c *config.Cluster, prev *lbTable, lazy bool, now int64) *lbTable {
	t := &lbTable{
		src:       c,
		lazy:      lazy,
		eps:       c.Endpoints,
		active:    make([]*atomic.Int64, len(c.Endpoints)),
		added:     make([]int64, len(c.Endpoints)),
		slowStart: c.SlowStart,
		index:     make(map[string]int, len(c.Endpoints)),
		panicPct:  config.DefaultHealthyPanicThreshold,
		policy:    c.LBPolicy,
		lr:        config.LeastRequestConfig{ChoiceCount: config.DefaultChoiceCount, ActiveRequestBias: 1},
	}
	if c.HealthyPanicThreshold != nil {
		t.panicPct = *c.HealthyPanicThreshold
	}
	if c.LeastRequest != nil {
		t.lr = *c.LeastRequest
	}
	// The cluster's first endpoints are not new (Envoy's load balancer
	// starts with them); any endpoint that comes after is.
	warm := prev != nil && len(prev.eps) > 0
	var healthy, all []int32
	var slowUntil int64
	for i, ep := range c.Endpoints {
		if _, dup := t.index[ep.Address]; !dup {
			t.index[ep.Address] = i
		}
		if prev != nil {
			if j, ok := prev.index[ep.Address]; ok {
				t.active[i] = prev.active[j]
				t.added[i] = prev.added[j]
			} else if warm {
				t.added[i] = max(now, 1)
			}
		}
		if t.active[i] == nil {
			t.active[i] = new(atomic.Int64)
		}
		if c.SlowStart != nil && t.added[i] != 0 {
			slowUntil = max(slowUntil, t.added[i]+int64(c.SlowStart.Window))
		}
		all = append(all, int32(i))
		if ep.Health == config.Healthy {
			healthy = append(healthy, int32(i))
		}
	}
	if slowUntil > now {
		t.slowUntil.Store(slowUntil)
	}
	if prev != nil && sameLB(prev.src, c) {
		// Rings and tables depend only on these: keep them.
		t.healthy, t.all, t.levels = prev.healthy, prev.all, prev.levels
		return t
	}
	t.healthy = t.newSet(healthy)
	t.all = t.healthy
	if len(healthy) != len(all) {
		t.all = t.newSet(all)
	}
	t.levels = t.newLevels(c)
	return t
}

// newLevels groups the endpoints of c by priority (highest first; gaps
// closed, as an empty level takes no load) and, when c is
// LocalityWeighted, each level by locality (in order of first
// appearance). It returns nil for a single priority without locality
// weights, which the cluster-wide sets serve.
func (t *lbTable) newLevels(c *config.Cluster) []*lbLevel {
	var prios []uint32
	for _, ep := range c.Endpoints {
		prios = append(prios, ep.Priority)
	}
	slices.Sort(prios)
	prios = slices.Compact(prios)
	if len(prios) <= 1 && !c.LocalityWeighted {
		return nil
	}
	levels := make([]*lbLevel, 0, len(prios))
	for _, prio := range prios {
		var healthy, all []int32
		var locNames []string
		locHealthy := map[string][]int32{}
		locAll := map[string]int{}
		locWeight := map[string]uint32{}
		for i, ep := range c.Endpoints {
			if ep.Priority != prio {
				continue
			}
			all = append(all, int32(i))
			if _, ok := locAll[ep.Locality]; !ok {
				locNames = append(locNames, ep.Locality)
				locWeight[ep.Locality] = ep.LocalityWeight
			}
			locAll[ep.Locality]++
			if ep.Health == config.Healthy {
				healthy = append(healthy, int32(i))
				locHealthy[ep.Locality] = append(locHealthy[ep.Locality], int32(i))
			}
		}
		l := &lbLevel{n: len(all), healthy: t.newSet(healthy)}
		l.all = l.healthy
		if len(healthy) != len(all) {
			l.all = t.newSet(all)
		}
		if c.LocalityWeighted {
			for _, name := range locNames {
				if w := locWeight[name]; w > 0 {
					l.localities = append(l.localities, &lbLocality{weight: uint64(w), n: locAll[name], healthy: t.newSet(locHealthy[name])})
				}
			}
		}
		levels = append(levels, l)
	}
	return levels
}

// sameLB reports whether a and b balance alike: same endpoints (order,
// health, weights) and load-balancer settings.
func sameLB(a, b *config.Cluster) bool {
	return a.LBPolicy == b.LBPolicy && a.LocalityWeighted == b.LocalityWeighted &&
		equalPtr(a.RingHash, b.RingHash) && equalPtr(a.Maglev, b.Maglev) &&
		slices.EqualFunc(a.Endpoints, b.Endpoints, balanceAlike)
}

// balanceAlike compares two endpoints on what balancing reads: all but
// their telemetry metadata (a pointer, new in every generation).
func balanceAlike(a, b config.Endpoint) bool {
	a.Workload, b.Workload = nil, nil
	return a == b
}

func equalPtr[T comparable](a, b *T) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

func (t *lbTable) weight(i int32) uint64 {
	if w := t.eps[i].Weight; w > 0 {
		return uint64(w)
	}
	return 1
}

func (t *lbTable) newSet(hosts []int32) *lbSet {
	s := &lbSet{hosts: hosts, equal: true}
	allNew, oldest := true, int64(math.MaxInt64)
	for _, h := range hosts {
		if t.weight(h) != t.weight(hosts[0]) {
			s.equal = false
		}
		if a := t.added[h]; a == 0 || t.eps[h].Health != config.Healthy {
			allNew = false
		} else {
			oldest = min(oldest, a)
		}
	}
	if allNew && len(hosts) > 0 {
		s.oldest = oldest
	}
	if len(hosts) == 0 {
		return s
	}
	switch t.policy {
	case config.LBLeastRequest:
		s.cum = make([]uint64, len(hosts))
		var sum uint64
		for i, h := range hosts {
			sum += t.weight(h)
			s.cum[i] = sum
		}
	case config.LBRingHash:
		rh := config.RingHashConfig{MinRingSize: config.DefaultMinRingSize, MaxRingSize: config.DefaultMaxRingSize}
		if t.src.RingHash != nil {
			rh = *t.src.RingHash
		}
		s.ring = t.buildRing(hosts, rh)
	case config.LBMaglev:
		size := uint64(config.DefaultMaglevTableSize)
		if t.src.Maglev != nil {
			size = t.src.Maglev.TableSize
		}
		s.maglev = t.buildMaglev(hosts, size)
	case config.LBRandom:
	default:
		s.sched = t.buildSchedule(hosts, s.equal)
	}
	return s
}

// buildSchedule returns one cycle of the weighted round robin over hosts:
// Envoy's earliest-deadline-first schedule, where a host of weight w has
// its k-th turn at time k/w and ties go to the earlier host. Over a cycle
// each host gets exactly its weight's share of turns (weights divided by
// their gcd; sums above maxSchedule are scaled down).
func (t *lbTable) buildSchedule(hosts []int32, equal bool) []int32 {
	if equal {
		return hosts
	}
	ws := make([]uint64, len(hosts))
	var g, sum uint64
	for i, h := range hosts {
		ws[i] = t.weight(h)
		g = gcd(g, ws[i])
	}
	for i := range ws {
		ws[i] /= g
		sum += ws[i]
	}
	if sum > maxSchedule {
		scaled := uint64(0)
		for i := range ws {
			ws[i] = max(1, ws[i]*maxSchedule/sum)
			scaled += ws[i]
		}
		sum = scaled
	}
	q := make(edfQueue, len(hosts))
	for i := range hosts {
		q[i] = edfEntry{turn: 1, weight: ws[i], pos: i}
	}
	heap.Init(&q)
	sched := make([]int32, 0, sum)
	for range sum {
		e := &q[0]
		sched = append(sched, hosts[e.pos])
		e.turn++
		heap.Fix(&q, 0)
	}
	return sched
}

// edfQueue orders hosts by their next deadline turn/weight, then position.
type edfQueue []edfEntry

type edfEntry struct {
	turn, weight uint64
	pos          int
}

func (q edfQueue) Len() int { return len(q) }
func (q edfQueue) Less(i, j int) bool {
	a, b := q[i].turn*q[j].weight, q[j].turn*q[i].weight
	if a != b {
		return a < b
	}
	return q[i].pos < q[j].pos
}
func (q edfQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *edfQueue) Push(any)     {}
func (q *edfQueue) Pop() any     { return nil }

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// buildRing builds Envoy's ketama ring: ring size
// ceil(min(ceil(minw*min)/minw, max)) for the smallest normalized weight
// minw, each host getting its weight's share of entries, the entry hashes
// being XXHash64("ip:port_i").
func (t *lbTable) buildRing(hosts []int32, rh config.RingHashConfig) []ringEntry {
	var sum float64
	minw := math.Inf(1)
	for _, h := range hosts {
		sum += float64(t.weight(h))
	}
	for _, h := range hosts {
		minw = min(minw, float64(t.weight(h))/sum)
	}
	scale := min(math.Ceil(minw*float64(rh.MinRingSize))/minw, float64(rh.MaxRingSize))
	ring := make([]ringEntry, 0, int(math.Ceil(scale)))
	var current, target float64
	key := make([]byte, 0, 64)
	for _, h := range hosts {
		key = append(key[:0], t.eps[h].Address...)
		key = append(key, '_')
		base := len(key)
		target += scale * float64(t.weight(h)) / sum
		for i := uint64(0); current < target; i++ {
			key = strconv.AppendUint(key[:base], i, 10)
			ring = append(ring, ringEntry{hash: config.XXHash64(string(key), 0), ep: h})
			current++
		}
	}
	slices.SortFunc(ring, func(a, b ringEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.ep - b.ep)
	})
	return ring
}

// ringIndex returns the index of the first ring entry whose hash is >= h,
// wrapping to 0 (ketama).
func ringIndex(ring []ringEntry, h uint64) int {
	lo, hi := 0, len(ring)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if ring[mid].hash < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(ring) {
		return 0
	}
	return lo
}

// buildMaglev fills a Maglev lookup table of size entries (prime) as
// Envoy's MaglevTable does: host h's preference list starts at offset
// XXHash64(addr, 0) % size and steps by XXHash64(addr, 1) % (size-1) + 1;
// hosts take turns in order, a host of weight w taking a turn only once
// iteration*w reaches its next target (targets grow by the largest
// weight), so shares of the table follow the weights.
func (t *lbTable) buildMaglev(hosts []int32, size uint64) []int32 {
	type entry struct {
		offset, skip, next uint64
		weight, target     uint64 // integers: iter*weight >= target is exact
	}
	var maxw uint64
	es := make([]entry, len(hosts))
	for i, h := range hosts {
		a := t.eps[h].Address
		w := t.weight(h)
		maxw = max(maxw, w)
		es[i] = entry{offset: config.XXHash64(a, 0) % size, skip: config.XXHash64(a, 1)%(size-1) + 1, weight: w}
	}
	table := make([]int32, size)
	for i := range table {
		table[i] = -1
	}
	filled := uint64(0)
	// Each iteration the heaviest host takes a turn: at most size iterations.
	for iter := uint64(1); filled < size && iter <= size; iter++ {
		for i := range es {
			if filled == size {
				break
			}
			e := &es[i]
			if iter*e.weight < e.target {
				continue
			}
			e.target += maxw
			c := (e.offset + e.skip*e.next) % size
			// The preference list is a permutation of the table (size is
			// prime), so it reaches an empty slot within size steps.
			for table[c] >= 0 {
				e.next++
				c = (e.offset + e.skip*e.next) % size
			}
			table[c] = hosts[i]
			e.next++
			filled++
		}
	}
	return table
}

// lbDone ends h's active request (LEAST_REQUEST). h may come from an
// earlier table: its counter is found by address.
func (st *clusterState) lbDone(h *Host) {
	t := st.lb.table.Load()
	if t == nil {
		return
	}
	i := h.idx
	if i < 0 || i >= len(t.eps) || t.eps[i].Address != h.Addr {
		var ok bool
		if i, ok = t.index[h.Addr]; !ok {
			return // the endpoint is gone, and its counter with it
		}
	}
	// A counter made anew after the endpoint left and came back may see
	// the end of a request it did not count: never go below zero.
	if v := t.active[i].Add(-1); v < 0 {
		t.active[i].CompareAndSwap(v, 0)
	}
}

func (st *clusterState) rand() uint64 {
	if st.lb.rng != nil {
		return st.lb.rng()
	}
	return rand.Uint64()
}

// picker is one Pick's view of a table: which set it balances over,
// which hosts it must skip and, while an endpoint is in slow start, the
// time it weighs them at.
type picker struct {
	st           *clusterState
	t            *lbTable
	set          *lbSet
	checkEjected bool
	avoid        []string
	// slow is set while an endpoint of t may be in slow start: now is
	// the pick's time (clock) and maxFactor the largest slow-start
	// factor of set.
	slow      bool
	now       int64
	maxFactor float64
}

// ok reports whether endpoint i may be chosen; strict also honours avoid.
func (p *picker) ok(i int32, strict bool) bool {
	a := p.t.eps[i].Address
	if p.checkEjected && p.st.ejected(a) {
		return false
	}
	return !strict || !slices.Contains(p.avoid, a)
}

// choose picks an endpoint index of t for opts, or -1 when there is none
// (no endpoint, or no usable one with panic mode off).
//
// Panic mode (common_lb_config.healthy_panic_threshold): when the usable
// endpoints (healthy and not ejected) are fewer than panicPct percent of
// all of them, Envoy balances over all endpoints, health ignored. The
// ejected endpoints are counted in O(1) (st.ejectedCount) when none is, or
// when every endpoint is healthy and has its own address; otherwise with
// one st.ejected call per healthy endpoint.
func (st *clusterState) choose(t *lbTable, opts *PickOptions) int32 {
	if len(t.eps) == 0 {
		return -1
	}
	if t.levels != nil {
		p, ok := st.levelPicker(t, opts)
		if !ok {
			return -1
		}
		return st.run(&p, opts)
	}
	ejected := 0
	if n := st.ejectedCount(); n > 0 {
		if !t.lazy && t.all == t.healthy && len(t.index) == len(t.eps) {
			// Outlier detection watches the endpoints of the latest
			// Update, which are t's: every ejected host is one of them.
			ejected = min(n, len(t.eps))
		} else {
			for _, i := range t.healthy.hosts {
				if st.ejected(t.eps[i].Address) {
					ejected++
				}
			}
		}
	}
	usable := len(t.healthy.hosts) - ejected
	p := picker{st: st, t: t, set: t.healthy, checkEjected: ejected > 0, avoid: opts.Avoid}
	if uint64(usable)*100 < uint64(t.panicPct)*uint64(len(t.eps)) {
		p.set, p.checkEjected = t.all, false
	} else if usable == 0 {
		return -1
	}
	return st.run(&p, opts)
}

// maxStackLevels is how many priority levels levelPicker keeps on the
// stack; more are allocated per pick.
const maxStackLevels = 8

// levelPicker chooses the priority level, and in it the set, a pick of
// a cluster with levels balances over, as Envoy's priority load:
//
//   - A level's availability is min(100, 140 * usable / endpoints) percent
//     (usable: healthy and not ejected; 140 is the overprovisioning
//     factor 1.4); their sum, capped at 100, is the normalized total.
//   - Load goes to levels highest first, each taking
//     min(left, availability*100/total) percent, the rest to the first
//     level with any availability; the pick draws a level by these loads.
//   - In the level, fewer than panicPct percent usable endpoints is
//     panic: the pick balances over all of them, health ignored. When no
//     level has any availability (total panic) the level is drawn in
//     proportion to its endpoints, in panic; with panic mode off (0) there
//     is no host.
//   - Otherwise, for a locality-weighted cluster, the locality is drawn in
//     proportion to its weight * min(1, 1.4 * usable / endpoints), and the
//     pick balances over its healthy endpoints (Envoy draws localities by
//     an EDF schedule of the same weights); with no locality to draw, over
//     the level's.
//
// It reports false when there is no host to pick. It counts usable
// endpoints with one ejection check per healthy endpoint while any host
// of the cluster is ejected.
func (st *clusterState) levelPicker(t *lbTable, opts *PickOptions) (picker, bool) {
	checkEjected := st.ejectedCount() > 0
	usable := func(s *lbSet) int {
		if !checkEjected {
			return len(s.hosts)
		}
		n := 0
		for _, i := range s.hosts {
			if !st.ejected(t.eps[i].Address) {
				n++
			}
		}
		return n
	}
	var buf [2 * maxStackLevels]uint64
	counts := buf[:0]
	if 2*len(t.levels) > len(buf) {
		counts = make([]uint64, 0, 2*len(t.levels))
	}
	// counts[2k] is level k's usable endpoints, counts[2k+1] its availability.
	var total uint64
	for _, l := range t.levels {
		u := uint64(usable(l.healthy))
		avail := uint64(0)
		if l.n > 0 {
			avail = min(100, config.DefaultOverprovisioningFactor*u/uint64(l.n))
		}
		counts = append(counts, u, avail)
		total += avail
	}
	if av := opts.AvoidPriorities; av != 0 {
		// previous_priorities: the avoided levels' availability goes to
		// the others, unless none of those has any.
		var kept uint64
		for k := range t.levels {
			if k >= 64 || av&(1<<k) == 0 {
				kept += counts[2*k+1]
			}
		}
		if kept > 0 {
			for k := range t.levels {
				if k < 64 && av&(1<<k) != 0 {
					counts[2*k+1] = 0
				}
			}
			total = kept
		}
	}
	total = min(total, 100)
	p := picker{st: st, t: t, avoid: opts.Avoid}
	var level int
	if total == 0 {
		if t.panicPct == 0 {
			return p, false
		}
		r := st.rand() % uint64(len(t.eps))
		for k, l := range t.levels {
			if r < uint64(l.n) {
				level = k
				break
			}
			r -= uint64(l.n)
		}
		p.set = t.levels[level].all
		opts.level = level
		return p, true
	}
	r := st.rand() % 100
	left, first := uint64(100), -1
	level = -1
	for k := range t.levels {
		avail := counts[2*k+1]
		if first < 0 && avail > 0 {
			first = k
		}
		load := min(left, avail*100/total)
		left -= load
		if level < 0 && r < load {
			level = k
		}
		r -= min(r, load)
	}
	if level < 0 {
		level = first // the rounding's rest
	}
	opts.level = level
	l := t.levels[level]
	u := counts[2*level]
	if u*100 < uint64(t.panicPct)*uint64(l.n) {
		p.set = l.all
		return p, true
	}
	p.set, p.checkEjected = l.healthy, checkEjected
	if len(l.localities) > 0 {
		if loc := st.chooseLocality(l, usable); loc != nil {
			p.set = loc.healthy
		}
	}
	return p, true
}

// chooseLocality draws a locality of l in proportion to its effective
// weight, weight * min(1, 1.4 * usable / endpoints), or returns nil when
// every effective weight is 0. Weights are scaled by 100 to stay integers.
func (st *clusterState) chooseLocality(l *lbLevel, usable func(*lbSet) int) *lbLocality {
	var buf [maxStackLevels]uint64
	ws := buf[:0]
	if len(l.localities) > len(buf) {
		ws = make([]uint64, 0, len(l.localities))
	}
	var sum uint64
	for _, loc := range l.localities {
		avail := min(100, config.DefaultOverprovisioningFactor*uint64(usable(loc.healthy))/uint64(max(loc.n, 1)))
		w := loc.weight * avail
		ws = append(ws, w)
		sum += w
	}
	if sum == 0 {
		return nil
	}
	r := st.rand() % sum
	for k, w := range ws {
		if r < w {
			return l.localities[k]
		}
		r -= w
	}
	return nil
}

// run finishes a pick with p's set chosen: it sets p up for slow start
// and runs the policy, honouring opts.Avoid when it can.
func (st *clusterState) run(p *picker, opts *PickOptions) int32 {
	t := p.t
	if u := t.slowUntil.Load(); u != 0 {
		if now := st.now(); now < u {
			p.slow, p.now = true, now
			p.maxFactor = t.slowStartFactor(p.set.oldest, now)
		} else {
			t.slowUntil.CompareAndSwap(u, 0) // every slow start is over
		}
	}
	for _, strict := range [2]bool{true, false} {
		if strict && len(p.avoid) == 0 {
			continue
		}
		if i := p.pick(opts, strict); i >= 0 {
			return i
		}
	}
	return -1
}

// pick runs the cluster's policy over p.set, skipping hosts !p.ok(strict):
// the policy's own next choices first (bounded), then a scan of the set.
func (p *picker) pick(opts *PickOptions, strict bool) int32 {
	s := p.set
	n := len(s.hosts)
	if n == 0 {
		return -1
	}
	switch p.t.policy {
	case config.LBRingHash, config.LBMaglev:
		h := opts.Hash
		if !opts.HasHash {
			h = p.st.rand() // Envoy: no hash, a random host
		}
		if p.t.policy == config.LBRingHash {
			start := ringIndex(s.ring, h)
			for k := range min(len(s.ring), maxRingWalk) {
				if e := s.ring[(start+k)%len(s.ring)].ep; p.ok(e, strict) {
					return e
				}
			}
		} else {
			size := uint64(len(s.maglev))
			for attempt := range uint64(maxRingWalk) {
				// As Envoy's Maglev retries: flip most bits of the hash.
				hh := h
				if attempt > 0 {
					hh ^= ^uint64(0) - attempt + 1
				}
				if e := s.maglev[hh%size]; p.ok(e, strict) {
					return e
				}
			}
		}
		return p.scan(int(h%uint64(n)), strict)
	case config.LBRandom:
		for range min(n, maxRingWalk) {
			if e := s.hosts[p.st.rand()%uint64(n)]; p.ok(e, strict) {
				return e
			}
		}
		return p.scan(int(p.st.rand()%uint64(n)), strict)
	case config.LBLeastRequest:
		if e := p.leastRequest(strict); e >= 0 {
			return e
		}
		return p.scan(int(p.st.rand()%uint64(n)), strict)
	default:
		// A turn of an endpoint in slow start is taken with probability
		// factor/maxFactor, else the pick takes the next turn: the
		// schedule's shares become weight*factor, as in Envoy's EDF
		// schedule of slow-start weights (exactly so in expectation, for
		// up to maxSlowStartTries turns down in a row).
		m := uint64(len(s.sched))
		e := int32(-1)
		for try := range maxSlowStartTries {
			k := p.st.rr.Add(1) - 1
			e = -1
			for j := range m {
				if c := s.sched[(k+j)%m]; p.ok(c, strict) {
					e = c
					break
				}
			}
			if e < 0 || try == maxSlowStartTries-1 || p.accept(e) {
				break
			}
		}
		return e
	}
}

// slowStartFactor is Envoy's slow-start weight factor, in (0, 1], of an
// endpoint added at added (clock; 0: never in slow start) at now:
// max(min_weight_percent/100, (max(age, 1ms)/window)^(1/aggression))
// during the window, 1 after it.
func (t *lbTable) slowStartFactor(added, now int64) float64 {
	ss := t.slowStart
	if ss == nil || added == 0 {
		return 1
	}
	window := int64(ss.Window)
	age := now - added
	if age >= window {
		return 1
	}
	f := float64(max(age, int64(time.Millisecond))) / float64(window)
	if ss.Aggression != 1 {
		f = math.Pow(f, 1/ss.Aggression)
	}
	return min(1, max(f, ss.MinWeightPercent/100))
}

// accept reports whether a pick takes endpoint e that its policy drew: always
// but in slow start, where e is taken with probability e's slow-start
// factor over the largest one of the set. Drawing in proportion to weight
// and accepting so draws in proportion to weight*factor (rejection
// sampling). Only healthy endpoints are in slow start, as in Envoy.
func (p *picker) accept(e int32) bool {
	if !p.slow || p.t.eps[e].Health != config.Healthy {
		return true
	}
	f := p.t.slowStartFactor(p.t.added[e], p.now) / p.maxFactor
	if f >= 1 {
		return true
	}
	return float64(p.st.rand()>>11)*0x1p-53 < f
}

// leastRequest is Envoy's LEAST_REQUEST: choice_count random hosts, the
// one with the fewest active requests wins (P2C). With unequal weights the
// candidates are drawn in proportion to their weights and the one with the
// largest weight / (active+1)^active_request_bias wins: the same effective
// weights as Envoy's, compared among the candidates rather than over an
// EDF schedule of every host (which would need a lock). Ties keep the
// earlier candidate.
//
// Slow start scales the weight a candidate is drawn with (accept), not
// the score it is compared by: an endpoint in slow start is a candidate
// factor times as often, so with idle hosts its share is Envoy's, and
// under load P2C still steers requests away from the busiest hosts.
func (p *picker) leastRequest(strict bool) int32 {
	s := p.set
	best, bestScore := int32(-1), 0.0
	var bestActive int64
	for range p.t.lr.ChoiceCount {
		e := p.draw()
		for try := 1; try < maxSlowStartTries && !p.accept(e); try++ {
			e = p.draw()
		}
		if !p.ok(e, strict) {
			continue
		}
		a := p.t.active[e].Load()
		if s.equal {
			if best < 0 || a < bestActive {
				best, bestActive = e, a
			}
			continue
		}
		score := float64(p.t.weight(e))
		switch b := p.t.lr.ActiveRequestBias; b {
		case 0:
		case 1:
			score /= float64(a + 1)
		default:
			score /= math.Pow(float64(a+1), b)
		}
		if best < 0 || score > bestScore {
			best, bestScore = e, score
		}
	}
	return best
}

// draw returns a random host of the set, in proportion to its weight.
func (p *picker) draw() int32 {
	s := p.set
	if s.equal {
		return s.hosts[p.st.rand()%uint64(len(s.hosts))]
	}
	r := p.st.rand() % s.cum[len(s.cum)-1]
	j, _ := slices.BinarySearch(s.cum, r+1)
	return s.hosts[j]
}

// scan returns the first host of the set from position start on that may
// be chosen, or -1.
func (p *picker) scan(start int, strict bool) int32 {
	n := len(p.set.hosts)
	for j := range n {
		if e := p.set.hosts[(start+j)%n]; p.ok(e, strict) {
			return e
		}
	}
	return -1
}
