package rbac

import (
	"fmt"
	"net/http"
	"sync"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/matcher"
)

// Names and type URLs of the HTTP filter.
const (
	Name                = "envoy.filters.http.rbac"
	TypeURL             = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
	PerRouteTypeURL     = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
	NetworkName         = "envoy.filters.network.rbac"
	NetworkTypeURL      = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
	commonMetadataNS    = "envoy.common"
	accessLogHintKey    = "access_log_hint"
	shadowPolicyIDKey   = "shadow_effective_policy_id"
	shadowEngineResult  = "shadow_engine_result"
	shadowResultAllowed = "allowed"
	shadowResultDenied  = "denied"
)

// DeniedBody is the body of Envoy's RBAC denial, the text Istio's users
// see ("RBAC: access denied").
const DeniedBody = "RBAC: access denied"

// DeniedDetails is Envoy's response code details of a denial by policy
// name ("none" when an ALLOW engine matched nothing).
func DeniedDetails(policy string) string {
	if policy == "" {
		policy = "none"
	}
	return "rbac_access_denied_matched_policy[" + policy + "]"
}

// Engines are an RBAC filter's enforced engine and shadow engine, each
// nil when absent. They are immutable.
type Engines struct {
	Rules  *Engine
	Shadow *Engine
	// ShadowStatPrefix prefixes the shadow result's metadata keys
	// (shadow_rules_stat_prefix): Istio's ext_authz reads
	// "istio_ext_authz_shadow_effective_policy_id".
	ShadowStatPrefix string
}

// newEngines compiles rules and shadow rules (either may be nil).
func newEngines(rules, shadow *rbacv3.RBAC, shadowPrefix string) (Engines, error) {
	e := Engines{ShadowStatPrefix: shadowPrefix}
	var err error
	if rules != nil {
		if e.Rules, err = NewEngine(rules); err != nil {
			return e, fmt.Errorf("rules.%w", err)
		}
	}
	if shadow != nil {
		if e.Shadow, err = NewEngine(shadow); err != nil {
			return e, fmt.Errorf("shadow_rules.%w", err)
		}
	}
	return e, nil
}

// decide is Envoy's RBAC filter on q: the shadow engine's result goes to
// st's dynamic metadata under namespace ns (when st is not nil), then the
// enforced engine decides; LOG leaves envoy.common/access_log_hint. It
// returns whether q may go on and the enforced engine's matched policy.
func (e *Engines) decide(q *Request, st *filter.State, ns string) (bool, string) {
	if e.Shadow != nil {
		allowed, id := e.Shadow.Allowed(q)
		if st != nil {
			if id != "" {
				st.SetMetadata(ns, e.ShadowStatPrefix+shadowPolicyIDKey, id)
			}
			res := shadowResultDenied
			if allowed {
				res = shadowResultAllowed
			}
			st.SetMetadata(ns, e.ShadowStatPrefix+shadowEngineResult, res)
			q.Metadata = st.Metadata
		}
	}
	if e.Rules == nil {
		return true, ""
	}
	allowed, id := e.Rules.Allowed(q)
	if e.Rules.Action == Log && st != nil {
		st.SetMetadata(commonMetadataNS, accessLogHintKey, id != "")
	}
	return allowed, id
}

// Config is the parsed envoy.extensions.filters.http.rbac.v3.RBAC (or a
// route's RBACPerRoute). It is immutable.
type Config struct {
	Engines
	// Disabled is a route's RBACPerRoute without rbac: the filter does
	// nothing for the route.
	Disabled bool
}

// Factory builds the HTTP RBAC filter (envoy.filters.http.rbac).
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// TypeURLs implements filter.Factory.
func (Factory) TypeURLs() []string { return []string{TypeURL, PerRouteTypeURL} }

// Parse validates an envoy.extensions.filters.http.rbac.v3.RBAC; nil is
// an empty one, which lets every request through. The matcher and
// shadow_matcher forms (Envoy's generic matcher API) are refused.
func (Factory) Parse(a *anypb.Any) (filter.Config, error) {
	var m rbachttpv3.RBAC
	if a != nil {
		if a.GetTypeUrl() != TypeURL {
			return nil, fmt.Errorf("type_url = %q: must be %s", a.GetTypeUrl(), TypeURL)
		}
		if err := a.UnmarshalTo(&m); err != nil {
			return nil, fmt.Errorf("decode RBAC: %w", err)
		}
	}
	return parseHTTP(&m)
}

// ParseOverride validates a route's RBACPerRoute: its rbac replaces the
// listener's for the route; an RBACPerRoute without rbac disables the
// filter on the route, as in Envoy.
func (Factory) ParseOverride(a *anypb.Any) (filter.Config, error) {
	if a.GetTypeUrl() != PerRouteTypeURL {
		return nil, fmt.Errorf("type_url = %q: must be %s", a.GetTypeUrl(), PerRouteTypeURL)
	}
	var m rbachttpv3.RBACPerRoute
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode RBACPerRoute: %w", err)
	}
	if m.GetRbac() == nil {
		return &Config{Disabled: true}, nil
	}
	c, err := parseHTTP(m.GetRbac())
	if err != nil {
		return nil, fmt.Errorf("rbac.%w", err)
	}
	return c, nil
}

func parseHTTP(m *rbachttpv3.RBAC) (*Config, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("violates Envoy's constraints: %w", err)
	}
	if m.GetMatcher() != nil {
		return nil, fmt.Errorf("matcher: not supported (use rules)")
	}
	if m.GetShadowMatcher() != nil {
		return nil, fmt.Errorf("shadow_matcher: not supported (use shadow_rules)")
	}
	e, err := newEngines(m.GetRules(), m.GetShadowRules(), m.GetShadowRulesStatPrefix())
	if err != nil {
		return nil, err
	}
	return &Config{Engines: e}, nil
}

// Build implements filter.Factory.
func (Factory) Build(cfg filter.Config, _ filter.Deps) (filter.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("rbac: config %T", cfg)
	}
	return &httpFilter{cfg: c}, nil
}

// httpFilter is Envoy's RoleBasedAccessControlFilter: it evaluates the
// shadow engine (recording its result in the request's dynamic metadata
// under envoy.filters.http.rbac) and then the enforced one, answering
// 403 "RBAC: access denied" when it denies.
type httpFilter struct{ cfg *Config }

func (f *httpFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	st := filter.StateFrom(r)
	cfg := f.cfg
	if st != nil {
		if o, ok := st.Override.(*Config); ok {
			cfg = o
		}
	}
	if cfg.Disabled || (cfg.Rules == nil && cfg.Shadow == nil) {
		next.ServeHTTP(w, r)
		return
	}
	// The facts escape into the matchers' interface calls: pooled, so a
	// request costs no allocation for them.
	q := requestPool.Get().(*Request)
	*q = HTTPRequest(r, st)
	allowed, id := cfg.decide(q, st, Name)
	*q = Request{}
	requestPool.Put(q)
	if !allowed {
		// Envoy's denial: 403 "RBAC: access denied", or grpc-status 7
		// (PERMISSION_DENIED) for a gRPC client.
		code, n := filter.LocalReply(w, r, http.StatusForbidden, -1, DeniedBody)
		if st != nil {
			st.ReplyCode, st.ReplyDetails, st.ReplyBytes = code, DeniedDetails(id), n
		}
		return
	}
	next.ServeHTTP(w, r)
}

var requestPool = sync.Pool{New: func() any { return new(Request) }}

// HTTPRequest gathers the facts Envoy's RBAC reads of r: its normalized
// path, the connection's addresses, SNI and TLS session (from the
// listener's filter.Connection, else net/http's view), the trusted client
// address under st's X-Forwarded-For settings, and st's dynamic metadata.
// st may be nil.
func HTTPRequest(r *http.Request, st *filter.State) Request {
	src, dst := filter.RequestAddresses(r)
	q := Request{R: r, Path: NormalizePath(matcher.RequestPath(r)), Source: src, Destination: dst}
	if c := filter.RequestConnection(r); c != nil {
		q.ServerName, q.TLS = c.ServerName, c.TLS
	} else if r.TLS != nil {
		q.ServerName, q.TLS = r.TLS.ServerName, r.TLS
	}
	var x filter.XFF
	if st != nil {
		x, q.Metadata = st.XFF, st.Metadata
	}
	q.Remote = filter.TrustedClientAddress(r, src.Addr(), x)
	return q
}
