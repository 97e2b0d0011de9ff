package http_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter/cors"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}

func TestRouteActions(t *testing.T) {
	lAddr := closedAddr(t)
	be := startBackend(t, "be", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Path", r.URL.RequestURI())
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-Original-Path", r.Header.Get("X-Envoy-Original-Path"))
		w.Header().Set("X-Got-Level", r.Header.Get("X-Level"))
		w.Header().Set("X-Got-Secret", r.Header.Get("X-Secret"))
		w.Header().Set("X-Remove-Me", "1")
		io.WriteString(w, "be")
	})
	redirect := func(name, prefix string, ra *routev3.RedirectAction) *routev3.Route {
		return &routev3.Route{Name: name, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
			Action: &routev3.Route_Redirect{Redirect: ra}}
	}
	rewrite := prefixRoute("rewrite", "/api/", "be")
	rewrite.GetRoute().PrefixRewrite = "/v2/"
	rewrite.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "internal.example"}
	regex := prefixRoute("regex", "/r/", "be")
	regex.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/r/([a-z]+)/(\\d+)$"}, Substitution: `/\2/\1`}
	headers := weightedRoute("headers", "/", map[string]uint32{"be": 1})
	headers.RequestHeadersToAdd = []*corev3.HeaderValueOption{setHeader("x-level", "route")}
	headers.RequestHeadersToRemove = []string{"x-secret"}
	headers.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-resp", Value: "route"}}}
	headers.ResponseHeadersToRemove = []string{"x-remove-me"}
	headers.GetRoute().GetWeightedClusters().Clusters[0].ResponseHeadersToAdd = []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: "x-resp", Value: "wc"}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD}}
	hvh := vhost("headers", []string{"headers"}, headers)
	hvh.RequestHeadersToAdd = []*corev3.HeaderValueOption{setHeader("x-level", "vhost")}
	// require_tls ALL (Istio's httpsRedirect): every plain-text request
	// gets a 301 to https, whatever its route.
	tlsOnly := vhost("tls-only", []string{"tls-only", "tls-only:8080"}, prefixRoute("be", "/", "be"))
	tlsOnly.RequireTls = routev3.VirtualHost_ALL
	rc := routeConfig("rt",
		vhost("redirect", []string{"redirect", "redirect:8080", "redirect:80"},
			redirect("https", "/secure", &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}),
			redirect("full", "/old/", &routev3.RedirectAction{HostRedirect: "new.example", PortRedirect: 9000,
				PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new/"},
				ResponseCode:         routev3.RedirectAction_TEMPORARY_REDIRECT}),
			redirect("host", "/moved", &routev3.RedirectAction{HostRedirect: "moved.example"}),
			redirect("path", "/p", &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/landing"},
				StripQuery: true, ResponseCode: routev3.RedirectAction_FOUND}),
		),
		vhost("direct", []string{"direct"}, &routev3.Route{Name: "direct",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 418,
				Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "teapot"}}}},
			ResponseHeadersToAdd: []*corev3.HeaderValueOption{setHeader("x-direct", "yes")}}),
		vhost("rewrite", []string{"rewrite"}, rewrite, regex),
		hvh, tlsOnly,
	)
	rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-rc", Value: "1"}}}
	g := build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")}, []*routev3.RouteConfiguration{rc},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)})
	p := startProxy(t, g)
	p.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	tests := []struct {
		name, host, path string
		hdr              map[string]string
		wantCode         int
		wantBody         string
		wantHeaders      map[string]string
	}{
		{"https redirect", "redirect:8080", "/secure?a=1", nil, 301, "", map[string]string{"Location": "https://redirect:8080/secure?a=1"}},
		{"https redirect drops port 80", "redirect:80", "/secure", nil, 301, "", map[string]string{"Location": "https://redirect/secure"}},
		{"full redirect", "redirect", "/old/x/y?q", nil, 307, "", map[string]string{"Location": "http://new.example:9000/new/x/y?q"}},
		// Envoy's newUri: host_redirect replaces the authority, port too.
		{"host redirect drops the request port", "redirect:8080", "/moved?q", nil, 301, "", map[string]string{"Location": "http://moved.example/moved?q"}},
		{"path redirect strip query", "redirect", "/p/a?q=1", nil, 302, "", map[string]string{"Location": "http://redirect/landing"}},
		{"require_tls", "tls-only:8080", "/a/b?c=d", nil, 301, "", map[string]string{"Location": "https://tls-only:8080/a/b?c=d"}},
		{"require_tls without a route", "tls-only", "/", nil, 301, "", map[string]string{"Location": "https://tls-only/"}},
		// x-forwarded-proto from an edge that terminated TLS counts when
		// the listener does not trust only its peer (use_remote_address off).
		{"require_tls behind an edge", "tls-only", "/", map[string]string{"X-Forwarded-Proto": "https"}, 200, "be", nil},
		{"direct response", "direct", "/", nil, 418, "teapot", map[string]string{"X-Direct": "yes", "Content-Length": "6"}},
		{"prefix and host rewrite", "rewrite", "/api/users?id=1", nil, 200, "be", map[string]string{
			"X-Got-Path": "/v2/users?id=1", "X-Got-Host": "internal.example", "X-Got-Original-Path": "/api/users?id=1"}},
		{"regex rewrite", "rewrite", "/r/books/42?x", nil, 200, "be", map[string]string{
			"X-Got-Path": "/42/books?x", "X-Got-Host": "rewrite", "X-Got-Original-Path": "/r/books/42?x"}},
		{"headers", "headers", "/", map[string]string{"X-Secret": "s", "X-Level": "client"}, 200, "be", map[string]string{
			// Envoy's default order: the weighted cluster's, then the
			// route's, then the virtual host's (whose set wins).
			"X-Got-Level": "vhost", "X-Got-Secret": "", "X-Got-Original-Path": "", "X-Remove-Me": "", "X-Resp": "wc,route"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := p.do("GET", tc.host, tc.path, tc.hdr, nil)
			if r.code != tc.wantCode || (tc.wantBody != "" && r.body != tc.wantBody) {
				t.Fatalf("got %d %q, want %d %q", r.code, r.body, tc.wantCode, tc.wantBody)
			}
			for k, want := range tc.wantHeaders {
				if got := strings.Join(r.header.Values(k), ","); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestMirror(t *testing.T) {
	lAddr := closedAddr(t)
	primary := startBackend(t, "primary", false, nil)
	release := make(chan struct{})
	var slowHosts, slowBodies atomic.Value
	slow := startBackend(t, "slow", false, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		slowHosts.Store(r.Host)
		slowBodies.Store(string(b))
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	failing := closedAddr(t)
	route := prefixRoute("m", "/", "primary")
	route.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "slow"}, {Cluster: "failing"}}
	g := build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("m", []string{"svc:9080"}, route))},
		[]*clusterv3.Cluster{staticCluster(t, "primary", false, primary.addr), staticCluster(t, "slow", false, slow.addr),
			staticCluster(t, "failing", false, failing)})
	p := startProxy(t, g)
	defer close(release)

	start := time.Now()
	r := p.do("POST", "svc:9080", "/x", nil, strings.NewReader("payload"))
	if r.code != 200 || r.body != "primary" {
		t.Fatalf("primary: got %d %q, want 200 primary", r.code, r.body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("primary took %v with a stuck mirror", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for slowHosts.Load() == nil && time.Now().Before(deadline) {
		pollPause()
	}
	if got, _ := slowHosts.Load().(string); got != "svc-shadow:9080" {
		t.Errorf("mirror Host = %q, want svc-shadow:9080", got)
	}
	if got, _ := slowBodies.Load().(string); got != "payload" {
		t.Errorf("mirror body = %q, want payload", got)
	}
	if primary.hits.Load() != 1 {
		t.Errorf("primary hits = %d, want 1", primary.hits.Load())
	}
}

func TestMirrorBounded(t *testing.T) {
	lAddr := closedAddr(t)
	primary := startBackend(t, "primary", false, nil)
	release := make(chan struct{})
	slow := startBackend(t, "slow", false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	route := prefixRoute("m", "/", "primary")
	route.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "slow"}}
	g := build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("m", []string{"m"}, route))},
		[]*clusterv3.Cluster{staticCluster(t, "primary", false, primary.addr), staticCluster(t, "slow", false, slow.addr)})
	p := startProxyMirrors(t, g, 2)
	defer close(release)
	for range 5 {
		if r := p.do("GET", "m", "/", nil, nil); r.code != 200 {
			t.Fatalf("primary: %d", r.code)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for slow.hits.Load() < 2 && time.Now().Before(deadline) {
		pollPause()
	}
	if got := metricValue(t, p, "loom_mirror_dropped_total"); got != 3 {
		t.Errorf("loom_mirror_dropped_total = %v, want 3 (5 mirrors, 2 in flight at most)", got)
	}
	if got := slow.hits.Load(); got != 2 {
		t.Errorf("mirror hits = %d, want 2", got)
	}
}

// corsListener is httpListener with the CORS filter before the router.
func corsListener(t testing.TB, name, addr, route string) *listenerv3.Listener {
	l := httpListener(t, name, addr, route)
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: cors.Name,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &corsv3.Cors{})}}}, hcm.HttpFilters...)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
	return l
}

func TestCORS(t *testing.T) {
	lAddr := closedAddr(t)
	be := startBackend(t, "be", false, nil)
	route := prefixRoute("c", "/", "be")
	route.TypedPerFilterConfig = map[string]*anypb.Any{cors.Name: xdstest.MustAny(t, &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "https://ok.example"}}},
		AllowMethods:           "GET,POST", AllowHeaders: "x-a", ExposeHeaders: "x-b", MaxAge: "600",
		AllowCredentials: wrapperspb.Bool(true)})}
	// "star": an exact "*" allows every origin (Envoy matches each matcher
	// against "*" too); allow_methods and allow_headers "*" echo the
	// request's; the upstream's own Access-Control-Allow-Origin is replaced.
	// "ignore": unmatchedPreflights IGNORE (forward_not_matching_preflights
	// false) answers a preflight of another origin itself, without
	// Access-Control-Allow-Origin. "kinds": prefix and regex origins.
	own := startBackend(t, "own", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "https://upstream.example")
		io.WriteString(w, "own")
	})
	star := prefixRoute("s", "/", "own")
	star.TypedPerFilterConfig = map[string]*anypb.Any{cors.Name: xdstest.MustAny(t, &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "*"}}},
		AllowMethods:           "*", AllowHeaders: "*"})}
	ignore := prefixRoute("i", "/", "be")
	ignore.TypedPerFilterConfig = map[string]*anypb.Any{cors.Name: xdstest.MustAny(t, &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "https://ok.example"}}},
		AllowMethods:           "GET", MaxAge: "60", ForwardNotMatchingPreflights: wrapperspb.Bool(false)})}
	kinds := prefixRoute("k", "/", "be")
	kinds.TypedPerFilterConfig = map[string]*anypb.Any{cors.Name: xdstest.MustAny(t, &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{
			{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "https://app."}},
			{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `https://[a-z]+\.example\.org`}}}}})}
	g := build(t, nil, []*listenerv3.Listener{corsListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("c", []string{"c"}, route), vhost("plain", []string{"plain"}, prefixRoute("p", "/", "be")),
			vhost("star", []string{"star"}, star), vhost("ignore", []string{"ignore"}, ignore), vhost("kinds", []string{"kinds"}, kinds))},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr), staticCluster(t, "own", false, own.addr)})
	p := startProxy(t, g)

	acHeaders := func(h http.Header) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			if strings.HasPrefix(k, "Access-Control-") {
				out[k] = strings.Join(v, ",")
			}
		}
		return out
	}
	preflight := map[string]string{"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"}
	tests := []struct {
		name, method, host string
		hdr                map[string]string
		wantCode           int
		wantUpstream       bool
		want               map[string]string
	}{
		{"preflight", "OPTIONS", "c", preflight, 200, false, map[string]string{
			"Access-Control-Allow-Origin": "https://ok.example", "Access-Control-Allow-Credentials": "true",
			"Access-Control-Allow-Methods": "GET,POST", "Access-Control-Allow-Headers": "x-a", "Access-Control-Max-Age": "600"}},
		{"preflight other origin goes upstream", "OPTIONS", "c", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, 200, true, map[string]string{}},
		{"actual", "GET", "c", map[string]string{"Origin": "https://ok.example"}, 200, true, map[string]string{
			"Access-Control-Allow-Origin": "https://ok.example", "Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-b"}},
		{"actual other origin", "GET", "c", map[string]string{"Origin": "https://evil.example"}, 200, true, map[string]string{}},
		{"no policy", "OPTIONS", "plain", preflight, 200, true, map[string]string{}},
		{"star preflight echoes method and headers", "OPTIONS", "star", map[string]string{"Origin": "https://any.example",
			"Access-Control-Request-Method": "PATCH", "Access-Control-Request-Headers": "x-one,x-two"}, 200, false, map[string]string{
			"Access-Control-Allow-Origin": "https://any.example", "Access-Control-Allow-Methods": "PATCH", "Access-Control-Allow-Headers": "x-one,x-two"}},
		{"star actual overrides the upstream's origin", "GET", "star", map[string]string{"Origin": "https://any.example"}, 200, true, map[string]string{
			"Access-Control-Allow-Origin": "https://any.example"}},
		{"star without Origin keeps the upstream's", "GET", "star", nil, 200, true, map[string]string{
			"Access-Control-Allow-Origin": "https://upstream.example"}},
		{"ignore answers an unmatched preflight", "OPTIONS", "ignore", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}, 200, false, map[string]string{
			"Access-Control-Allow-Methods": "GET", "Access-Control-Max-Age": "60"}},
		{"ignore matched preflight", "OPTIONS", "ignore", map[string]string{"Origin": "https://ok.example", "Access-Control-Request-Method": "GET"}, 200, false, map[string]string{
			"Access-Control-Allow-Origin": "https://ok.example", "Access-Control-Allow-Methods": "GET", "Access-Control-Max-Age": "60"}},
		{"prefix origin", "GET", "kinds", map[string]string{"Origin": "https://app.example"}, 200, true, map[string]string{"Access-Control-Allow-Origin": "https://app.example"}},
		{"regex origin", "GET", "kinds", map[string]string{"Origin": "https://shop.example.org"}, 200, true, map[string]string{"Access-Control-Allow-Origin": "https://shop.example.org"}},
		{"regex is anchored", "GET", "kinds", map[string]string{"Origin": "https://shop.example.org.evil"}, 200, true, map[string]string{}},
		{"OPTIONS without request method is no preflight", "OPTIONS", "c", map[string]string{"Origin": "https://ok.example"}, 200, true, map[string]string{
			"Access-Control-Allow-Origin": "https://ok.example", "Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := be.hits.Load() + own.hits.Load()
			r := p.do(tc.method, tc.host, "/", tc.hdr, nil)
			if r.code != tc.wantCode {
				t.Fatalf("status %d, want %d", r.code, tc.wantCode)
			}
			if got := be.hits.Load()+own.hits.Load() > before; got != tc.wantUpstream {
				t.Errorf("reached upstream = %v, want %v", got, tc.wantUpstream)
			}
			if diff := cmp.Diff(tc.want, acHeaders(r.header)); diff != "" {
				t.Errorf("Access-Control-* headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryPreviousHostsAndGRPC(t *testing.T) {
	lAddr := closedAddr(t)
	var badHits atomic.Int64
	bad := startBackend(t, "bad", false, func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "14")
		w.WriteHeader(200)
	})
	good := startBackend(t, "good", false, nil)
	r1 := withRetry(prefixRoute("grpc", "/", "c"), "unavailable", 1)
	r1.GetRoute().RetryPolicy.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{Name: config.PreviousHostsPredicateName}}
	r1.GetRoute().RetryPolicy.HostSelectionRetryMaxAttempts = 5
	noRetry := withRetry(prefixRoute("none", "/", "c"), "5xx", 1)
	g := build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("grpc", []string{"grpc"}, r1), vhost("none", []string{"none"}, noRetry))},
		[]*clusterv3.Cluster{staticCluster(t, "c", false, bad.addr, good.addr)})
	p := startProxy(t, g)
	for i := range 4 {
		r := p.do("POST", "grpc", "/", nil, nil)
		if r.code != 200 || r.body != "good" {
			t.Fatalf("request %d: got %d %q (grpc-status %q), want 200 good", i, r.code, r.body, r.header.Get("Grpc-Status"))
		}
	}
	if badHits.Load() == 0 {
		t.Fatal("the grpc-status 14 endpoint was never tried: retry not exercised")
	}
	// grpc-status 14 is not a 5xx: without "unavailable" it is not retried.
	sawGRPCError := false
	for range 4 {
		if r := p.do("POST", "none", "/", nil, nil); r.header.Get("Grpc-Status") == "14" {
			sawGRPCError = true
		}
	}
	if !sawGRPCError {
		t.Error("retry_on 5xx retried a grpc-status 14 response")
	}
}

// TestHashCookieGenerated: a cookie hash policy with a ttl gives a request
// without the cookie a Set-Cookie carrying the policy's attributes (Istio's
// consistentHash.httpCookie.attributes).
func TestHashCookieGenerated(t *testing.T) {
	lAddr := closedAddr(t)
	be := startBackend(t, "be", false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "be") })
	rt := prefixRoute("be", "/", "be")
	rt.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{
		Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session", Path: "/", Ttl: durationpb.New(time.Minute),
			Attributes: []*routev3.RouteAction_HashPolicy_CookieAttribute{{Name: "SameSite", Value: "Lax"}, {Name: "Secure"}}}}}}
	g := build(t, nil, []*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("be", []string{"*"}, rt))},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)})
	p := startProxy(t, g)

	r := p.do("GET", "be", "/", nil, nil)
	if r.code != 200 || r.body != "be" {
		t.Fatalf("got %d %q, want 200 be", r.code, r.body)
	}
	sc := r.header.Values("Set-Cookie")
	if len(sc) != 1 || !strings.HasPrefix(sc[0], `session="`) || !strings.HasSuffix(sc[0], `"; Path=/; Max-Age=60; SameSite=Lax; Secure; HttpOnly`) {
		t.Errorf("Set-Cookie = %q, want one session cookie with SameSite=Lax; Secure", sc)
	}
	// Sending the cookie back generates none.
	r = p.do("GET", "be", "/", map[string]string{"Cookie": strings.SplitN(sc[0], ";", 2)[0]}, nil)
	if got := r.header.Values("Set-Cookie"); r.code != 200 || len(got) != 0 {
		t.Errorf("with the cookie: %d, Set-Cookie %q; want 200 and none", r.code, got)
	}
}
