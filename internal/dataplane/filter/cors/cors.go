package cors

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/matcher"
)

// Name is the filter's Envoy name, the key of its typed_per_filter_config.
const Name = "envoy.filters.http.cors"

// Type URLs: the filter's config, and the two CorsPolicy messages a route
// may carry (the route package's, and the filter's own).
const (
	TypeURL            = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
	PolicyTypeURL      = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
	RoutePolicyTypeURL = "type.googleapis.com/envoy.config.route.v3.CorsPolicy"
)

// Policy is a parsed CorsPolicy (a route's, virtual host's or route
// configuration's override; the most specific wins).
type Policy struct {
	AllowOrigins  []matcher.String // allow_origin_string_match
	AllowMethods  string           // Access-Control-Allow-Methods, as configured
	AllowHeaders  string
	ExposeHeaders string
	MaxAge        string // seconds, as configured
	// AllowCredentials sends Access-Control-Allow-Credentials: true.
	AllowCredentials bool
	// EnabledPerMillion is filter_enabled's default_value, in millionths;
	// unset is all requests.
	EnabledPerMillion uint32
	// ForwardNotMatchingPreflights passes a preflight from an origin that
	// is not allowed on upstream (default true); false answers it 200
	// without Access-Control-Allow-Origin.
	ForwardNotMatchingPreflights bool
	// AllowPrivateNetworkAccess answers Access-Control-Request-Private-Network.
	AllowPrivateNetworkAccess bool

	// allowAny: a matcher of AllowOrigins matches the literal "*", so
	// every origin is allowed (decided once, when the policy is built).
	allowAny bool
}

// Config is the HCM-level Cors: empty.
type Config struct{}

// Factory is the filter.Factory of the CORS filter.
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// TypeURLs implements filter.Factory.
func (Factory) TypeURLs() []string { return []string{TypeURL, PolicyTypeURL, RoutePolicyTypeURL} }

// Parse implements filter.Factory: the HCM-level Cors, nil or empty.
func (Factory) Parse(cfg *anypb.Any) (filter.Config, error) {
	if cfg == nil {
		return &Config{}, nil
	}
	if cfg.GetTypeUrl() != TypeURL {
		return nil, fmt.Errorf("type_url %q: must be %s", cfg.GetTypeUrl(), TypeURL)
	}
	var m corsv3.Cors
	if err := cfg.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode Cors: %w", err)
	}
	return &Config{}, nil
}

// policyProto is what both CorsPolicy messages have.
type policyProto interface {
	GetAllowOriginStringMatch() []*matcherv3.StringMatcher
	GetAllowMethods() string
	GetAllowHeaders() string
	GetExposeHeaders() string
	GetMaxAge() string
	GetAllowCredentials() *wrapperspb.BoolValue
	GetFilterEnabled() *corev3.RuntimeFractionalPercent
	GetAllowPrivateNetworkAccess() *wrapperspb.BoolValue
	GetForwardNotMatchingPreflights() *wrapperspb.BoolValue
}

// ParseOverride implements filter.Factory: a CorsPolicy of either package.
func (Factory) ParseOverride(cfg *anypb.Any) (filter.Config, error) {
	var m policyProto
	switch cfg.GetTypeUrl() {
	case PolicyTypeURL:
		var p corsv3.CorsPolicy
		if err := cfg.UnmarshalTo(&p); err != nil {
			return nil, fmt.Errorf("decode CorsPolicy: %w", err)
		}
		m = &p
	case RoutePolicyTypeURL:
		var p routev3.CorsPolicy
		if err := cfg.UnmarshalTo(&p); err != nil {
			return nil, fmt.Errorf("decode CorsPolicy: %w", err)
		}
		m = &p
	default:
		return nil, fmt.Errorf("type_url %q: must be %s or %s", cfg.GetTypeUrl(), PolicyTypeURL, RoutePolicyTypeURL)
	}
	return parsePolicy(m)
}

func parsePolicy(m policyProto) (*Policy, error) {
	p := &Policy{
		AllowMethods: m.GetAllowMethods(), AllowHeaders: m.GetAllowHeaders(),
		ExposeHeaders: m.GetExposeHeaders(), MaxAge: m.GetMaxAge(),
		AllowCredentials:             m.GetAllowCredentials().GetValue(),
		AllowPrivateNetworkAccess:    m.GetAllowPrivateNetworkAccess().GetValue(),
		ForwardNotMatchingPreflights: m.GetForwardNotMatchingPreflights() == nil || m.GetForwardNotMatchingPreflights().GetValue(),
		EnabledPerMillion:            1_000_000,
	}
	for _, v := range []struct{ path, val string }{
		{"allow_methods", p.AllowMethods}, {"allow_headers", p.AllowHeaders},
		{"expose_headers", p.ExposeHeaders}, {"max_age", p.MaxAge},
	} {
		if strings.ContainsAny(v.val, "\r\n\x00") {
			return nil, fmt.Errorf("%s = %q: must not contain CR, LF or NUL", v.path, v.val)
		}
	}
	if p.MaxAge != "" && strings.Trim(p.MaxAge, "0123456789") != "" {
		return nil, fmt.Errorf("max_age = %q: must be a number of seconds", p.MaxAge)
	}
	for i, sm := range m.GetAllowOriginStringMatch() {
		om, err := matcher.NewString(sm)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match[%d].%w", i, err)
		}
		p.AllowOrigins = append(p.AllowOrigins, om)
		p.allowAny = p.allowAny || om.Match("*")
	}
	if fe := m.GetFilterEnabled(); fe != nil {
		n, err := perMillion("filter_enabled.default_value", fe.GetDefaultValue())
		if err != nil {
			return nil, err
		}
		p.EnabledPerMillion = n
	}
	return p, nil
}

func perMillion(path string, f *typev3.FractionalPercent) (uint32, error) {
	if f == nil {
		return 0, nil
	}
	var mul uint32
	switch f.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		mul = 10_000
	case typev3.FractionalPercent_TEN_THOUSAND:
		mul = 100
	case typev3.FractionalPercent_MILLION:
		mul = 1
	default:
		return 0, fmt.Errorf("%s.denominator = %q: must be HUNDRED, TEN_THOUSAND or MILLION", path, f.GetDenominator())
	}
	return uint32(min(uint64(f.GetNumerator())*uint64(mul), 1_000_000)), nil
}

// Build implements filter.Factory.
func (Factory) Build(cfg filter.Config, _ filter.Deps) (filter.Filter, error) {
	if _, ok := cfg.(*Config); !ok {
		return nil, fmt.Errorf("cors: config is %T, want *cors.Config", cfg)
	}
	return corsFilter{}, nil
}

type corsFilter struct{}

func (p *Policy) enabled() bool {
	return p.EnabledPerMillion >= 1_000_000 || uint32(rand.Uint64()%1_000_000) < p.EnabledPerMillion
}

// originAllowed is Envoy's isOriginAllowed: a matcher that matches o, or
// that matches the literal "*" (so that an exact "*", a prefix "*" or a
// regex ".*" allows every origin), allows it.
func (p *Policy) originAllowed(o string) bool {
	if p.allowAny {
		return true
	}
	for i := range p.AllowOrigins {
		if p.AllowOrigins[i].Match(o) {
			return true
		}
	}
	return false
}

// ServeHTTP implements Envoy's CorsFilter (cors_filter.cc): without a
// policy, when the policy is not enabled for this request, or for a request
// without Origin, it does nothing.
//
// A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
// answered locally with 200 and details "cors_response", unless its origin
// is not allowed and forward_not_matching_preflights is true (the default;
// Istio's unmatchedPreflights FORWARD), in which case it goes upstream. The
// local answer carries Access-Control-Allow-Origin (the request's origin,
// only when allowed), -Allow-Credentials, -Allow-Methods (allow_methods "*"
// echoes the requested method), -Allow-Headers (allow_headers "*" echoes
// Access-Control-Request-Headers), -Max-Age and -Allow-Private-Network.
//
// Any other request from an allowed origin gets Access-Control-Allow-Origin,
// -Allow-Credentials and -Expose-Headers on its response, set over the
// upstream's own headers of those names (Envoy's encodeHeaders setInline),
// and on local replies of later filters and the router.
func (corsFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	st := filter.StateFrom(r)
	var p *Policy
	if st != nil {
		p, _ = st.Override.(*Policy)
	}
	origin := r.Header.Get("Origin")
	if p == nil || origin == "" || !p.enabled() {
		next.ServeHTTP(w, r)
		return
	}
	allowed := p.originAllowed(origin)
	reqMethod := r.Header.Get("Access-Control-Request-Method")
	if r.Method == http.MethodOptions && reqMethod != "" {
		if !allowed && p.ForwardNotMatchingPreflights {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		if allowed {
			h["Access-Control-Allow-Origin"] = []string{origin}
		}
		if p.AllowCredentials {
			h["Access-Control-Allow-Credentials"] = []string{"true"}
		}
		switch p.AllowMethods {
		case "":
		case "*":
			h["Access-Control-Allow-Methods"] = []string{reqMethod}
		default:
			h["Access-Control-Allow-Methods"] = []string{p.AllowMethods}
		}
		switch p.AllowHeaders {
		case "":
		case "*":
			if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
				h["Access-Control-Allow-Headers"] = []string{rh}
			}
		default:
			h["Access-Control-Allow-Headers"] = []string{p.AllowHeaders}
		}
		if p.MaxAge != "" {
			h["Access-Control-Max-Age"] = []string{p.MaxAge}
		}
		if p.AllowPrivateNetworkAccess && r.Header.Get("Access-Control-Request-Private-Network") == "true" {
			h["Access-Control-Allow-Private-Network"] = []string{"true"}
		}
		reply(w, st)
		return
	}
	if allowed {
		set := http.Header{"Access-Control-Allow-Origin": {origin}}
		if p.AllowCredentials {
			set["Access-Control-Allow-Credentials"] = []string{"true"}
		}
		if p.ExposeHeaders != "" {
			set["Access-Control-Expose-Headers"] = []string{p.ExposeHeaders}
		}
		h := w.Header()
		for k, v := range set {
			h[k] = v
		}
		if st != nil {
			if st.ResponseHeaders == nil {
				st.ResponseHeaders = set
			} else {
				for k, v := range set {
					st.ResponseHeaders[k] = v
				}
			}
		}
	}
	next.ServeHTTP(w, r)
}

// reply answers a preflight locally: 200, no body.
func reply(w http.ResponseWriter, st *filter.State) {
	w.Header()["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusOK)
	if st != nil {
		st.ReplyCode, st.ReplyDetails, st.ReplyBytes = http.StatusOK, "cors_response", 0
	}
}
