package config

import (
	"net"
	"net/http"
	"strings"
)

// VirtualHostFor returns the virtual host that serves requests for host
// (the :authority), or nil when none does (404 NR). It is safe for
// concurrent use and does not allocate for an exact lower-case match.
//
// Order is Envoy's: an exact domain, then the longest suffix wildcard
// ("*.foo.com", "*-bar.foo.com"), then the longest prefix wildcard
// ("foo.*"), then "*". A wildcard matches at least one character. host is
// compared lower-case. When no exact or wildcard domain matches
// "host:port", the same lookup is retried with the port stripped before
// falling back to "*", so that a client of the explicit proxy that sends
// "reviews:9080" reaches a virtual host whose domains list only "reviews".
func (t *RouteTable) VirtualHostFor(host string) *VirtualHost {
	if t == nil {
		return nil
	}
	h := strings.ToLower(host)
	if vh := t.lookup(h); vh != nil {
		return vh
	}
	if hp, port, err := net.SplitHostPort(h); err == nil && port != "" && isDigits(port) {
		if strings.Contains(hp, ":") {
			hp = "[" + hp + "]" // IPv6 domains are written bracketed.
		}
		if vh := t.lookup(hp); vh != nil {
			return vh
		}
	}
	return t.catchAll
}

func (t *RouteTable) lookup(h string) *VirtualHost {
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
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Matches reports whether req matches r's RouteMatch: the path (without
// the query) against prefix, path or the anchored regex, and every header
// matcher. It is safe for concurrent use and does not modify req.
//
// Header matchers read ":authority" from req.Host, ":method" from
// req.Method, ":path" from the request URI (path and query) and ":scheme"
// from req.URL.Scheme ("https" when req.TLS is set, else "http", when the
// URL has none). A header sent several times is matched against its values
// joined with ",", as Envoy does.
func (r *Route) Matches(req *http.Request) bool {
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
			if len(path) < len(m.Prefix) || !strings.EqualFold(path[:len(m.Prefix)], m.Prefix) {
				return false
			}
		} else if !strings.HasPrefix(path, m.Prefix) {
			return false
		}
	case PathExact:
		if m.CaseInsensitive {
			if !strings.EqualFold(path, m.Path) {
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
	vs := req.Header.Values(name)
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
// "present_match: true"); otherwise the result is inverted by invert_match.
func (h *HeaderMatcher) matches(req *http.Request) bool {
	v, ok := headerValue(req, h.Name)
	if !ok {
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
