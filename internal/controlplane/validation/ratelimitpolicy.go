package validation

import (
	"fmt"
	"strings"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// RateLimitPolicy (loom.dev/v1alpha1, Loom's own kind): a selector of
// valid labels, at least one limit, each with a unit, a scope, a count a
// token bucket can hold when local, and a match whose path starts with "/"
// and whose header is a header name.
func (c *checker) rateLimitPolicy(rp *loomv1alpha1.RateLimitPolicy) {
	c.selector("spec.selector.matchLabels", rp.GetSelector().GetMatchLabels())
	if len(rp.GetLimits()) == 0 {
		c.errf("spec.limits", "Required value: a rate limit policy needs at least one limit")
	}
	for i, l := range rp.GetLimits() {
		p := fmt.Sprintf("spec.limits[%d]", i)
		if l == nil {
			c.errf(p, "Required value: null limit")
			continue
		}
		if _, ok := loomv1alpha1.NormalUnit(l.GetUnit()); !ok {
			c.errf(p+".unit", `Unsupported value: %q: supported values: "second", "minute", "hour", "day"`, l.GetUnit())
		}
		scope, ok := loomv1alpha1.NormalScope(l.GetScope())
		if !ok {
			c.errf(p+".scope", `Unsupported value: %q: supported values: "local", "global"`, l.GetScope())
		}
		if scope == loomv1alpha1.ScopeLocal && l.GetRequestsPerUnit() == 0 {
			c.errf(p+".requestsPerUnit", "Invalid value: 0: a local limit is a token bucket, which must hold at least 1 request")
		}
		m := l.GetMatch()
		if m.GetPath() != nil {
			switch v := m.GetPath().GetMatch().(type) {
			case *loomv1alpha1.PathMatch_Prefix:
				if !strings.HasPrefix(v.Prefix, "/") {
					c.errf(p+".match.path.prefix", "Invalid value: %q: must start with /", v.Prefix)
				}
			case *loomv1alpha1.PathMatch_Exact:
				if !strings.HasPrefix(v.Exact, "/") {
					c.errf(p+".match.path.exact", "Invalid value: %q: must start with /", v.Exact)
				}
			default:
				c.errf(p+".match.path", "Required value: prefix or exact")
			}
		}
		if h := m.GetHeader(); h != "" && (!isHeaderName(h) || strings.HasPrefix(h, ":")) {
			c.errf(p+".match.header", "Invalid value: %q: must be a header name", h)
		}
	}
}

// RateLimitServiceRequired returns an error for each global limit of rs:
// Validate for a loomd that serves no rate limit service, whose proxies
// would have nothing to ask.
func RateLimitServiceRequired(rs []*config.Resource) config.Errors {
	var errs config.Errors
	for _, r := range rs {
		rp, ok := r.Spec.(*loomv1alpha1.RateLimitPolicy)
		if !ok {
			continue
		}
		for i, l := range rp.GetLimits() {
			if s, _ := loomv1alpha1.NormalScope(l.GetScope()); s == loomv1alpha1.ScopeGlobal {
				errs = append(errs, &config.Error{Source: r.Source, Key: r.Key(), Field: fmt.Sprintf("spec.limits[%d].scope", i),
					Msg: `Invalid value: "global": loomd serves no rate limit service (start it with --ratelimit-addr and --ratelimit-redis)`})
			}
		}
	}
	return errs
}
