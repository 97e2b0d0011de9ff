package config

import (
	"math/bits"
	"net/http"
	"strings"

	"github.com/loom-mesh/loom/internal/dataplane/matcher"
)

// VirtualHostFor returns the virtual host that serves requests for host
// (the :authority), or nil when none does (404 NR). It is safe for
// concurrent use and does not allocate for a lower-case host.
//
// Order is Envoy's: an exact domain, then the longest suffix wildcard
// ("*.foo.com", "*-bar.foo.com"), then the longest prefix wildcard
// ("foo.*"), then "*". A wildcard matches at least one character. host is
// compared lower-case and with its port, if any: "reviews:1234" does not
// reach a virtual host whose domains are "reviews" and "reviews:9080"
// (Envoy strips the port only with the HCM's strip_matching_host_port or
// strip_any_host_port, which this version does not implement).
func (t *RouteTable) VirtualHostFor(host string) *VirtualHost {
	if t == nil {
		return nil
	}
	h := strings.ToLower(host)
	if vh := t.exact[h]; vh != nil {
		return vh
	}
	for _, e := range t.suffixes {
		if len(h) > len(e.pattern) && strings.HasSuffix(h, e.pattern) {
			return e.vh
		}
	}
	for _, e := range t.prefixes {
		if len(h) > len(e.pattern) && strings.HasPrefix(h, e.pattern) {
			return e.vh
		}
	}
	return t.catchAll
}

// Matches reports whether req matches r's RouteMatch before any filter
// ran, that is with empty dynamic metadata: MatchesMetadata(req, nil).
func (r *Route) Matches(req *http.Request) bool { return r.MatchesMetadata(req, nil) }

// MatchesMetadata reports whether req, with the dynamic metadata md the
// filters wrote so far (nil: none), matches r's RouteMatch: the path
// (without the query) against prefix, path or the anchored regex, every
// header matcher, every query parameter matcher and every dynamic_metadata
// matcher (Envoy's MetadataMatcher: a path md lacks matches only inverted
// matchers). It is safe for concurrent use, does not modify req or md, and
// does not allocate unless a matcher reads ":path" or a header sent
// several times.
//
// Header matchers read ":authority" from req.Host, ":method" from
// req.Method, ":path" from the request URI (path and query) and ":scheme"
// from req.URL.Scheme ("https" when req.TLS is set, else "http", when the
// URL has none). A header sent several times is matched against its values
// joined with ",", as Envoy does.
func (r *Route) MatchesMetadata(req *http.Request, md matcher.Metadata) bool {
	if r == nil || req == nil || req.URL == nil {
		return false
	}
	m := &r.Match
	path := req.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	switch m.PathKind {
	case PathPrefix:
		if m.CaseInsensitive {
			if len(path) < len(m.Prefix) || !asciiEqualFold(path[:len(m.Prefix)], m.Prefix) {
				return false
			}
		} else if !strings.HasPrefix(path, m.Prefix) {
			return false
		}
	case PathExact:
		if m.CaseInsensitive {
			if !asciiEqualFold(path, m.Path) {
				return false
			}
		} else if path != m.Path {
			return false
		}
	case PathRegex:
		if m.Regex == nil || !m.Regex.MatchString(path) {
			return false
		}
	default:
		return false
	}
	for i := range m.Headers {
		if !m.Headers[i].matches(req) {
			return false
		}
	}
	for i := range m.Query {
		if !m.Query[i].matches(req.URL.RawQuery) {
			return false
		}
	}
	for i := range m.Metadata {
		if !m.Metadata[i].Match(md) {
			return false
		}
	}
	return true
}

// headerValue returns the value a matcher compares and whether the header
// is present.
func headerValue(req *http.Request, name string) (string, bool) {
	switch name {
	case ":authority":
		return req.Host, req.Host != ""
	case ":method":
		return req.Method, true
	case ":path":
		p := req.URL.RequestURI()
		return p, true
	case ":scheme":
		switch {
		case req.URL.Scheme != "":
			return req.URL.Scheme, true
		case req.TLS != nil:
			return "https", true
		}
		return "http", true
	}
	vs := req.Header[name] // name is canonical (Build)
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// matches implements Envoy's HeaderUtility::matchHeaders: an absent header
// matches only "present_match: false" (or, inverted, only
// "present_match: true"), unless treat_missing_header_as_empty makes a
// string matcher see ""; otherwise the result is inverted by invert_match.
func (h *HeaderMatcher) matches(req *http.Request) bool {
	v, ok := headerValue(req, h.Name)
	if !ok && (!h.TreatMissingAsEmpty || h.Kind == MatchPresent) {
		if h.Invert {
			return h.Kind == MatchPresent && h.Present
		}
		return h.Kind == MatchPresent && !h.Present
	}
	var m bool
	switch h.Kind {
	case MatchPresent:
		m = h.Present
	case MatchExact:
		m = v == h.Value
	case MatchPrefix:
		m = strings.HasPrefix(v, h.Value)
	case MatchSuffix:
		m = strings.HasSuffix(v, h.Value)
	case MatchRegex:
		m = h.Regex != nil && h.Regex.MatchString(v)
	}
	return m != h.Invert
}

// firstQueryValue returns the value of the first parameter named name in
// rawQuery, as Envoy's QueryParamsMulti::parseQueryString and getFirstValue
// do: parameters split on "&", the key ends at the first "=", nothing is
// percent-decoded, and a parameter without "=" has the value "".
func firstQueryValue(rawQuery, name string) (string, bool) {
	for q := rawQuery; q != ""; {
		var p string
		if i := strings.IndexByte(q, '&'); i >= 0 {
			p, q = q[:i], q[i+1:]
		} else {
			p, q = q, ""
		}
		k, v, _ := strings.Cut(p, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

// matches implements Envoy's ConfigUtility::QueryParameterMatcher::matches
// on the raw query.
func (q *QueryMatcher) matches(rawQuery string) bool {
	v, ok := firstQueryValue(rawQuery, q.Name)
	if q.Kind == MatchPresent {
		return ok == q.Present
	}
	if !ok {
		return false
	}
	switch q.Kind {
	case MatchExact:
		if q.IgnoreCase {
			return asciiEqualFold(v, q.Value)
		}
		return v == q.Value
	case MatchPrefix:
		if q.IgnoreCase {
			return len(v) >= len(q.Value) && asciiEqualFold(v[:len(q.Value)], q.Value)
		}
		return strings.HasPrefix(v, q.Value)
	case MatchSuffix:
		if q.IgnoreCase {
			return len(v) >= len(q.Value) && asciiEqualFold(v[len(v)-len(q.Value):], q.Value)
		}
		return strings.HasSuffix(v, q.Value)
	case MatchRegex:
		return q.Regex != nil && q.Regex.MatchString(v)
	}
	return false
}

// asciiEqualFold is absl::EqualsIgnoreCase, which StringMatcher.ignore_case
// uses: only ASCII letters fold.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// weylStep is 2^64/φ, rounded to odd: adding it modulo 2^64 walks the
// Weyl sequence k/φ mod 1, whose every run of N draws falls into an
// interval of length w within O(log N) of N·w.
const weylStep = 0x9E3779B97F4A7C15

// Pick returns the cluster for the next request on r. On a weighted route
// the draws follow a golden-ratio Weyl sequence rather than Envoy's random
// numbers: shares are the same, but they hold over any window (a 1 %
// canary gets 10 of every 1000 requests, not 3 to 17), and unlike a
// plain counter the sequence has no short period for a client's own
// pattern of requests to alias with. Safe for concurrent use.
func (r *Route) Pick() string {
	if r == nil || len(r.Clusters) < 2 || r.picks == nil {
		return PickCluster(r, 0)
	}
	n, _ := bits.Mul64(r.picks.Add(1)*weylStep, uint64(r.TotalWeight))
	return PickCluster(r, n)
}

// PickCluster returns the cluster of r for the draw n: with weighted
// clusters, n modulo TotalWeight falls into one cluster's share, in order,
// so that the same n always picks the same cluster and consecutive n spread
// by weight. The caller passes a counter or a random number. It returns ""
// when r is nil or has no clusters.
func PickCluster(r *Route, n uint64) string {
	if r == nil || len(r.Clusters) == 0 {
		return ""
	}
	if len(r.Clusters) == 1 || r.TotalWeight == 0 {
		return r.Clusters[0].Name
	}
	x := n % uint64(r.TotalWeight)
	for _, c := range r.Clusters {
		if x < uint64(c.Weight) {
			return c.Name
		}
		x -= uint64(c.Weight)
	}
	return r.Clusters[len(r.Clusters)-1].Name
}
