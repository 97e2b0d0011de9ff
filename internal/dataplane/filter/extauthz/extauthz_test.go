package extauthz_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extauthznetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/filter/extauthz"
	"github.com/loom-mesh/loom/internal/dataplane/filter/extauthz/extauthztest"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	grpcCluster = "outbound|9000||ext-authz.foo.svc.cluster.local"
	httpCluster = "outbound|8000||ext-authz.foo.svc.cluster.local"
)

func staticCluster(t testing.TB, name, addr string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
				Endpoint: &endpointv3.Endpoint{Address: xdstest.HostPortAddress(t, addr)}}}}}}},
	}
}

// clusters is a cluster manager holding a generation with the two
// authorization services' clusters, as the proxy's is.
func clusters(t *testing.T, grpcAddr, httpAddr string) (*upstream.ClusterManager, func() *config.Generation) {
	m := upstream.New(upstream.Options{})
	t.Cleanup(func() { _ = m.Close() })
	var prev *config.Generation
	update := func() *config.Generation {
		g, err := config.Build(config.Resources{Clusters: []proto.Message{
			staticCluster(t, grpcCluster, grpcAddr), staticCluster(t, httpCluster, httpAddr)}}, prev)
		if err != nil {
			t.Fatal(err)
		}
		m.Update(g)
		prev = g
		return g
	}
	update()
	return m, update
}

func build(t *testing.T, m *extauthzv3.ExtAuthz) filter.Filter {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := extauthz.Factory{}.Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	f, err := extauthz.Factory{}.Build(cfg, filter.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// result is what one request through the filter did.
type result struct {
	w        *httptest.ResponseRecorder
	st       *filter.State
	upstream *http.Request // the request next saw; nil when not passed
}

func run(f filter.Filter, up filter.Upstreams, r *http.Request, md map[string]map[string]any) result {
	st := &filter.State{Upstreams: up, Metadata: md}
	r = r.WithContext(filter.NewContext(r.Context(), st))
	res := result{w: httptest.NewRecorder(), st: st}
	f.ServeHTTP(res.w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res.upstream = r
		w.WriteHeader(http.StatusOK)
	}))
	return res
}

func grpcAuthz(timeout time.Duration) *extauthzv3.ExtAuthz {
	return &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: grpcCluster, Authority: "ext-authz.foo.svc.cluster.local"}},
			Timeout: durationpb.New(timeout),
		}},
	}
}

func TestGRPCCheck(t *testing.T) {
	srv := extauthztest.StartGRPC(t)
	up, update := clusters(t, srv.Addr, "127.0.0.1:1")
	f := build(t, grpcAuthz(5*time.Second))

	allow := httptest.NewRequest("GET", "http://httpbin.foo:8000/headers?a=b", nil)
	allow.Header.Set("x-ext-authz", "allow")
	allow.Header.Set("X-Request-Id", "rid-1")
	allow.RemoteAddr = "10.0.0.7:4000"
	res := run(f, up, allow, nil)
	if res.upstream == nil {
		t.Fatalf("allowed request did not pass: %d %q", res.w.Code, res.w.Body.String())
	}
	if got := res.upstream.Header.Get(extauthztest.OverrideHdr); got != extauthztest.GRPCOverride {
		t.Errorf("upstream %s = %q", extauthztest.OverrideHdr, got)
	}
	if got := res.upstream.Header.Get(extauthztest.ResultHeader); got != "allowed" {
		t.Errorf("upstream %s = %q", extauthztest.ResultHeader, got)
	}
	hr := srv.Last().GetAttributes().GetRequest().GetHttp()
	if hr.GetMethod() != "GET" || hr.GetPath() != "/headers?a=b" || hr.GetHost() != "httpbin.foo:8000" || hr.GetId() != "rid-1" ||
		hr.GetHeaders()[":authority"] != "httpbin.foo:8000" || hr.GetHeaders()["x-ext-authz"] != "allow" {
		t.Errorf("check request = %v", hr)
	}
	if a := srv.Last().GetAttributes().GetSource().GetAddress().GetSocketAddress(); a.GetAddress() != "10.0.0.7" || a.GetPortValue() != 4000 {
		t.Errorf("check source = %v", a)
	}

	deny := httptest.NewRequest("GET", "/headers", nil)
	res = run(f, up, deny, nil)
	if res.upstream != nil || res.w.Code != 403 || res.w.Body.String() != extauthztest.DeniedMessage || res.w.Header().Get(extauthztest.ResultHeader) != "denied" {
		t.Errorf("denied request: passed %v, %d %q %v", res.upstream != nil, res.w.Code, res.w.Body.String(), res.w.Header())
	}
	if res.st.Flags != filter.FlagUnauthorizedExternal || res.st.ReplyDetails != extauthz.DetailsDenied || res.st.ReplyCode != 403 {
		t.Errorf("state = %+v", res.st)
	}

	// The connection survives generations: same client, one connection.
	cc, err := up.GRPC(grpcCluster, "x")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		update()
		if res := run(f, up, allow, nil); res.upstream == nil {
			t.Fatalf("allowed request failed after an update: %d", res.w.Code)
		}
	}
	cc2, _ := up.GRPC(grpcCluster, "x")
	if cc != cc2 || srv.Conns.Load() != 1 {
		t.Errorf("after 3 generations: same client %v, %d connections to the service", cc == cc2, srv.Conns.Load())
	}
}

func TestFilterEnabledMetadata(t *testing.T) {
	srv := extauthztest.StartGRPC(t)
	up, _ := clusters(t, srv.Addr, "127.0.0.1:1")
	cfg := grpcAuthz(5 * time.Second)
	// Istio's CUSTOM shape: check only what the RBAC shadow rules matched.
	cfg.FilterEnabledMetadata = &matcherv3.MetadataMatcher{
		Filter: "envoy.filters.http.rbac",
		Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "istio_ext_authz_shadow_effective_policy_id"}}},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "istio-ext-authz-default"}}}},
	}
	f := build(t, cfg)
	if res := run(f, up, httptest.NewRequest("GET", "/", nil), nil); res.upstream == nil || srv.Checks.Load() != 0 {
		t.Fatalf("unmatched request: passed %v, %d checks", res.upstream != nil, srv.Checks.Load())
	}
	md := map[string]map[string]any{"envoy.filters.http.rbac": {"istio_ext_authz_shadow_effective_policy_id": "istio-ext-authz-default-ns[foo]-policy[a]-rule[0]"}}
	if res := run(f, up, httptest.NewRequest("GET", "/", nil), md); res.upstream != nil || srv.Checks.Load() != 1 {
		t.Fatalf("matched request without the allow header: passed %v, %d checks", res.upstream != nil, srv.Checks.Load())
	}
}

func TestCheckFailures(t *testing.T) {
	// A service that is gone: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	// A service that never answers: the check times out.
	slow := extauthztest.StartGRPC(t)
	stop := make(chan struct{})
	slow.Allow = func(*authv3.CheckRequest) bool { <-stop; return true }
	t.Cleanup(func() { close(stop) })

	for _, tt := range []struct {
		name     string
		addr     string
		mod      func(*extauthzv3.ExtAuthz)
		passed   bool
		code     int
		failMark bool
	}{
		{"refused, fail closed", dead, nil, false, 403, false},
		{"refused, status_on_error", dead, func(m *extauthzv3.ExtAuthz) {
			m.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
		}, false, 503, false},
		{"refused, fail open", dead, func(m *extauthzv3.ExtAuthz) { m.FailureModeAllow = true }, true, 200, false},
		{"refused, fail open marked", dead, func(m *extauthzv3.ExtAuthz) { m.FailureModeAllow, m.FailureModeAllowHeaderAdd = true, true }, true, 200, true},
		{"timeout, fail closed", slow.Addr, nil, false, 403, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up, _ := clusters(t, tt.addr, "127.0.0.1:1")
			cfg := grpcAuthz(100 * time.Millisecond)
			if tt.mod != nil {
				tt.mod(cfg)
			}
			f := build(t, cfg)
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("x-ext-authz", "allow")
			res := run(f, up, r, nil)
			if (res.upstream != nil) != tt.passed || res.w.Code != tt.code {
				t.Fatalf("passed %v, code %d", res.upstream != nil, res.w.Code)
			}
			if !tt.passed && (res.st.ReplyDetails != extauthz.DetailsError || res.st.Flags != filter.FlagUnauthorizedExternal) {
				t.Errorf("state = %+v", res.st)
			}
			if tt.passed && (res.upstream.Header.Get("X-Envoy-Auth-Failure-Mode-Allowed") == "true") != tt.failMark {
				t.Errorf("failure mode header = %q", res.upstream.Header.Get("X-Envoy-Auth-Failure-Mode-Allowed"))
			}
		})
	}
}

// httpAuthz is the ext_authz Istio generates for an envoyExtAuthzHttp
// provider with includeRequestHeadersInCheck [x-ext-authz],
// headersToUpstreamOnAllow and headersToDownstreamOnDeny.
func httpAuthz() *extauthzv3.ExtAuthz {
	ignoreCase := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}, IgnoreCase: true}
	}
	return &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		AllowedHeaders:      &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{ignoreCase("x-ext-authz")}},
		Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
			PathPrefix:           "/check",
			ServerUri:            &corev3.HttpUri{Uri: "http://ext-authz.foo.svc.cluster.local", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: httpCluster}, Timeout: durationpb.New(5 * time.Second)},
			AuthorizationRequest: &extauthzv3.AuthorizationRequest{HeadersToAdd: []*corev3.HeaderValue{{Key: "x-header-1", Value: "value-1"}}},
			AuthorizationResponse: &extauthzv3.AuthorizationResponse{
				AllowedUpstreamHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{ignoreCase(extauthztest.ResultHeader)}},
				AllowedClientHeaders:   &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{ignoreCase(extauthztest.ResultHeader)}},
			},
		}},
	}
}

func TestHTTPCheck(t *testing.T) {
	srv := extauthztest.StartHTTP(t)
	up, _ := clusters(t, "127.0.0.1:1", srv.Addr)
	f := build(t, httpAuthz())

	r := httptest.NewRequest("POST", "http://httpbin.foo:8000/anything?x=1", strings.NewReader("body"))
	r.Header.Set("x-ext-authz", "allow")
	r.Header.Set("Authorization", "Bearer t")
	r.Header.Set("Cookie", "secret")
	res := run(f, up, r, nil)
	if res.upstream == nil {
		t.Fatalf("allowed request did not pass: %d %q", res.w.Code, res.w.Body.String())
	}
	if got := res.upstream.Header.Get(extauthztest.ResultHeader); got != "allowed" {
		t.Errorf("upstream %s = %q", extauthztest.ResultHeader, got)
	}
	if res.upstream.Header.Get(extauthztest.OverrideHdr) != "" {
		t.Error("a header outside allowed_upstream_headers reached upstream")
	}
	last := srv.Last()
	if last.Method != "POST" || last.URL.RequestURI() != "/check/anything?x=1" || last.Host != "httpbin.foo:8000" ||
		last.Header.Get("Authorization") != "Bearer t" || last.Header.Get("X-Header-1") != "value-1" || last.Header.Get("Cookie") != "" ||
		last.Header.Get("Content-Length") != "0" {
		t.Errorf("check request: %s %s host %s headers %v", last.Method, last.URL.RequestURI(), last.Host, last.Header)
	}
	if b, _ := io.ReadAll(res.upstream.Body); string(b) != "body" {
		t.Errorf("upstream body = %q", b)
	}

	res = run(f, up, httptest.NewRequest("GET", "/anything", nil), nil)
	if res.upstream != nil || res.w.Code != 403 || res.w.Body.String() != extauthztest.DeniedMessage || res.w.Header().Get(extauthztest.ResultHeader) != "denied" {
		t.Errorf("denied: passed %v, %d %q %v", res.upstream != nil, res.w.Code, res.w.Body.String(), res.w.Header())
	}
	if res.st.Flags != filter.FlagUnauthorizedExternal || res.st.ReplyDetails != extauthz.DetailsDenied {
		t.Errorf("state = %+v", res.st)
	}

	// A 5xx from the service is a failed check: failOpen lets it through.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	t.Cleanup(broken.Close)
	up2, _ := clusters(t, "127.0.0.1:1", strings.TrimPrefix(broken.URL, "http://"))
	for _, failOpen := range []bool{false, true} {
		cfg := httpAuthz()
		cfg.FailureModeAllow = failOpen
		res := run(build(t, cfg), up2, httptest.NewRequest("GET", "/", nil), nil)
		if (res.upstream != nil) != failOpen || (!failOpen && (res.w.Code != 403 || res.st.ReplyDetails != extauthz.DetailsError)) {
			t.Errorf("503 from the service, failOpen %v: passed %v, %d %q", failOpen, res.upstream != nil, res.w.Code, res.st.ReplyDetails)
		}
	}
}

func TestRequestBody(t *testing.T) {
	srv := extauthztest.StartGRPC(t)
	up, _ := clusters(t, srv.Addr, "127.0.0.1:1")
	for _, tt := range []struct {
		partial bool
		code    int
		sent    string
	}{{true, 200, "0123"}, {false, 413, ""}} {
		cfg := grpcAuthz(5 * time.Second)
		cfg.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: 4, AllowPartialMessage: tt.partial}
		f := build(t, cfg)
		r := httptest.NewRequest("POST", "/", strings.NewReader("0123456789"))
		r.Header.Set("x-ext-authz", "allow")
		res := run(f, up, r, nil)
		if res.w.Code != tt.code {
			t.Fatalf("partial %v: code %d", tt.partial, res.w.Code)
		}
		if tt.code != 200 {
			continue
		}
		if got := srv.Last().GetAttributes().GetRequest().GetHttp().GetBody(); got != tt.sent {
			t.Errorf("body sent with the check = %q", got)
		}
		if b, _ := io.ReadAll(res.upstream.Body); string(b) != "0123456789" {
			t.Errorf("upstream body = %q", b)
		}
	}
}

func TestNetworkCheck(t *testing.T) {
	srv := extauthztest.StartGRPC(t)
	srv.Allow = func(req *authv3.CheckRequest) bool {
		return req.GetAttributes().GetDestination().GetAddress().GetSocketAddress().GetPortValue() == 9000
	}
	up, _ := clusters(t, srv.Addr, "127.0.0.1:1")
	a, err := anypb.New(&extauthznetv3.ExtAuthz{StatPrefix: "tcp.", TransportApiVersion: corev3.ApiVersion_V3,
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: grpcCluster}},
			Timeout: durationpb.New(5 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := extauthz.NetworkFactory{}.Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	nf, err := extauthz.NetworkFactory{}.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(port uint16) *filter.Connection {
		return &filter.Connection{Source: netip.MustParseAddrPort("10.0.0.1:5000"), Destination: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port)}
	}
	if _, err := filter.NetworkChain(context.Background(), conn(9000), up, []filter.NetworkFilter{nf}); err != nil {
		t.Errorf("port 9000: %v", err)
	}
	_, err = filter.NetworkChain(context.Background(), conn(9001), up, []filter.NetworkFilter{nf})
	var ce *extauthz.CheckError
	if !errors.As(err, &ce) || !ce.Denied || err.Error() != "ext_authz_denied" {
		t.Errorf("port 9001: %v", err)
	}
	if _, err := filter.NetworkChain(context.Background(), conn(9000), nil, []filter.NetworkFilter{nf}); err == nil {
		t.Error("a check without upstreams passed")
	}
}

func TestParseRefuses(t *testing.T) {
	for name, m := range map[string]*extauthzv3.ExtAuthz{
		"services":          {},
		"google_grpc":       {Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "x", StatPrefix: "x"}}}}},
		"clear_route_cache": func() *extauthzv3.ExtAuthz { m := grpcAuthz(time.Second); m.ClearRouteCache = true; return m }(),
		"filter_enabled": func() *extauthzv3.ExtAuthz {
			m := grpcAuthz(time.Second)
			m.FilterEnabled = &corev3.RuntimeFractionalPercent{}
			return m
		}(),
		"path_prefix": func() *extauthzv3.ExtAuthz {
			m := httpAuthz()
			m.GetHttpService().PathPrefix = "check"
			return m
		}(),
	} {
		a, _ := anypb.New(m)
		if _, err := (extauthz.Factory{}).Parse(a); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
