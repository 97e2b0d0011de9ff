package upstream

import (
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// monoStart anchors monoNow: ejection deadlines are monotonic nanoseconds
// since the process started, so they fit in an atomic.Int64.
var monoStart = time.Now()

func monoNow() int64 { return int64(time.Since(monoStart)) }

// outlierState is Envoy's outlier detector for one cluster
// (envoy.config.cluster.v3.OutlierDetection): consecutive 5xx, consecutive
// gateway failure and consecutive local-origin failure ejection.
//
// Ejection happens inline, on the result that reaches a threshold, as in
// Envoy. Unejection is lazy: a host is back as soon as its ejection time
// is over (Envoy returns it on the next interval sweep, up to one interval
// later). No goroutine runs, so there is nothing to stop.
type outlierState struct {
	cfg   atomic.Pointer[config.OutlierDetection] // nil: no outlier detection
	hosts atomic.Pointer[map[string]*hostMonitor] // copy on write, under mu
	// until is the latest ejection deadline of any host (monoNow): when it
	// is past, no host is ejected and ejected needs no map lookup.
	until atomic.Int64
	// count caches how many hosts are ejected (ejectedCount); nil or
	// expired: recount.
	count atomic.Pointer[ejectCount]

	enforced atomic.Uint64 // ejections_enforced_total
	overflow atomic.Uint64 // ejections_overflow

	// mu guards ejection decisions, the fields of hostMonitor it names,
	// and writes of hosts.
	mu sync.Mutex
}

// ejectCount is how many hosts were ejected when it was counted; the
// count holds until the earliest of their deadlines (monoNow), as only an
// eject (which recounts) adds an ejected host.
type ejectCount struct {
	n          int
	validUntil int64
}

// hostMonitor is the outlier state of one endpoint address.
type hostMonitor struct {
	consecutive5xx     atomic.Uint32
	consecutiveGateway atomic.Uint32
	consecutiveLocal   atomic.Uint32
	until              atomic.Int64 // ejected while monoNow() < until

	// Guarded by outlierState.mu.
	ejections int   // Envoy's ejection-time multiplier
	lastEnd   int64 // when the last ejection ended (monoNow)
}

// update takes a generation's outlier detection settings and endpoints.
// Monitors of addresses still present keep their counters and ejections;
// nil od turns detection off and returns every host.
func (o *outlierState) update(od *config.OutlierDetection, eps []config.Endpoint) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cfg.Store(od)
	next := map[string]*hostMonitor{}
	if od != nil {
		var old map[string]*hostMonitor
		if p := o.hosts.Load(); p != nil {
			old = *p
		}
		for _, ep := range eps {
			hm := old[ep.Address]
			if hm == nil {
				hm = &hostMonitor{}
			}
			next[ep.Address] = hm
		}
	}
	o.hosts.Store(&next)
	latest := int64(0)
	for _, hm := range next {
		latest = max(latest, hm.until.Load())
	}
	o.until.Store(latest)
	o.recount(monoNow())
}

// ejected reports whether addr is ejected now.
func (o *outlierState) ejected(addr string) bool {
	u := o.until.Load()
	if u == 0 {
		return false
	}
	now := monoNow()
	if now >= u {
		return false
	}
	hm := (*o.hosts.Load())[addr]
	return hm != nil && now < hm.until.Load()
}

// ejectedCount returns how many hosts are ejected now. It is lock-free
// and O(1): one atomic load when no host is ejected; a scan of the hosts
// only once after each end of an ejection.
func (o *outlierState) ejectedCount() int {
	u := o.until.Load()
	if u == 0 {
		return 0
	}
	now := monoNow()
	if now >= u {
		// Every ejection is over. eject and update store until under mu
		// without a compare: a newer deadline makes this swap fail.
		o.until.CompareAndSwap(u, 0)
		return 0
	}
	c := o.count.Load()
	if c != nil && now < c.validUntil {
		return c.n
	}
	nc := o.countAt(now)
	// A count stored meanwhile (by eject, or by another Pick) wins.
	o.count.CompareAndSwap(c, nc)
	return nc.n
}

// recount stores the count at now; called with mu held after the
// ejections or the hosts change.
func (o *outlierState) recount(now int64) { o.count.Store(o.countAt(now)) }

// countAt counts the hosts ejected at now and the earliest end of their
// ejections.
func (o *outlierState) countAt(now int64) *ejectCount {
	c := &ejectCount{validUntil: math.MaxInt64}
	if p := o.hosts.Load(); p != nil {
		for _, hm := range *p {
			if u := hm.until.Load(); now < u {
				c.n++
				c.validUntil = min(c.validUntil, u)
			}
		}
	}
	return c
}

// active counts the hosts ejected at now.
func (o *outlierState) active(now int64) int {
	p := o.hosts.Load()
	if p == nil {
		return 0
	}
	n := 0
	for _, hm := range *p {
		if now < hm.until.Load() {
			n++
		}
	}
	return n
}

// report counts one attempt's result against addr, as Envoy's
// putHttpResponseCode and putResult do, and ejects the host when a
// consecutive-failure threshold is reached.
func (o *outlierState) report(addr string, res Result) {
	od := o.cfg.Load()
	if od == nil {
		return
	}
	hosts := o.hosts.Load()
	if hosts == nil {
		return
	}
	hm := (*hosts)[addr]
	if hm == nil {
		return // not an endpoint of the current generation
	}
	if res.LocalOrigin && od.SplitExternalLocalOriginErrors {
		if od.ConsecutiveLocalOriginFailure > 0 && hm.consecutiveLocal.Add(1) == od.ConsecutiveLocalOriginFailure {
			hm.consecutiveLocal.Store(0)
			o.eject(od, hm, od.EnforcingConsecutiveLocalOriginFailure)
		}
		return
	}
	status := res.Status
	if res.LocalOrigin {
		// Without the split, local-origin failures count as the 5xx the
		// proxy answers for them (connect failure and reset 503, timeout 504).
		if status < 500 {
			status = http.StatusServiceUnavailable
		}
	} else {
		if status == 0 {
			return // no response and not the host's fault (the client left)
		}
		if od.SplitExternalLocalOriginErrors {
			resetIfSet(&hm.consecutiveLocal) // the host answered: local success
		}
	}
	if status < 500 {
		resetIfSet(&hm.consecutive5xx)
		resetIfSet(&hm.consecutiveGateway)
		return
	}
	if status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout {
		if od.ConsecutiveGatewayFailure > 0 && hm.consecutiveGateway.Add(1) == od.ConsecutiveGatewayFailure {
			hm.consecutiveGateway.Store(0)
			o.eject(od, hm, od.EnforcingConsecutiveGatewayFailure)
		}
	} else {
		resetIfSet(&hm.consecutiveGateway)
	}
	if od.Consecutive5xx > 0 && hm.consecutive5xx.Add(1) == od.Consecutive5xx {
		hm.consecutive5xx.Store(0)
		o.eject(od, hm, od.EnforcingConsecutive5xx)
	}
}

// resetIfSet zeroes a counter without writing its cache line when it is
// already zero (the common, healthy case).
func resetIfSet(c *atomic.Uint32) {
	if c.Load() != 0 {
		c.Store(0)
	}
}

// eject ejects hm when it is not ejected already, max_ejection_percent
// allows it and the enforcing percentage (0-100) says so. The ejection
// lasts base_ejection_time times the host's ejection count, capped by
// max_ejection_time, plus a random jitter up to max_ejection_time_jitter.
func (o *outlierState) eject(od *config.OutlierDetection, hm *hostMonitor, enforcing uint32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := monoNow()
	if now < hm.until.Load() {
		return
	}
	base, interval := int64(od.BaseEjectionTime), int64(od.Interval)
	// Envoy lowers the multiplier by one on every sweep that finds the
	// host healthy for base_ejection_time since it came back.
	if hm.ejections > 0 && hm.lastEnd > 0 && now-hm.lastEnd >= base && interval > 0 {
		hm.ejections = max(0, hm.ejections-int(1+(now-hm.lastEnd-base)/interval))
	}
	total := len(*o.hosts.Load())
	active := o.active(now)
	if total == 0 || (uint64(active+1)*100 > uint64(od.MaxEjectionPercent)*uint64(total) && !(od.AlwaysEjectOneHost && active == 0)) {
		o.overflow.Add(1)
		return
	}
	if enforcing == 0 || (enforcing < 100 && uint32(rand.IntN(100)) >= enforcing) {
		return
	}
	if int64(hm.ejections)*base < int64(od.MaxEjectionTime) {
		hm.ejections++
	}
	d := min(int64(hm.ejections)*base, int64(od.MaxEjectionTime))
	if j := int64(od.MaxEjectionTimeJitter); j > 0 {
		d += rand.Int64N(j + 1)
	}
	until := now + d
	hm.until.Store(until)
	hm.lastEnd = until
	if until > o.until.Load() {
		o.until.Store(until)
	}
	o.recount(now)
	o.enforced.Add(1)
}
