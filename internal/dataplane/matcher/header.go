package matcher

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

type headerKind uint8

const (
	headerString headerKind = iota
	headerPresent
	headerRange
)

// Header is a compiled envoy.config.route.v3.HeaderMatcher as Envoy's
// HeaderUtility::matchHeaders applies it to a request. It is immutable and
// safe for concurrent use.
type Header struct {
	// Name is canonical: ":authority" (also for "host"), ":method",
	// ":path", ":scheme", or http.CanonicalHeaderKey of a header.
	Name                string
	kind                headerKind
	str                 String
	present             bool
	start, end          int64 // range_match [start, end)
	invert              bool
	treatMissingAsEmpty bool
}

// NewHeader compiles h. It fails on an empty name, an unknown
// pseudo-header or an invalid pattern; the error names the field within h.
func NewHeader(h *routev3.HeaderMatcher) (Header, error) {
	hm := Header{invert: h.GetInvertMatch(), treatMissingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	name := strings.ToLower(h.GetName())
	switch {
	case name == "":
		return hm, fmt.Errorf("name: must not be empty")
	case name == "host" || name == ":authority":
		hm.Name = ":authority"
	case strings.HasPrefix(name, ":"):
		switch name {
		case ":method", ":path", ":scheme":
			hm.Name = name
		default:
			return hm, fmt.Errorf("name = %q: must be a header or :authority, :method, :path or :scheme", h.GetName())
		}
	default:
		hm.Name = http.CanonicalHeaderKey(name)
	}
	var sm *matcherv3.StringMatcher
	//nolint:staticcheck // the deprecated specifiers are still sent by control planes.
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		// Envoy: no specifier means "the header is present".
		hm.kind, hm.present = headerPresent, true
		return hm, nil
	case *routev3.HeaderMatcher_PresentMatch:
		hm.kind, hm.present = headerPresent, s.PresentMatch
		return hm, nil
	case *routev3.HeaderMatcher_RangeMatch:
		hm.kind, hm.start, hm.end = headerRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
		return hm, nil
	case *routev3.HeaderMatcher_ExactMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s.ExactMatch}}
	case *routev3.HeaderMatcher_PrefixMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s.PrefixMatch}}
	case *routev3.HeaderMatcher_SuffixMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s.SuffixMatch}}
	case *routev3.HeaderMatcher_ContainsMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: s.ContainsMatch}}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: s.SafeRegexMatch}}
	case *routev3.HeaderMatcher_StringMatch:
		sm = s.StringMatch
	default:
		return hm, fmt.Errorf("header_match_specifier: must be string_match, present_match, range_match or a deprecated exact, prefix, suffix, contains or safe_regex match")
	}
	str, err := NewString(sm)
	if err != nil {
		return hm, fmt.Errorf("string_match.%w", err)
	}
	hm.kind, hm.str = headerString, str
	return hm, nil
}

// Match reports whether r matches, as Envoy's HeaderUtility::matchHeaders:
// a header sent several times is matched as its values joined by ","; an
// absent header matches only present_match false (inverted: only
// present_match true) unless treat_missing_header_as_empty makes it "";
// then invert_match inverts. r nil (a connection, no request) has no
// headers.
func (h *Header) Match(r *http.Request) bool {
	v, ok := HeaderValue(r, h.Name)
	return h.MatchValue(v, ok)
}

// MatchValue is Match for a header value already looked up: v and whether
// the header is present.
func (h *Header) MatchValue(v string, ok bool) bool {
	if !ok && (!h.treatMissingAsEmpty || h.kind == headerPresent) {
		if h.invert {
			return h.kind == headerPresent && h.present
		}
		return h.kind == headerPresent && !h.present
	}
	var m bool
	switch h.kind {
	case headerPresent:
		m = h.present
	case headerRange:
		n, err := strconv.ParseInt(v, 10, 64)
		m = err == nil && h.start <= n && n < h.end
	case headerString:
		m = h.str.Match(v)
	}
	return m != h.invert
}

// HeaderValue returns the value of header name (canonical, as Header.Name)
// in r and whether it is present: the request line for pseudo-headers
// (":path" with its query, as sent), else the values joined by ",". r nil
// has no headers.
func HeaderValue(r *http.Request, name string) (string, bool) {
	if r == nil {
		return "", false
	}
	switch name {
	case ":authority":
		if r.URL != nil && r.URL.Host != "" {
			return r.URL.Host, true // absolute-form request to an explicit proxy
		}
		return r.Host, r.Host != ""
	case ":method":
		return r.Method, true
	case ":path":
		return RequestPath(r), true
	case ":scheme":
		switch {
		case r.URL != nil && r.URL.Scheme != "":
			return r.URL.Scheme, true
		case r.TLS != nil:
			return "https", true
		}
		return "http", true
	}
	vs := r.Header[name]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// RequestPath is r's :path as the client sent it: the escaped path and the
// query, without scheme and authority for an absolute-form request.
func RequestPath(r *http.Request) string {
	if r.URL == nil {
		return r.RequestURI
	}
	if r.URL.Opaque != "" || (r.URL.Host == "" && r.RequestURI != "" && r.RequestURI[0] == '/') {
		return r.RequestURI
	}
	p := r.URL.EscapedPath()
	if p == "" {
		p = "/"
	}
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		return p + "?" + r.URL.RawQuery
	}
	return p
}
