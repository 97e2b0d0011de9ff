package http_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// claimMatcher is the route matcher Istio's translateMetadataMatch makes
// of a VirtualService header match "@request.auth.claims.<path>: {exact:
// value}": jwt_authn's payload at path, a string equal to value or a list
// holding one; inverted for withoutHeaders.
func claimMatcher(value string, invert bool, path ...string) *matcherv3.MetadataMatcher {
	str := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}
	list := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: str}}}}
	m := &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.jwt_authn", Invert: invert,
		Path: []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "payload"}}},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{
			ValueMatchers: []*matcherv3.ValueMatcher{list, str}}}}}
	for _, k := range path {
		m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return m
}

func withClaim(r *routev3.Route, m *matcherv3.MetadataMatcher) *routev3.Route {
	r.Match.DynamicMetadata = append(r.Match.DynamicMetadata, m)
	return r
}

// TestJWTClaimRoutingOverSockets is Istio's JWT claim based routing
// through a proxy on real sockets: jwt_authn (Istio's gateway config:
// payload_in_metadata and clear_route_cache) verifies the token, the
// route is matched again on the payload it left in the dynamic metadata,
// and groups-scope.jwt (groups [group1, group2]) reaches the claim
// route's cluster while demo.jwt and no token fall to the next route or,
// without one, get 404 NR. Without clear_route_cache the route stays the
// one matched before the filter ran, as in Envoy.
func TestJWTClaimRoutingOverSockets(t *testing.T) {
	v1, v2 := startBackend(t, "v1", false, nil), startBackend(t, "v2", false, nil)
	jwks := readJWTSample(t, "jwks.json")
	demo, groups := readJWTSample(t, "demo.jwt"), readJWTSample(t, "groups-scope.jwt")
	lAddr := closedAddr(t)
	provider := func(clear bool) *jwtv3.JwtProvider {
		return &jwtv3.JwtProvider{Issuer: "testing@secure.istio.io", PayloadInMetadata: "payload", ClearRouteCache: clear,
			NormalizePayloadInMetadata: &jwtv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: []string{"permission", "scope"}},
			JwksSourceSpecifier:        &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}}}
	}
	clusters := []*clusterv3.Cluster{staticCluster(t, "v1", false, v1.addr), staticCluster(t, "v2", false, v2.addr)}
	apply := func(p *proxy, clear bool, routes ...*routev3.Route) *proxy {
		g := build(t, nil, []*listenerv3.Listener{jwtProviderListener(t, "l", lAddr, "rt", provider(clear))},
			[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, routes...))}, clusters)
		if p == nil {
			return startProxy(t, g)
		}
		p.apply(g)
		return p
	}
	get := func(p *proxy, tok string) (int, string) {
		t.Helper()
		hdr := map[string]string{}
		if tok != "" {
			hdr["Authorization"] = "Bearer " + tok
		}
		r := p.do("GET", "httpbin", "/headers", hdr, nil)
		return r.code, r.body
	}
	type want struct {
		code int
		body string
	}
	check := func(t *testing.T, p *proxy, cases map[string]want, toks map[string]string) {
		t.Helper()
		for name, w := range cases {
			// A kept-alive connection may still be on the last chain for
			// one request after an update: ask twice, judge the second.
			get(p, toks[name])
			if code, body := get(p, toks[name]); code != w.code || (w.body != "" && body != w.body) {
				t.Errorf("%s: got %d %q, want %d %q", name, code, body, w.code, w.body)
			}
		}
	}
	toks := map[string]string{"groups-scope.jwt": groups, "demo.jwt": demo, "no token": "", "invalid token": "invalidToken"}

	// headers: {"@request.auth.claims.groups": {exact: group1}} -> v2, else v1.
	p := apply(nil, true,
		withClaim(prefixRoute("claims", "/", "v2"), claimMatcher("group1", false, "groups")),
		prefixRoute("rest", "/", "v1"))
	t.Run("headers", func(t *testing.T) {
		check(t, p, map[string]want{"groups-scope.jwt": {200, "v2"}, "demo.jwt": {200, "v1"}, "no token": {200, "v1"}, "invalid token": {401, ""}}, toks)
	})
	// The task's VirtualService has no other route: 404 without the claim.
	apply(p, true, withClaim(prefixRoute("claims", "/", "v2"), claimMatcher("group1", false, "groups")))
	t.Run("only the claim route", func(t *testing.T) {
		check(t, p, map[string]want{"groups-scope.jwt": {200, "v2"}, "demo.jwt": {404, ""}, "no token": {404, ""}}, toks)
	})
	// withoutHeaders: {"@request.auth.claims.groups": {exact: group1}}:
	// a missing claim (no token, demo.jwt) matches.
	apply(p, true, withClaim(prefixRoute("not-group1", "/", "v2"), claimMatcher("group1", true, "groups")), prefixRoute("rest", "/", "v1"))
	t.Run("withoutHeaders", func(t *testing.T) {
		check(t, p, map[string]want{"groups-scope.jwt": {200, "v1"}, "demo.jwt": {200, "v2"}, "no token": {200, "v2"}}, toks)
	})
	// A space-delimited claim (scope, normalized to a list) and a claim
	// that is a string (foo).
	apply(p, true,
		withClaim(prefixRoute("scope", "/", "v2"), claimMatcher("scope2", false, "scope")),
		withClaim(prefixRoute("foo", "/", "v2"), claimMatcher("bar", false, "foo")),
		prefixRoute("rest", "/", "v1"))
	t.Run("list and string claims", func(t *testing.T) {
		check(t, p, map[string]want{"groups-scope.jwt": {200, "v2"}, "demo.jwt": {200, "v2"}, "no token": {200, "v1"}}, toks)
	})
	// Without clear_route_cache the route was picked before the filter.
	apply(p, false,
		withClaim(prefixRoute("claims", "/", "v2"), claimMatcher("group1", false, "groups")),
		prefixRoute("rest", "/", "v1"))
	t.Run("without clear_route_cache", func(t *testing.T) {
		check(t, p, map[string]want{"groups-scope.jwt": {200, "v1"}, "no token": {200, "v1"}}, toks)
	})
}
