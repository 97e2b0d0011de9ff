package http_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// slowServer answers EmptyCall after 5 s, or when the call ends.
type slowServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (slowServer) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
	return &testgrpc.Empty{}, nil
}

// TestGRPCLocalReplies: the connection manager's own replies to a gRPC
// client are trailers-only gRPC responses, as Envoy's sendLocalReply
// makes them: the grpc-status Envoy maps the HTTP status to and the
// reply's text as grpc-message. A plain HTTP 504 or 503 would reach the
// client as "unexpected HTTP status code" with a text/plain content-type.
func TestGRPCLocalReplies(t *testing.T) {
	slow := startUploadServer(t, slowServer{})
	const svc = "/grpc.testing.TestService/"
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("grpc", []string{"grpc.example"},
			withTimeout(prefixRoute("timeout", svc+"EmptyCall", "slow"), 100*time.Millisecond),
			prefixRoute("dead", svc+"UnaryCall", "dead"),
		))},
		[]*clusterv3.Cluster{staticCluster(t, "slow", true, slow), staticCluster(t, "dead", true, closedAddr(t))}))
	c := uploadClient(t, p.addr("l"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string // prefix of the status message
		flag string // response flag in the access log
	}{
		{"route timeout", func() error { _, err := c.EmptyCall(ctx, &testgrpc.Empty{}); return err },
			codes.Unavailable, "upstream request timeout", "UT"},
		{"connection failure", func() error { _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); return err },
			codes.Unavailable, "upstream connect error or disconnect/reset before headers", "UF"},
		{"no route", func() error {
			s, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv() // a server stream reports its status here
			return err
		}, codes.Unimplemented, "", "NR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := status.FromError(tt.call())
			if st.Code() != tt.code || !strings.HasPrefix(st.Message(), tt.msg) || strings.Contains(st.Message(), "unexpected HTTP status") {
				t.Fatalf("status %v %q, want %v %q...", st.Code(), st.Message(), tt.code, tt.msg)
			}
			if tt.msg == "" && st.Message() != "" {
				t.Errorf("message %q, want none (Envoy's reply has no body)", st.Message())
			}
		})
	}
	p.log.Flush()
	log := p.logBuf.String()
	for _, tt := range tests {
		// The access log has the status sent, 200, as for every gRPC reply.
		if want := " 200 " + tt.flag + " "; !strings.Contains(log, want) {
			t.Errorf("access log lacks %q:\n%s", want, log)
		}
	}
}

// TestGRPCTimeoutHeader: on a route with max_grpc_timeout (Istio sets it to
// the VirtualService's timeout, 0 when none), a gRPC request's
// grpc-timeout is its timeout in the proxy, capped by the max, and the
// upstream is told the time it has in a rewritten grpc-timeout, as
// Envoy's FilterUtility::finalTimeout. Without max_grpc_timeout the header
// is ignored and the route's timeout alone applies.
func TestGRPCTimeoutHeader(t *testing.T) {
	seen := make(chan string, 8)
	slow := startBackend(t, "slow", true, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Grpc-Timeout")
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	perTry := func(r *routev3.Route, d time.Duration) *routev3.Route {
		r.GetRoute().RetryPolicy = &routev3.RetryPolicy{PerTryTimeout: durationpb.New(d)}
		return r
	}
	grpcMax := func(r *routev3.Route, maxT time.Duration) *routev3.Route {
		r.GetRoute().MaxGrpcTimeout = durationpb.New(maxT) //nolint:staticcheck // what Istio sends
		return r
	}
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("uncapped", []string{"uncapped"}, grpcMax(withTimeout(prefixRoute("uncapped", "/", "slow"), 0), 0)),
			vhost("capped", []string{"capped"}, grpcMax(withTimeout(prefixRoute("capped", "/", "slow"), 150*time.Millisecond), 150*time.Millisecond)),
			vhost("plain", []string{"plain"}, withTimeout(prefixRoute("plain", "/", "slow"), 150*time.Millisecond)),
			vhost("pertry", []string{"pertry"}, grpcMax(perTry(withTimeout(prefixRoute("pertry", "/", "slow"), 0), 120*time.Millisecond), 0)),
		)},
		[]*clusterv3.Cluster{staticCluster(t, "slow", true, slow.addr)}))

	tests := []struct {
		host, header string
		upstream     string // grpc-timeout the upstream sees
		min, max     time.Duration
	}{
		{"uncapped", "200m", "200m", 200 * time.Millisecond, 3 * time.Second},
		{"capped", "10S", "150m", 150 * time.Millisecond, 3 * time.Second},
		{"capped", "", "150m", 150 * time.Millisecond, 3 * time.Second},
		{"capped", "50m", "50m", 50 * time.Millisecond, 3 * time.Second},
		// A header too long for nanoseconds is capped, not taken as negative.
		{"capped", "99999999H", "150m", 150 * time.Millisecond, 3 * time.Second},
		// No max_grpc_timeout: the header passes untouched and the route's
		// 150 ms applies, not the client's 10 s.
		{"plain", "10S", "10S", 150 * time.Millisecond, 3 * time.Second},
		// With a per-try timeout the upstream is told that, not the
		// client's whole deadline.
		{"pertry", "10S", "120m", 120 * time.Millisecond, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.host+"/"+tt.header, func(t *testing.T) {
			hdr := map[string]string{"Content-Type": "application/grpc"}
			if tt.header != "" {
				hdr["Grpc-Timeout"] = tt.header
			}
			start := time.Now()
			r := p.do("POST", tt.host, "/grpc.testing.TestService/EmptyCall", hdr, nil)
			took := time.Since(start)
			if r.code != 200 || r.header.Get("Grpc-Status") != "14" || r.header.Get("Grpc-Message") != "upstream request timeout" {
				t.Fatalf("got %d grpc-status %q %q, want 200 14 \"upstream request timeout\"", r.code, r.header.Get("Grpc-Status"), r.header.Get("Grpc-Message"))
			}
			if took < tt.min || took > tt.max {
				t.Errorf("answered after %v, want between %v and %v", took, tt.min, tt.max)
			}
			if got := <-seen; got != tt.upstream {
				t.Errorf("upstream grpc-timeout %q, want %q", got, tt.upstream)
			}
		})
	}
}
