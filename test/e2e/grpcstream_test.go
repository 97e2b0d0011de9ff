package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// uploadApp is grpc.testing.TestService's client-streaming
// StreamingInputCall: with failFirst, its first call fails UNAVAILABLE
// after two messages, before any response; every other call reads the
// upload to its end, checks that message i is chunkSize bytes of value
// i, and answers the total size. done gets each whole call's message
// count.
type uploadApp struct {
	testpb.UnimplementedTestServiceServer
	failFirst bool
	calls     atomic.Int32
	done      chan int
}

const chunkSize = 40 << 10

func (a *uploadApp) StreamingInputCall(s grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	if a.calls.Add(1) == 1 && a.failFirst {
		for range 2 {
			if _, err := s.Recv(); err != nil {
				return err
			}
		}
		return status.Error(codes.Unavailable, "first call fails")
	}
	n := 0
	for range 1000 { // bounded: the test sends 5
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(m.GetPayload().GetBody(), bytes.Repeat([]byte{byte(n)}, chunkSize)) {
			return status.Errorf(codes.InvalidArgument, "message %d: %d bytes, not %d of value %d", n, len(m.GetPayload().GetBody()), chunkSize, n)
		}
		n++
	}
	a.done <- n
	return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(n * chunkSize)})
}

// TestGRPCStreamRetryAndMirror: a client-streaming gRPC call through the
// client's sidecar, on a route with Istio's default retry policy
// (unavailable among its conditions) and a mirror to v2, as in Istio's
// mirroring task. v1 fails the first call with UNAVAILABLE after 80 KiB,
// while the client is still sending; the sidecar retries it, replaying
// what it had sent and then streaming the rest, and the call succeeds.
// v2 gets the whole upload once, as it streamed.
func TestGRPCStreamRetryAndMirror(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	v1 := &uploadApp{failFirst: true, done: make(chan int, 4)}
	v2 := &uploadApp{done: make(chan int, 4)}
	for i, app := range []*uploadApp{v1, v2} {
		gs := grpc.NewServer()
		testpb.RegisterTestServiceServer(gs, app)
		serveApp(t, fmt.Sprintf("127.77.0.%d:9080", 10+i), gs.Serve, gs.Stop)
	}
	m := startAppMesh(t, "127.77.0", []appWorkload{
		{Name: "grpc-v1", App: "grpc", Version: "v1", Octet: 10, Protocol: "GRPC"},
		{Name: "grpc-v2", App: "grpc", Version: "v2", Octet: 11, Protocol: "GRPC"},
	}, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: grpc
spec:
  host: grpc
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: grpc
spec:
  hosts:
  - grpc
  http:
  - route:
    - destination:
        host: grpc
        subset: v1
    mirror:
      host: grpc
      subset: v2
    mirrorPercentage:
      value: 100.0
`)
	cc, err := grpc.NewClient("passthrough:///"+m.ip(clientOctet)+":15001",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("grpc.default.svc.cluster.local:9080"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := testpb.NewTestServiceClient(cc).StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(i int) {
		t.Helper()
		if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{byte(i)}, chunkSize)}}); err != nil {
			t.Fatalf("Send %d: %v\n%s", i, err, m.tails())
		}
	}
	send(0)
	send(1)
	// The retry starts while the client still streams.
	if !poll(20*time.Second, func() bool { return v1.calls.Load() >= 2 }) {
		t.Fatalf("v1 saw %d calls: the sidecar never retried the open stream\n%s", v1.calls.Load(), m.tails())
	}
	for i := 2; i < 5; i++ {
		send(i)
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		t.Fatalf("call: %v, want OK from the retry\n%s", err, m.tails())
	}
	if resp.GetAggregatedPayloadSize() != 5*chunkSize {
		t.Errorf("aggregated size %d, want %d", resp.GetAggregatedPayloadSize(), 5*chunkSize)
	}
	for name, app := range map[string]*uploadApp{"v1 (the retry)": v1, "v2 (the mirror)": v2} {
		select {
		case n := <-app.done:
			if n != 5 {
				t.Errorf("%s read %d messages, want 5", name, n)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("%s never read the whole upload\n%s", name, m.tails())
		}
	}
	if n := v1.calls.Load(); n != 2 {
		t.Errorf("v1 calls = %d, want 2", n)
	}
	if n := v2.calls.Load(); n != 1 {
		t.Errorf("v2 calls = %d, want 1 (the mirror is sent once, not per attempt)", n)
	}
	if n := statValue(t, m.ip(clientOctet), "envoy_cluster_upstream_rq_retry", "outbound|9080|v1|grpc.default.svc.cluster.local"); n != 1 {
		t.Errorf("envoy_cluster_upstream_rq_retry = %v, want 1", n)
	}
}
