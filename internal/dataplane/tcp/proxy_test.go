package tcp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is the access log's writer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is a Proxy behind a real listener on 127.0.0.1, serving the
// listener "tcp" of one Generation.
type harness struct {
	addr string
	log  *telemetry.AccessLog
	buf  *syncBuffer
	wg   sync.WaitGroup
}

// cluster is a STATIC cluster of the given endpoints ("ip:port").
func cluster(t *testing.T, name string, mut func(c *clusterv3.Cluster), eps ...string) *clusterv3.Cluster {
	var lbs []*endpointv3.LbEndpoint
	for _, ep := range eps {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: xdstest.HostPortAddress(t, ep)}}})
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}},
	}
	if mut != nil {
		mut(c)
	}
	return c
}

func start(t *testing.T, tp *tcpv3.TcpProxy, clusters ...*clusterv3.Cluster) *harness {
	t.Helper()
	return startWith(t, upstream.New(upstream.Options{}), tp, clusters...)
}

// startWith is start with the given cluster manager, for its stats.
func startWith(t *testing.T, cm *upstream.ClusterManager, tp *tcpv3.TcpProxy, clusters ...*clusterv3.Cluster) *harness {
	t.Helper()
	return startOpts(t, cm, harnessOptions{}, tp, clusters...)
}

// harnessOptions: conn is the downstream Connection every connection's
// context carries (nil: none, as without a listener); format the access
// log's text format ("": Istio's).
type harnessOptions struct {
	conn   *filter.Connection
	format string
	logger *slog.Logger // nil: none
}

// startOpts is startWith with o.
func startOpts(t *testing.T, cm *upstream.ClusterManager, o harnessOptions, tp *tcpv3.TcpProxy, clusters ...*clusterv3.Cluster) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	res := config.Resources{Listeners: []proto.Message{&listenerv3.Listener{
		Name:    "tcp",
		Address: xdstest.HostPortAddress(t, ln.Addr().String()),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       config.TCPProxyFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, tp)},
		}}}},
	}}}
	for _, c := range clusters {
		res.Clusters = append(res.Clusters, c)
	}
	g, err := config.Build(res, nil)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	if o.format != "" {
		f, err := accesslog.ParseTextFormat(o.format, accesslog.FormatOptions{})
		if err != nil {
			t.Fatal(err)
		}
		g.Listeners["tcp"].FilterChains[0].AccessLogs = []*accesslog.AccessLogger{{Path: "/dev/stdout", Format: f}}
	}
	logEveryChain(g)
	var gen atomic.Pointer[config.Generation]
	gen.Store(g)
	cm.Update(g)
	h := &harness{addr: ln.Addr().String(), buf: &syncBuffer{}}
	h.log = telemetry.NewAccessLog(telemetry.AccessLogOptions{Writer: h.buf})
	p, err := New(Options{Generation: &gen, Clusters: cm, AccessLog: h.log, Logger: o.logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if o.conn != nil {
		ctx = filter.WithConnection(ctx, o.conn)
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				p.ServeConn(ctx, "tcp", gen.Load().Listeners["tcp"].FilterChains[0], c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		h.wg.Wait()
		cm.Close()
	})
	return h
}

// waitLog polls the access log until it has n lines, and returns them.
func (h *harness) waitLog(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.log.Flush()
		lines := strings.Split(strings.TrimSpace(h.buf.String()), "\n")
		if len(lines) >= n && lines[0] != "" {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log has %d lines after 5 s, want %d:\n%s", len(lines), n, h.buf.String())
		}
		<-time.After(5 * time.Millisecond)
	}
}

// server serves each connection of a listener on 127.0.0.1 with serve,
// then closes it; stopped at cleanup.
func server(t *testing.T, serve func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// echo answers prefix + each byte it reads, and half-closes when the
// client does.
func echo(prefix string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(append([]byte(prefix), buf[:n]...)); werr != nil {
					return
				}
			}
			if err != nil {
				_ = c.CloseWrite()
				return
			}
		}
	}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

func oneCluster(name string) *tcpv3.TcpProxy {
	return &tcpv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: name}}
}

// field returns the access log line's fields split on spaces.
func field(line string, i int) string { return strings.Fields(line)[i] }

func TestEcho(t *testing.T) {
	up := server(t, echo(""))
	h := start(t, oneCluster("echo"), cluster(t, "echo", nil, up))
	c := dial(t, h.addr)
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v; want hello", buf, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after our FIN: read %q, %v; want EOF", rest, err)
	}
	line := h.waitLog(t, 1)[0]
	// "[time] "- - -" 0 - - - "-" 5 5 DURATION - "-" "-" "-" "-" "UPSTREAM_HOST" CLUSTER ...
	if got := field(line, 9) + " " + field(line, 10); got != "5 5" {
		t.Errorf("bytes received and sent = %q, want \"5 5\"\n%s", got, line)
	}
	if !strings.Contains(line, `"`+up+`" echo `) || field(line, 5) != "-" {
		t.Errorf("access log line lacks upstream host %s and cluster echo, or has flags:\n%s", up, line)
	}
}

// TestHalfClose checks that the client's FIN reaches the upstream while
// the upstream's answer still flows back.
func TestHalfClose(t *testing.T) {
	up := server(t, func(c *net.TCPConn) {
		b, err := io.ReadAll(c) // until the client's FIN
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "got "+strconv.Itoa(len(b))+" bytes")
	})
	h := start(t, oneCluster("sink"), cluster(t, "sink", nil, up))
	c := dial(t, h.addr)
	payload := bytes.Repeat([]byte("x"), 1<<20)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 1048576 bytes" {
		t.Fatalf("read %q, %v; want the upstream's count of our bytes", got, err)
	}
	line := h.waitLog(t, 1)[0]
	if got := field(line, 9) + " " + field(line, 10); got != "1048576 17" {
		t.Errorf("bytes received and sent = %q, want \"1048576 17\"\n%s", got, line)
	}
}

func TestIdleTimeout(t *testing.T) {
	up := server(t, echo(""))
	tp := oneCluster("echo")
	tp.IdleTimeout = durationpb.New(300 * time.Millisecond)
	h := start(t, tp, cluster(t, "echo", nil, up))
	c := dial(t, h.addr)
	buf := make([]byte, 1)
	// Traffic every 100 ms for 900 ms keeps the connection open.
	for i := range 9 {
		if _, err := c.Write([]byte{'a'}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("echo %d on an active connection: %v", i, err)
		}
		<-time.After(100 * time.Millisecond)
	}
	// Then silence: the proxy closes it after 300 ms (up to 375 ms).
	quiet := time.Now()
	n, err := c.Read(buf)
	took := time.Since(quiet)
	if !errors.Is(err, io.EOF) || n != 0 {
		t.Fatalf("idle connection: read %d bytes, %v; want EOF", n, err)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("idle connection closed after %v, want about 300 ms", took)
	}
}

// TestMaxDownstreamConnectionDuration checks Envoy's
// max_downstream_connection_duration: a connection that keeps moving
// bytes is still closed, on both sides, once the duration has passed since
// the proxy took it, and its access log line has flag DT.
func TestMaxDownstreamConnectionDuration(t *testing.T) {
	upClosed := make(chan time.Time, 1)
	up := server(t, func(c *net.TCPConn) {
		echo("")(c)
		upClosed <- time.Now()
	})
	tp := oneCluster("echo")
	tp.MaxDownstreamConnectionDuration = durationpb.New(500 * time.Millisecond)
	h := start(t, tp, cluster(t, "echo", nil, up))
	opened := time.Now()
	c := dial(t, h.addr)
	buf := make([]byte, 1)
	// A byte each way every 20 ms: the connection is never idle. The
	// first exchange well inside the duration must work.
	var err error
	var i int
	for i = 0; ; i++ {
		if _, err = c.Write([]byte{'a'}); err != nil {
			break
		}
		if _, err = io.ReadFull(c, buf); err != nil {
			break
		}
		if time.Since(opened) > 5*time.Second {
			t.Fatal("connection still open after 5 s, want it closed after 500 ms")
		}
		<-time.After(20 * time.Millisecond)
	}
	took := time.Since(opened)
	if i < 5 {
		t.Fatalf("connection failed after %d exchanges (%v): %v; want it to carry bytes until 500 ms", i, took, err)
	}
	if took < 450*time.Millisecond || took > 3*time.Second {
		t.Errorf("active connection closed after %v, want about 500 ms", took)
	}
	select {
	case at := <-upClosed:
		if d := at.Sub(opened); d < 450*time.Millisecond {
			t.Errorf("upstream connection ended after %v, before the duration", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection still open 5 s after the downstream was closed")
	}
	line := h.waitLog(t, 1)[0]
	if field(line, 5) != FlagDurationTimeout {
		t.Errorf("response flags = %q, want DT\n%s", field(line, 5), line)
	}
}

// TestMaxDownstreamConnectionDurationNotReached checks that a connection
// that ends before max_downstream_connection_duration is logged without
// DT.
func TestMaxDownstreamConnectionDurationNotReached(t *testing.T) {
	up := server(t, echo(""))
	tp := oneCluster("echo")
	tp.MaxDownstreamConnectionDuration = durationpb.New(time.Minute)
	h := start(t, tp, cluster(t, "echo", nil, up))
	c := dial(t, h.addr)
	if _, err := io.WriteString(c, "hi"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(c); err != nil || string(got) != "hi" {
		t.Fatalf("read %q, %v; want hi", got, err)
	}
	if line := h.waitLog(t, 1)[0]; field(line, 5) != "-" {
		t.Errorf("response flags = %q, want -\n%s", field(line, 5), line)
	}
}

func TestConnectFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	h := start(t, oneCluster("down"), cluster(t, "down", nil, closed))
	c := dial(t, h.addr)
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("read %q, %v; want EOF", b, err)
	}
	line := h.waitLog(t, 1)[0]
	if field(line, 5) != "UF" || !strings.Contains(line, `"`+closed+`" down `) {
		t.Errorf("access log line, want flag UF, host %s and cluster down:\n%s", closed, line)
	}
}

func TestNoCluster(t *testing.T) {
	h := start(t, oneCluster("missing"))
	c := dial(t, h.addr)
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("read %q, %v; want EOF", b, err)
	}
	if line := h.waitLog(t, 1)[0]; field(line, 5) != "NC" {
		t.Errorf("access log line, want flag NC:\n%s", line)
	}
}

// TestOverflow holds one connection open on a cluster whose circuit
// breaker allows one: the next is closed at once with UO.
func TestOverflow(t *testing.T) {
	up := server(t, echo(""))
	h := start(t, oneCluster("cb"), cluster(t, "cb", func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority: corev3.RoutingPriority_DEFAULT, MaxRequests: wrapperspb.UInt32(1)}}}
	}, up))
	first := dial(t, h.addr)
	buf := make([]byte, 1)
	if _, err := first.Write([]byte{'a'}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, buf); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	second := dial(t, h.addr)
	if b, err := io.ReadAll(second); err != nil || len(b) != 0 {
		t.Fatalf("second connection: read %q, %v; want EOF", b, err)
	}
	if line := h.waitLog(t, 1)[0]; field(line, 5) != "UO" {
		t.Errorf("access log line, want flag UO:\n%s", line)
	}
	// The first connection still works.
	if _, err := first.Write([]byte{'b'}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, buf); err != nil || buf[0] != 'b' {
		t.Fatalf("first connection after the overflow: %q, %v", buf, err)
	}
}

// TestWeightedClusters sends 10 connections through an 80/20 split: the
// golden-ratio picks give exactly 8 and 2.
func TestWeightedClusters(t *testing.T) {
	one, two := server(t, echo("one ")), server(t, echo("two "))
	tp := &tcpv3.TcpProxy{StatPrefix: "tcp-echo", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
		WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
			{Name: "v1", Weight: 80}, {Name: "v2", Weight: 20}}}}}
	h := start(t, tp, cluster(t, "v1", nil, one), cluster(t, "v2", nil, two))
	got := map[string]int{}
	for range 10 {
		c := dial(t, h.addr)
		if _, err := io.WriteString(c, "x"); err != nil {
			t.Fatal(err)
		}
		_ = c.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		got[string(b)]++
		c.Close()
	}
	if got["one x"] != 8 || got["two x"] != 2 {
		t.Errorf("answers of 10 connections: %v, want 8 \"one x\" and 2 \"two x\"", got)
	}
}

// TestHashPolicySourceIP checks Istio's consistentHash useSourceIp on a TCP
// port: a tcp_proxy with hash_policy source_ip in front of a RING_HASH (or
// MAGLEV) cluster of three backends sends every connection from one
// client IP to one backend, whatever its source port, and clients of
// different IPs (127.0.0.x, bound as the client's local address) spread
// over the backends.
func TestHashPolicySourceIP(t *testing.T) {
	for _, lb := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(lb.String(), func(t *testing.T) { testHashPolicySourceIP(t, lb) })
	}
}

func testHashPolicySourceIP(t *testing.T, lb clusterv3.Cluster_LbPolicy) {
	backends := []string{server(t, echo("b0 ")), server(t, echo("b1 ")), server(t, echo("b2 "))}
	tp := oneCluster("tcp-echo")
	tp.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	h := start(t, tp, cluster(t, "tcp-echo", func(c *clusterv3.Cluster) { c.LbPolicy = lb }, backends...))

	// answer opens a connection from ip and returns the backend's prefix.
	answer := func(ip string) string {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", h.addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", ip, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "x"); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil || !strings.HasSuffix(string(b), " x") {
			t.Fatalf("connection from %s: read %q, %v; want a backend's echo", ip, b, err)
		}
		return strings.TrimSuffix(string(b), " x")
	}
	const ips, perIP = 12, 6
	seen := map[string]int{}
	for i := range ips {
		ip := "127.0.0." + strconv.Itoa(10+i)
		first := answer(ip)
		for range perIP - 1 {
			if got := answer(ip); got != first {
				t.Fatalf("connections from %s reached %s and %s, want one backend", ip, first, got)
			}
		}
		seen[first]++
	}
	// 12 IPs all on one of 3 backends by chance: under 1 in 10^5.
	if len(seen) < 2 {
		t.Errorf("clients of %d IPs reached backends %v, want them spread", ips, seen)
	}
}

// TestMaxConnections checks Envoy's tcp_proxy circuit breaker: with
// max_connections 1, a second connection while the first is open is
// closed at once with flag UO (not queued), counted as
// upstream_cx_overflow; once the first closes, a new one goes through.
func TestMaxConnections(t *testing.T) {
	up := server(t, echo(""))
	cm := upstream.New(upstream.Options{})
	h := startWith(t, cm, oneCluster("cb"), cluster(t, "cb", func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority: corev3.RoutingPriority_DEFAULT, MaxConnections: wrapperspb.UInt32(1)}}}
	}, up))
	roundTrip := func(c *net.TCPConn, b byte) error {
		if _, err := c.Write([]byte{b}); err != nil {
			return err
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if buf[0] != b {
			return errors.New("echo mismatch")
		}
		return nil
	}
	first := dial(t, h.addr)
	if err := roundTrip(first, 'a'); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	second := dial(t, h.addr)
	if b, err := io.ReadAll(second); err != nil || len(b) != 0 {
		t.Fatalf("second connection: read %q, %v; want EOF", b, err)
	}
	if line := h.waitLog(t, 1)[0]; field(line, 5) != "UO" {
		t.Errorf("access log line, want flag UO:\n%s", line)
	}
	if got := cm.PolicyStats("cb").UpstreamCxOverflow; got != 1 {
		t.Errorf("upstream_cx_overflow = %d, want 1", got)
	}
	if err := roundTrip(first, 'b'); err != nil {
		t.Fatalf("first connection after the overflow: %v", err)
	}
	first.Close()
	// The slot comes back when the proxy sees the first connection end.
	deadline := time.Now().Add(5 * time.Second)
	for {
		third := dial(t, h.addr)
		err := roundTrip(third, 'c')
		third.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection went through within 5 s of the first one's end: %v", err)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// logEveryChain gives each chain of g without access_log one line per
// connection in Istio's default format to /dev/stdout, as loomd's default
// mesh config (accessLogFile /dev/stdout) asks for.
func logEveryChain(g *config.Generation) {
	f, _ := accesslog.ParseTextFormat(accesslog.IstioTextFormat, accesslog.FormatOptions{})
	for _, l := range g.Listeners {
		for _, fc := range append(append([]*config.FilterChain{}, l.FilterChains...), l.DefaultFilterChain) {
			if fc != nil && fc.AccessLogs == nil {
				fc.AccessLogs = []*accesslog.AccessLogger{{Path: "/dev/stdout", Format: f}}
			}
		}
	}
}

// TestAccessLogOperators: what a TCP connection's access log gives for
// Envoy's operators: the listener's connection id and TLS handshake time,
// its filter chain and TLS version, one connect attempt and an upstream
// connection id (none without a cluster), and "-" for the HTTP-only
// timings and protocol.
func TestAccessLogOperators(t *testing.T) {
	const format = "%CONNECTION_ID% %DOWNSTREAM_HANDSHAKE_DURATION% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %UPSTREAM_PROTOCOL% " +
		"%REQUEST_DURATION% %RESPONSE_DURATION% %UPSTREAM_REMOTE_PORT% %DOWNSTREAM_PEER_URI_SAN% %FILTER_CHAIN_NAME% " +
		"%DOWNSTREAM_TLS_VERSION% %UPSTREAM_CONNECTION_ID%\n"
	up := server(t, echo(""))
	_, upPort, _ := net.SplitHostPort(up)
	for _, tt := range []struct {
		name, cluster, want string
		upstreamConn        bool
	}{
		{"connected", "echo", "7 3 1 - - - " + upPort + " - fc TLSv1.3", true},
		{"no cluster", "missing", "7 3 0 - - - - - fc TLSv1.3", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startOpts(t, upstream.New(upstream.Options{}), harnessOptions{conn: &filter.Connection{ID: 7, HandshakeDuration: 3900 * time.Microsecond,
				FilterChain: "fc", TLS: &tls.ConnectionState{Version: tls.VersionTLS13}}, format: format},
				oneCluster(tt.cluster), cluster(t, "echo", nil, up))
			c := dial(t, h.addr)
			c.CloseWrite()
			io.ReadAll(c)
			c.Close()
			line := h.waitLog(t, 1)[0]
			i := strings.LastIndexByte(line, ' ')
			got, upConn := line[:i], line[i+1:]
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			// The upstream connection's id is from the sequence of
			// the downstream ones (7 here is the test's own).
			if (upConn != "0") != tt.upstreamConn || upConn == "7" {
				t.Errorf("upstream connection id %s", upConn)
			}
		})
	}
}
