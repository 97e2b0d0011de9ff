package upstream

import (
	"sync/atomic"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// policyState is a cluster's circuit-breaker and outlier-detection state
// across generations. Its counters survive config updates, as Envoy's
// circuit breakers and outlier detector are per cluster name.
type policyState struct {
	limits atomic.Pointer[config.Thresholds] // nil: Envoy's defaults

	requests atomic.Int64 // outstanding requests (max_requests)
	retries  atomic.Int64 // retries in flight (max_retries)

	rqOverflow    atomic.Uint64 // max_requests refusals
	retryOverflow atomic.Uint64 // max_retries refusals

	od outlierState // outlier.go
}

// PolicyStats are a cluster's circuit-breaker and outlier-detection
// counters, named after Envoy's cluster statistics. Counters only grow
// while the cluster is known; EjectionsActive is a gauge.
type PolicyStats struct {
	// UpstreamCxOverflow counts requests that found max_connections
	// reached (they then wait as pending, or overflow, or connect past
	// the limit when their endpoint's pool has no connection, as Envoy).
	UpstreamCxOverflow uint64
	// UpstreamRqPendingOverflow counts requests refused with ErrOverflow
	// because max_pending_requests or max_requests was reached.
	UpstreamRqPendingOverflow uint64
	// UpstreamRqRetryOverflow counts retries refused by max_retries.
	UpstreamRqRetryOverflow uint64
	// EjectionsEnforcedTotal counts outlier ejections
	// (outlier_detection.ejections_enforced_total); EjectionsOverflow the
	// ejections max_ejection_percent prevented; EjectionsActive the hosts
	// ejected now.
	EjectionsEnforcedTotal uint64
	EjectionsOverflow      uint64
	EjectionsActive        uint64
}

// PolicyStats returns the counters of cluster; all zero for a cluster the
// manager does not know. It is safe for concurrent use and does not block
// requests.
func (m *ClusterManager) PolicyStats(cluster string) PolicyStats {
	st := (*m.states.Load())[cluster]
	if st == nil {
		return PolicyStats{}
	}
	return PolicyStats{
		UpstreamCxOverflow:        st.h1.cxOverflow.Load(),
		UpstreamRqPendingOverflow: st.h1.pendingOverflow.Load() + st.pol.rqOverflow.Load(),
		UpstreamRqRetryOverflow:   st.pol.retryOverflow.Load(),
		EjectionsEnforcedTotal:    st.pol.od.enforced.Load(),
		EjectionsOverflow:         st.pol.od.overflow.Load(),
		EjectionsActive:           uint64(st.pol.od.active(monoNow())),
	}
}

// updatePolicy takes the circuit breakers, connection options and outlier
// detection of a new generation of c.
func (st *clusterState) updatePolicy(c *config.Cluster) {
	lim := c.CircuitBreakers.Limits()
	st.pol.limits.Store(&lim)
	st.h1.setPolicy(lim.MaxConnections, lim.MaxPendingRequests, c.Conn)
	st.renewH2C()
	st.pol.od.update(c.Outlier, c.Endpoints)
}

func (p *policyState) thresholds() config.Thresholds {
	if l := p.limits.Load(); l != nil {
		return *l
	}
	return config.CircuitBreakers{}.Limits()
}

// admit takes one request from the max_requests circuit breaker; it fails
// with ErrOverflow when the breaker is full. Pick calls it after choosing
// a host; Host.Done gives it back.
func (st *clusterState) admit() error {
	if st.pol.requests.Add(1) > int64(st.pol.thresholds().MaxRequests) {
		st.pol.requests.Add(-1)
		st.pol.rqOverflow.Add(1)
		return ErrOverflow
	}
	return nil
}

// ejected reports whether outlier detection has ejected the endpoint addr.
// It is lock-free: one or two atomic loads when nothing is ejected.
func (st *clusterState) ejected(addr string) bool { return st.pol.od.ejected(addr) }

// ejectedCount returns how many endpoints outlier detection has ejected
// now (Envoy's outlier_detection.ejections_active). It is lock-free and
// O(1) but once after each ejection ends.
func (st *clusterState) ejectedCount() int { return st.pol.od.ejectedCount() }

// policyDone gives back h's request to the circuit breaker and reports
// its result to outlier detection.
func (st *clusterState) policyDone(h *Host, res Result) {
	st.pol.requests.Add(-1)
	st.pol.od.report(h.Addr, res)
}

// TryRetry asks c's retry circuit breaker for one retry: max_retries, or
// when the thresholds have a retry_budget, that budget's share of the
// requests outstanding on c now (Envoy's RetryBudgetImpl). When ok, the
// caller calls release once that retry is over; when not, it must not
// retry (Envoy counts upstream_rq_retry_overflow and returns the last
// response). release is never nil and is safe to call more than once.
func (m *ClusterManager) TryRetry(c *config.Cluster) (release func(), ok bool) {
	p := &m.state(c.Name).pol
	if p.retries.Add(1) > p.thresholds().MaxRetriesFor(p.requests.Load()) {
		p.retries.Add(-1)
		p.retryOverflow.Add(1)
		return func() {}, false
	}
	var once atomic.Bool
	return func() {
		if !once.Swap(true) {
			p.retries.Add(-1)
		}
	}, true
}
