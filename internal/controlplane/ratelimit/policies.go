package ratelimit

import "github.com/loom-mesh/loom/internal/controlplane/model"

// FromPolicies returns the configuration of the global limits of pols: the
// domain model.RateLimitDomain with, for each limit, the descriptor chain
// its proxies send (model's RateLimitKeyLimit, then RateLimitKeyPath, then
// the header with no value, so that each header value is counted on its
// own) ending in its rate_limit. It returns nil when pols have no global
// limit.
func FromPolicies(pols []*model.RateLimitPolicy) *DomainConfig {
	d := &DomainConfig{Domain: model.RateLimitDomain}
	for _, p := range pols {
		for _, l := range p.Limits {
			if !l.Global {
				continue
			}
			chain := []DescriptorConfig{{Key: model.RateLimitKeyLimit, Value: l.ID}}
			if v := l.Path(); v != "" {
				chain = append(chain, DescriptorConfig{Key: model.RateLimitKeyPath, Value: v})
			}
			if l.Header != "" {
				chain = append(chain, DescriptorConfig{Key: l.Header})
			}
			last := &chain[len(chain)-1]
			last.RateLimit = &RateLimitConfig{Unit: l.Unit, RequestsPerUnit: l.RequestsPerUnit}
			last.ShadowMode = l.ShadowMode
			for i := len(chain) - 1; i > 0; i-- {
				chain[i-1].Descriptors = []DescriptorConfig{chain[i]}
			}
			d.Descriptors = append(d.Descriptors, chain[0])
		}
	}
	if len(d.Descriptors) == 0 {
		return nil
	}
	return d
}
