package rbac

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/netip"
	"slices"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/loom-mesh/loom/internal/dataplane/matcher"
)

// Action is an RBAC engine's action (envoy.config.rbac.v3.RBAC.Action).
type Action uint8

// Actions.
const (
	// Allow lets a request through when a policy matches.
	Allow Action = iota
	// Deny refuses a request when a policy matches.
	Deny
	// Log lets every request through and marks those a policy matches
	// for the access log (Istio's AUDIT).
	Log
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "ALLOW"
	case Deny:
		return "DENY"
	}
	return "LOG"
}

// Request is what an engine decides on: one HTTP request, or one
// connection (R nil; header, path and request metadata matchers then see
// nothing). Fill it once per request with the facts Envoy's matchers read.
type Request struct {
	// R is the HTTP request; nil for a connection.
	R *http.Request
	// Path is the :path the url_path, uri_template and ":path" header
	// matchers read: R's path normalized as Istio's default (Envoy's
	// normalize_path), with its query.
	Path string
	// Source is the peer's address (source_ip, direct_remote_ip);
	// Remote is the trusted client address (remote_ip): the peer, or for
	// HTTP the address X-Forwarded-For gives (filter.TrustedClientAddress).
	Source netip.AddrPort
	Remote netip.Addr
	// Destination is the address the peer connected to (destination_ip,
	// destination_port).
	Destination netip.AddrPort
	// ServerName is the TLS SNI, "" for none (requested_server_name).
	ServerName string
	// TLS is the downstream TLS session, nil for plaintext
	// (authenticated).
	TLS *tls.ConnectionState
	// Metadata is the dynamic metadata of the request or connection
	// (metadata matchers): the JWT payload under
	// envoy.filters.http.jwt_authn, for one.
	Metadata matcher.Metadata
}

// header returns the value of a header matcher's (canonical) name.
func (q *Request) header(name string) (string, bool) {
	if q.R == nil {
		return "", false
	}
	if name == ":path" {
		return q.Path, true
	}
	return matcher.HeaderValue(q.R, name)
}

// Engine is a compiled envoy.config.rbac.v3.RBAC. It is immutable and
// safe for concurrent use.
type Engine struct {
	Action   Action
	policies []policy // sorted by name, as Envoy's std::map
}

type policy struct {
	name        string
	permissions []permission // any
	principals  []principal  // any
}

// NewEngine compiles r. It fails on what Envoy would refuse and on the
// parts Loom does not implement (CEL conditions, audit loggers, generic
// and custom matchers, filter state); the error names the field, as
// `policies["p"].permissions[0].header.name: must not be empty`.
func NewEngine(r *rbacv3.RBAC) (*Engine, error) {
	e := &Engine{}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		e.Action = Allow
	case rbacv3.RBAC_DENY:
		e.Action = Deny
	case rbacv3.RBAC_LOG:
		e.Action = Log
	default:
		return nil, fmt.Errorf("action = %q: must be ALLOW, DENY or LOG", r.GetAction())
	}
	if r.GetAuditLoggingOptions() != nil {
		return nil, fmt.Errorf("audit_logging_options: not supported")
	}
	names := make([]string, 0, len(r.GetPolicies()))
	for n := range r.GetPolicies() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := r.GetPolicies()[n]
		path := fmt.Sprintf("policies[%q]", n)
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil || p.GetCelConfig() != nil {
			return nil, fmt.Errorf("%s.condition: not supported", path)
		}
		if len(p.GetPermissions()) == 0 || len(p.GetPrincipals()) == 0 {
			return nil, fmt.Errorf("%s: must have at least one permission and one principal", path)
		}
		pol := policy{name: n}
		for i, pm := range p.GetPermissions() {
			m, err := newPermission(pm)
			if err != nil {
				return nil, fmt.Errorf("%s.permissions[%d].%w", path, i, err)
			}
			pol.permissions = append(pol.permissions, m)
		}
		for i, pr := range p.GetPrincipals() {
			m, err := newPrincipal(pr)
			if err != nil {
				return nil, fmt.Errorf("%s.principals[%d].%w", path, i, err)
			}
			pol.principals = append(pol.principals, m)
		}
		e.policies = append(e.policies, pol)
	}
	return e, nil
}

// Match returns the name of the first policy, in name order, that q
// matches (Envoy's effective policy ID), and whether there is one. A
// policy matches when one of its permissions and one of its principals do.
func (e *Engine) Match(q *Request) (string, bool) {
	for i := range e.policies {
		p := &e.policies[i]
		if anyPermission(p.permissions, q) && anyPrincipal(p.principals, q) {
			return p.name, true
		}
	}
	return "", false
}

// Allowed applies the engine's action to q, as Envoy's
// RoleBasedAccessControlEngineImpl::handleAction: ALLOW lets q through
// when a policy matches, DENY when none does, LOG always. It returns the
// matched policy's name ("" for none).
func (e *Engine) Allowed(q *Request) (allowed bool, policy string) {
	name, matched := e.Match(q)
	switch e.Action {
	case Allow:
		return matched, name
	case Deny:
		return !matched, name
	}
	return true, name
}

func anyPermission(ps []permission, q *Request) bool {
	for _, p := range ps {
		if p.match(q) {
			return true
		}
	}
	return false
}

func anyPrincipal(ps []principal, q *Request) bool {
	for _, p := range ps {
		if p.match(q) {
			return true
		}
	}
	return false
}

// permission and principal are compiled Permission and Principal rules.
type permission interface{ match(q *Request) bool }
type principal interface{ match(q *Request) bool }

type (
	matchAny   struct{}
	andRules   []permission
	orRules    []permission
	notRule    struct{ p permission }
	andIDs     []principal
	orIDs      []principal
	notID      struct{ p principal }
	headerRule struct{ h matcher.Header }
	pathRule   struct{ s matcher.String }
	template   struct{ t *matcher.URITemplate }
	destIP     struct{ p netip.Prefix }
	destPort   struct{ port uint16 }
	portRange  struct{ start, end int32 }
	metadata   struct{ m matcher.MetadataMatch }
	sniRule    struct{ s matcher.String }
	// authenticated matches a TLS peer whose certificate's URI SANs, DNS
	// SANs or subject match; with no name, any TLS connection.
	authenticated struct {
		s   matcher.String
		any bool
	}
	sourceIP struct{ p netip.Prefix } // source_ip and direct_remote_ip
	remoteIP struct{ p netip.Prefix }
)

func (matchAny) match(*Request) bool { return true }

func (a andRules) match(q *Request) bool {
	for _, p := range a {
		if !p.match(q) {
			return false
		}
	}
	return true
}

func (o orRules) match(q *Request) bool {
	for _, p := range o {
		if p.match(q) {
			return true
		}
	}
	return false
}

func (n notRule) match(q *Request) bool { return !n.p.match(q) }

func (a andIDs) match(q *Request) bool {
	for _, p := range a {
		if !p.match(q) {
			return false
		}
	}
	return true
}

func (o orIDs) match(q *Request) bool {
	for _, p := range o {
		if p.match(q) {
			return true
		}
	}
	return false
}

func (n notID) match(q *Request) bool { return !n.p.match(q) }

func (h *headerRule) match(q *Request) bool {
	v, ok := q.header(h.h.Name)
	return h.h.MatchValue(v, ok)
}

// pathRule is url_path: the path without query and fragment; a
// connection has none and never matches.
func (p *pathRule) match(q *Request) bool {
	return q.R != nil && p.s.Match(matcher.StripQuery(q.Path))
}

func (t template) match(q *Request) bool { return q.R != nil && t.t.Match(q.Path) }

func (d destIP) match(q *Request) bool { return matcher.CIDRContains(d.p, q.Destination.Addr()) }

func (d destPort) match(q *Request) bool { return q.Destination.Port() == d.port }

func (r portRange) match(q *Request) bool {
	p := int32(q.Destination.Port())
	return r.start <= p && p < r.end
}

func (m *metadata) match(q *Request) bool { return m.m.Match(q.Metadata) }

func (s *sniRule) match(q *Request) bool { return s.s.Match(q.ServerName) }

// match is Envoy's AuthenticatedMatcher: no TLS never matches; otherwise
// any of the peer certificate's URI SANs, then DNS SANs, then its subject
// (RFC 2253, "" without a certificate).
func (a *authenticated) match(q *Request) bool {
	if q.TLS == nil {
		return false
	}
	if a.any {
		return true
	}
	if len(q.TLS.PeerCertificates) == 0 {
		return a.s.Match("")
	}
	leaf := q.TLS.PeerCertificates[0]
	for _, u := range leaf.URIs {
		if a.s.Match(u.String()) {
			return true
		}
	}
	for _, d := range leaf.DNSNames {
		if a.s.Match(d) {
			return true
		}
	}
	return a.s.Match(leaf.Subject.String())
}

func (s sourceIP) match(q *Request) bool { return matcher.CIDRContains(s.p, q.Source.Addr()) }

func (r remoteIP) match(q *Request) bool { return matcher.CIDRContains(r.p, q.Remote) }

func newPermission(p *rbacv3.Permission) (permission, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			return nil, fmt.Errorf("any: must be true")
		}
		return matchAny{}, nil
	case *rbacv3.Permission_AndRules:
		var out andRules
		for i, e := range r.AndRules.GetRules() {
			m, err := newPermission(e)
			if err != nil {
				return nil, fmt.Errorf("and_rules.rules[%d].%w", i, err)
			}
			out = append(out, m)
		}
		return out, nil
	case *rbacv3.Permission_OrRules:
		var out orRules
		for i, e := range r.OrRules.GetRules() {
			m, err := newPermission(e)
			if err != nil {
				return nil, fmt.Errorf("or_rules.rules[%d].%w", i, err)
			}
			out = append(out, m)
		}
		return out, nil
	case *rbacv3.Permission_NotRule:
		m, err := newPermission(r.NotRule)
		if err != nil {
			return nil, fmt.Errorf("not_rule.%w", err)
		}
		return notRule{m}, nil
	case *rbacv3.Permission_Header:
		h, err := matcher.NewHeader(r.Header)
		if err != nil {
			return nil, fmt.Errorf("header.%w", err)
		}
		return &headerRule{h}, nil
	case *rbacv3.Permission_UrlPath:
		s, err := newPath(r.UrlPath.GetPath())
		if err != nil {
			return nil, fmt.Errorf("url_path.%w", err)
		}
		return s, nil
	case *rbacv3.Permission_DestinationIp:
		c, err := matcher.NewCIDR(r.DestinationIp)
		if err != nil {
			return nil, fmt.Errorf("destination_ip.%w", err)
		}
		return destIP{c}, nil
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort > 65535 {
			return nil, fmt.Errorf("destination_port = \"%d\": must be 0-65535", r.DestinationPort)
		}
		return destPort{uint16(r.DestinationPort)}, nil
	case *rbacv3.Permission_DestinationPortRange:
		return portRange{r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()}, nil
	case *rbacv3.Permission_Metadata:
		m, err := matcher.NewMetadata(r.Metadata)
		if err != nil {
			return nil, fmt.Errorf("metadata.%w", err)
		}
		return &metadata{m}, nil
	case *rbacv3.Permission_SourcedMetadata:
		m, err := sourcedMetadata(r.SourcedMetadata)
		if err != nil {
			return nil, err
		}
		return m, nil
	case *rbacv3.Permission_RequestedServerName:
		s, err := matcher.NewString(r.RequestedServerName)
		if err != nil {
			return nil, fmt.Errorf("requested_server_name.%w", err)
		}
		return &sniRule{s}, nil
	case *rbacv3.Permission_UriTemplate:
		var cfg uritemplatev3.UriTemplateMatchConfig
		if err := r.UriTemplate.GetTypedConfig().UnmarshalTo(&cfg); err != nil {
			return nil, fmt.Errorf("uri_template.typed_config: must be %s: %v", uriTemplateTypeURL, err)
		}
		t, err := matcher.NewURITemplate(cfg.GetPathTemplate())
		if err != nil {
			return nil, fmt.Errorf("uri_template.typed_config.%w", err)
		}
		return template{t}, nil
	case *rbacv3.Permission_Matcher:
		return nil, fmt.Errorf("matcher: not supported")
	}
	return nil, fmt.Errorf("rule: must be set")
}

const uriTemplateTypeURL = "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"

func newPrincipal(p *rbacv3.Principal) (principal, error) {
	//nolint:staticcheck // source_ip is deprecated but still sent.
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !r.Any {
			return nil, fmt.Errorf("any: must be true")
		}
		return matchAny{}, nil
	case *rbacv3.Principal_AndIds:
		var out andIDs
		for i, e := range r.AndIds.GetIds() {
			m, err := newPrincipal(e)
			if err != nil {
				return nil, fmt.Errorf("and_ids.ids[%d].%w", i, err)
			}
			out = append(out, m)
		}
		return out, nil
	case *rbacv3.Principal_OrIds:
		var out orIDs
		for i, e := range r.OrIds.GetIds() {
			m, err := newPrincipal(e)
			if err != nil {
				return nil, fmt.Errorf("or_ids.ids[%d].%w", i, err)
			}
			out = append(out, m)
		}
		return out, nil
	case *rbacv3.Principal_NotId:
		m, err := newPrincipal(r.NotId)
		if err != nil {
			return nil, fmt.Errorf("not_id.%w", err)
		}
		return notID{m}, nil
	case *rbacv3.Principal_Authenticated_:
		if r.Authenticated.GetPrincipalName() == nil {
			return &authenticated{any: true}, nil
		}
		s, err := matcher.NewString(r.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, fmt.Errorf("authenticated.principal_name.%w", err)
		}
		return &authenticated{s: s}, nil
	case *rbacv3.Principal_SourceIp:
		c, err := matcher.NewCIDR(r.SourceIp)
		if err != nil {
			return nil, fmt.Errorf("source_ip.%w", err)
		}
		return sourceIP{c}, nil
	case *rbacv3.Principal_DirectRemoteIp:
		c, err := matcher.NewCIDR(r.DirectRemoteIp)
		if err != nil {
			return nil, fmt.Errorf("direct_remote_ip.%w", err)
		}
		return sourceIP{c}, nil
	case *rbacv3.Principal_RemoteIp:
		c, err := matcher.NewCIDR(r.RemoteIp)
		if err != nil {
			return nil, fmt.Errorf("remote_ip.%w", err)
		}
		return remoteIP{c}, nil
	case *rbacv3.Principal_Header:
		h, err := matcher.NewHeader(r.Header)
		if err != nil {
			return nil, fmt.Errorf("header.%w", err)
		}
		return &headerRule{h}, nil
	case *rbacv3.Principal_UrlPath:
		s, err := newPath(r.UrlPath.GetPath())
		if err != nil {
			return nil, fmt.Errorf("url_path.%w", err)
		}
		return s, nil
	case *rbacv3.Principal_Metadata:
		m, err := matcher.NewMetadata(r.Metadata)
		if err != nil {
			return nil, fmt.Errorf("metadata.%w", err)
		}
		return &metadata{m}, nil
	case *rbacv3.Principal_SourcedMetadata:
		m, err := sourcedMetadata(r.SourcedMetadata)
		if err != nil {
			return nil, err
		}
		return m, nil
	case *rbacv3.Principal_FilterState:
		return nil, fmt.Errorf("filter_state: not supported")
	case *rbacv3.Principal_Custom:
		return nil, fmt.Errorf("custom: not supported")
	}
	return nil, fmt.Errorf("identifier: must be set")
}

// newPath compiles a url_path matcher's path (PathMatcher.path).
func newPath(m *matcherv3.StringMatcher) (*pathRule, error) {
	if m == nil {
		return nil, fmt.Errorf("path: must be set")
	}
	s, err := matcher.NewString(m)
	if err != nil {
		return nil, fmt.Errorf("path.%w", err)
	}
	return &pathRule{s}, nil
}

// sourcedMetadata compiles a SourcedMetadata rule whose source is the
// dynamic metadata (the default); route metadata is not supported.
func sourcedMetadata(sm *rbacv3.SourcedMetadata) (*metadata, error) {
	if sm.GetMetadataSource() != rbacv3.MetadataSource_DYNAMIC {
		return nil, fmt.Errorf("sourced_metadata.metadata_source = %q: must be DYNAMIC", sm.GetMetadataSource())
	}
	m, err := matcher.NewMetadata(sm.GetMetadataMatcher())
	if err != nil {
		return nil, fmt.Errorf("sourced_metadata.metadata_matcher.%w", err)
	}
	return &metadata{m}, nil
}
