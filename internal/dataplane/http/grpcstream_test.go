package http_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	dphttp "github.com/loom-mesh/loom/internal/dataplane/http"
)

// uploadServer is a gRPC TestService whose client-streaming
// StreamingInputCall runs handle, one call per attempt (1-based).
type uploadServer struct {
	testgrpc.UnimplementedTestServiceServer
	calls  atomic.Int32
	handle func(call int32, stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error
}

func (s *uploadServer) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	return s.handle(s.calls.Add(1), stream)
}

// startUploadServer serves s over h2c on a loopback port, with opts.
func startUploadServer(t testing.TB, s testgrpc.TestServiceServer, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(gs, s)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// grpcProxy is a proxy whose listener "l" routes the authority
// grpc.example by route, to clusters.
func grpcProxy(t *testing.T, route *routev3.Route, clusters ...*clusterv3.Cluster) *proxy {
	t.Helper()
	return startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("grpc", []string{"grpc.example"}, route))}, clusters))
}

// uploadClient is a TestService client to the proxy at addr, for the
// authority grpc.example.
func uploadClient(t testing.TB, addr string) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("grpc.example"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

// chunk is message i of an upload: size bytes of value i.
func chunk(i, size int) *testgrpc.StreamingInputCallRequest {
	return &testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: bytes.Repeat([]byte{byte(i)}, size)}}
}

// receiveAll reads an upload to its end, checking that message i is
// chunk(i, size); it returns the messages' count and total size.
func receiveAll(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse], size int) (n, total int, err error) {
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return n, total, nil
		}
		if err != nil {
			return n, total, err
		}
		if b := m.GetPayload().GetBody(); len(b) != size || !bytes.Equal(b, bytes.Repeat([]byte{byte(n)}, size)) {
			return n, total, fmt.Errorf("message %d: %d bytes, want %d of value %d", n, len(b), size, n)
		}
		n++
		total += size
	}
}

// grpcRoute is the route of grpc.example to cluster "grpc" with Istio's
// default gRPC-friendly retry policy.
func grpcRoute() *routev3.Route {
	return withRetry(prefixRoute("grpc", "/", "grpc"), "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", 2, 503)
}

// TestGRPCRetryOpenClientStream: a client-streaming call whose first
// attempt fails with UNAVAILABLE (trailers-only, before any response
// header) while the client is still sending is retried, as Envoy retries
// from its buffered copy: the second attempt gets the 80 KiB the first
// had read (more than the old 64 KiB copy) replayed, then the rest of the
// stream as the client sends it after the retry started.
func TestGRPCRetryOpenClientStream(t *testing.T) {
	const size = 40 << 10
	secondStarted := make(chan struct{})
	var got struct {
		sync.Mutex
		n, total int
		err      error
	}
	srv := &uploadServer{handle: func(call int32, stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
		if call == 1 {
			for range 2 {
				if _, err := stream.Recv(); err != nil {
					return err
				}
			}
			return status.Error(codes.Unavailable, "try again")
		}
		if call == 2 {
			close(secondStarted)
		}
		n, total, err := receiveAll(stream, size)
		got.Lock()
		got.n, got.total, got.err = n, total, err
		got.Unlock()
		if err != nil {
			return err
		}
		return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
	}}
	beAddr := startUploadServer(t, srv)
	p := grpcProxy(t, grpcRoute(), staticCluster(t, "grpc", true, beAddr))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := uploadClient(t, p.addr("l")).StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := stream.Send(chunk(i, size)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	select {
	case <-secondStarted:
	case <-ctx.Done():
		t.Fatalf("the proxy never retried the open stream (upstream calls: %d)", srv.calls.Load())
	}
	for i := 2; i < 5; i++ {
		if err := stream.Send(chunk(i, size)); err != nil {
			t.Fatalf("send %d after the retry: %v", i, err)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("call: %v, want OK from the retry", err)
	}
	if resp.GetAggregatedPayloadSize() != 5*size {
		t.Errorf("aggregated size %d, want %d", resp.GetAggregatedPayloadSize(), 5*size)
	}
	got.Lock()
	if got.err != nil || got.n != 5 {
		t.Errorf("second attempt read %d messages (%v), want all 5 in order", got.n, got.err)
	}
	got.Unlock()
	if n := srv.calls.Load(); n != 2 {
		t.Errorf("upstream calls = %d, want 2", n)
	}
	if v := metricValue(t, p, "envoy_cluster_upstream_rq_retry"); v != 1 {
		t.Errorf("envoy_cluster_upstream_rq_retry = %v, want 1", v)
	}
	if v := metricValue(t, p, "envoy_cluster_retry_or_shadow_abandoned"); v != 0 {
		t.Errorf("envoy_cluster_retry_or_shadow_abandoned = %v, want 0", v)
	}
}

// TestGRPCNoRetryPastBufferLimit: once a stream's body outgrew the retry
// buffer (1 MiB, Envoy's default connection buffer limit) the call is no
// longer retried: its UNAVAILABLE reaches the client after one attempt
// and retry_or_shadow_abandoned is counted on the cluster.
func TestGRPCNoRetryPastBufferLimit(t *testing.T) {
	const size = 40 << 10
	srv := &uploadServer{handle: func(call int32, stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
		for total := 0; total <= dphttp.DefaultBufferLimit+size; total += size {
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
		return status.Error(codes.Unavailable, "try again")
	}}
	beAddr := startUploadServer(t, srv)
	p := grpcProxy(t, grpcRoute(), staticCluster(t, "grpc", true, beAddr))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := uploadClient(t, p.addr("l")).StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 { // 1.6 MiB
		if err := stream.Send(chunk(i, size)); err != nil {
			if err == io.EOF {
				break // the call ended; CloseAndRecv has its status
			}
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_, err = stream.CloseAndRecv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call: %v, want UNAVAILABLE from the only attempt", err)
	}
	if n := srv.calls.Load(); n != 1 {
		t.Errorf("upstream calls = %d, want 1 (no retry past the buffer limit)", n)
	}
	if v := metricValue(t, p, "envoy_cluster_retry_or_shadow_abandoned"); v != 1 {
		t.Errorf("envoy_cluster_retry_or_shadow_abandoned = %v, want 1", v)
	}
	if v := metricValue(t, p, "envoy_cluster_upstream_rq_retry"); v != 0 {
		t.Errorf("envoy_cluster_upstream_rq_retry = %v, want 0", v)
	}
}

// TestGRPCMirrorClientStream: a mirrored client-streaming call streams to
// the mirror as it streams to the primary. The mirror does not read until
// released, and the primary's call completes meanwhile; released, the
// mirror gets every message, with the -shadow authority. A mirror that
// falls more than its backlog behind is dropped and counted, and the
// primary still completes.
func TestGRPCMirrorClientStream(t *testing.T) {
	const size = 10 << 10
	primary := &uploadServer{handle: func(_ int32, stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
		_, total, err := receiveAll(stream, size)
		if err != nil {
			return err
		}
		return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
	}}
	type mirrored struct {
		authority string
		n         int
		err       error
	}
	release := make(chan struct{})
	seen := make(chan mirrored, 4)
	mirror := &uploadServer{handle: func(_ int32, stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
		md, _ := metadata.FromIncomingContext(stream.Context())
		select {
		case <-release:
		case <-stream.Context().Done():
		}
		n, _, err := receiveAll(stream, size)
		seen <- mirrored{strings.Join(md.Get(":authority"), ","), n, err}
		if err != nil {
			return err
		}
		return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{})
	}}
	// A fixed 64 KiB window (no BDP growth): the blocked mirror takes in
	// that much at most, the rest waits in the proxy's backlog.
	mirrorAddr := startUploadServer(t, mirror, grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	route := grpcRoute()
	route.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "mirror"}}
	p := grpcProxy(t, route, staticCluster(t, "grpc", true, startUploadServer(t, primary)), staticCluster(t, "mirror", true, mirrorAddr))
	client := uploadClient(t, p.addr("l"))
	upload := func(messages int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stream, err := client.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range messages {
			if err := stream.Send(chunk(i, size)); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		resp, err := stream.CloseAndRecv()
		if err != nil || resp.GetAggregatedPayloadSize() != int32(messages*size) {
			t.Fatalf("primary call: %v, size %d; want OK and %d with the mirror stuck", err, resp.GetAggregatedPayloadSize(), messages*size)
		}
	}

	upload(10) // 100 KiB: within the window and the backlog
	// The dropped mirror: 60 messages, 600 KiB, more than the window and
	// the 256 KiB backlog.
	upload(60)
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, p, "loom_mirror_dropped_total") < 1 && time.Now().Before(deadline) {
		pollPause()
	}
	if v := metricValue(t, p, "loom_mirror_dropped_total"); v != 1 {
		t.Errorf("loom_mirror_dropped_total = %v, want 1 (the 600 KiB stream)", v)
	}
	close(release)
	var whole, cut int
	for range 2 {
		select {
		case m := <-seen:
			switch {
			case m.err == nil && m.n == 10:
				whole++
				if m.authority != "grpc.example-shadow" {
					t.Errorf("mirror :authority = %q, want grpc.example-shadow", m.authority)
				}
			case m.err != nil:
				cut++
			default:
				t.Errorf("mirror got %d messages and a clean end, want 10, or a reset stream for the dropped one", m.n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the mirror never finished its calls")
		}
	}
	if whole != 1 || cut != 1 {
		t.Errorf("mirror calls: %d whole, %d cut; want 1 of each", whole, cut)
	}
}

// TestHTTPRetryLargeBody: an HTTP/1.1 POST of 300 KiB with a length
// (more than the old 64 KiB copy, less than Envoy's 1 MiB) is retried
// after a 503 with its whole body; one of 1.5 MiB is not, and is counted.
func TestHTTPRetryLargeBody(t *testing.T) {
	var calls atomic.Int32
	var mu sync.Mutex
	var lens []int
	be := startBackend(t, "be", false, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		mu.Lock()
		lens = append(lens, len(b))
		mu.Unlock()
		if err != nil || !bytes.Equal(b, bytes.Repeat([]byte("x"), len(b))) {
			w.WriteHeader(400)
			return
		}
		if calls.Add(1)%2 == 1 {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, len(b))
	})
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("be", []string{"*"}, withRetry(prefixRoute("r", "/", "be"), "5xx", 2)))},
		[]*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)}))

	r := p.do("POST", "be", "/", nil, strings.NewReader(strings.Repeat("x", 300<<10)))
	if r.code != 200 || r.body != fmt.Sprint(300<<10) {
		t.Fatalf("300 KiB POST: %d %q, want 200 from the retry with the whole body", r.code, r.body)
	}
	calls.Store(0)
	r = p.do("POST", "be", "/", nil, strings.NewReader(strings.Repeat("x", 1536<<10)))
	if r.code != 503 {
		t.Fatalf("1.5 MiB POST: %d %q, want the upstream's 503, not retried", r.code, r.body)
	}
	mu.Lock()
	if want := []int{300 << 10, 300 << 10, 1536 << 10}; fmt.Sprint(lens) != fmt.Sprint(want) {
		t.Errorf("upstream bodies %v, want %v", lens, want)
	}
	mu.Unlock()
	if v := metricValue(t, p, "envoy_cluster_retry_or_shadow_abandoned"); v != 1 {
		t.Errorf("envoy_cluster_retry_or_shadow_abandoned = %v, want 1", v)
	}
}

// echoServer is a gRPC TestService whose FullDuplexCall fails its first
// call with UNAVAILABLE after one message, before any response, and
// echoes every message of later calls.
type echoServer struct {
	testgrpc.UnimplementedTestServiceServer
	calls atomic.Int32
}

func (s *echoServer) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	first := s.calls.Add(1) == 1
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if first {
			return status.Error(codes.Unavailable, "try again")
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: in.GetPayload()}); err != nil {
			return err
		}
	}
}

// TestGRPCRetryBidiStream: a bidirectional call whose first attempt
// fails with UNAVAILABLE after the first message is retried while the
// client waits for its answer: the retry gets the message replayed,
// answers it, and the rest of the ping-pong goes over the retry. The
// first attempt's transport was still reading the request body when it
// was given up; the message it takes in then goes to the retry.
func TestGRPCRetryBidiStream(t *testing.T) {
	srv := &echoServer{}
	p := grpcProxy(t, grpcRoute(), staticCluster(t, "grpc", true, startUploadServer(t, srv)))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := uploadClient(t, p.addr("l")).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		body := bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v (upstream calls %d)", i, err, srv.calls.Load())
		}
		if !bytes.Equal(msg.GetPayload().GetBody(), body) {
			t.Fatalf("echo %d: %d bytes, want %d of %q", i, len(msg.GetPayload().GetBody()), len(body), rune('a'+i))
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: %v, want EOF", err)
	}
	if n := srv.calls.Load(); n != 2 {
		t.Errorf("upstream calls = %d, want 2", n)
	}
}

// TestRetryResetOpenStream: retryOn reset retries a streamed request
// whose first attempt the upstream resets (RST_STREAM, no response)
// while the client is still sending: the retry gets the 100 KiB read so
// far replayed and the rest as the client sends it.
func TestRetryResetOpenStream(t *testing.T) {
	const part = 100 << 10
	var resetCalls atomic.Int32
	be := startBackend(t, "be", true, func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, part)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return
		}
		if !bytes.Equal(b, bytes.Repeat([]byte("a"), part)) {
			w.WriteHeader(400)
			return
		}
		if n := resetCalls.Add(1); n == 1 {
			panic(http.ErrAbortHandler) // RST_STREAM before any response
		}
		rest, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		fmt.Fprint(w, part+len(rest))
	})
	p := startProxy(t, build(t, nil, []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("be", []string{"*"}, withRetry(prefixRoute("r", "/", "be"), "reset", 2)))},
		[]*clusterv3.Cluster{staticCluster(t, "be", true, be.addr)}))

	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequest("POST", "http://"+p.addr("l")+"/upload", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "be"
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.Write(bytes.Repeat([]byte("a"), part))
		deadline := time.Now().Add(10 * time.Second)
		for be.hits.Load() < 2 && time.Now().Before(deadline) {
			pollPause()
		}
		pw.Write(bytes.Repeat([]byte("b"), part))
		pw.Close()
	}()
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	<-done
	if resp.StatusCode != 200 || string(got) != fmt.Sprint(2*part) {
		t.Fatalf("got %d %q, want 200 and %d bytes seen by the retry", resp.StatusCode, got, 2*part)
	}
	if n := be.hits.Load(); n != 2 {
		t.Errorf("upstream hits = %d, want 2", n)
	}
}
