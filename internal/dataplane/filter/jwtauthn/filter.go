package jwtauthn

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// extLocation is one token location of an extractor with the issuers
// whose tokens it may carry (Envoy's JwtIssuerChecker).
type extLocation struct {
	Location
	issuers  map[string]bool
	anyIssue bool // a provider using it has no issuer
}

func (l *extLocation) issuerAllowed(iss string) bool { return l.anyIssue || l.issuers[iss] }

// extractor takes tokens from the locations of a set of providers
// (Envoy's Extractor): one per provider for provider_name requirements,
// one of all providers for allow_missing and allow_missing_or_failed.
type extractor struct {
	locs []*extLocation
}

func newExtractor(ps []*Provider) *extractor {
	e := &extractor{}
	byKey := map[string]*extLocation{}
	for _, p := range ps {
		for _, l := range p.Locations {
			el := byKey[l.key()]
			if el == nil {
				el = &extLocation{Location: l, issuers: map[string]bool{}}
				byKey[l.key()] = el
				e.locs = append(e.locs, el)
			}
			if p.Issuer == "" {
				el.anyIssue = true
			} else {
				el.issuers[p.Issuer] = true
			}
		}
	}
	// Envoy extracts headers, then query parameters, then cookies.
	var ordered []*extLocation
	for _, k := range []LocationKind{LocationHeader, LocationParam, LocationCookie} {
		for _, l := range e.locs {
			if l.Kind == k {
				ordered = append(ordered, l)
			}
		}
	}
	e.locs = ordered
	return e
}

// found is a token and where it was found.
type found struct {
	value string
	loc   *extLocation
}

// base64URLDot are the characters of a compact JWS.
const base64URLDot = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."

// extract returns the tokens r carries in e's locations.
func (e *extractor) extract(r *http.Request) []found {
	var out []found
	var query url.Values
	for _, l := range e.locs {
		switch l.Kind {
		case LocationHeader:
			vs := r.Header.Values(l.Name)
			if len(vs) == 0 {
				continue
			}
			v := strings.Join(vs, ",")
			if l.Prefix != "" {
				i := strings.Index(v, l.Prefix)
				if i < 0 {
					continue
				}
				v = tokenAfter(v, i+len(l.Prefix))
			}
			out = append(out, found{v, l})
		case LocationParam:
			if query == nil {
				query, _ = url.ParseQuery(r.URL.RawQuery)
			}
			if vs := query[l.Name]; len(vs) > 0 {
				out = append(out, found{vs[0], l})
			}
		case LocationCookie:
			if c, err := r.Cookie(l.Name); err == nil {
				out = append(out, found{c.Value, l})
			}
		}
	}
	return out
}

// tokenAfter is Envoy's extractJWT: the run of JWS characters starting at
// the first one at or after from; all of v when there is none.
func tokenAfter(v string, from int) string {
	i := strings.IndexAny(v[from:], base64URLDot)
	if i < 0 {
		return v
	}
	start := from + i
	end := start
	for end < len(v) && strings.IndexByte(base64URLDot, v[end]) >= 0 {
		end++
	}
	return v[start:end]
}

// remove takes a verified token out of the request when its provider does
// not forward it: the whole header, as Envoy. Query parameters and cookies
// are left, as Envoy leaves them.
func (f found) remove(r *http.Request) {
	if f.loc.Kind == LocationHeader {
		r.Header.Del(f.loc.Name)
	}
}

// jwtFilter is the compiled filter of one listener's chain.
type jwtFilter struct {
	cfg *Config
}

// Details prefix of the local reply's %RESPONSE_CODE_DETAILS%, as Envoy's.
const detailsPrefix = "jwt_authn_access_denied"

func (f *jwtFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	c := f.cfg
	for _, h := range c.sanitize {
		delete(r.Header, h)
	}
	if c.BypassCorsPreflight && r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		next.ServeHTTP(w, r)
		return
	}
	st := filter.StateFrom(r)
	var req *Requirement
	if pr, ok := overrideOf(st); ok {
		if pr.Disabled {
			next.ServeHTTP(w, r)
			return
		}
		if req, ok = c.RequirementMap[pr.RequirementName]; !ok {
			// Fail closed: a route naming a requirement this filter does
			// not have must not go unchecked.
			f.reply(w, r, st, http.StatusForbidden, "Failed JWT authentication", detailsPrefix+"{requirement_name_not_found}", "")
			return
		}
	} else {
		for i := range c.Rules {
			if c.Rules[i].matches(r.URL.Path) {
				req = c.Rules[i].Requirement
				break
			}
		}
	}
	if req == nil {
		next.ServeHTTP(w, r)
		return
	}
	v := &verification{cfg: c, r: r}
	status := v.verify(req)
	if status != OK {
		code := http.StatusUnauthorized
		if status == JwtAudienceNotAllowed {
			code = http.StatusForbidden
		}
		auth := ""
		if !c.StripFailureResponse {
			auth = `Bearer realm="` + realm(r) + `"`
			if status != JwtMissed {
				auth += `, error="invalid_token"`
			}
		}
		text := status.String()
		f.reply(w, r, st, code, text, detailsPrefix+"{"+strings.ReplaceAll(text, " ", "_")+"}", auth)
		return
	}
	if st != nil {
		for k, p := range v.payloads {
			st.SetMetadata(Name, k, p)
		}
		if v.clearRoute {
			st.ClearRouteCache()
		}
	}
	next.ServeHTTP(w, r)
}

func overrideOf(st *filter.State) (*PerRoute, bool) {
	if st == nil {
		return nil, false
	}
	pr, ok := st.Override.(*PerRoute)
	return pr, ok
}

// realm is Envoy's original URI of a request, the realm of its
// www-authenticate: scheme, host and path. The query is left out so that
// a token sent as a parameter is never echoed.
func realm(r *http.Request) string {
	scheme := r.Header.Get("X-Forwarded-Proto")
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	return scheme + "://" + r.Host + r.URL.EscapedPath()
}

// reply writes Envoy's local reply: the status text as a text/plain body,
// or for a gRPC request grpc-status UNAUTHENTICATED (16) or
// PERMISSION_DENIED (7) with the text as grpc-message.
func (f *jwtFilter) reply(w http.ResponseWriter, r *http.Request, st *filter.State, code int, text, details, auth string) {
	if auth != "" {
		w.Header()["Www-Authenticate"] = []string{auth}
	}
	replyCode, n := filter.LocalReply(w, r, code, -1, text)
	if st != nil {
		st.ReplyCode, st.ReplyDetails, st.ReplyBytes = replyCode, details, n
	}
}

// verification is one request's run through the requirement tree,
// synchronous where Envoy's is callback-driven (the keys are inline, so
// nothing waits), with the same order and outcomes.
type verification struct {
	cfg      *Config
	r        *http.Request
	payloads map[string]any // payload_in_metadata key -> claims
	// clearRoute is set when a verified token's provider has
	// clear_route_cache and wrote a claim header or the metadata.
	clearRoute bool
}

func (v *verification) verify(q *Requirement) Status {
	switch q.Kind {
	case RequireProvider:
		aud := q.Provider.Audiences
		if len(q.Audiences) > 0 {
			aud = q.Audiences
		}
		return v.authenticate(q.Provider.ext.extract(v.r), q.Provider, aud, false, false)
	case RequireAny:
		statuses := make([]Status, 0, len(q.Children))
		for _, ch := range q.Children {
			s := v.verify(ch)
			if s == OK {
				return OK
			}
			statuses = append(statuses, s)
		}
		// Envoy's AnyVerifierImpl: prefer an error that is neither
		// JwtMissed nor JwtUnknownIssuer, and JwtUnknownIssuer over
		// JwtMissed; allow_missing forgives only JwtMissed.
		final := JwtMissed
		for _, s := range statuses {
			if !s.missing() || final == JwtMissed {
				final = s
			}
		}
		switch {
		case q.AllowMissingOrFailed:
			return OK
		case q.AllowMissing && final == JwtMissed:
			return OK
		}
		return final
	case RequireAll:
		for _, ch := range q.Children {
			if s := v.verify(ch); s != OK {
				return s
			}
		}
		return OK
	case RequireAllowMissing:
		return v.authenticate(q.all.extract(v.r), nil, nil, false, true)
	case RequireAllowMissingOrFailed:
		return v.authenticate(q.all.extract(v.r), nil, nil, true, false)
	}
	return OK
}

// authenticate is Envoy's Authenticator over the tokens found, last first:
// every token must verify (a request with a good and a bad token fails),
// unless failures are allowed; with allow_missing a request without tokens
// passes. p nil means each token's provider is found by its issuer.
func (v *verification) authenticate(tokens []found, p *Provider, aud []string, allowFailed, allowMissing bool) Status {
	status := JwtMissed
	for len(tokens) > 0 {
		t := tokens[len(tokens)-1]
		tokens = tokens[:len(tokens)-1]
		status = v.verifyToken(t, p, aud)
		if status != OK && !allowFailed && !allowMissing {
			break
		}
	}
	switch {
	case allowFailed:
		return OK
	case allowMissing && status == JwtMissed:
		return OK
	}
	return status
}

func (v *verification) verifyToken(f found, p *Provider, aud []string) Status {
	t, status := parseToken(f.value)
	if status != OK {
		return status
	}
	if !f.loc.issuerAllowed(t.iss) {
		return JwtUnknownIssuer
	}
	if p == nil {
		if p = v.cfg.byIssuer(t.iss); p == nil {
			return JwtUnknownIssuer
		}
		aud = p.Audiences
	}
	if status = t.checkTime(v.cfg.now(), p.ClockSkew); status != OK {
		return status
	}
	if !t.audienceAllowed(aud) {
		return JwtAudienceNotAllowed
	}
	if status = p.Keys.verify(t.sig); status != OK {
		return status
	}
	// Verified: from here on the claims are trusted.
	if p.ForwardPayloadHeader != "" {
		enc := base64.RawURLEncoding
		if p.PadForwardPayloadHeader {
			enc = base64.URLEncoding
		}
		v.r.Header[p.ForwardPayloadHeader] = []string{enc.EncodeToString(t.payload)}
	}
	if !p.Forward {
		f.remove(v.r)
	}
	if p.PayloadInMetadata != "" {
		if v.payloads == nil {
			v.payloads = map[string]any{}
		}
		v.payloads[p.PayloadInMetadata] = normalize(t.claims, p.SpaceDelimitedClaims)
	}
	headerAdded := false
	for _, ch := range p.ClaimToHeaders {
		if s, ok := claimString(t.claims, ch.Path); ok {
			v.r.Header[ch.Header] = []string{s}
			headerAdded = true
		}
	}
	// Envoy clears the route cache for a provider with clear_route_cache
	// once it added a claim header or has payload_in_metadata (its
	// authenticator's handleGoodJwt).
	if p.ClearRouteCache && (headerAdded || p.PayloadInMetadata != "") {
		v.clearRoute = true
	}
	return OK
}

// byIssuer is the provider of issuer iss: the first by name with exactly
// that issuer, else the first with none.
func (c *Config) byIssuer(iss string) *Provider {
	var anyIss *Provider
	for _, p := range c.ordered {
		if p.Issuer == iss {
			return p
		}
		if p.Issuer == "" && anyIss == nil {
			anyIss = p
		}
	}
	return anyIss
}

// normalize returns claims with each of the space-delimited claims that
// is a string split into a list of its words (normalize_payload_in_metadata).
func normalize(claims map[string]any, spaceDelimited []string) map[string]any {
	if len(spaceDelimited) == 0 {
		return claims
	}
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		out[k] = v
	}
	for _, name := range spaceDelimited {
		if s, ok := out[name].(string); ok {
			words := strings.Fields(s)
			l := make([]any, len(words))
			for i, w := range words {
				l[i] = w
			}
			out[name] = l
		}
	}
	return out
}

// claimString is the claim at path as a header value: a string, a number
// or a boolean (Envoy copies only those).
func claimString(claims map[string]any, path []string) (string, bool) {
	var cur any = claims
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[k]; !ok {
			return "", false
		}
	}
	switch x := cur.(type) {
	case string:
		return x, true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}
