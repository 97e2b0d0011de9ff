package http_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/loom-mesh/loom/internal/testutil"
)

// pipeAddr is an Envoy Address.pipe at path, as loomd sends a Sidecar's
// unix:// bind or defaultEndpoint.
func pipeAddr(path string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
}

// pipeCluster is staticCluster with endpoints at unix socket paths.
func pipeCluster(t testing.TB, name string, http2 bool, paths ...string) *clusterv3.Cluster {
	c := staticCluster(t, name, http2)
	var lbs []*endpointv3.LbEndpoint
	for _, p := range paths {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: pipeAddr(p)}}})
	}
	c.LoadAssignment.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	return c
}

// startPipeBackend is startBackend serving on the unix socket path.
func startPipeBackend(t testing.TB, name, path string, h2c bool) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream-Proto", r.Proto)
		io.WriteString(w, name)
	}))
	s.Listener.Close()
	s.Listener = ln
	if h2c {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	s.Start()
	t.Cleanup(s.Close)
}

// TestPipeUpstreamsAndListener: clusters whose endpoints are pipes (an
// ingress unix:// defaultEndpoint's inbound cluster) are dialed over unix
// sockets, HTTP/1.1 and h2c alike, and a listener whose address is a pipe
// (an egress unix:// bind) serves HTTP. The access log shows the pipe
// paths where Envoy's PipeInstance would: %UPSTREAM_HOST% is the
// endpoint's path, %DOWNSTREAM_LOCAL_ADDRESS% the pipe listener's.
func TestPipeUpstreamsAndListener(t *testing.T) {
	dir := testutil.SocketDir(t)
	h1Path, h2Path, lPath := filepath.Join(dir, "h1.sock"), filepath.Join(dir, "h2.sock"), filepath.Join(dir, "l.sock")
	startPipeBackend(t, "h1", h1Path, false)
	startPipeBackend(t, "h2", h2Path, true)
	pl := httpListener(t, "u", "127.0.0.1:1", "rt") // its address replaced below
	pl.Address = pipeAddr(lPath)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt"), pl},
		[]*routev3.RouteConfiguration{routeConfig("rt",
			vhost("h1", []string{"h1.example"}, prefixRoute("h1", "/", "h1")),
			vhost("h2", []string{"h2.example"}, prefixRoute("h2", "/", "h2")),
		)},
		[]*clusterv3.Cluster{pipeCluster(t, "h1", false, h1Path), pipeCluster(t, "h2", true, h2Path)})
	p := startProxy(t, g)

	for _, tt := range []struct{ host, body, proto, path string }{
		{"h1.example", "h1", "HTTP/1.1", h1Path},
		{"h2.example", "h2", "HTTP/2.0", h2Path},
	} {
		rid := "pipe-" + tt.body
		r := p.do("GET", tt.host, "/", map[string]string{"X-Request-Id": rid}, nil)
		if r.code != 200 || r.body != tt.body || r.header.Get("X-Upstream-Proto") != tt.proto {
			t.Fatalf("%s: got %d %q over %s, want 200 %q over %s", tt.host, r.code, r.body, r.header.Get("X-Upstream-Proto"), tt.body, tt.proto)
		}
		if line := p.logLine(rid); !strings.Contains(line, `"`+tt.path+`" `+tt.body+" ") {
			t.Errorf("%s: access log line has no %%UPSTREAM_HOST%% %q:\n%s", tt.host, tt.path, line)
		}
	}

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", lPath)
	}}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://h1.example/", nil)
	req.Header.Set("X-Request-Id", "pipe-listener")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "h1" {
		t.Fatalf("through the pipe listener: %d %q", resp.StatusCode, b)
	}
	// %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%: the client
	// did not bind, so its address is the listener's own (Envoy's
	// peerAddress for an unnamed unix peer).
	if line := p.logLine("pipe-listener"); !strings.Contains(line, " "+lPath+" "+lPath+" ") {
		t.Errorf("access log line has not %%DOWNSTREAM_LOCAL_ADDRESS%% and %%DOWNSTREAM_REMOTE_ADDRESS%% %q:\n%s", lPath, line)
	}
}
