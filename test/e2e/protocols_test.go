package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/loom-mesh/loom/internal/testutil/promtest"
)

// serveApp listens on addr with srv (an app the harness does not start:
// gRPC or h2c) until the test ends.
func serveApp(t *testing.T, addr string, serve func(net.Listener) error, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = serve(ln) }()
	t.Cleanup(func() { stop(); <-done })
}

// TestWebSocket sends WebSocket messages from the client app through its
// sidecar (explicit mode) and the server's inbound sidecar to an echo app:
// both proxies upgrade the connection (Istio's upgrade_configs websocket)
// and copy frames both ways until the client closes.
func TestWebSocket(t *testing.T) {
	echo := websocket.Handler(func(ws *websocket.Conn) { _, _ = io.Copy(ws, ws) })
	m := startAppMesh(t, "127.51.0", []appWorkload{{Name: "ws-v1", App: "ws", Version: "v1", Octet: 10, Handler: echo}}, "")

	cfg, err := websocket.NewConfig("ws://ws.default.svc.cluster.local:9080/echo", "http://client.default.svc.cluster.local/")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", m.ip(clientOctet)+":15001", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket handshake through the sidecars: %v\n%s", err, m.tails())
	}
	defer ws.Close()
	for i := range 3 {
		msg := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i*1000))
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatalf("receive %d: %v", i, err)
		}
		if got != msg {
			t.Fatalf("echo %d = %.40q, want %.40q", i, got, msg)
		}
	}
}

// grpcApp is grpc.testing.TestService's unary and streaming calls.
// StreamingOutputCall sends its second message only after the client read
// the first one (next), so a proxy that buffers the stream fails the test.
type grpcApp struct {
	testpb.UnimplementedTestServiceServer
	next chan struct{}
}

func (a *grpcApp) UnaryCall(_ context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: append([]byte("re:"), in.GetPayload().GetBody()...)}}, nil
}

func (a *grpcApp) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for i, p := range in.GetResponseParameters() {
		if i == 1 {
			select {
			case <-a.next:
			case <-time.After(10 * time.Second):
				return status.Error(codes.DeadlineExceeded, "the client never read the first message")
			case <-s.Context().Done():
				return s.Context().Err()
			}
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func (a *grpcApp) FullDuplexCall(s grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for range 100 { // bounded: the test sends 3
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: in.GetPayload()}); err != nil {
			return err
		}
	}
	return nil
}

// TestGRPC calls a grpc-go TestService behind its sidecar from a grpc-go
// client that speaks h2c to its own sidecar with :authority the service,
// as an app in explicit mode does: unary, server streaming (each message
// arrives as it is sent), bidirectional streaming, then a VirtualService
// fault abort with grpcStatus UNAVAILABLE.
func TestGRPC(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	app := &grpcApp{next: make(chan struct{}, 1)}
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, app)
	serveApp(t, "127.52.0.10:9080", gs.Serve, gs.Stop)
	m := startAppMesh(t, "127.52.0", []appWorkload{{Name: "grpc-v1", App: "grpc", Version: "v1", Octet: 10, Protocol: "GRPC"}}, "")

	cc, err := grpc.NewClient("passthrough:///"+m.ip(clientOctet)+":15001",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("grpc.default.svc.cluster.local:9080"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testpb.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}})
		if err != nil {
			t.Fatalf("UnaryCall: %v\n%s", err, m.tails())
		}
		if got := string(resp.GetPayload().GetBody()); got != "re:hi" {
			t.Errorf("UnaryCall = %q, want re:hi", got)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		s, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 10}, {Size: 20}, {Size: 30}}})
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		for i := range 4 {
			msg, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Recv %d: %v", i, err)
			}
			sizes = append(sizes, len(msg.GetPayload().GetBody()))
			if i == 0 {
				app.next <- struct{}{} // the first message came through before the second was sent
			}
		}
		if fmt.Sprint(sizes) != "[10 20 30]" {
			t.Errorf("message sizes %v, want [10 20 30]", sizes)
		}
	})

	t.Run("bidirectional streaming", func(t *testing.T) {
		s, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			body := fmt.Sprintf("ping %d", i)
			if err := s.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(body)}}); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
			// The answer comes before the client ends its stream: the
			// proxies stream the request body.
			msg, err := s.Recv()
			if err != nil {
				t.Fatalf("Recv %d: %v", i, err)
			}
			if got := string(msg.GetPayload().GetBody()); got != body {
				t.Fatalf("echo %d = %q, want %q", i, got, body)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend: %v, want EOF (grpc-status 0 in the trailers)", err)
		}
	})

	// Istio's gRPC message counters on both reporters: every call above
	// ended with grpc-status 0 on one label set, so its series holds
	// exactly the messages sent: 1+1+3 by the client, 1+3+3 by the server.
	t.Run("istio message counters", func(t *testing.T) {
		labels := map[string]string{"request_protocol": "grpc", "response_code": "200", "grpc_response_status": "0",
			"source_workload": "client", "destination_workload": "grpc-v1", "destination_service_name": "grpc"}
		for _, r := range []struct {
			reporter string
			octet    int
		}{{"source", clientOctet}, {"destination", 10}} {
			url := "http://" + m.ip(r.octet) + ":15090/stats/prometheus"
			l := with(labels, map[string]string{"reporter": r.reporter})
			var got [3]float64
			// The server's proxy may report a stream just after the
			// client saw its end.
			ok := poll(10*time.Second, func() bool {
				fams, err := promtest.Scrape(url)
				if err != nil {
					return false
				}
				got[0], _ = fams.Value("istio_requests_total", l)
				got[1], _ = fams.Value("istio_request_messages_total", l)
				got[2], _ = fams.Value("istio_response_messages_total", l)
				return got == [3]float64{3, 5, 7}
			})
			if !ok {
				t.Errorf("%s reporter: requests, request messages, response messages = %v, want [3 5 7]", r.reporter, got)
				dumpSeries(t, url, "istio_request_messages_total")
			}
		}
	})

	t.Run("fault abort grpcStatus UNAVAILABLE", func(t *testing.T) {
		m.apply(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc, namespace: default}
spec:
  hosts: [grpc.default.svc.cluster.local]
  http:
  - fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage: {value: 100}
    route:
    - destination: {host: grpc.default.svc.cluster.local}
`)
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		if got := status.Code(err); got != codes.Unavailable {
			t.Errorf("UnaryCall under a grpcStatus UNAVAILABLE abort: %v (code %s), want code Unavailable", err, got)
		}
	})
}

// TestH2C sends HTTP/2 prior-knowledge requests from the client through
// both sidecars to an h2c app (service port protocol HTTP2): HTTP/2 on
// every hop, so the app and the client both see HTTP/2.
func TestH2C(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	appProto := make(chan int, 4)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: p, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case appProto <- r.ProtoMajor:
		default:
		}
		io.WriteString(w, "h2 app")
	})}
	serveApp(t, "127.53.0.10:9080", srv.Serve, func() { srv.Close() })
	m := startAppMesh(t, "127.53.0", []appWorkload{{Name: "h2-v1", App: "h2", Version: "v1", Octet: 10, Protocol: "HTTP2"}}, "")

	sidecar := m.ip(clientOctet) + ":15001"
	tr := &http.Transport{Protocols: new(http.Protocols),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, sidecar)
		}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	resp, err := hc.Get("http://h2.default.svc.cluster.local:9080/")
	if err != nil {
		t.Fatalf("GET: %v\n%s", err, m.tails())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "h2 app" {
		t.Fatalf("GET = %d %q, want 200 from the app\n%s", resp.StatusCode, body, m.tails())
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("client saw %s, want HTTP/2", resp.Proto)
	}
	select {
	case got := <-appProto:
		if got != 2 {
			t.Errorf("app saw HTTP/%d, want HTTP/2", got)
		}
	default:
		t.Error("the app got no request")
	}
}
