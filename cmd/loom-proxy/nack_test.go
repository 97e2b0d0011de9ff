package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const nodeID = "sidecar~127.0.0.1~nack-test.default~default.svc.cluster.local"

// binDir holds the loom-proxy binary the tests of this package build once.
var (
	binDir   string
	binOnce  sync.Once
	binErr   error
	binBuild []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proxyBinary builds the loom-proxy binary once per test run.
func proxyBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "loom-proxy-test-"); binErr != nil {
			return
		}
		binBuild, binErr = exec.Command("go", "build", "-o", filepath.Join(binDir, "loom-proxy"), ".").CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("go build: %v\n%s", binErr, binBuild)
	}
	return filepath.Join(binDir, "loom-proxy")
}

// TestNACKKeepsLastGoodGeneration runs the loom-proxy binary against a
// go-control-plane ADS server: a good config routes a request; a bad one
// (invalid regex) is NACKed and the proxy keeps routing with the old
// generation; SIGTERM stops it with exit code 0.
func TestNACKKeepsLastGoodGeneration(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the loom-proxy binary")
	}
	bin := proxyBinary(t)

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from upstream")
	}))
	defer up.Close()

	ads := startADS(t)
	proxyAddr, adminAddr := freeAddr(t), freeAddr(t)
	setSnapshot(t, ads.snaps, "1", proxyAddr, up.Listener.Addr().String(), "/.*")
	p := runProxy(t, bin, ads.addr, adminAddr)

	pu, _ := url.Parse("http://" + proxyAddr)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	get := func() (int, string, error) {
		resp, err := client.Get("http://up.default.svc.cluster.local:9080/hello")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	waitFor(t, "a request routed through the proxy", func() bool {
		code, body, err := get()
		return err == nil && code == 200 && body == "hello from upstream"
	})
	if code := httpStatus(t, "http://"+adminAddr+"/ready"); code != 200 {
		t.Fatalf("/ready = %d after a generation was applied", code)
	}

	// A bad route: the regex does not compile.
	setSnapshot(t, ads.snaps, "2", proxyAddr, up.Listener.Addr().String(), "(")
	nack := ads.waitNACK(t, xdsapi.RouteType)
	if nack.GetVersionInfo() == "2" {
		t.Errorf("NACK carries version_info 2; want the last accepted version")
	}
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, "regex") {
		t.Errorf("NACK error %q does not mention the regex", msg)
	}
	for range 5 {
		code, body, err := get()
		if err != nil || code != 200 || body != "hello from upstream" {
			t.Fatalf("after the NACK: %d %q %v, want 200 from the old generation", code, body, err)
		}
	}
	// The access log is flushed at least every 100ms.
	waitFor(t, "an access log line on stdout", func() bool {
		return strings.Contains(p.stdout.String(), `"GET /hello HTTP/1.1" 200 - via_upstream`)
	})

	// SIGTERM: drain and exit 0.
	if err := p.terminate(); err != nil {
		t.Errorf("proxy exit after SIGTERM: %v", err)
	}
}

// adsServer is a go-control-plane ADS server on loopback that records the
// NACKs it receives.
type adsServer struct {
	snaps cachev3.SnapshotCache
	addr  string
	mu    sync.Mutex
	nacks []*discoveryv3.DiscoveryRequest
}

func startADS(t *testing.T) *adsServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &adsServer{snaps: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
		if req.GetErrorDetail() != nil {
			a.mu.Lock()
			a.nacks = append(a.nacks, req)
			a.mu.Unlock()
		}
		return nil
	}}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, a.snaps, cb))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = ln.Addr().String()
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-served; cancel() })
	return a
}

// waitNACK waits for a NACK of type typ and returns it.
func (a *adsServer) waitNACK(t *testing.T, typ string) *discoveryv3.DiscoveryRequest {
	t.Helper()
	var nack *discoveryv3.DiscoveryRequest
	waitFor(t, "a NACK of "+xdsapi.ShortType(typ), func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, n := range a.nacks {
			if n.GetTypeUrl() == typ && n.GetResponseNonce() != "" {
				nack = n
				return true
			}
		}
		return false
	})
	return nack
}

// proxyProc is a running loom-proxy process.
type proxyProc struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr testutil.SyncBuffer
	exited         chan error
	stopped        bool
}

// runProxy starts bin as a sidecar fed by xdsAddr; it is killed (by its
// PID) at cleanup unless terminate stopped it.
func runProxy(t *testing.T, bin, xdsAddr, adminAddr string) *proxyProc {
	t.Helper()
	p := &proxyProc{t: t, exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, "sidecar", "--ip", "127.0.0.1", "--name", "nack-test", "--namespace", "default",
		"--labels", "app=nack-test,version=v1", "--xds-addr", xdsAddr, "--admin-addr", adminAddr, "--log-level", "debug")
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if !p.stopped {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("proxy stderr:\n%s\nproxy stdout:\n%s", p.stderr.String(), p.stdout.String())
		}
	})
	return p
}

// terminate sends SIGTERM and returns the process's exit error; it fails
// the test when the process does not exit within 10s.
func (p *proxyProc) terminate() error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	p.stopped = true
	select {
	case err := <-p.exited:
		return err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Fatal("proxy did not exit within 10s of SIGTERM")
		return nil
	}
}

// setSnapshot serves version: the virtualOutbound listener on proxyAddr,
// the http_proxy route table (every host, path regex pathRegex) to an EDS
// cluster whose endpoint is upstream.
func setSnapshot(t *testing.T, c cachev3.SnapshotCache, version, proxyAddr, upstream, pathRegex string) {
	t.Helper()
	setSnapshotWith(t, c, version, proxyAddr, upstream, pathRegex, nil)
}

// setSnapshotWith is setSnapshot with mutate applied to the listener
// (nil: none).
func setSnapshotWith(t *testing.T, c cachev3.SnapshotCache, version, proxyAddr, upstream, pathRegex string, mutate func(*listenerv3.Listener)) {
	t.Helper()
	const cluster = "outbound|9080||up.default.svc.cluster.local"
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_0.0.0.0_15001",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: xdsapi.HTTPProxyRoute,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &routerv3.Router{})}}},
		// Istio's text format to stdout, as loomd's default mesh config.
		AccessLog: []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{
			TypedConfig: xdstest.MustAny(t, &filev3.FileAccessLog{Path: "/dev/stdout", AccessLogFormat: &filev3.FileAccessLog_LogFormat{
				LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: accesslog.IstioTextFormat}}}})}}},
	}
	l := &listenerv3.Listener{
		Name:             xdsapi.VirtualOutboundListener,
		Address:          xdstest.HostPortAddress(t, proxyAddr),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, hcm)}}}}},
	}
	rc := &routev3.RouteConfiguration{Name: xdsapi.HTTPProxyRoute, VirtualHosts: []*routev3.VirtualHost{{
		Name: "up", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: pathRegex}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}}}
	cl := &clusterv3.Cluster{
		Name:                 cluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
		ConnectTimeout: durationpb.New(time.Second),
	}
	if mutate != nil {
		mutate(l)
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: xdstest.HostPortAddress(t, upstream)}}}}}}}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {l},
		resourcev3.RouteType:    {rc},
		resourcev3.ClusterType:  {cl},
		resourcev3.EndpointType: {cla},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpStatus(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond until it holds or 20s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
