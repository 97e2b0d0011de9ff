package filter

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// RateLimitPolicy is the rate limit configuration of a matched route: the
// route's RouteAction.rate_limits and its virtual host's
// VirtualHost.rate_limits (envoy.config.route.v3.RateLimit), compiled at
// the edge. It is immutable and shared by every request of the route; the
// rate limit filters (envoy.filters.http.ratelimit and
// envoy.filters.http.local_ratelimit) turn it into descriptors with
// Descriptors.
type RateLimitPolicy struct {
	Route       []RateLimit // RouteAction.rate_limits
	VirtualHost []RateLimit // VirtualHost.rate_limits
	// IncludeVirtualHost is RouteAction.include_vh_rate_limits: the
	// virtual host's rate limits apply besides the route's, whatever the
	// filter's VHRateLimits says.
	IncludeVirtualHost bool
}

// RateLimit is one envoy.config.route.v3.RateLimit: its actions make one
// descriptor, for the filters of the same stage.
type RateLimit struct {
	Stage   uint32 // 0-10
	Actions []RateLimitAction
}

// RateLimitActionKind says which RateLimit.Action an action is.
type RateLimitActionKind int

// The rate limit actions this version implements
// (envoy.config.route.v3.RateLimit.Action).
const (
	ActionSourceCluster            RateLimitActionKind = iota // ("source_cluster", service cluster)
	ActionDestinationCluster                                  // ("destination_cluster", routed cluster)
	ActionRequestHeaders                                      // (Key, the header's first value)
	ActionRemoteAddress                                       // ("remote_address", downstream IP)
	ActionGenericKey                                          // (Key, Value)
	ActionHeaderValueMatch                                    // (Key, Value) when Match(r) == ExpectMatch
	ActionMaskedRemoteAddress                                 // ("masked_remote_address", "IP/len")
	ActionQueryParameters                                     // (Key, the parameter's value)
	ActionQueryParameterValueMatch                            // (Key, Value) when Match(r) == ExpectMatch
)

// RateLimitAction is one compiled RateLimit.Action. Which fields are read
// depends on Kind; defaults (descriptor keys "generic_key",
// "header_match", "query_match") are applied at the edge.
type RateLimitAction struct {
	Kind  RateLimitActionKind
	Key   string // descriptor_key
	Value string // descriptor_value (generic_key, *_value_match), literal
	// Name is request_headers' header_name (canonical, or ":authority",
	// ":path", ":method", ":scheme") or query_parameters'
	// query_parameter_name.
	Name string
	// SkipIfAbsent (request_headers, query_parameters): a missing value
	// leaves the entry out instead of dropping the descriptor.
	SkipIfAbsent bool
	// Match (header_value_match, query_parameter_value_match) says
	// whether all the action's matchers match r; ExpectMatch is
	// expect_match (true by default).
	Match       func(r *http.Request) bool
	ExpectMatch bool
	// V4Mask and V6Mask are masked_remote_address's prefix lengths.
	V4Mask, V6Mask int
}

// VHRateLimits says whether a filter uses the virtual host's rate limits
// (envoy.extensions.common.ratelimit.v3.VhRateLimitsOptions and
// RateLimitPerRoute.VhRateLimitsOptions).
type VHRateLimits int

// Virtual host rate limit options.
const (
	// VHRateLimitsOverride uses the virtual host's rate limits only when
	// the route has none (of any stage), Envoy's default.
	VHRateLimitsOverride VHRateLimits = iota
	// VHRateLimitsInclude uses both the route's and the virtual host's.
	VHRateLimitsInclude
	// VHRateLimitsIgnore uses the route's only.
	VHRateLimitsIgnore
)

// VHRateLimitsOf converts the value of either proto enum of the option
// (envoy.extensions.common.ratelimit.v3.VhRateLimitsOptions and
// RateLimitPerRoute.VhRateLimitsOptions, both OVERRIDE 0, INCLUDE 1,
// IGNORE 2); false for any other value.
func VHRateLimitsOf(v int32) (VHRateLimits, bool) {
	if v < int32(VHRateLimitsOverride) || v > int32(VHRateLimitsIgnore) {
		return 0, false
	}
	return VHRateLimits(v), true
}

// DescriptorEntry is one (key, value) of a rate limit descriptor
// (envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry).
type DescriptorEntry struct{ Key, Value string }

// Descriptor is one rate limit descriptor: its entries in the order the
// actions appended them.
type Descriptor struct {
	Entries []DescriptorEntry
}

// DescriptorInput holds what actions read besides the request.
type DescriptorInput struct {
	// ServiceCluster is the proxy's service cluster (source_cluster).
	ServiceCluster string
	// Cluster is the routed cluster (destination_cluster).
	Cluster string
	// XFF is the connection manager's trust in X-Forwarded-For, for
	// remote_address and masked_remote_address.
	XFF XFF
}

// Descriptors appends to dst the descriptors of p for a filter of stage
// stage with virtual host option vh, as Envoy's rate limit filters
// populate them: the route's rate limits of that stage, then the virtual
// host's when vh (or the route's include_vh_rate_limits) says so. A rate
// limit whose action cannot append its entry makes no descriptor, nor one
// whose actions all skipped theirs. p nil appends nothing. It is safe for
// concurrent use; it allocates the descriptors it appends.
func (p *RateLimitPolicy) Descriptors(dst []Descriptor, stage uint32, vh VHRateLimits, r *http.Request, in *DescriptorInput) []Descriptor {
	if p == nil {
		return dst
	}
	dst = populate(dst, p.Route, stage, r, in)
	if p.IncludeVirtualHost {
		vh = VHRateLimitsInclude
	}
	switch {
	case vh == VHRateLimitsInclude, vh == VHRateLimitsOverride && len(p.Route) == 0:
		dst = populate(dst, p.VirtualHost, stage, r, in)
	}
	return dst
}

func populate(dst []Descriptor, rls []RateLimit, stage uint32, r *http.Request, in *DescriptorInput) []Descriptor {
	for i := range rls {
		rl := &rls[i]
		if rl.Stage != stage {
			continue
		}
		var entries []DescriptorEntry
		ok := true
		for j := range rl.Actions {
			e, has, keep := rl.Actions[j].entry(r, in)
			if !keep {
				ok = false
				break
			}
			if has {
				entries = append(entries, e)
			}
		}
		if ok && len(entries) > 0 {
			dst = append(dst, Descriptor{Entries: entries})
		}
	}
	return dst
}

// entry returns the action's descriptor entry for r (has), and whether the
// descriptor may still be made (keep): false when the action cannot
// append its entry and does not skip it.
func (a *RateLimitAction) entry(r *http.Request, in *DescriptorInput) (e DescriptorEntry, has, keep bool) {
	switch a.Kind {
	case ActionSourceCluster:
		return DescriptorEntry{"source_cluster", in.ServiceCluster}, true, true
	case ActionDestinationCluster:
		return DescriptorEntry{"destination_cluster", in.Cluster}, true, true
	case ActionGenericKey:
		return DescriptorEntry{a.Key, a.Value}, true, true
	case ActionRequestHeaders:
		v, ok := requestHeader(r, a.Name)
		if !ok {
			return e, false, a.SkipIfAbsent
		}
		return DescriptorEntry{a.Key, v}, true, true
	case ActionQueryParameters:
		v, ok := queryParameter(r.URL.RawQuery, a.Name)
		if !ok {
			return e, false, a.SkipIfAbsent
		}
		return DescriptorEntry{a.Key, v}, true, true
	case ActionHeaderValueMatch, ActionQueryParameterValueMatch:
		if a.Match(r) != a.ExpectMatch {
			return e, false, false
		}
		return DescriptorEntry{a.Key, a.Value}, true, true
	case ActionRemoteAddress:
		ip, ok := remoteIP(r, in.XFF)
		if !ok {
			return e, false, false
		}
		return DescriptorEntry{"remote_address", ip.String()}, true, true
	case ActionMaskedRemoteAddress:
		ip, ok := remoteIP(r, in.XFF)
		if !ok {
			return e, false, false
		}
		bits := a.V6Mask
		if ip.Is4() {
			bits = a.V4Mask
		}
		pfx, err := ip.Prefix(bits)
		if err != nil {
			return e, false, false
		}
		return DescriptorEntry{"masked_remote_address", pfx.String()}, true, true
	}
	return e, false, false
}

// remoteIP is the request's downstream remote address as Envoy's
// connection manager computes it under xff (TrustedClientAddress); false
// when the peer's address is unknown.
func remoteIP(r *http.Request, xff XFF) (netip.Addr, bool) {
	src, _ := RequestAddresses(r)
	if !src.IsValid() {
		return netip.Addr{}, false
	}
	ip := TrustedClientAddress(r, src.Addr(), xff)
	return ip, ip.IsValid()
}

// requestHeader returns the first value of header name, as Envoy's
// request_headers action reads it; the pseudo-headers come from the
// request line.
func requestHeader(r *http.Request, name string) (string, bool) {
	switch name {
	case ":authority":
		return r.Host, r.Host != ""
	case ":method":
		return r.Method, true
	case ":path":
		return r.URL.RequestURI(), true
	case ":scheme":
		switch {
		case r.URL.Scheme != "":
			return r.URL.Scheme, true
		case r.TLS != nil:
			return "https", true
		}
		return "http", true
	}
	vs := r.Header[name]
	if len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// queryParameter returns the value of the first parameter named name in
// rawQuery, name and value percent-decoded ("+" is not a space), as the
// query_parameters action reads it (Envoy's
// QueryParamsMulti::parseAndDecodeQueryString, then getFirstValue). A
// parameter that does not decode is compared as it is.
func queryParameter(rawQuery, name string) (string, bool) {
	for q := rawQuery; q != ""; {
		var p string
		p, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(p, "=")
		if dk, err := url.PathUnescape(k); err == nil {
			k = dk
		}
		if k != name {
			continue
		}
		if dv, err := url.PathUnescape(v); err == nil {
			v = dv
		}
		return v, true
	}
	return "", false
}
