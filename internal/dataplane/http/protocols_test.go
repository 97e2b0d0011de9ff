package http_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// withUpgrades returns l with its HCM's upgrade_configs set to types, as
// Istio sets [websocket] on every HCM.
func withUpgrades(t testing.TB, l *listenerv3.Listener, types ...string) *listenerv3.Listener {
	t.Helper()
	return withHCM(t, l, func(hcm *hcmv3.HttpConnectionManager) {
		for _, ty := range types {
			hcm.UpgradeConfigs = append(hcm.UpgradeConfigs, &hcmv3.HttpConnectionManager_UpgradeConfig{UpgradeType: ty})
		}
	})
}

// withHCM returns l with mutate applied to its first chain's HCM.
func withHCM(t testing.TB, l *listenerv3.Listener, mutate func(*hcmv3.HttpConnectionManager)) *listenerv3.Listener {
	t.Helper()
	var hcm hcmv3.HttpConnectionManager
	f := l.FilterChains[0].Filters[0]
	if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	mutate(&hcm)
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
	return l
}

// echoUpgradeBackend accepts a WebSocket upgrade (any other request gets
// 200 "plain"), then reads the client's bytes to EOF and answers
// "echo:" + them, and closes: the answer only arrives when the client's
// half-close went through.
func echoUpgradeBackend(t testing.TB) *backend {
	return startBackend(t, "ws", false, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			io.WriteString(w, "plain")
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("backend hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Backend: ws\r\n\r\n")
		brw.Flush()
		got, err := io.ReadAll(brw)
		if err != nil {
			t.Errorf("backend read: %v", err)
			return
		}
		conn.Write([]byte("echo:" + string(got)))
	})
}

// rawUpgrade dials addr, sends an HTTP/1.1 upgrade request for host and
// returns the connection, its reader and the response head.
func rawUpgrade(t *testing.T, addr, host, rid string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nX-Request-Id: %s\r\n\r\n", host, rid)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read upgrade response: %v", err)
	}
	return conn, br, resp
}

func TestWebSocketUpgrade(t *testing.T) {
	be := echoUpgradeBackend(t)
	lAddr := closedAddr(t)
	disabled := prefixRoute("off", "/off", "ws")
	disabled.GetRoute().UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}}
	g := build(t, nil,
		[]*listenerv3.Listener{withUpgrades(t, httpListener(t, "l", lAddr, "rt"), "websocket")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("ws", []string{"ws.example"}, disabled, prefixRoute("ws", "/", "ws")))},
		[]*clusterv3.Cluster{staticCluster(t, "ws", false, be.addr)})
	p := startProxy(t, g)

	conn, br, resp := rawUpgrade(t, p.addr("l"), "ws.example", "ws-1")
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "websocket" ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") || resp.Header.Get("X-Backend") != "ws" {
		t.Fatalf("response = %d %v, want 101 with Upgrade: websocket, Connection: Upgrade and the backend's headers", resp.StatusCode, resp.Header)
	}
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// Half-close: the backend answers only after it read EOF, so the
	// answer proves the FIN went through and the other direction stayed open.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("read tunnel: %v", err)
	}
	if string(got) != "echo:hello" {
		t.Errorf("tunnel read %q, want %q", got, "echo:hello")
	}
	line := p.logLine("ws-1")
	// The entry is written when the tunnel ends, with its bytes: 5 in, 10 out.
	if !strings.Contains(line, `" 101 - via_upstream - "-" 5 10 `) || !strings.Contains(line, `"GET /chat HTTP/1.1"`) {
		t.Errorf("access log line %q: want 101 via_upstream with 5 bytes received and 10 sent", line)
	}

	t.Run("route disables the upgrade", func(t *testing.T) {
		before := be.hits.Load()
		_, _, resp := rawUpgrade(t, p.addr("l"), "ws.example", "ws-3")
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("control request: %d, want 101", resp.StatusCode)
		}
		conn, err := net.Dial("tcp", p.addr("l"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /off HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Request-Id: ws-4\r\n\r\n")
		resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("upgrade on a route with websocket disabled: %d, want 403", resp.StatusCode)
		}
		if l := p.logLine("ws-4"); !strings.Contains(l, " 403 - upgrade_failed ") {
			t.Errorf("access log %q: want 403 upgrade_failed", l)
		}
		if n := be.hits.Load() - before; n != 1 {
			t.Errorf("backend hits = %d, want 1 (the refused upgrade must not reach it)", n)
		}
	})

	t.Run("plain request on the same route", func(t *testing.T) {
		r := p.do("GET", "ws.example", "/", nil, nil)
		if r.code != 200 || r.body != "plain" {
			t.Errorf("plain GET = %d %q, want 200 plain", r.code, r.body)
		}
	})
}

func TestWebSocketUpgradeNotConfigured(t *testing.T) {
	be := echoUpgradeBackend(t)
	lAddr := closedAddr(t)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")}, // no upgrade_configs
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("ws", []string{"ws.example"}, prefixRoute("ws", "/", "ws")))},
		[]*clusterv3.Cluster{staticCluster(t, "ws", false, be.addr)})
	p := startProxy(t, g)
	_, _, resp := rawUpgrade(t, p.addr("l"), "ws.example", "ws-5")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("upgrade with no upgrade_configs: %d, want 403", resp.StatusCode)
	}
	if n := be.hits.Load(); n != 0 {
		t.Errorf("backend hits = %d, want 0", n)
	}
}

// h2cClient is an HTTP/2 prior-knowledge client, as gRPC clients are.
func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestGRPCStreamingAndTrailers runs a bidirectional gRPC-like exchange
// through the proxy, h2c on both sides, on a route that retries (Istio's
// default): the backend answers the first request message before the
// client ends its stream, each response message reaches the client before
// the next is written, and grpc-status arrives as a trailer.
func TestGRPCStreamingAndTrailers(t *testing.T) {
	next := make(chan struct{})
	be := startBackend(t, "grpc", true, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		br := bufio.NewReader(r.Body)
		msg, err := br.ReadString('\n') // the first request message
		if err != nil {
			t.Errorf("backend read: %v", err)
			return
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "re:"+msg)
		http.NewResponseController(w).Flush()
		select {
		case <-next:
		case <-time.After(5 * time.Second):
			t.Error("backend: the client never read the first message")
			return
		}
		rest, _ := io.ReadAll(br)
		io.WriteString(w, "re:"+string(rest))
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "done")
	})
	lAddr := closedAddr(t)
	g := build(t, nil,
		[]*listenerv3.Listener{withUpgrades(t, httpListener(t, "l", lAddr, "rt"), "websocket")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("grpc", []string{"grpc.example"},
			withRetry(prefixRoute("grpc", "/", "grpc"), "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", 2, 503)))},
		[]*clusterv3.Cluster{staticCluster(t, "grpc", true, be.addr)})
	p := startProxy(t, g)

	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequest("POST", "http://"+p.addr("l")+"/grpc.testing.TestService/FullDuplexCall", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "grpc.example"
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	go func() { io.WriteString(pw, "one\n") }()
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatalf("request: %v (the proxy held the streamed request body?)", err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("response %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != "re:one\n" {
		t.Fatalf("first message %q, %v; want %q before the client ends its stream", first, err, "re:one\n")
	}
	close(next)
	io.WriteString(pw, "two\n")
	pw.Close()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "re:two\n" {
		t.Errorf("rest %q, %v; want %q", rest, err, "re:two\n")
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Errorf("trailer grpc-status = %q, want 0 (trailers %v, headers %v)", got, resp.Trailer, resp.Header)
	}
	if got := resp.Trailer.Get("Grpc-Message"); got != "done" {
		t.Errorf("trailer grpc-message = %q, want done", got)
	}
	if got := be.last.Load().Header.Get("Te"); got != "trailers" {
		t.Errorf("upstream te = %q, want trailers", got)
	}
}
