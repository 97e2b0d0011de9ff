package xdsclient

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const (
	nodeID  = "sidecar~127.0.0.13~reviews-v1.default~default.svc.cluster.local"
	cluster = "outbound|9080|v1|ratings.default.svc.cluster.local"
)

func listener(t *testing.T) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     "outbound",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: xdsapi.HTTPProxyRoute, ConfigSource: xdstest.ADS()}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: config.RouterFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &routerv3.Router{})}}},
	}
	return &listenerv3.Listener{
		Name:    xdsapi.VirtualOutboundListener,
		Address: xdstest.SocketAddress("127.0.0.13", 15001),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: config.HCMFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, hcm)}}}}},
	}
}

// routeConfig routes everything to cluster; a regex path match when regex
// is not empty, else prefix.
func routeConfig(prefix, regex string) *routev3.RouteConfiguration {
	m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
	if regex != "" {
		m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: regex}}
	}
	return &routev3.RouteConfiguration{Name: xdsapi.HTTPProxyRoute, VirtualHosts: []*routev3.VirtualHost{{
		Name: "ratings", Domains: []string{"ratings", "ratings:9080"},
		Routes: []*routev3.Route{{Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}},
	}}}
}

// ratingsWorkload is the telemetry metadata of cluster's endpoint.
var ratingsWorkload = xdsapi.EndpointWorkload{Name: "ratings-v1", Namespace: "default",
	CanonicalService: "ratings", CanonicalRevision: "v1", ClusterID: xdsapi.DefaultClusterID}

func snapshot(t *testing.T, versions map[string]string, rc *routev3.RouteConfiguration) *cachev3.Snapshot {
	cl := &clusterv3.Cluster{Name: cluster, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: xdstest.ADS()}}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: xdstest.SocketAddress("127.0.0.16", 15006)}},
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{xdsapi.EndpointMetadataNamespace: {
				Fields: map[string]*structpb.Value{xdsapi.EndpointMetadataWorkload: structpb.NewStringValue(ratingsWorkload.String())}}}}}}}}}
	items := map[string][]types.Resource{
		xdsapi.ClusterType: {cl}, xdsapi.EndpointType: {cla}, xdsapi.ListenerType: {listener(t)}, xdsapi.RouteType: {rc},
	}
	s := &cachev3.Snapshot{}
	for typ, rs := range items {
		s.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(versions[typ], rs)
	}
	return s
}

// recorder keeps the requests the server receives and wakes waiters.
type recorder struct {
	mu   sync.Mutex
	reqs []*discoveryv3.DiscoveryRequest
	wake chan struct{}
}

func (r *recorder) onRequest(_ int64, req *discoveryv3.DiscoveryRequest) error {
	r.mu.Lock()
	r.reqs = append(r.reqs, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// waitFor polls cond (under the recorder's lock) until it is true or 10s pass.
func (r *recorder) waitFor(t *testing.T, what string, cond func(reqs []*discoveryv3.DiscoveryRequest) bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond) // Apply side effects are not signalled; re-check.
	defer tick.Stop()
	for {
		r.mu.Lock()
		ok := cond(r.reqs)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.wake:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// acked reports whether reqs holds an ACK of version for typ.
func acked(reqs []*discoveryv3.DiscoveryRequest, typ, version string) bool {
	for _, q := range reqs {
		if q.GetTypeUrl() == typ && q.GetResponseNonce() != "" && q.GetErrorDetail() == nil && q.GetVersionInfo() == version {
			return true
		}
	}
	return false
}

type applied struct {
	mu   sync.Mutex
	gens []*config.Generation
}

func (a *applied) apply(g *config.Generation) {
	a.mu.Lock()
	a.gens = append(a.gens, g)
	a.mu.Unlock()
}

func (a *applied) last() (*config.Generation, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.gens) == 0 {
		return nil, 0
	}
	return a.gens[len(a.gens)-1], len(a.gens)
}

// startServer runs a go-control-plane ADS server on loopback until the
// test ends, recording the requests it receives.
func startServer(t *testing.T, ctx context.Context) (*recorder, cachev3.SnapshotCache, string) {
	t.Helper()
	rec := &recorder{wake: make(chan struct{}, 1)}
	snaps := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, snaps, serverv3.CallbackFuncs{StreamRequestFunc: rec.onRequest}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-serveDone
	})
	return rec, snaps, lis.Addr().String()
}

// runClient runs a Client with opts until the test ends, and checks that
// Run returned nil.
func runClient(t *testing.T, ctx context.Context, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-runDone; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return c
}

func TestClientACKNACK(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the server stops (cleanups run last-first)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec, snaps, addr := startServer(t, ctx)
	app := &applied{}
	c := runClient(t, ctx, Options{Addr: addr, Node: &corev3.Node{Id: nodeID}, Apply: app.apply})

	// 1. A good snapshot: applied and ACKed for every type.
	v1 := map[string]string{xdsapi.ClusterType: "1", xdsapi.EndpointType: "1", xdsapi.ListenerType: "1", xdsapi.RouteType: "1"}
	if err := snaps.SetSnapshot(ctx, nodeID, snapshot(t, v1, routeConfig("/", ""))); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "ACK of all four types at version 1", func(reqs []*discoveryv3.DiscoveryRequest) bool {
		for _, typ := range xdsapi.TypeURLs {
			if !acked(reqs, typ, "1") {
				return false
			}
		}
		return true
	})
	g, n1 := app.last()
	if g == nil {
		t.Fatal("Apply not called")
	}
	if diff := cmp.Diff(v1, g.Versions); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
	if g.Listeners[xdsapi.VirtualOutboundListener] == nil || g.Routes[xdsapi.HTTPProxyRoute] == nil {
		t.Fatalf("generation lacks listener or route: %+v", g)
	}
	wantEndpoints := []config.Endpoint{{Address: "127.0.0.16:15006", Weight: 1, Workload: &istiostats.Peer{
		Workload: "ratings-v1", Namespace: "default", Service: "ratings", Revision: "v1", Cluster: xdsapi.DefaultClusterID}}}
	if diff := cmp.Diff(wantEndpoints, g.Clusters[cluster].Endpoints); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if int(g.Number) != n1 {
		t.Errorf("generation Number = %d after %d applies", g.Number, n1)
	}

	// 2. A bad route: NACKed with the Build error; nothing applied.
	v2 := map[string]string{xdsapi.ClusterType: "1", xdsapi.EndpointType: "1", xdsapi.ListenerType: "1", xdsapi.RouteType: "2"}
	if err := snaps.SetSnapshot(ctx, nodeID, snapshot(t, v2, routeConfig("", "("))); err != nil {
		t.Fatal(err)
	}
	var nack *discoveryv3.DiscoveryRequest
	rec.waitFor(t, "NACK of RDS version 2", func(reqs []*discoveryv3.DiscoveryRequest) bool {
		for _, q := range reqs {
			if q.GetTypeUrl() == xdsapi.RouteType && q.GetErrorDetail() != nil {
				nack = q
				return true
			}
		}
		return false
	})
	if nack.GetVersionInfo() != "1" {
		t.Errorf("NACK version_info = %q, want the last accepted %q", nack.GetVersionInfo(), "1")
	}
	wantMsg := `route_config "http_proxy": virtual_hosts[0].routes[0].match.safe_regex.regex = "(": must be RE2: `
	if nack.GetErrorDetail().GetCode() != 3 || !strings.HasPrefix(nack.GetErrorDetail().GetMessage(), wantMsg) {
		t.Errorf("NACK error_detail = %v, want code 3 and message starting %q", nack.GetErrorDetail(), wantMsg)
	}
	if g2, n2 := app.last(); n2 != n1 || g2 != g {
		t.Errorf("Apply called %d more times after a NACK", n2-n1)
	}
	st := c.Status()
	rds := st.Types[3]
	if rds.Short != "RDS" || rds.Version != "1" || rds.NackVersion != "2" || !strings.HasPrefix(rds.NackError, wantMsg) || !st.Connected {
		t.Errorf("Status RDS = %+v, connected %v", rds, st.Connected)
	}

	// 3. A good route again: applied and ACKed.
	v3 := map[string]string{xdsapi.ClusterType: "1", xdsapi.EndpointType: "1", xdsapi.ListenerType: "1", xdsapi.RouteType: "3"}
	if err := snaps.SetSnapshot(ctx, nodeID, snapshot(t, v3, routeConfig("/ratings", ""))); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "ACK of RDS version 3", func(reqs []*discoveryv3.DiscoveryRequest) bool {
		return acked(reqs, xdsapi.RouteType, "3")
	})
	g3, n3 := app.last()
	if n3 != n1+1 || g3.Number != g.Number+1 {
		t.Errorf("after the good update: %d applies (want %d), Number %d (want %d)", n3, n1+1, g3.Number, g.Number+1)
	}
	if got := g3.Routes[xdsapi.HTTPProxyRoute].VirtualHosts[0].Routes[0].Match.Prefix; got != "/ratings" {
		t.Errorf("route prefix = %q, want /ratings", got)
	}
	if g3.Versions[xdsapi.RouteType] != "3" || g3.Clusters[cluster] == nil {
		t.Errorf("generation 3 = versions %v clusters %v", g3.Versions, g3.Clusters)
	}
	if rds := c.Status().Types[3]; rds.Version != "3" || rds.NackVersion != "" || rds.NackError != "" {
		t.Errorf("Status RDS after ACK = %+v", rds)
	}
	// The client keeps the other types serialized between updates: the
	// generation rebuilt for RDS alone still has every CDS and EDS field,
	// the endpoint's workload metadata too, and so has its config_dump.
	if diff := cmp.Diff(wantEndpoints, g3.Clusters[cluster].Endpoints); diff != "" {
		t.Errorf("endpoints after an RDS-only update (-want +got):\n%s", diff)
	}
	b, err := g3.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	dump := strings.Join(strings.Fields(string(b)), "")
	for _, want := range []string{`"prefix":"/ratings"`, `"versionInfo":"3"`, `"clusterName":"` + cluster + `"`,
		`"workload":"` + ratingsWorkload.String() + `"`, `"name":"` + xdsapi.VirtualOutboundListener + `"`} {
		if !strings.Contains(dump, want) {
			t.Errorf("config_dump of generation %d lacks %s:\n%s", g3.Number, want, b)
		}
	}
	if got, err := g.ConfigDump(); err != nil || !strings.Contains(strings.Join(strings.Fields(string(got)), ""), `"prefix":"/"`) {
		t.Errorf("config_dump of generation %d = %v; want its own route prefix \"/\"", g.Number, err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{Apply: func(*config.Generation) {}}); err == nil {
		t.Error("New without Node succeeded")
	}
	if _, err := New(Options{Node: &corev3.Node{Id: nodeID}}); err == nil {
		t.Error("New without Apply succeeded")
	}
	c, err := New(Options{Node: &corev3.Node{Id: nodeID}, Apply: func(*config.Generation) {}})
	if err != nil || c.opts.Addr != DefaultAddr {
		t.Errorf("New = %v, %v; want default address", c, err)
	}
}
