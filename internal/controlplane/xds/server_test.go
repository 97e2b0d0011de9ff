package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

// fakeConfig is a ConfigSource whose snapshot the test sets.
type fakeConfig struct {
	mu   sync.Mutex
	snap *config.Snapshot
}

func (f *fakeConfig) Snapshot() *config.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

// setHosts makes the config one ServiceEntry per host.
func (f *fakeConfig) setHosts(version uint64, hosts ...string) {
	var rs []*config.Resource
	for _, h := range hosts {
		rs = append(rs, &config.Resource{Kind: config.KindServiceEntry, Name: h, Namespace: "default",
			Spec: &networking.ServiceEntry{Hosts: []string{h}}})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = config.NewSnapshot(version, rs)
}

// fakeGenerate stands for translate: one EDS cluster per ServiceEntry host
// and one outbound listener on the proxy's IP.
func fakeGenerate(pc *model.PushContext, p *model.Proxy) (*translate.Resources, error) {
	res := &translate.Resources{}
	for _, r := range pc.Config.List(config.KindServiceEntry) {
		for _, h := range r.Spec.(*networking.ServiceEntry).GetHosts() {
			res.Clusters = append(res.Clusters, &clusterv3.Cluster{
				Name:                 xdsapi.ClusterName(xdsapi.Outbound, 9080, "", h),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				ConnectTimeout:       durationpb.New(time.Second),
			})
		}
	}
	res.Listeners = []*listenerv3.Listener{{
		Name: xdsapi.VirtualOutboundListener,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: p.IP, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: xdsapi.PortOutbound}}}},
	}}
	return res, nil
}

func startServer(t *testing.T, cfg ConfigSource) *Server {
	t.Helper()
	return startServerOpts(t, Options{Addr: "127.0.0.1:0", Config: cfg, Generate: fakeGenerate})
}

// startServerOpts runs a Server with opts until the test ends.
func startServerOpts(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// adsClient is a proxy's side of one ADS stream.
type adsClient struct {
	t      *testing.T
	node   *corev3.Node
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	resps  chan *discoverygrpc.DiscoveryResponse
	errc   chan error
}

func testNode() *corev3.Node {
	n, err := xdsapi.BuildNode(
		xdsapi.NodeID{Type: xdsapi.Sidecar, IP: "127.0.0.13", Name: "reviews-v1", Namespace: "default", Domain: "default.svc.cluster.local"},
		xdsapi.NodeMeta{Labels: map[string]string{"app": "reviews", "version": "v1"}, Namespace: "default",
			ServiceAccount: "bookinfo-reviews", InterceptionMode: xdsapi.InterceptionNone,
			ClusterID: "Kubernetes", ProxyVersion: "1.0.0"})
	if err != nil {
		panic(err) // constant input
	}
	return n
}

func dial(t *testing.T, addr string, node *corev3.Node) *adsClient {
	t.Helper()
	return dialWith(t, addr, node, insecure.NewCredentials())
}

// dialWith is dial with the given transport credentials.
func dialWith(t *testing.T, addr string, node *corev3.Node, creds credentials.TransportCredentials) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, node: node, stream: stream,
		resps: make(chan *discoverygrpc.DiscoveryResponse, 100), errc: make(chan error, 1)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.errc <- err
				return
			}
			c.resps <- r
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		conn.Close()
	})
	return c
}

func (c *adsClient) send(req *discoverygrpc.DiscoveryRequest) {
	c.t.Helper()
	req.Node = c.node
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *adsClient) subscribe(typeURL string) {
	c.t.Helper()
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: typeURL})
}

func (c *adsClient) ack(r *discoverygrpc.DiscoveryResponse) {
	c.t.Helper()
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
}

func (c *adsClient) nack(r *discoverygrpc.DiscoveryResponse, prevVersion, msg string) {
	c.t.Helper()
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: prevVersion, ResponseNonce: r.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}})
}

// recv waits for the next response of typeURL, skipping other types.
func (c *adsClient) recv(typeURL string) *discoverygrpc.DiscoveryResponse {
	c.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case r := <-c.resps:
			if r.GetTypeUrl() == typeURL {
				return r
			}
		case err := <-c.errc:
			c.t.Fatalf("stream ended: %v", err)
		case <-deadline:
			c.t.Fatalf("no %s response in %v", xdsapi.ShortType(typeURL), waitFor)
		}
	}
}

func names(t *testing.T, r *discoverygrpc.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		switch a.GetTypeUrl() {
		case xdsapi.ClusterType:
			var c clusterv3.Cluster
			if err := a.UnmarshalTo(&c); err != nil {
				t.Fatal(err)
			}
			out = append(out, c.GetName())
		case xdsapi.ListenerType:
			var l listenerv3.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				t.Fatal(err)
			}
			sa := l.GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s@%s:%d", l.GetName(), sa.GetAddress(), sa.GetPortValue()))
		default:
			t.Fatalf("unexpected resource type %s", a.GetTypeUrl())
		}
	}
	sort.Strings(out)
	return out
}

// waitStatus polls Syncz until the status of typeURL of node satisfies ok.
func waitStatus(t *testing.T, s *Server, node, typeURL string, ok func(TypeStatus) bool) TypeStatus {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	var last TypeStatus
	for time.Now().Before(deadline) {
		for _, p := range s.Syncz() {
			if p.ID != node {
				continue
			}
			for _, ts := range p.Types {
				if ts.TypeURL == typeURL {
					last = ts
					if ok(ts) {
						return ts
					}
				}
			}
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not a wait for an event
	}
	t.Fatalf("status of %s %s never matched; last %+v", node, xdsapi.ShortType(typeURL), last)
	return last
}

const reviewsHost = "reviews.default.svc.cluster.local"
const ratingsHost = "ratings.default.svc.cluster.local"

func TestServesAndTracksACK(t *testing.T) {
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	s := startServer(t, cfg)
	c := dial(t, s.Addr(), testNode())
	id := c.node.GetId()

	c.subscribe(xdsapi.ClusterType)
	cds := c.recv(xdsapi.ClusterType)
	if d := cmp.Diff([]string{"outbound|9080||" + reviewsHost}, names(t, cds)); d != "" {
		t.Fatalf("clusters (-want +got)\n%s", d)
	}
	got := waitStatus(t, s, id, xdsapi.ClusterType, func(ts TypeStatus) bool { return ts.Sent == cds.GetVersionInfo() })
	if got.Acked != "" {
		t.Fatalf("acked %q before the ACK", got.Acked)
	}
	c.ack(cds)
	waitStatus(t, s, id, xdsapi.ClusterType, func(ts TypeStatus) bool { return ts.Acked == cds.GetVersionInfo() })

	c.subscribe(xdsapi.ListenerType)
	lds := c.recv(xdsapi.ListenerType)
	if d := cmp.Diff([]string{"virtualOutbound@127.0.0.13:15001"}, names(t, lds)); d != "" {
		t.Fatalf("listeners (-want +got)\n%s", d)
	}
	c.ack(lds)
	waitStatus(t, s, id, xdsapi.ListenerType, func(ts TypeStatus) bool { return ts.Acked == lds.GetVersionInfo() })

	want := []ProxyStatus{{ID: id, Cluster: "Kubernetes", Version: "loom-proxy/1.0.0", Types: []TypeStatus{
		{TypeURL: xdsapi.ClusterType, Short: "CDS", Sent: cds.GetVersionInfo(), Acked: cds.GetVersionInfo()},
		{TypeURL: xdsapi.EndpointType, Short: "EDS"},
		{TypeURL: xdsapi.ListenerType, Short: "LDS", Sent: lds.GetVersionInfo(), Acked: lds.GetVersionInfo()},
		{TypeURL: xdsapi.RouteType, Short: "RDS"},
	}}}
	before := time.Now()
	statuses := s.Syncz()
	if d := cmp.Diff(want, statuses, cmpopts.IgnoreFields(ProxyStatus{}, "ConnectedAt", "LastACK")); d != "" {
		t.Fatalf("Syncz (-want +got)\n%s", d)
	}
	// The stream connected before its first ACK, which came before now.
	if p := statuses[0]; p.ConnectedAt.IsZero() || p.LastACK.Before(p.ConnectedAt) || p.LastACK.After(before) {
		t.Errorf("connected at %v, last ACK at %v: want connected <= last ACK <= %v", p.ConnectedAt, p.LastACK, before)
	}
}

func TestNACKThenChangeThenACK(t *testing.T) {
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	s := startServer(t, cfg)
	c := dial(t, s.Addr(), testNode())
	id := c.node.GetId()

	c.subscribe(xdsapi.ClusterType)
	cds1 := c.recv(xdsapi.ClusterType)
	c.subscribe(xdsapi.ListenerType)
	lds1 := c.recv(xdsapi.ListenerType)
	c.ack(lds1)
	c.nack(cds1, "", "cluster outbound|9080||reviews: type = EDS: must be STATIC")
	got := waitStatus(t, s, id, xdsapi.ClusterType, func(ts TypeStatus) bool { return ts.Nacked != "" })
	want := TypeStatus{TypeURL: xdsapi.ClusterType, Short: "CDS", Sent: cds1.GetVersionInfo(),
		Nacked: cds1.GetVersionInfo(), NackError: "cluster outbound|9080||reviews: type = EDS: must be STATIC"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("after NACK (-want +got)\n%s", d)
	}

	// A config change pushes a new CDS version; LDS did not change, so its
	// version stays.
	cfg.setHosts(2, reviewsHost, ratingsHost)
	s.Trigger()
	cds2 := c.recv(xdsapi.ClusterType)
	if cds2.GetVersionInfo() == cds1.GetVersionInfo() {
		t.Fatalf("changed clusters kept version %q", cds2.GetVersionInfo())
	}
	if d := cmp.Diff([]string{"outbound|9080||" + ratingsHost, "outbound|9080||" + reviewsHost}, names(t, cds2)); d != "" {
		t.Fatalf("clusters (-want +got)\n%s", d)
	}
	snap, err := s.cache.GetSnapshot(id)
	if err != nil {
		t.Fatal(err)
	}
	if v := snap.GetVersion(xdsapi.ListenerType); v != lds1.GetVersionInfo() {
		t.Fatalf("unchanged listeners got version %q, want %q", v, lds1.GetVersionInfo())
	}

	c.ack(cds2)
	got = waitStatus(t, s, id, xdsapi.ClusterType, func(ts TypeStatus) bool { return ts.Acked == cds2.GetVersionInfo() })
	want = TypeStatus{TypeURL: xdsapi.ClusterType, Short: "CDS", Sent: cds2.GetVersionInfo(), Acked: cds2.GetVersionInfo()}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("after ACK (-want +got)\n%s", d)
	}
}

func TestDebounceCoalesces(t *testing.T) {
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	s := startServer(t, cfg)
	c := dial(t, s.Addr(), testNode())

	c.subscribe(xdsapi.ClusterType)
	c.ack(c.recv(xdsapi.ClusterType))

	var hosts []string
	for i := range 20 {
		hosts = append(hosts, fmt.Sprintf("svc%d.default.svc.cluster.local", i))
		cfg.setHosts(uint64(i+2), hosts...)
		s.Trigger()
	}
	// Read CDS responses until the last config arrives.
	responses := 0
	for {
		r := c.recv(xdsapi.ClusterType)
		responses++
		c.ack(r)
		if len(r.GetResources()) == len(hosts) {
			break
		}
	}
	if responses > 2 {
		t.Errorf("20 triggers gave %d CDS responses, want 1 or 2", responses)
	}
	// The push that sent the last config counts itself after its
	// snapshots are set, so the response may arrive first.
	deadline := time.Now().Add(waitFor)
	for s.pushes.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // poll interval
	}
	if p := s.pushes.Load(); p < 1 || p > 2 {
		t.Errorf("20 triggers gave %d pushes, want 1 or 2", p)
	}
}

func TestDebounceMaxDelay(t *testing.T) {
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	s, err := New(Options{Addr: "127.0.0.1:0", Config: cfg, Generate: fakeGenerate,
		DebounceAfter: 50 * time.Millisecond, DebounceMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// Triggers every 10ms never leave 50ms of quiet; the push must still
	// happen, bounded by DebounceMax. A loaded machine may stall this loop
	// for 50ms, a real quiet period: an early push is then right, and only
	// a push before DebounceMax with no such gap is wrong.
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var maxGap time.Duration
	last := start
	for s.pushes.Load() == 0 {
		if time.Since(start) > waitFor {
			t.Fatal("no push while triggers kept coming")
		}
		now := time.Now()
		maxGap = max(maxGap, now.Sub(last))
		last = now
		s.Trigger()
		<-tick.C
	}
	// The stall may also have come after the last trigger.
	maxGap = max(maxGap, time.Since(last))
	if el := time.Since(start); el < 200*time.Millisecond && maxGap < 50*time.Millisecond {
		t.Errorf("pushed after %v, before DebounceMax, with triggers at most %v apart", el, maxGap)
	}
}

func TestBadNodeIDIsRejected(t *testing.T) {
	tests := []struct {
		name string
		id   string
	}{
		{name: "not istio", id: "not-an-istio-node"},
		{name: "IP is not an address", id: "sidecar~reviews~reviews-v1.default~default.svc.cluster.local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &fakeConfig{}
			s := startServer(t, cfg)
			c := dial(t, s.Addr(), &corev3.Node{Id: tt.id})
			c.subscribe(xdsapi.ClusterType)
			select {
			case err := <-c.errc:
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("stream error %v, want InvalidArgument", err)
				}
			case r := <-c.resps:
				t.Fatalf("got a response for a bad node: %v", r)
			case <-time.After(waitFor):
				t.Fatal("stream not closed")
			}
			if got := s.Syncz(); len(got) != 0 {
				t.Fatalf("Syncz = %v, want empty", got)
			}
		})
	}
}

// TestFirstGenerateFailureClosesStream: a proxy whose config cannot be
// generated is told so (Internal) instead of waiting on a silent stream,
// and the failure is logged at Error with its node ID.
func TestFirstGenerateFailureClosesStream(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	failing := func(*model.PushContext, *model.Proxy) (*translate.Resources, error) {
		return nil, errors.New("listener virtualOutbound: port 0: must be 1-65535")
	}
	s := startServerOpts(t, Options{Addr: "127.0.0.1:0", Config: &fakeConfig{}, Generate: failing,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	c := dial(t, s.Addr(), testNode())
	c.subscribe(xdsapi.ClusterType)
	select {
	case err := <-c.errc:
		if status.Code(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "port 0: must be 1-65535") {
			t.Fatalf("stream error %v, want Internal with the generate error", err)
		}
	case r := <-c.resps:
		t.Fatalf("got a response although generation failed: %v", r)
	case <-time.After(waitFor):
		t.Fatal("stream not closed")
	}
	if got := s.Syncz(); len(got) != 0 {
		t.Fatalf("Syncz = %v, want empty", got)
	}
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			line = l
		}
	}
	if !strings.Contains(line, "node="+c.node.GetId()) || !strings.Contains(line, "must be 1-65535") {
		t.Fatalf("no Error line with the node ID and error; logs:\n%s", logs)
	}
}

// blockingGenerate is fakeGenerate that, once block is set, signals
// entered and waits for release on every call.
type blockingGenerate struct {
	block   atomic.Bool
	entered chan struct{} // buffer 1
	release chan struct{}
	once    sync.Once
}

func (b *blockingGenerate) generate(pc *model.PushContext, p *model.Proxy) (*translate.Resources, error) {
	if b.block.Load() {
		select {
		case b.entered <- struct{}{}:
		default:
		}
		<-b.release
	}
	return fakeGenerate(pc, p)
}

func (b *blockingGenerate) unblock() { b.once.Do(func() { close(b.release) }) }

// TestSynczAndACKsDuringPush: a push whose generation is slow holds up
// neither Syncz nor the recording of an ACK.
func TestSynczAndACKsDuringPush(t *testing.T) {
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	gen := &blockingGenerate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := startServerOpts(t, Options{Addr: "127.0.0.1:0", Config: cfg, Generate: gen.generate})
	t.Cleanup(gen.unblock) // runs before the server stops
	c := dial(t, s.Addr(), testNode())
	id := c.node.GetId()

	c.subscribe(xdsapi.ClusterType)
	cds1 := c.recv(xdsapi.ClusterType)
	waitStatus(t, s, id, xdsapi.ClusterType, func(ts TypeStatus) bool { return ts.Sent == cds1.GetVersionInfo() })

	gen.block.Store(true)
	cfg.setHosts(2, reviewsHost, ratingsHost)
	s.Trigger()
	select {
	case <-gen.entered:
	case <-time.After(waitFor):
		t.Fatal("push never started generating")
	}

	// The push is stuck in Generate now.
	done := make(chan []ProxyStatus, 1)
	go func() { done <- s.Syncz() }()
	select {
	case got := <-done:
		if len(got) != 1 || got[0].ID != id {
			t.Fatalf("Syncz during push = %+v", got)
		}
	case <-time.After(waitFor):
		gen.unblock()
		t.Fatal("Syncz blocked while a push was generating")
	}
	c.ack(cds1)
	waitStatus(t, s, id, xdsapi.ClusterType, func(ts TypeStatus) bool { return ts.Acked == cds1.GetVersionInfo() })

	gen.unblock()
	cds2 := c.recv(xdsapi.ClusterType)
	if d := cmp.Diff([]string{"outbound|9080||" + ratingsHost, "outbound|9080||" + reviewsHost}, names(t, cds2)); d != "" {
		t.Fatalf("clusters after the push (-want +got)\n%s", d)
	}
}

// TestVersionsDifferAcrossRestarts: a proxy that reconnects to a new loomd
// process sends the version it holds; the new process's versions must not
// equal it, or the cache would not answer and the proxy would keep stale
// config.
func TestVersionsDifferAcrossRestarts(t *testing.T) {
	old := &fakeConfig{}
	old.setHosts(1, reviewsHost)
	s1 := startServer(t, old)
	c1 := dial(t, s1.Addr(), testNode())
	c1.subscribe(xdsapi.ClusterType)
	cds1 := c1.recv(xdsapi.ClusterType)
	if n := len(cds1.GetResources()); n != 1 {
		t.Fatalf("first process sent %d clusters, want 1", n)
	}
	if !versionRE.MatchString(cds1.GetVersionInfo()) {
		t.Fatalf("version %q does not match %v", cds1.GetVersionInfo(), versionRE)
	}

	// The new process serves a config without clusters.
	s2 := startServer(t, &fakeConfig{})
	c2 := dial(t, s2.Addr(), testNode())
	c2.send(&discoverygrpc.DiscoveryRequest{TypeUrl: xdsapi.ClusterType, VersionInfo: cds1.GetVersionInfo()})
	cds2 := c2.recv(xdsapi.ClusterType)
	if n := len(cds2.GetResources()); n != 0 {
		t.Fatalf("second process sent %d clusters, want 0", n)
	}
	if cds2.GetVersionInfo() == cds1.GetVersionInfo() {
		t.Fatalf("both processes use version %q", cds1.GetVersionInfo())
	}
}

// versionRE is the form of resource versions: base-36 start time, "-", push number.
var versionRE = regexp.MustCompile(`^[0-9a-z]+-[0-9]+$`)

func TestStreamCloseForgetsProxy(t *testing.T) {
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	s := startServer(t, cfg)
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: testNode(), TypeUrl: xdsapi.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Syncz()); n != 1 {
		t.Fatalf("Syncz has %d proxies, want 1", n)
	}
	cancel()
	deadline := time.Now().Add(waitFor)
	for len(s.Syncz()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("proxy not forgotten after its stream closed: %v", s.Syncz())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

func TestPortInUse(t *testing.T) {
	s := startServer(t, &fakeConfig{})
	if _, err := New(Options{Addr: s.Addr(), Config: &fakeConfig{}}); err == nil {
		t.Fatal("New on a port in use succeeded")
	}
}
