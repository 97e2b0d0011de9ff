package model

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// The descriptors of RateLimitPolicy limits, shared by the proxies'
// config (translate) and the rate limit service's (package ratelimit):
// each limit's descriptor is
//
//	(RateLimitKeyLimit, Limit.ID) [(RateLimitKeyPath, Limit.PathPrefix or PathExact)] [(Limit.Header, the header's value)]
//
// in the domain RateLimitDomain.
const (
	RateLimitDomain   = "loom"
	RateLimitKeyLimit = "ratelimitpolicy"
	RateLimitKeyPath  = "path"
)

// RateLimitPolicy is one RateLimitPolicy (loom.dev/v1alpha1), normalized:
// units and scopes lower case, the header name lower case. It is immutable.
type RateLimitPolicy struct {
	Name, Namespace string
	Selector        map[string]string // matchLabels; empty selects all
	FailureModeDeny bool
	Limits          []RateLimit
}

// RateLimit is one limit of a RateLimitPolicy.
type RateLimit struct {
	// ID names the limit in descriptors: "NAMESPACE/NAME/INDEX".
	ID string
	// Route is match.route: the name of the HTTP route it applies on; ""
	// for every route.
	Route string
	// PathPrefix or PathExact is match.path; both "" for any path.
	PathPrefix, PathExact string
	// Header is match.header, lower case; "" when the limit does not count
	// per header value.
	Header string
	// RequestsPerUnit per Unit ("second", "minute", "hour" or "day"),
	// whose length is UnitSeconds.
	RequestsPerUnit uint32
	Unit            string
	UnitSeconds     int64
	// Global is scope global (the rate limit service); false is local (a
	// token bucket in each proxy).
	Global     bool
	ShadowMode bool
}

// Path is the limit's path match value, "" when it has none.
func (l *RateLimit) Path() string { return cmp.Or(l.PathExact, l.PathPrefix) }

// RateLimitPolicies returns every RateLimitPolicy of the config, ordered by
// namespace and name, normalized once when the push context was built (not
// per proxy). The slice and the policies are shared: callers must not
// modify them.
func (pc *PushContext) RateLimitPolicies() []*RateLimitPolicy {
	if pc.base != nil {
		return pc.base.rateLimitPolicies
	}
	return pc.rateLimitPolicies
}

// RateLimitPolicies returns every RateLimitPolicy of snap, ordered by
// namespace and name: what the rate limit service counts, without the
// rest of a push context.
func RateLimitPolicies(snap *config.Snapshot) []*RateLimitPolicy {
	var out []*RateLimitPolicy
	for _, r := range snap.List(config.KindRateLimitPolicy) {
		spec, ok := r.Spec.(*loomv1alpha1.RateLimitPolicy)
		if !ok {
			continue
		}
		out = append(out, newRateLimitPolicy(r.Namespace, r.Name, spec))
	}
	slices.SortFunc(out, func(a, b *RateLimitPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// RateLimitPoliciesForProxy returns the RateLimitPolicies that apply to p:
// those of p's namespace and of RootNamespace whose selector's labels p
// has (an empty selector selects every workload), in RateLimitPolicies'
// order. It returns nil for a nil p.
func (pc *PushContext) RateLimitPoliciesForProxy(p *Proxy) []*RateLimitPolicy {
	if p == nil {
		return nil
	}
	var out []*RateLimitPolicy
	for _, rp := range pc.RateLimitPolicies() {
		if rp.Namespace != p.Namespace && rp.Namespace != RootNamespace {
			continue
		}
		if len(rp.Selector) > 0 && !registry.LabelsContain(p.Labels, rp.Selector) {
			continue
		}
		out = append(out, rp)
	}
	return out
}

func newRateLimitPolicy(ns, name string, spec *loomv1alpha1.RateLimitPolicy) *RateLimitPolicy {
	rp := &RateLimitPolicy{Name: name, Namespace: ns, Selector: spec.GetSelector().GetMatchLabels(), FailureModeDeny: spec.GetFailureModeDeny()}
	for i, l := range spec.GetLimits() {
		unit, _ := loomv1alpha1.NormalUnit(l.GetUnit())
		scope, _ := loomv1alpha1.NormalScope(l.GetScope())
		m := l.GetMatch()
		rp.Limits = append(rp.Limits, RateLimit{
			ID:              ns + "/" + name + "/" + strconv.Itoa(i),
			Route:           m.GetRoute(),
			PathPrefix:      m.GetPath().GetPrefix(),
			PathExact:       m.GetPath().GetExact(),
			Header:          strings.ToLower(m.GetHeader()),
			RequestsPerUnit: l.GetRequestsPerUnit(),
			Unit:            unit,
			UnitSeconds:     loomv1alpha1.UnitSeconds[unit],
			Global:          scope == loomv1alpha1.ScopeGlobal,
			ShadowMode:      l.GetShadowMode(),
		})
	}
	return rp
}
