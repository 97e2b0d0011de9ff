package http_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// fakeRLS is an in-test rate limit service over a real gRPC server: it
// records each request's descriptors and answers with decide, or by
// default OVER_LIMIT for a descriptor seen more than limit times.
type fakeRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	addr  string
	conns atomic.Int64 // accepted connections

	mu     sync.Mutex // guards the fields below
	seen   []string   // "domain: (k=v,k=v) (k=v)" per request
	counts map[string]int
	limit  int
	decide func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startRLS(t testing.TB, limit int) *fakeRLS {
	t.Helper()
	f := &fakeRLS{counts: map[string]int{}, limit: limit}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	s := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(s, f)
	go s.Serve(countingListener{ln, &f.conns})
	t.Cleanup(s.Stop)
	return f
}

func (f *fakeRLS) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	b.WriteString(req.GetDomain() + ":")
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	for _, d := range req.GetDescriptors() {
		var es []string
		for _, e := range d.GetEntries() {
			es = append(es, e.GetKey()+"="+e.GetValue())
		}
		k := "(" + strings.Join(es, ",") + ")"
		b.WriteString(" " + k)
		f.counts[k]++
		st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK,
			CurrentLimit:   &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: uint32(f.limit), Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE},
			LimitRemaining: uint32(max(f.limit-f.counts[k], 0)), DurationUntilReset: durationpb.New(42 * time.Second)}
		if f.counts[k] > f.limit {
			st.Code, resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT, rlsv3.RateLimitResponse_OVER_LIMIT
		}
		resp.Statuses = append(resp.Statuses, st)
	}
	f.seen = append(f.seen, b.String())
	if f.decide != nil {
		return f.decide(req)
	}
	return resp, nil
}

func (f *fakeRLS) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// rateLimitListener is httpListener with the ratelimit filter first.
func rateLimitListener(t testing.TB, addr, route string, rl *rlv3.RateLimit) *listenerv3.Listener {
	l := httpListener(t, "l", addr, route)
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.ratelimit",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, rl)}}}, hcm.HttpFilters...)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
	return l
}

// istioRateLimit is the ratelimit filter of Istio's global rate limit
// sample, with a shorter timeout.
func istioRateLimit(failDeny bool) *rlv3.RateLimit {
	return &rlv3.RateLimit{
		Domain:          "productpage-ratelimit",
		FailureModeDeny: failDeny,
		Timeout:         durationpb.New(2 * time.Second),
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "rate_limit_cluster"}}}},
	}
}

// pathAction is the sample's virtual host action: request_headers :path as
// PATH.
func pathAction() *routev3.RateLimit {
	return &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
		RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: ":path", DescriptorKey: "PATH"}}}}}
}

// rlProxy is a proxy whose generations are built with the filter deps
// loom-proxy gives (the service cluster "gateway"); filters reach clusters
// through the cluster manager, as in loom-proxy.
type rlProxy struct{ *proxy }

func startRateLimitProxy(t *testing.T) *rlProxy {
	t.Helper()
	return &rlProxy{startProxy(t, build(t, nil, nil, nil, nil))}
}

// apply builds the resources with the proxy's filter deps and applies
// them.
func (p *rlProxy) apply(ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration, cs []*clusterv3.Cluster) {
	p.t.Helper()
	g, err := config.BuildWith(resources(ls, rcs, cs), p.gen.Load(), filter.Deps{ServiceCluster: "gateway"})
	if err != nil {
		p.t.Fatal(err)
	}
	p.proxy.apply(g)
}

// TestRateLimitIstioSample: the sample's filter and virtual host action on
// a real proxy: the service gets (PATH=/productpage) in the sample's
// domain; the second request is over the limit and gets 429 with
// x-envoy-ratelimited and the flag RL; other paths count apart.
func TestRateLimitIstioSample(t *testing.T) {
	rls := startRLS(t, 1)
	be := startBackend(t, "productpage", false, nil)
	p := startRateLimitProxy(t)
	vh := vhost("vh", []string{"*"}, prefixRoute("r", "/", "be"))
	vh.RateLimits = []*routev3.RateLimit{pathAction()}
	p.apply([]*listenerv3.Listener{rateLimitListener(t, closedAddr(t), "rc", istioRateLimit(true))},
		[]*routev3.RouteConfiguration{routeConfig("rc", vh)},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr), staticCluster(t, "rate_limit_cluster", true, rls.addr)})

	r1 := p.do("GET", "bookinfo", "/productpage", map[string]string{"X-Request-Id": "rl-1"}, nil)
	r2 := p.do("GET", "bookinfo", "/productpage", map[string]string{"X-Request-Id": "rl-2"}, nil)
	r3 := p.do("GET", "bookinfo", "/static/a.css", nil, nil)
	if r1.code != 200 || r3.code != 200 {
		t.Fatalf("first /productpage %d, /static %d; want 200", r1.code, r3.code)
	}
	if r2.code != 429 || r2.header.Get("X-Envoy-Ratelimited") != "true" {
		t.Fatalf("second /productpage: %d x-envoy-ratelimited=%q, want 429 true", r2.code, r2.header.Get("X-Envoy-Ratelimited"))
	}
	if be.hits.Load() != 2 {
		t.Errorf("backend got %d requests, want 2", be.hits.Load())
	}
	want := []string{"productpage-ratelimit: (PATH=/productpage)", "productpage-ratelimit: (PATH=/productpage)", "productpage-ratelimit: (PATH=/static/a.css)"}
	if diff := cmp.Diff(want, rls.requests()); diff != "" {
		t.Errorf("service requests (-want +got):\n%s", diff)
	}
	if line := p.logLine("rl-2"); !strings.Contains(line, " 429 RL request_rate_limited ") {
		t.Errorf("access log of the limited request: %s", line)
	}
	if line := p.logLine("rl-1"); !strings.Contains(line, " 200 - via_upstream ") {
		t.Errorf("access log of the allowed request: %s", line)
	}
}

// TestRateLimitFailureMode: when the service fails (an error, or nothing
// listening), failure_mode_deny answers 500 with the flag RLSE; without
// it requests go on.
func TestRateLimitFailureMode(t *testing.T) {
	rls := startRLS(t, 100)
	rls.decide = func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return nil, status.Error(codes.Unavailable, "redis: connection refused")
	}
	be := startBackend(t, "be", false, nil)
	for _, tc := range []struct {
		name     string
		rlsAddr  string
		failDeny bool
		want     int
		wantLog  string
	}{
		{"service error, deny", rls.addr, true, 500, " 500 RLSE rate_limiter_error "},
		{"service error, allow", rls.addr, false, 200, " 200 - via_upstream "},
		{"service down, deny", closedAddr(t), true, 500, " 500 RLSE rate_limiter_error "},
		{"service down, allow", closedAddr(t), false, 200, " 200 - via_upstream "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startRateLimitProxy(t)
			rt := prefixRoute("r", "/", "be")
			rt.GetRoute().RateLimits = []*routev3.RateLimit{pathAction()}
			p.apply([]*listenerv3.Listener{rateLimitListener(t, closedAddr(t), "rc", istioRateLimit(tc.failDeny))},
				[]*routev3.RouteConfiguration{routeConfig("rc", vhost("vh", []string{"*"}, rt))},
				[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr), staticCluster(t, "rate_limit_cluster", true, tc.rlsAddr)})
			rid := "fm-" + strings.ReplaceAll(tc.name, " ", "")
			if r := p.do("GET", "x", "/", map[string]string{"X-Request-Id": rid}, nil); r.code != tc.want {
				t.Fatalf("status %d, want %d", r.code, tc.want)
			}
			if line := p.logLine(rid); !strings.Contains(line, tc.wantLog) {
				t.Errorf("access log %q, want %q", line, tc.wantLog)
			}
		})
	}
}

// TestRateLimitActions: stages, virtual host inclusion, the actions'
// descriptors, the service's headers and X-RateLimit headers.
func TestRateLimitActions(t *testing.T) {
	rls := startRLS(t, 100)
	be := startBackend(t, "be", false, nil)
	p := startRateLimitProxy(t)
	rt := prefixRoute("r", "/", "be")
	ra := rt.GetRoute()
	ra.IncludeVhRateLimits = wrapperspb.Bool(true) //nolint:staticcheck // deprecated but honoured
	ra.RateLimits = []*routev3.RateLimit{
		{Actions: []*routev3.RateLimit_Action{
			{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorValue: "g"}}},
			{ActionSpecifier: &routev3.RateLimit_Action_DestinationCluster_{DestinationCluster: &routev3.RateLimit_Action_DestinationCluster{}}},
			{ActionSpecifier: &routev3.RateLimit_Action_SourceCluster_{SourceCluster: &routev3.RateLimit_Action_SourceCluster{}}},
			{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}},
		}},
		// x-user absent skips the entry; x-tier absent drops the descriptor.
		{Actions: []*routev3.RateLimit_Action{
			{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: "x-user", DescriptorKey: "user", SkipIfAbsent: true}}},
			{ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{
				DescriptorValue: "get", Headers: []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "GET"}}}}}},
		}},
		{Actions: []*routev3.RateLimit_Action{
			{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: "x-tier", DescriptorKey: "tier"}}},
		}},
		// Another stage: not this filter's.
		{Stage: wrapperspb.UInt32(3), Actions: []*routev3.RateLimit_Action{
			{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorValue: "stage3"}}},
		}},
	}
	vh := vhost("vh", []string{"*"}, rt)
	vh.RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{
		{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: "vh", DescriptorValue: "yes"}}}}}}
	cfg := istioRateLimit(false)
	cfg.EnableXRatelimitHeaders = rlv3.RateLimit_DRAFT_VERSION_03
	rls.decide = func(req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK,
			RequestHeadersToAdd:  []*corev3.HeaderValue{{Key: "x-rls-checked", Value: "1"}},
			ResponseHeadersToAdd: []*corev3.HeaderValue{{Key: "x-rls-info", Value: "ok"}},
			Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{
				{Code: rlsv3.RateLimitResponse_OK, CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 10, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE},
					LimitRemaining: 7, DurationUntilReset: durationpb.New(30 * time.Second)},
				{Code: rlsv3.RateLimitResponse_OK, CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{Name: "per-user", RequestsPerUnit: 100, Unit: rlsv3.RateLimitResponse_RateLimit_HOUR},
					LimitRemaining: 99, DurationUntilReset: durationpb.New(time.Hour)},
			}}, nil
	}
	p.apply([]*listenerv3.Listener{rateLimitListener(t, closedAddr(t), "rc", cfg)},
		[]*routev3.RouteConfiguration{routeConfig("rc", vh)},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr), staticCluster(t, "rate_limit_cluster", true, rls.addr)})

	r := p.do("GET", "x", "/", nil, nil)
	if r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	want := []string{"productpage-ratelimit: (generic_key=g,destination_cluster=be,source_cluster=gateway,remote_address=127.0.0.1) (header_match=get) (vh=yes)"}
	if diff := cmp.Diff(want, rls.requests()); diff != "" {
		t.Errorf("descriptors (-want +got):\n%s", diff)
	}
	if got := be.last.Load().Header.Get("X-Rls-Checked"); got != "1" {
		t.Errorf("upstream x-rls-checked = %q, want 1", got)
	}
	for h, v := range map[string]string{"X-Rls-Info": "ok", "X-Ratelimit-Limit": `10, 10;w=60, 100;w=3600;name="per-user"`,
		"X-Ratelimit-Remaining": "7", "X-Ratelimit-Reset": "30"} {
		if got := r.header.Get(h); got != v {
			t.Errorf("response %s = %q, want %q", h, got, v)
		}
	}
}

// TestRateLimitClientSurvivesGenerations: the gRPC connection to the
// service's cluster is made once and kept when a new generation is built.
func TestRateLimitClientSurvivesGenerations(t *testing.T) {
	rls := startRLS(t, 100)
	be := startBackend(t, "be", false, nil)
	p := startRateLimitProxy(t)
	lAddr := closedAddr(t)
	for i := range 3 {
		rt := prefixRoute(fmt.Sprintf("r%d", i), "/", "be")
		rt.GetRoute().RateLimits = []*routev3.RateLimit{pathAction()}
		p.apply([]*listenerv3.Listener{rateLimitListener(t, lAddr, "rc", istioRateLimit(true))},
			[]*routev3.RouteConfiguration{routeConfig("rc", vhost("vh", []string{"*"}, rt))},
			[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr), staticCluster(t, "rate_limit_cluster", true, rls.addr)})
		if r := p.do("GET", "x", "/", nil, nil); r.code != 200 {
			t.Fatalf("generation %d: status %d", i, r.code)
		}
	}
	if n := rls.conns.Load(); n != 1 {
		t.Fatalf("the service accepted %d connections over 3 generations, want 1", n)
	}
}

// TestRateLimitNACKs: a ratelimit filter naming a cluster the config does
// not have, and route actions the proxy lacks, are refused with the field.
func TestRateLimitNACKs(t *testing.T) {
	lAddr := closedAddr(t)
	rt := prefixRoute("r", "/", "be")
	rt.GetRoute().RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_Metadata{
		Metadata: &routev3.RateLimit_Action_MetaData{DescriptorKey: "k"}}}}}}
	for _, tc := range []struct {
		name string
		res  config.Resources
		want string
	}{
		{"unknown cluster", resources([]*listenerv3.Listener{rateLimitListener(t, lAddr, "rc", istioRateLimit(true))}, nil, nil),
			`rate_limit_service.grpc_service.envoy_grpc.cluster_name = "rate_limit_cluster": must name a cluster of the config`},
		{"metadata action", resources(nil, []*routev3.RouteConfiguration{routeConfig("rc", vhost("vh", []string{"*"}, rt))}, nil),
			`route_config "rc": virtual_hosts[0].routes[0].route.rate_limits[0].actions[0].metadata: not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Build(tc.res, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
