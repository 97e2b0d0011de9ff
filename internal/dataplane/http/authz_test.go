package http_test

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/filter/extauthz/extauthztest"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// withFilters is httpListener with filters before its router, as Istio
// puts authorization filters on an inbound HCM.
func withFilters(t testing.TB, l *listenerv3.Listener, mod func(*hcmv3.HttpConnectionManager), filters ...*hcmv3.HttpFilter) *listenerv3.Listener {
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.HttpFilters = append(filters, hcm.HttpFilters...)
	if mod != nil {
		mod(&hcm)
	}
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
	return l
}

func httpFilter(t testing.TB, name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, m)}}
}

func exactMatch(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func policy(perm *rbacv3.Permission, princ *rbacv3.Principal) *rbacv3.Policy {
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{perm}, Principals: []*rbacv3.Principal{princ}}
}

var (
	anyPermission = &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	anyPrincipal  = &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
)

func headerPermission(name string, m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}}}
}

// TestRBACOverSockets: Istio's DENY then ALLOW filters on a listener,
// real clients: a denied request gets Envoy's 403 "RBAC: access denied"
// and never reaches the upstream; the access log says which policy.
func TestRBACOverSockets(t *testing.T) {
	lAddr := closedAddr(t)
	be := startBackend(t, "be", false, nil)
	deny := httpFilter(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY,
		Policies: map[string]*rbacv3.Policy{"ns[foo]-policy[deny-admin]-rule[0]": policy(
			&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
				Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/admin"}}}}}}, anyPrincipal)}}})
	allow := httpFilter(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{
		Policies: map[string]*rbacv3.Policy{"ns[foo]-policy[viewer]-rule[0]": policy(headerPermission(":method", exactMatch("GET")), anyPrincipal)}}})
	g := build(t, nil, []*listenerv3.Listener{withFilters(t, httpListener(t, "l", lAddr, "rt"), nil, deny, allow)},
		[]*routev3.RouteConfiguration{{Name: "rt", VirtualHosts: []*routev3.VirtualHost{vhost("all", []string{"*"}, prefixRoute("r", "/", "be"))}}},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)})
	p := startProxy(t, g)

	if r := p.do("GET", "httpbin", "/get", map[string]string{"X-Request-Id": "ok"}, nil); r.code != 200 || r.body != "be" {
		t.Fatalf("GET: %d %q", r.code, r.body)
	}
	for _, tc := range []struct {
		method, path, rid, policy string
	}{
		{"POST", "/post", "post", "none"},
		{"GET", "/admin/users", "admin", "ns[foo]-policy[deny-admin]-rule[0]"},
		// Istio's path normalization: a dot segment does not hide /admin.
		{"GET", "/public/../admin", "dots", "ns[foo]-policy[deny-admin]-rule[0]"},
	} {
		hits := be.hits.Load()
		r := p.do(tc.method, "httpbin", tc.path, map[string]string{"X-Request-Id": tc.rid}, nil)
		if r.code != 403 || r.body != "RBAC: access denied" {
			t.Errorf("%s %s: %d %q", tc.method, tc.path, r.code, r.body)
		}
		if be.hits.Load() != hits {
			t.Errorf("%s %s reached the upstream", tc.method, tc.path)
		}
		if l := p.logLine(tc.rid); !strings.Contains(l, " 403 - rbac_access_denied_matched_policy["+tc.policy+"] ") {
			t.Errorf("access log: %s", l)
		}
	}
}

// TestExtAuthzOverSockets: Istio's CUSTOM action on a listener, checked by
// real authorization services that behave as Istio's ext-authz sample
// (allow iff x-ext-authz: allow), over gRPC and over HTTP.
func TestExtAuthzOverSockets(t *testing.T) {
	grpcSrv := extauthztest.StartGRPC(t)
	httpSrv := extauthztest.StartHTTP(t)
	be := startBackend(t, "be", false, nil)
	enabled := &matcherv3.MetadataMatcher{
		Filter: "envoy.filters.http.rbac",
		Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "istio_ext_authz_shadow_effective_policy_id"}}},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "istio-ext-authz-sample"}}}},
	}
	// CUSTOM on paths /headers*: the shadow DENY rules trigger the check.
	shadow := httpFilter(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{ShadowRulesStatPrefix: "istio_ext_authz_", ShadowRules: &rbacv3.RBAC{
		Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"istio-ext-authz-sample-ns[foo]-policy[ext]-rule[0]": policy(
			&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
				Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/headers"}}}}}}, anyPrincipal)}}})
	grpcAuthz := httpFilter(t, "envoy.filters.http.ext_authz", &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3, FilterEnabledMetadata: enabled,
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "ext-authz-grpc", Authority: "ext-authz"}},
			Timeout:         durationpb.New(5 * time.Second)}},
	})
	httpAuthz := httpFilter(t, "envoy.filters.http.ext_authz", &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3, FilterEnabledMetadata: enabled,
		AllowedHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "x-ext-authz"}, IgnoreCase: true}}},
		Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
			ServerUri: &corev3.HttpUri{Uri: "http://ext-authz", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "ext-authz-http"}, Timeout: durationpb.New(5 * time.Second)},
			AuthorizationResponse: &extauthzv3.AuthorizationResponse{
				AllowedUpstreamHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: extauthztest.ResultHeader}, IgnoreCase: true}}},
			},
		}},
	})
	for _, tc := range []struct {
		name   string
		authz  *hcmv3.HttpFilter
		checks func() int64
	}{
		{"grpc", grpcAuthz, grpcSrv.Checks.Load},
		{"http", httpAuthz, httpSrv.Requests.Load},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lAddr := closedAddr(t)
			g := build(t, nil, []*listenerv3.Listener{withFilters(t, httpListener(t, "l", lAddr, "rt"), nil, shadow, tc.authz)},
				[]*routev3.RouteConfiguration{{Name: "rt", VirtualHosts: []*routev3.VirtualHost{vhost("all", []string{"*"}, prefixRoute("r", "/", "be"))}}},
				[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr),
					staticCluster(t, "ext-authz-grpc", true, grpcSrv.Addr), staticCluster(t, "ext-authz-http", false, httpSrv.Addr)})
			p := startProxy(t, g)

			n := tc.checks()
			r := p.do("GET", "httpbin", "/headers", map[string]string{"x-ext-authz": "allow", "X-Request-Id": tc.name + "-allow"}, nil)
			if r.code != 200 || be.last.Load().Header.Get(extauthztest.ResultHeader) != "allowed" {
				t.Errorf("allowed: %d %q, upstream saw %v", r.code, r.body, be.last.Load().Header)
			}
			hits := be.hits.Load()
			r = p.do("GET", "httpbin", "/headers", map[string]string{"x-ext-authz": "deny", "X-Request-Id": tc.name + "-deny"}, nil)
			if r.code != 403 || r.body != extauthztest.DeniedMessage || be.hits.Load() != hits {
				t.Errorf("denied: %d %q (upstream hit: %v)", r.code, r.body, be.hits.Load() != hits)
			}
			if l := p.logLine(tc.name + "-deny"); !strings.Contains(l, " 403 UAEX ext_authz_denied ") {
				t.Errorf("access log: %s", l)
			}
			if got := tc.checks() - n; got != 2 {
				t.Errorf("%d checks for 2 matching requests", got)
			}
			// Not matched by the CUSTOM rules: no check.
			if r := p.do("GET", "httpbin", "/status/200", nil, nil); r.code != 200 || tc.checks()-n != 2 {
				t.Errorf("unmatched path: %d, %d checks", r.code, tc.checks()-n)
			}
		})
	}
}

// TestRemoteIPOverSockets: the listener's use_remote_address decides
// whether RBAC's remote_ip reads X-Forwarded-For, so that a client cannot
// claim another address to a gateway.
func TestRemoteIPOverSockets(t *testing.T) {
	be := startBackend(t, "be", false, nil)
	denyBlocked := httpFilter(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY,
		Policies: map[string]*rbacv3.Policy{"blocked": policy(anyPermission, &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{
			RemoteIp: &corev3.CidrRange{AddressPrefix: "203.0.113.0", PrefixLen: wrapperspb.UInt32(24)}}})}}})
	for _, tc := range []struct {
		useRemote bool
		xff       string
		code      int
	}{
		{false, "203.0.113.9", 403}, // a sidecar trusts the last hop's X-Forwarded-For
		{false, "198.51.100.1", 200},
		{true, "203.0.113.9", 200}, // a gateway trusts only its peer (127.0.0.1)
	} {
		lAddr := closedAddr(t)
		mod := func(h *hcmv3.HttpConnectionManager) { h.UseRemoteAddress = wrapperspb.Bool(tc.useRemote) }
		g := build(t, nil, []*listenerv3.Listener{withFilters(t, httpListener(t, "l", lAddr, "rt"), mod, denyBlocked)},
			[]*routev3.RouteConfiguration{{Name: "rt", VirtualHosts: []*routev3.VirtualHost{vhost("all", []string{"*"}, prefixRoute("r", "/", "be"))}}},
			[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)})
		p := startProxy(t, g)
		if r := p.do("GET", "httpbin", "/", map[string]string{"X-Forwarded-For": tc.xff}, nil); r.code != tc.code {
			t.Errorf("use_remote_address %v, X-Forwarded-For %s: %d, want %d", tc.useRemote, tc.xff, r.code, tc.code)
		}
		// With use_remote_address the proxy appends its peer, so that the
		// next hop's remote_ip is the client it saw.
		if tc.code == 200 {
			want := tc.xff
			if tc.useRemote {
				want += ",127.0.0.1"
			}
			if got := be.last.Load().Header.Get("X-Forwarded-For"); got != want {
				t.Errorf("use_remote_address %v: upstream X-Forwarded-For %q, want %q", tc.useRemote, got, want)
			}
		}
	}
}
