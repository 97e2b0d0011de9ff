// Package extauthztest runs, for tests, authorization services that behave
// as Istio's ext-authz sample (samples/extauthz): a request is allowed iff
// it carries the header "x-ext-authz: allow", answered over the HTTP check
// API (port 8000 in the sample) and over gRPC
// envoy.service.auth.v3.Authorization/Check (port 9000). Both listen on
// loopback sockets of their own and count what they served.
package extauthztest

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The sample's header and answers.
const (
	CheckHeader   = "x-ext-authz"
	AllowValue    = "allow"
	ResultHeader  = "x-ext-authz-check-result"
	OverrideHdr   = "x-ext-authz-additional-header-override"
	GRPCOverride  = "grpc-additional-header-override-value"
	DeniedMessage = "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
)

// HTTPServer is the sample's HTTP check API.
type HTTPServer struct {
	Addr     string
	Requests atomic.Int64
	mu       sync.Mutex
	last     *http.Request
}

// StartHTTP serves on 127.0.0.1:0 until the test ends.
func StartHTTP(t testing.TB) *HTTPServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &HTTPServer{Addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(s.serve)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *HTTPServer) serve(w http.ResponseWriter, r *http.Request) {
	s.Requests.Add(1)
	s.mu.Lock()
	s.last = r.Clone(context.Background())
	s.mu.Unlock()
	if r.Header.Get(CheckHeader) == AllowValue {
		w.Header().Set(ResultHeader, "allowed")
		w.Header().Set(OverrideHdr, r.Header.Get(OverrideHdr))
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set(ResultHeader, "denied")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write([]byte(DeniedMessage))
}

// Last returns a copy of the last check request, or nil.
func (s *HTTPServer) Last() *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// GRPCServer is the sample's gRPC check API.
type GRPCServer struct {
	authv3.UnimplementedAuthorizationServer
	Addr string
	// Checks counts Check calls; Conns counts accepted connections.
	Checks atomic.Int64
	Conns  atomic.Int64
	mu     sync.Mutex
	last   *authv3.CheckRequest
	// Allow, when set, decides instead of the header (network checks
	// carry no headers).
	Allow func(*authv3.CheckRequest) bool
	srv   *grpc.Server
}

// StartGRPC serves on 127.0.0.1:0 until the test ends (or Stop).
func StartGRPC(t testing.TB) *GRPCServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &GRPCServer{Addr: ln.Addr().String(), srv: grpc.NewServer()}
	authv3.RegisterAuthorizationServer(s.srv, s)
	go func() { _ = s.srv.Serve(&countingListener{Listener: ln, n: &s.Conns}) }()
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the server and closes its connections.
func (s *GRPCServer) Stop() { s.srv.Stop() }

// Last returns the last check request, or nil.
func (s *GRPCServer) Last() *authv3.CheckRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Check implements envoy.service.auth.v3.Authorization.
func (s *GRPCServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.Checks.Add(1)
	s.mu.Lock()
	s.last = req
	s.mu.Unlock()
	ok := req.GetAttributes().GetRequest().GetHttp().GetHeaders()[CheckHeader] == AllowValue
	if s.Allow != nil {
		ok = s.Allow(req)
	}
	if ok {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: ResultHeader, Value: "allowed"}, Append: wrapperspb.Bool(false)},
				{Header: &corev3.HeaderValue{Key: OverrideHdr, Value: GRPCOverride}, Append: wrapperspb.Bool(false)},
			}}},
		}, nil
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Body:    DeniedMessage,
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: ResultHeader, Value: "denied"}}},
		}},
	}, nil
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}
