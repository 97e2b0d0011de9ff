package filter

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"
)

// Config is a filter's parsed, validated and immutable configuration: the
// HCM-level one (Factory.Parse) or a route or virtual host override
// (Factory.ParseOverride). Each Factory knows its own concrete type.
type Config any

// Factory parses and builds one kind of HTTP filter. Implementations are
// stateless and safe for concurrent use.
type Factory interface {
	// Name is the filter's canonical Envoy name, such as
	// "envoy.filters.http.fault"; a typed_config-less HttpFilter is
	// resolved by it.
	Name() string
	// TypeURLs are the typed_config type URLs the factory accepts, such as
	// "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault".
	TypeURLs() []string
	// Parse validates the HCM-level typed_config; cfg nil means the filter
	// was listed without one (Envoy's defaults). It is pure; the error
	// names the offending field, as "abort.percentage.numerator = ...".
	Parse(cfg *anypb.Any) (Config, error)
	// ParseOverride validates a route's or virtual host's
	// typed_per_filter_config entry for the filter (never nil).
	ParseOverride(cfg *anypb.Any) (Config, error)
	// Build makes the filter of one listener's chain from a Config that
	// Parse returned, with deps of the generation being built. It is
	// called once per generation.
	Build(cfg Config, deps Deps) (Filter, error)
}

// Filter is one compiled HTTP filter of a listener's chain. ServeHTTP is
// called concurrently. It either answers the request itself (a local reply)
// or calls next at most once, from its own goroutine, before it returns.
// It reads its route override with OverrideFrom before calling next.
type Filter interface {
	ServeHTTP(w http.ResponseWriter, r *http.Request, next http.Handler)
}

// Flags are the response flags (Envoy's %RESPONSE_FLAGS%) a filter sets on
// a request; the access log entry gets them after the request ends.
type Flags uint8

// Response flags filters set.
const (
	FlagDelayInjected         Flags = 1 << iota // DI
	FlagFaultInjected                           // FI
	FlagRateLimited                             // RL
	FlagUnauthorizedExternal                    // UAEX: denied by an external authorization service
	FlagRateLimitServiceError                   // RLSE: the rate limit service failed, request refused
)

// flagNames are the flags' Envoy names in Envoy's %RESPONSE_FLAGS% order.
var flagNames = [...]struct {
	f    Flags
	name string
}{{FlagDelayInjected, "DI"}, {FlagFaultInjected, "FI"}, {FlagRateLimited, "RL"},
	{FlagUnauthorizedExternal, "UAEX"}, {FlagRateLimitServiceError, "RLSE"}}

// String returns the flags as Envoy prints them, in Envoy's order
// ("DI,FI,RL"), or "" for none.
func (f Flags) String() string {
	switch f {
	case 0:
		return ""
	case FlagDelayInjected:
		return "DI"
	case FlagFaultInjected:
		return "FI"
	case FlagDelayInjected | FlagFaultInjected:
		return "DI,FI"
	case FlagRateLimited:
		return "RL"
	}
	var b strings.Builder
	for _, n := range flagNames {
		if f&n.f != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(n.name)
			f &^= n.f
		}
	}
	if f != 0 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "Flags(%#x)", uint8(f))
	}
	return b.String()
}

// State is one request's state shared by the connection manager and the
// filters of its chain. It is owned by the request's handler goroutine and
// not safe for concurrent use; a filter must not keep it after ServeHTTP
// returns.
type State struct {
	// Override is the matched route's override (typed_per_filter_config,
	// the route's own or else its virtual host's or route
	// configuration's) for the filter being called, nil when there is
	// none or no route matched. The chain sets it before calling each
	// filter; it is valid until that filter calls next.
	Override Config
	// Flags are the response flags set by the filters so far.
	Flags Flags
	// A filter that answers the request itself (a local reply) sets
	// ReplyCode to the status it wrote, ReplyDetails to Envoy's
	// %RESPONSE_CODE_DETAILS% (such as "fault_filter_abort") and
	// ReplyBytes to the body bytes written, for the access log.
	ReplyCode    int
	ReplyDetails string
	ReplyBytes   int64
	// Route is what filters read of the matched route: its name, the
	// cluster the request goes to and its rate limit policy. Nil when no
	// route matched or the route does not forward (redirect, direct
	// response). It is valid until the filter's ServeHTTP returns.
	Route *RouteInfo
	// Metadata is Envoy's dynamic metadata of the request: one namespace
	// per filter name (such as "envoy.filters.http.jwt_authn"), holding
	// that filter's fields with values as encoding/json decodes them
	// (map[string]any, []any, string, float64, bool, nil). A filter writes
	// its own namespace with SetMetadata; later filters (rbac's metadata
	// matchers) and the access log read it. Nil until the first write.
	Metadata map[string]map[string]any
	// XFF is how the listener's connection manager trusts
	// X-Forwarded-For; filters that need the client's address read it
	// through TrustedClientAddress.
	XFF XFF
	// Upstreams lets a filter call a cluster of the current generation
	// (ext_authz's check); nil when the connection manager has none.
	Upstreams Upstreams
	// ResponseHeaders are headers a filter sets over the upstream
	// response's own, as Envoy's encoder filters do (the CORS filter's
	// Access-Control-* setInline): the router writes them after copying
	// the upstream's headers and applying the route's response header
	// mutations. Nil when no filter set any. A filter that also wants
	// them on local replies sets them on the ResponseWriter too.
	ResponseHeaders http.Header
	// RouteCacheCleared is set by ClearRouteCache; the connection manager
	// matches the request's route again before it calls the next filter
	// or the router, and resets it.
	RouteCacheCleared bool
}

// ClearRouteCache asks for the request's route to be matched again, with
// its headers and Metadata as they are now, before the next filter (or the
// router) runs: Envoy's clearRouteCache, which a filter calls after it
// changed what routes match on (jwt_authn's clear_route_cache, for Istio's
// JWT claim routing). The filters after it see the new route's overrides
// and Route.
func (s *State) ClearRouteCache() { s.RouteCacheCleared = true }

// SetMetadata sets key in namespace ns of s.Metadata, allocating as
// needed.
func (s *State) SetMetadata(ns, key string, v any) {
	if s.Metadata == nil {
		s.Metadata = map[string]map[string]any{}
	}
	m := s.Metadata[ns]
	if m == nil {
		m = map[string]any{}
		s.Metadata[ns] = m
	}
	m[key] = v
}

// RouteInfo is the matched route of a request that is forwarded, as
// filters see it (Envoy's route entry and the cluster info the rate limit
// filters read).
type RouteInfo struct {
	// Name is Route.name.
	Name string
	// Cluster is the cluster the router sends the request to: the
	// route's cluster, or the weighted cluster picked for this request
	// (picked before the filters run, as Envoy's route entry is).
	Cluster string
	// ClusterExists is false when Cluster is not in the generation (the
	// router answers 503 NC).
	ClusterExists bool
	// RateLimits are the rate_limits of the route and of its virtual
	// host; nil when neither has any.
	RateLimits *RateLimitPolicy
}

type stateKey struct{}

// stateCtx carries a *State without the extra node context.WithValue
// would add on every Value lookup of other keys.
type stateCtx struct {
	context.Context
	s *State
}

func (c *stateCtx) Value(key any) any {
	if key == (stateKey{}) {
		return c.s
	}
	return c.Context.Value(key)
}

// NewContext returns a child of parent that carries s.
func NewContext(parent context.Context, s *State) context.Context {
	return &stateCtx{Context: parent, s: s}
}

// StateFrom returns the State the connection manager put in r's context,
// or nil when r did not come through a chain.
func StateFrom(r *http.Request) *State {
	if c, ok := r.Context().(*stateCtx); ok {
		return c.s // the common case: no context was stacked on top
	}
	s, _ := r.Context().Value(stateKey{}).(*State)
	return s
}

// StateFromContext returns the State carried by ctx (a request's context,
// or the context a network filter chain runs with), or nil.
func StateFromContext(ctx context.Context) *State {
	if c, ok := ctx.(*stateCtx); ok {
		return c.s
	}
	s, _ := ctx.Value(stateKey{}).(*State)
	return s
}
