package ratelimit

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

func sample() *rlv3.RateLimit {
	return &rlv3.RateLimit{
		Domain:          "productpage-ratelimit",
		FailureModeDeny: true,
		Timeout:         durationpb.New(10 * time.Second),
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "rate_limit_cluster"}}}},
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*rlv3.RateLimit)
		want    *Config
		wantErr string
	}{
		{name: "istio sample", want: &Config{Domain: "productpage-ratelimit", Internal: true, External: true, Timeout: 10 * time.Second,
			FailureModeDeny: true, Cluster: "rate_limit_cluster", RateLimitedStatus: 429, StatusOnError: 500, MetadataNamespace: Name}},
		{name: "defaults and options", mod: func(m *rlv3.RateLimit) {
			m.Timeout, m.FailureModeDeny, m.RequestType = nil, false, "external"
			m.EnableXRatelimitHeaders = rlv3.RateLimit_DRAFT_VERSION_03
			m.RateLimitedStatus = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
			m.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_OK}
		}, want: &Config{Domain: "productpage-ratelimit", External: true, Timeout: DefaultTimeout, Cluster: "rate_limit_cluster",
			XRateLimitHeaders: true, RateLimitedStatus: 503, StatusOnError: 200, MetadataNamespace: Name}},
		{name: "no domain", mod: func(m *rlv3.RateLimit) { m.Domain = "" }, wantErr: "domain: must not be empty"},
		{name: "stage", mod: func(m *rlv3.RateLimit) { m.Stage = 11 }, wantErr: "stage = 11: must be 0-10"},
		{name: "request type", mod: func(m *rlv3.RateLimit) { m.RequestType = "all" }, wantErr: `request_type = "all"`},
		{name: "no service", mod: func(m *rlv3.RateLimit) { m.RateLimitService = nil }, wantErr: "rate_limit_service.grpc_service: must be set"},
		{name: "google grpc", mod: func(m *rlv3.RateLimit) {
			m.RateLimitService.GrpcService.TargetSpecifier = &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "x"}}
		}, wantErr: "google_grpc: not supported"},
		{name: "v2", mod: func(m *rlv3.RateLimit) { m.RateLimitService.TransportApiVersion = corev3.ApiVersion_V2 },
			wantErr: "transport_api_version = V2: must be V3"},
		{name: "filter-level rate_limits", mod: func(m *rlv3.RateLimit) { m.RateLimits = append(m.RateLimits, nil) },
			wantErr: "rate_limits: not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := sample()
			if tt.mod != nil {
				tt.mod(m)
			}
			a, err := anypb.New(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Factory{}.Parse(a)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseOverride(t *testing.T) {
	a, _ := anypb.New(&rlv3.RateLimitPerRoute{VhRateLimits: rlv3.RateLimitPerRoute_INCLUDE, Domain: "d2"})
	got, err := Factory{}.ParseOverride(a)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&PerRoute{VHRateLimits: filter.VHRateLimitsInclude, Domain: "d2"}, got); diff != "" {
		t.Fatalf("override (-want +got):\n%s", diff)
	}
	if _, err := (Factory{}).Parse(a); err == nil {
		t.Fatal("Parse took a RateLimitPerRoute as the HCM-level config")
	}
}

// okRLS answers OK to every request, in process.
type okRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

func (okRLS) ShouldRateLimit(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// upstreams is a filter.Upstreams with one gRPC connection.
type upstreams struct{ cc *grpc.ClientConn }

func (u upstreams) GRPC(string, string) (grpc.ClientConnInterface, error) { return u.cc, nil }
func (upstreams) RoundTrip(string, *http.Request) (*http.Response, error) {
	return nil, http.ErrNotSupported
}

// BenchmarkFilter measures what the filter adds to a request whose route
// has one rate limit: the descriptor, the ShouldRateLimit call to an
// in-process service over loopback gRPC, and the answer.
func BenchmarkFilter(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(s, okRLS{})
	go s.Serve(ln)
	defer s.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	a, _ := anypb.New(sample())
	cfg, err := Factory{}.Parse(a)
	if err != nil {
		b.Fatal(err)
	}
	f, err := Factory{}.Build(cfg, filter.Deps{HasCluster: func(string) bool { return true }})
	if err != nil {
		b.Fatal(err)
	}
	policy := &filter.RateLimitPolicy{Route: []filter.RateLimit{{Actions: []filter.RateLimitAction{
		{Kind: filter.ActionRequestHeaders, Key: "PATH", Name: ":path"}}}}}
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			st := &filter.State{Upstreams: upstreams{cc}, Route: &filter.RouteInfo{Cluster: "be", ClusterExists: true, RateLimits: policy}}
			r := httptest.NewRequest(http.MethodGet, "/productpage", nil)
			r = r.WithContext(filter.NewContext(r.Context(), st))
			w := httptest.NewRecorder()
			f.ServeHTTP(w, r, next)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
}
