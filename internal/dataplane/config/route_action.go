package config

import (
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// ActionKind says which of Route.action a Route has.
type ActionKind int

// Route actions (envoy.config.route.v3.Route.action).
const (
	ActionRoute          ActionKind = iota // RouteAction: forward to Clusters
	ActionRedirect                         // RedirectAction: Route.Redirect
	ActionDirectResponse                   // DirectResponseAction: Route.DirectResponse
)

// DefaultMaxDirectResponseBodyBytes is Envoy's default
// RouteConfiguration.max_direct_response_body_size_bytes.
const DefaultMaxDirectResponseBodyBytes = 4096

// DirectResponse is envoy.config.route.v3.DirectResponseAction: the proxy
// answers Status (200-599) with Body (inline_string or inline_bytes, at
// most the route configuration's max_direct_response_body_size_bytes).
type DirectResponse struct {
	Status int
	Body   string
}

// RedirectPathKind says how a Redirect changes the path.
type RedirectPathKind int

// Redirect path rewrites (RedirectAction.path_rewrite_specifier).
const (
	RedirectKeepPath RedirectPathKind = iota // the request's path
	RedirectPath                             // path_redirect
	RedirectPrefix                           // prefix_rewrite of the matched prefix
	RedirectRegex                            // regex_rewrite
)

// Redirect is envoy.config.route.v3.RedirectAction: a local reply with
// status Code (301, 302, 303, 307 or 308) and a Location built from the
// request with the fields below replaced.
type Redirect struct {
	// Scheme is scheme_redirect, or "https" for https_redirect; "" keeps
	// the request's scheme.
	Scheme string
	// Host is host_redirect; "" keeps the request's host.
	Host string
	// Port is port_redirect (1-65535); 0 keeps the port of the host.
	Port     uint32
	PathKind RedirectPathKind
	// Path is path_redirect (RedirectPath) or prefix_rewrite
	// (RedirectPrefix). A path_redirect with a "?" replaces the query too.
	Path string
	// Regex and Substitution are regex_rewrite (RedirectRegex), the
	// substitution in Go's Expand syntax.
	Regex        *regexp.Regexp
	Substitution string
	Code         int
	// StripQuery drops the request's query (strip_query).
	StripQuery bool
}

// Rewrite is what RouteAction changes in a forwarded request: the path
// (prefix_rewrite or regex_rewrite) and the authority (host_rewrite_literal).
type Rewrite struct {
	// Prefix replaces the part of the path the route matched (the prefix
	// of a prefix match, the whole path of a path or regex match); ""
	// means no prefix rewrite.
	Prefix string
	// Regex, when non-nil, replaces every match in the path (without the
	// query) with Substitution (Go's Expand syntax).
	Regex        *regexp.Regexp
	Substitution string
	// Host is host_rewrite_literal; "" keeps the authority.
	Host string
}

// MirrorPolicy is one envoy.config.route.v3.RouteAction.RequestMirrorPolicy:
// a copy of the request goes to Cluster, for the Percent of requests, with
// "-shadow" added to its host unless DisableShadowHostSuffix.
type MirrorPolicy struct {
	Cluster                 string
	Percent                 Fraction
	DisableShadowHostSuffix bool
}

// Fraction is envoy.type.v3.FractionalPercent: Numerator out of
// Denominator (100, 10000 or 1000000), Numerator <= Denominator.
type Fraction struct {
	Numerator   uint32
	Denominator uint32
}

// Sample says whether draw n (a uniformly random number) falls in f.
func (f Fraction) Sample(n uint64) bool {
	if f.Numerator >= f.Denominator {
		return true
	}
	return n%uint64(f.Denominator) < uint64(f.Numerator)
}

// BuildFraction validates a FractionalPercent at path; nil is def.
func buildFraction(path string, p *typev3.FractionalPercent, def Fraction) (Fraction, error) {
	if p == nil {
		return def, nil
	}
	var den uint32
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		den = 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	default:
		return Fraction{}, verr(path+".denominator", p.GetDenominator().String(), "must be HUNDRED, TEN_THOUSAND or MILLION")
	}
	// Envoy caps a numerator above the denominator at 100 %.
	return Fraction{Numerator: min(p.GetNumerator(), den), Denominator: den}, nil
}

// buildRuntimeFraction reads a RuntimeFractionalPercent's default_value
// (this proxy has no runtime, so runtime_key is ignored); nil is 100 %.
func buildRuntimeFraction(path string, p *corev3.RuntimeFractionalPercent) (Fraction, error) {
	all := Fraction{Numerator: 100, Denominator: 100}
	if p == nil {
		return all, nil
	}
	return buildFraction(path+".default_value", p.GetDefaultValue(), Fraction{Numerator: 0, Denominator: 100})
}

// redirectCodes maps RedirectAction.RedirectResponseCode to HTTP statuses.
var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  http.StatusMovedPermanently,
	routev3.RedirectAction_FOUND:              http.StatusFound,
	routev3.RedirectAction_SEE_OTHER:          http.StatusSeeOther,
	routev3.RedirectAction_TEMPORARY_REDIRECT: http.StatusTemporaryRedirect,
	routev3.RedirectAction_PERMANENT_REDIRECT: http.StatusPermanentRedirect,
}

func buildRedirect(ra *routev3.RedirectAction) (*Redirect, error) {
	rd := &Redirect{Host: ra.GetHostRedirect(), StripQuery: ra.GetStripQuery()}
	switch s := ra.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			rd.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		rd.Scheme = strings.ToLower(s.SchemeRedirect)
		if rd.Scheme != "http" && rd.Scheme != "https" && rd.Scheme != "" {
			return nil, verr("scheme_redirect", s.SchemeRedirect, "must be http or https")
		}
	}
	if strings.ContainsAny(rd.Host, "/?#@ ") {
		return nil, verr("host_redirect", rd.Host, "must be a host")
	}
	if p := ra.GetPortRedirect(); p > 65535 {
		return nil, verr("port_redirect", strconv.FormatUint(uint64(p), 10), "must be 0-65535")
	}
	rd.Port = ra.GetPortRedirect()
	switch s := ra.GetPathRewriteSpecifier().(type) {
	case nil:
	case *routev3.RedirectAction_PathRedirect:
		if !strings.HasPrefix(s.PathRedirect, "/") {
			return nil, verr("path_redirect", s.PathRedirect, "must start with /")
		}
		rd.PathKind, rd.Path = RedirectPath, s.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		rd.PathKind, rd.Path = RedirectPrefix, s.PrefixRewrite
	case *routev3.RedirectAction_RegexRewrite:
		re, sub, err := buildRegexRewrite("regex_rewrite", s.RegexRewrite)
		if err != nil {
			return nil, err
		}
		rd.PathKind, rd.Regex, rd.Substitution = RedirectRegex, re, sub
	default:
		return nil, ferr("path_rewrite_specifier", "must be path_redirect, prefix_rewrite or regex_rewrite")
	}
	code, ok := redirectCodes[ra.GetResponseCode()]
	if !ok {
		return nil, verr("response_code", ra.GetResponseCode().String(), "must be MOVED_PERMANENTLY, FOUND, SEE_OTHER, TEMPORARY_REDIRECT or PERMANENT_REDIRECT")
	}
	rd.Code = code
	return rd, nil
}

func buildDirectResponse(d *routev3.DirectResponseAction, maxBody uint32) (*DirectResponse, error) {
	dr := &DirectResponse{Status: int(d.GetStatus())}
	if dr.Status < 200 || dr.Status > 599 {
		return nil, verr("status", strconv.Itoa(dr.Status), "must be 200-599")
	}
	if d.GetBodyFormat() != nil {
		return nil, ferr("body_format", "not supported")
	}
	if b := d.GetBody(); b != nil {
		switch s := b.GetSpecifier().(type) {
		case *corev3.DataSource_InlineString:
			dr.Body = s.InlineString
		case *corev3.DataSource_InlineBytes:
			dr.Body = string(s.InlineBytes)
		default:
			return nil, ferr("body", "must be inline_string or inline_bytes")
		}
		if len(dr.Body) > int(maxBody) {
			return nil, verr("body", strconv.Itoa(len(dr.Body))+" bytes", "must be at most max_direct_response_body_size_bytes (%d)", maxBody)
		}
	}
	return dr, nil
}

// buildRegexRewrite compiles a RegexMatchAndSubstitute. The pattern is not
// anchored (every match is replaced, as RE2's GlobalReplace); the
// substitution's \0-\9 become Go's ${0}-${9} and "$" is escaped.
func buildRegexRewrite(path string, rs *matcherv3.RegexMatchAndSubstitute) (*regexp.Regexp, string, error) {
	pat := rs.GetPattern().GetRegex()
	re, err := regexp.Compile(pat)
	if err != nil {
		return nil, "", verr(path+".pattern.regex", pat, "must be RE2: %v", err)
	}
	sub := rs.GetSubstitution()
	var b strings.Builder
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(sub) && sub[i+1] >= '0' && sub[i+1] <= '9':
			n := int(sub[i+1] - '0')
			if n > re.NumSubexp() {
				return nil, "", verr(path+".substitution", sub, "\\%d: the pattern has %d groups", n, re.NumSubexp())
			}
			b.WriteString("${" + strconv.Itoa(n) + "}")
			i++
		case c == '\\' && i+1 < len(sub) && sub[i+1] == '\\':
			b.WriteByte('\\')
			i++
		case c == '\\':
			return nil, "", verr(path+".substitution", sub, "a backslash must be followed by a digit or a backslash")
		default:
			b.WriteByte(c)
		}
	}
	return re, b.String(), nil
}

func buildMirrors(ps []*routev3.RouteAction_RequestMirrorPolicy) ([]MirrorPolicy, error) {
	var out []MirrorPolicy
	for i, p := range ps {
		path := idx("request_mirror_policies", i)
		if p.GetCluster() == "" {
			return nil, ferr(path+".cluster", "must not be empty (cluster_header is not supported)")
		}
		if len(p.GetRequestHeadersMutations()) > 0 || p.GetHostRewriteLiteral() != "" {
			return nil, ferr(path, "only cluster, runtime_fraction, trace_sampled and disable_shadow_host_suffix_append are supported")
		}
		f, err := buildRuntimeFraction(path+".runtime_fraction", p.GetRuntimeFraction())
		if err != nil {
			return nil, err
		}
		out = append(out, MirrorPolicy{Cluster: p.GetCluster(), Percent: f, DisableShadowHostSuffix: p.GetDisableShadowHostSuffixAppend()})
	}
	return out, nil
}

// ShadowHost is Envoy's shadow authority: "-shadow" after the host name,
// before the port if any ("reviews:9080" -> "reviews-shadow:9080"); an IP
// address, or a host without a port, gets it at the end, as Envoy's
// shadowAppendedHost does.
func ShadowHost(host string) string {
	if name, port, ok := splitPort(host); ok {
		if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err != nil {
			return name + "-shadow:" + port
		}
	}
	return host + "-shadow"
}

// RewritePath returns the path and query to send upstream for req on r
// (RouteAction prefix_rewrite or regex_rewrite) and whether it changed.
// escapedPath is req's path as sent (URL.EscapedPath), rawQuery its query.
func (r *Route) RewritePath(escapedPath, rawQuery string) (path string, changed bool) {
	rw := r.Rewrite
	if rw == nil || (rw.Prefix == "" && rw.Regex == nil) {
		return escapedPath, false
	}
	if rw.Regex != nil {
		return rw.Regex.ReplaceAllString(escapedPath, rw.Substitution), true
	}
	return rw.Prefix + escapedPath[r.matchedLen(escapedPath):], true
}

// matchedLen is how much of path r's match consumed: the prefix of a
// prefix match, the whole path otherwise.
func (r *Route) matchedLen(path string) int {
	if r.Match.PathKind == PathPrefix && len(r.Match.Prefix) <= len(path) {
		return len(r.Match.Prefix)
	}
	return len(path)
}

// Location returns the Location of rd's redirect for req (a request that
// matched r), as Envoy's RedirectAction builds it.
func (r *Route) Location(req *http.Request, host string) string {
	rd := r.Redirect
	origScheme := "http"
	if req.TLS != nil || strings.EqualFold(req.Header.Get("X-Forwarded-Proto"), "https") {
		origScheme = "https"
	}
	scheme := origScheme
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	h := host
	if rd.Host != "" {
		// host_redirect replaces the whole authority: as Envoy's newUri,
		// the request's port is not kept (only port_redirect adds one).
		h = rd.Host
	}
	if rd.Port != 0 {
		name, _, _ := splitPort(h)
		h = name + ":" + strconv.FormatUint(uint64(rd.Port), 10)
	} else if name, p, ok := splitPort(h); ok &&
		((scheme == "https" && p == "443") || (scheme == "http" && p == "80") ||
			(scheme != origScheme && (p == "80" || p == "443"))) {
		// A default port, or the old scheme's default port after a scheme
		// change, is dropped.
		h = name
	}
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	query := req.URL.RawQuery
	switch rd.PathKind {
	case RedirectPath:
		p, q, hasQ := strings.Cut(rd.Path, "?")
		path = p
		if hasQ {
			query = q
		}
	case RedirectPrefix:
		path = rd.Path + path[r.matchedLen(path):]
	case RedirectRegex:
		path = rd.Regex.ReplaceAllString(path, rd.Substitution)
	}
	if rd.StripQuery {
		query = ""
	}
	s := scheme + "://" + h + path
	if query != "" {
		s += "?" + query
	}
	return s
}

// splitPort splits "host:port"; ok is false without a port.
func splitPort(h string) (name, port string, ok bool) {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.HasSuffix(h, "]") {
		return h, "", false
	}
	if _, err := strconv.Atoi(h[i+1:]); err != nil {
		return h, "", false
	}
	return h[:i], h[i+1:], true
}
