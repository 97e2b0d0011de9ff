package jwtauthn

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// Name is the filter's Envoy name: the key of its typed_per_filter_config
// and the dynamic metadata namespace of the payloads it verifies.
const Name = "envoy.filters.http.jwt_authn"

// TypeURL is the type URL of JwtAuthentication; PerRouteTypeURL of its
// per-route override.
const (
	TypeURL         = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
	PerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"
)

// DefaultClockSkew is Envoy's clock_skew_seconds default: exp and nbf are
// checked this much leniently.
const DefaultClockSkew = 60 * time.Second

// Config is a parsed JwtAuthentication. It is immutable and safe for
// concurrent use.
type Config struct {
	// Providers by name.
	Providers map[string]*Provider
	// Rules are tried in order; the first whose match applies gives the
	// request's requirement. A request no rule matches is not checked.
	Rules []Rule
	// RequirementMap holds the named requirements routes refer to with a
	// PerRouteConfig requirement_name (and rules with requirement_name).
	RequirementMap map[string]*Requirement
	// BypassCorsPreflight lets a CORS preflight (OPTIONS with Origin and
	// Access-Control-Request-Method) through unchecked.
	BypassCorsPreflight bool
	// StripFailureResponse leaves the www-authenticate header out of a
	// failure reply.
	StripFailureResponse bool

	// ordered are the providers sorted by name.
	ordered []*Provider
	// sanitize are the headers every provider writes (forward payload and
	// claim headers), removed from every request first so a client cannot
	// pose as a verified token.
	sanitize []string
	// now is the clock; time.Now outside tests.
	now func() time.Time
}

// Provider is one JwtProvider.
type Provider struct {
	Name string
	// Issuer a token's iss must equal; empty accepts any issuer.
	Issuer string
	// Audiences of which a token's aud must have one; empty accepts any.
	Audiences []string
	// Keys is the provider's parsed local_jwks.
	Keys *KeySet
	// Forward keeps a verified token in its header; otherwise the header
	// it came in is removed before the request goes upstream.
	Forward bool
	// Locations are from_headers, from_params and from_cookies, or when
	// none is set Envoy's defaults: "Authorization: Bearer <token>" and the
	// access_token query parameter.
	Locations []Location
	// ForwardPayloadHeader, when set, gets the verified payload, base64url
	// encoded (padded when PadForwardPayloadHeader).
	ForwardPayloadHeader    string
	PadForwardPayloadHeader bool
	// PayloadInMetadata, when set, is the key the verified payload gets in
	// the filter's dynamic metadata namespace.
	PayloadInMetadata string
	// SpaceDelimitedClaims are the claims split on spaces into lists in
	// the metadata payload (normalize_payload_in_metadata).
	SpaceDelimitedClaims []string
	// ClaimToHeaders copy claims to request headers.
	ClaimToHeaders []ClaimToHeader
	// ClockSkew is clock_skew_seconds, DefaultClockSkew when zero.
	ClockSkew time.Duration
	// ClearRouteCache is clear_route_cache: once a token of this provider
	// verified and it added a ClaimToHeaders header or set
	// PayloadInMetadata, the request's route is matched again (Envoy's
	// rule), so routes can match on its claims. Istio sets it on gateways.
	ClearRouteCache bool

	ext *extractor // the provider's own locations
}

// LocationKind says where a token is looked for.
type LocationKind uint8

// The token locations.
const (
	LocationHeader LocationKind = iota
	LocationParam
	LocationCookie
)

// Location is one place a provider takes tokens from.
type Location struct {
	Kind LocationKind
	// Name is the header (canonical form), query parameter or cookie.
	Name string
	// Prefix is a header's value_prefix: the token is what follows it.
	Prefix string
}

func (l Location) key() string {
	return strconv.Itoa(int(l.Kind)) + "\x00" + l.Name + "\x00" + l.Prefix
}

// ClaimToHeader is one JwtClaimToHeader: the claim at Path (claim_name
// split on ".", or claim_path) copied to Header.
type ClaimToHeader struct {
	Header string // canonical form
	Path   []string
}

// Rule is one RequirementRule with the match forms Istio and Envoy's docs
// use: prefix, path and path_separated_prefix, case sensitive or not.
type Rule struct {
	Prefix, Path, PathSeparatedPrefix string
	CaseInsensitive                   bool
	// Requirement is nil for a rule with neither requires nor
	// requirement_name: requests it matches are not checked.
	Requirement *Requirement
}

func (r *Rule) matches(path string) bool {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	eq, hasPrefix := strings.EqualFold, func(s, p string) bool {
		return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p)
	}
	if !r.CaseInsensitive {
		eq, hasPrefix = func(a, b string) bool { return a == b }, strings.HasPrefix
	}
	switch {
	case r.Path != "":
		return eq(path, r.Path)
	case r.PathSeparatedPrefix != "":
		p := r.PathSeparatedPrefix
		return hasPrefix(path, p) && (len(path) == len(p) || path[len(p)] == '/')
	}
	return hasPrefix(path, r.Prefix)
}

// RequirementKind is the type of a JwtRequirement.
type RequirementKind uint8

// The requirement types of JwtRequirement.
const (
	RequireAllowAll RequirementKind = iota // requires_type unset
	RequireProvider                        // provider_name, provider_and_audiences
	RequireAny                             // requires_any
	RequireAll                             // requires_all
	RequireAllowMissing
	RequireAllowMissingOrFailed
)

// Requirement is a JwtRequirement.
type Requirement struct {
	Kind RequirementKind
	// Provider and, for provider_and_audiences, the Audiences that replace
	// the provider's.
	Provider  *Provider
	Audiences []string
	// Children of requires_any (without its allow_missing and
	// allow_missing_or_failed items, which set the flags below) and of
	// requires_all.
	Children             []*Requirement
	AllowMissing         bool
	AllowMissingOrFailed bool

	// all is, for RequireAllowMissing and RequireAllowMissingOrFailed,
	// every provider's locations.
	all *extractor
}

// PerRoute is a parsed PerRouteConfig.
type PerRoute struct {
	Disabled        bool
	RequirementName string
}

// Factory is the filter.Factory of the JWT authentication filter.
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// TypeURLs implements filter.Factory.
func (Factory) TypeURLs() []string { return []string{TypeURL, PerRouteTypeURL} }

// Parse implements filter.Factory. A nil cfg is an empty
// JwtAuthentication, which checks nothing.
func (Factory) Parse(cfg *anypb.Any) (filter.Config, error) {
	var m jwtv3.JwtAuthentication
	if cfg != nil {
		if cfg.GetTypeUrl() != TypeURL {
			return nil, fmt.Errorf("type_url %q: must be %s", cfg.GetTypeUrl(), TypeURL)
		}
		if err := cfg.UnmarshalTo(&m); err != nil {
			return nil, fmt.Errorf("decode JwtAuthentication: %w", err)
		}
	}
	return FromProto(&m)
}

// ParseOverride implements filter.Factory: a PerRouteConfig.
func (Factory) ParseOverride(cfg *anypb.Any) (filter.Config, error) {
	if cfg.GetTypeUrl() != PerRouteTypeURL {
		return nil, fmt.Errorf("type_url %q: must be %s", cfg.GetTypeUrl(), PerRouteTypeURL)
	}
	var m jwtv3.PerRouteConfig
	if err := cfg.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode PerRouteConfig: %w", err)
	}
	switch s := m.GetRequirementSpecifier().(type) {
	case *jwtv3.PerRouteConfig_Disabled:
		if !s.Disabled {
			return nil, errors.New("disabled = false: must be true")
		}
		return &PerRoute{Disabled: true}, nil
	case *jwtv3.PerRouteConfig_RequirementName:
		if s.RequirementName == "" {
			return nil, errors.New("requirement_name: must not be empty")
		}
		return &PerRoute{RequirementName: s.RequirementName}, nil
	}
	return nil, errors.New("requirement_specifier: one of disabled or requirement_name must be set")
}

// Build implements filter.Factory.
func (Factory) Build(cfg filter.Config, _ filter.Deps) (filter.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("jwt_authn: config is %T, want *jwtauthn.Config", cfg)
	}
	return &jwtFilter{cfg: c}, nil
}

// FromProto validates m into a Config. Errors name the field, as
// `providers["p"].remote_jwks: not supported`.
func FromProto(m *jwtv3.JwtAuthentication) (*Config, error) {
	switch {
	case len(m.GetFilterStateRules().GetRequires()) > 0 || m.GetFilterStateRules().GetName() != "":
		return nil, errors.New("filter_state_rules: not supported")
	}
	c := &Config{
		Providers:            map[string]*Provider{},
		RequirementMap:       map[string]*Requirement{},
		BypassCorsPreflight:  m.GetBypassCorsPreflight(),
		StripFailureResponse: m.GetStripFailureResponse(),
		now:                  time.Now,
	}
	names := make([]string, 0, len(m.GetProviders()))
	for n := range m.GetProviders() {
		names = append(names, n)
	}
	slices.Sort(names)
	seen := map[string]bool{}
	for _, n := range names {
		p, err := provider(n, m.GetProviders()[n])
		if err != nil {
			return nil, fmt.Errorf("providers[%q].%w", n, err)
		}
		c.Providers[n] = p
		for _, h := range append([]string{p.ForwardPayloadHeader}, claimHeaders(p)...) {
			if h != "" && !seen[h] {
				seen[h] = true
				c.sanitize = append(c.sanitize, h)
			}
		}
	}
	c.ordered = c.providerList()
	for _, p := range c.ordered {
		p.ext = newExtractor([]*Provider{p})
	}
	all := newExtractor(c.ordered)
	reqNames := make([]string, 0, len(m.GetRequirementMap()))
	for n := range m.GetRequirementMap() {
		reqNames = append(reqNames, n)
	}
	slices.Sort(reqNames)
	for _, n := range reqNames {
		r, err := c.requirement(m.GetRequirementMap()[n], all, 0)
		if err != nil {
			return nil, fmt.Errorf("requirement_map[%q]%w", n, err)
		}
		c.RequirementMap[n] = r
	}
	for i, rr := range m.GetRules() {
		r, err := c.rule(rr, all)
		if err != nil {
			return nil, fmt.Errorf("rules[%d].%w", i, err)
		}
		c.Rules = append(c.Rules, r)
	}
	return c, nil
}

func (c *Config) providerList() []*Provider {
	names := make([]string, 0, len(c.Providers))
	for n := range c.Providers {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]*Provider, len(names))
	for i, n := range names {
		out[i] = c.Providers[n]
	}
	return out
}

func claimHeaders(p *Provider) []string {
	out := make([]string, len(p.ClaimToHeaders))
	for i, ch := range p.ClaimToHeaders {
		out[i] = ch.Header
	}
	return out
}

func provider(name string, m *jwtv3.JwtProvider) (*Provider, error) {
	switch {
	case m.GetSubjects() != nil:
		return nil, errors.New("subjects: not supported")
	case m.GetRequireExpiration():
		return nil, errors.New("require_expiration: not supported")
	case m.GetMaxLifetime() != nil:
		return nil, errors.New("max_lifetime: not supported")
	case m.GetHeaderInMetadata() != "":
		return nil, errors.New("header_in_metadata: not supported")
	case m.GetFailedStatusInMetadata() != "":
		return nil, errors.New("failed_status_in_metadata: not supported")
	case m.GetRemoteJwks() != nil:
		return nil, errors.New("remote_jwks: not supported (the control plane inlines the JWKS as local_jwks)")
	case m.GetLocalJwks() == nil:
		return nil, errors.New("jwks_source_specifier: local_jwks must be set")
	case m.GetLocalJwks().GetFilename() != "" || m.GetLocalJwks().GetEnvironmentVariable() != "":
		return nil, errors.New("local_jwks: only inline_string and inline_bytes are supported")
	}
	p := &Provider{
		Name:                    name,
		Issuer:                  m.GetIssuer(),
		Audiences:               m.GetAudiences(),
		Forward:                 m.GetForward(),
		PadForwardPayloadHeader: m.GetPadForwardPayloadHeader(),
		PayloadInMetadata:       m.GetPayloadInMetadata(),
		SpaceDelimitedClaims:    m.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(),
		ClockSkew:               DefaultClockSkew,
		ClearRouteCache:         m.GetClearRouteCache(),
	}
	if s := m.GetClockSkewSeconds(); s > 0 {
		p.ClockSkew = time.Duration(s) * time.Second
	}
	jwks := m.GetLocalJwks().GetInlineString()
	if b := m.GetLocalJwks().GetInlineBytes(); len(b) > 0 {
		jwks = string(b)
	}
	// As Envoy, a key set it cannot read is not a config error: tokens of
	// this provider then fail with "Jwks doesn't have valid keys".
	p.Keys = ParseKeySet(jwks)
	if h := m.GetForwardPayloadHeader(); h != "" {
		if !validHeaderName(h) {
			return nil, fmt.Errorf("forward_payload_header = %q: must be a header name", h)
		}
		p.ForwardPayloadHeader = http.CanonicalHeaderKey(h)
	}
	for i, h := range m.GetFromHeaders() {
		if !validHeaderName(h.GetName()) {
			return nil, fmt.Errorf("from_headers[%d].name = %q: must be a header name", i, h.GetName())
		}
		p.Locations = append(p.Locations, Location{Kind: LocationHeader, Name: http.CanonicalHeaderKey(h.GetName()), Prefix: h.GetValuePrefix()})
	}
	for i, q := range m.GetFromParams() {
		if q == "" {
			return nil, fmt.Errorf("from_params[%d]: must not be empty", i)
		}
		p.Locations = append(p.Locations, Location{Kind: LocationParam, Name: q})
	}
	for i, ck := range m.GetFromCookies() {
		if ck == "" {
			return nil, fmt.Errorf("from_cookies[%d]: must not be empty", i)
		}
		p.Locations = append(p.Locations, Location{Kind: LocationCookie, Name: ck})
	}
	if len(p.Locations) == 0 {
		p.Locations = []Location{{Kind: LocationHeader, Name: "Authorization", Prefix: "Bearer "}, {Kind: LocationParam, Name: "access_token"}}
	}
	for i, ch := range m.GetClaimToHeaders() {
		if !validHeaderName(ch.GetHeaderName()) {
			return nil, fmt.Errorf("claim_to_headers[%d].header_name = %q: must be a header name", i, ch.GetHeaderName())
		}
		var path []string
		switch {
		case ch.GetClaimName() != "" && len(ch.GetClaimPath()) > 0:
			return nil, fmt.Errorf("claim_to_headers[%d]: exactly one of claim_name and claim_path must be set", i)
		case ch.GetClaimName() != "":
			path = strings.Split(ch.GetClaimName(), ".")
		case len(ch.GetClaimPath()) > 0:
			for _, s := range ch.GetClaimPath() {
				path = append(path, s.GetKey())
			}
		default:
			return nil, fmt.Errorf("claim_to_headers[%d]: exactly one of claim_name and claim_path must be set", i)
		}
		p.ClaimToHeaders = append(p.ClaimToHeaders, ClaimToHeader{Header: http.CanonicalHeaderKey(ch.GetHeaderName()), Path: path})
	}
	return p, nil
}

// validHeaderName reports whether s is an RFC 9110 token, not a
// pseudo-header.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0 {
			continue
		}
		return false
	}
	return true
}

func (c *Config) rule(rr *jwtv3.RequirementRule, all *extractor) (Rule, error) {
	m := rr.GetMatch()
	if m == nil {
		return Rule{}, errors.New("match: must be set")
	}
	var r Rule
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		r.Prefix = ps.Prefix
	case *routev3.RouteMatch_Path:
		r.Path = ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		r.PathSeparatedPrefix = ps.PathSeparatedPrefix
	default:
		return Rule{}, fmt.Errorf("match.path_specifier: %T not supported (prefix, path or path_separated_prefix)", ps)
	}
	switch {
	case len(m.GetHeaders()) > 0:
		return Rule{}, errors.New("match.headers: not supported")
	case len(m.GetQueryParameters()) > 0:
		return Rule{}, errors.New("match.query_parameters: not supported")
	case m.GetGrpc() != nil || m.GetTlsContext() != nil || len(m.GetDynamicMetadata()) > 0 || m.GetRuntimeFraction() != nil || len(m.GetFilterState()) > 0:
		return Rule{}, errors.New("match: only the path and case_sensitive are supported")
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		r.CaseInsensitive = true
	}
	switch rt := rr.GetRequirementType().(type) {
	case *jwtv3.RequirementRule_Requires:
		req, err := c.requirement(rt.Requires, all, 0)
		if err != nil {
			return Rule{}, fmt.Errorf("requires%w", err)
		}
		r.Requirement = req
	case *jwtv3.RequirementRule_RequirementName:
		req, ok := c.RequirementMap[rt.RequirementName]
		if !ok {
			return Rule{}, fmt.Errorf("requirement_name = %q: not in requirement_map", rt.RequirementName)
		}
		r.Requirement = req
	}
	return r, nil
}

// maxDepth bounds nested requirement lists.
const maxDepth = 16

// requirement converts m; errors start with the path below m (".x: ...",
// or ": ..." for m itself).
func (c *Config) requirement(m *jwtv3.JwtRequirement, all *extractor, depth int) (*Requirement, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf(": nested more than %d levels", maxDepth)
	}
	switch t := m.GetRequiresType().(type) {
	case nil:
		return &Requirement{Kind: RequireAllowAll}, nil
	case *jwtv3.JwtRequirement_ProviderName:
		p, ok := c.Providers[t.ProviderName]
		if !ok {
			return nil, fmt.Errorf(".provider_name = %q: no such provider", t.ProviderName)
		}
		return &Requirement{Kind: RequireProvider, Provider: p}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		p, ok := c.Providers[t.ProviderAndAudiences.GetProviderName()]
		if !ok {
			return nil, fmt.Errorf(".provider_and_audiences.provider_name = %q: no such provider", t.ProviderAndAudiences.GetProviderName())
		}
		return &Requirement{Kind: RequireProvider, Provider: p, Audiences: t.ProviderAndAudiences.GetAudiences()}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		r := &Requirement{Kind: RequireAny}
		for i, cm := range t.RequiresAny.GetRequirements() {
			switch cm.GetRequiresType().(type) {
			case *jwtv3.JwtRequirement_AllowMissing:
				r.AllowMissing = true
				continue
			case *jwtv3.JwtRequirement_AllowMissingOrFailed:
				r.AllowMissingOrFailed = true
				continue
			}
			ch, err := c.requirement(cm, all, depth+1)
			if err != nil {
				return nil, fmt.Errorf(".requires_any.requirements[%d]%w", i, err)
			}
			r.Children = append(r.Children, ch)
		}
		if len(t.RequiresAny.GetRequirements()) < 2 {
			return nil, errors.New(".requires_any.requirements: must have at least 2 items")
		}
		// As Envoy: an OR of only allow_missing(_or_failed) is that
		// requirement alone.
		if len(r.Children) == 0 {
			kind := RequireAllowMissing
			if r.AllowMissingOrFailed {
				kind = RequireAllowMissingOrFailed
			}
			r.Children = []*Requirement{{Kind: kind, all: all}}
		}
		return r, nil
	case *jwtv3.JwtRequirement_RequiresAll:
		r := &Requirement{Kind: RequireAll}
		if len(t.RequiresAll.GetRequirements()) < 2 {
			return nil, errors.New(".requires_all.requirements: must have at least 2 items")
		}
		for i, cm := range t.RequiresAll.GetRequirements() {
			ch, err := c.requirement(cm, all, depth+1)
			if err != nil {
				return nil, fmt.Errorf(".requires_all.requirements[%d]%w", i, err)
			}
			r.Children = append(r.Children, ch)
		}
		return r, nil
	case *jwtv3.JwtRequirement_AllowMissing:
		return &Requirement{Kind: RequireAllowMissing, all: all}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return &Requirement{Kind: RequireAllowMissingOrFailed, all: all}, nil
	default:
		return nil, fmt.Errorf(".requires_type: %T not supported", t)
	}
}
