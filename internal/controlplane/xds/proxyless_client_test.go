package xds

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	xdsresolver "google.golang.org/grpc/xds"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// proxylessConfig is reviews (gRPC on 9080) with v1 and v2 on 127.0.0.1
// at the ports given, both labelled for a sidecar, and an 80/20 split;
// and ratings, which the client never asks for: the client's snapshot
// holds resources of every type that it does not request.
const proxylessConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {grpc: %d}
  labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec:
  address: 127.0.0.1
  ports: {grpc: %d}
  labels: {app: reviews, version: v2, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - {destination: {host: reviews.default.svc.cluster.local, subset: v1}, weight: 80}
    - {destination: {host: reviews.default.svc.cluster.local, subset: v2}, weight: 20}
`

// versionApp answers UnaryCall with its version in the payload.
type versionApp struct {
	testpb.UnimplementedTestServiceServer
	version string
}

func (a *versionApp) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(a.version)}}, nil
}

// proxylessNode is the node ID of the tests' proxyless client.
const proxylessNode = "sidecar~127.0.0.20~client.default~default.svc.cluster.local"

// versionServer is a grpc-go server of versionApp on its own listener.
type versionServer struct {
	addr string
	port int
	stop func() // stops it; safe to call again (the test's cleanup does)
}

// serveVersion serves versionApp{version} on addr ("127.0.0.1:0" for any
// port) until stop or the test's end.
func serveVersion(t *testing.T, addr, version string) versionServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, &versionApp{version: version})
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	stop := sync.OnceFunc(func() { gs.Stop(); <-done })
	t.Cleanup(stop)
	return versionServer{ln.Addr().String(), ln.Addr().(*net.TCPAddr).Port, stop}
}

// startProxylessServer starts an xDS server on loopback serving the config
// doc (YAML).
func startProxylessServer(t *testing.T, doc string) *Server {
	t.Helper()
	rs, errs := config.Decode("reviews.yaml", []byte(doc))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	return startServerOpts(t, Options{Addr: "127.0.0.1:0", Config: &fakeConfig{snap: config.NewSnapshot(1, rs)}})
}

// proxylessClient is a grpc-go client of xds:///reviews:9080 whose xDS
// resolver reads s as the node proxylessNode (GENERATOR grpc); node holds
// extra JSON members of the bootstrap's node, each followed by ", ". The
// connection closes at the test's end.
func proxylessClient(t *testing.T, s *Server, node string) testpb.TestServiceClient {
	t.Helper()
	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": %q, %s"metadata": {"GENERATOR": "grpc"}}
}`, s.Addr(), proxylessNode, node)
	resolver, err := xdsresolver.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+reviewsHost+":9080",
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

// TestProxylessGRPCClient serves a real grpc-go xDS client (bootstrap node
// metadata GENERATOR: grpc) with the default generators over a socket: it
// resolves xds:///reviews.default.svc.cluster.local:9080 through LDS, RDS,
// CDS and EDS, each subscribed to by name while the snapshot holds more of
// the type (ratings, reviews' default cluster); it reaches both versions at
// their own ports (not :15006), splits calls about 80/20, and ACKs every
// type.
func TestProxylessGRPCClient(t *testing.T) {
	v1, v2 := serveVersion(t, "127.0.0.1:0", "v1"), serveVersion(t, "127.0.0.1:0", "v2")
	s := startProxylessServer(t, fmt.Sprintf(proxylessConfig, v1.port, v2.port))
	client := proxylessClient(t, s, "")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	counts := map[string]int{}
	const n = 500
	for i := range n {
		r, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		counts[string(r.GetPayload().GetBody())]++
	}
	// Random picks: v1 ~ binomial(500, 0.8), σ ≈ 9; 340..460 is beyond ±6σ.
	if counts["v1"]+counts["v2"] != n || counts["v1"] < 340 || counts["v1"] > 460 {
		t.Fatalf("versions over %d calls = %v, want about 400 v1 and the rest v2", n, counts)
	}
	// grpc-go NACKs a resource it cannot use with its reason; every type
	// must end ACKed at the version sent.
	for _, url := range xdsapi.TypeURLs {
		ts := waitStatus(t, s, proxylessNode, url, func(ts TypeStatus) bool { return ts.Sent != "" && ts.Acked == ts.Sent || ts.Nacked != "" })
		if ts.Nacked != "" {
			t.Errorf("%s NACKed: %s", ts.Short, ts.NackError)
		}
	}
}

// proxylessLocalityConfig is reviews with one endpoint in region r1 (the
// client's) and one in r2, at the ports given, and a DestinationRule with
// outlierDetection, under which Istio's default locality load balancing
// puts r2 at a lower priority.
const proxylessLocalityConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-r1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {grpc: %d}
  locality: r1/z1
  labels: {app: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-r2, namespace: default}
spec:
  address: 127.0.0.1
  ports: {grpc: %d}
  locality: r2/z1
  labels: {app: reviews}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 5, interval: 1s, baseEjectionTime: 30s}
`

// TestProxylessGRPCLocalityFailover: a grpc-go client in r1 with an xds:///
// target calls only its own region's endpoint, moves to r2's when r1's
// server stops, and comes back when r1's serves again: the priorities of
// Istio's locality load balancing reach grpc-go's priority balancer.
func TestProxylessGRPCLocalityFailover(t *testing.T) {
	r1, r2 := serveVersion(t, "127.0.0.1:0", "r1"), serveVersion(t, "127.0.0.1:0", "r2")
	s := startProxylessServer(t, fmt.Sprintf(proxylessLocalityConfig, r1.port, r2.port))
	client := proxylessClient(t, s, `"locality": {"region": "r1", "zone": "z1"}, `)
	call := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			return "error: " + err.Error()
		}
		return string(r.GetPayload().GetBody())
	}
	// calls makes n calls and counts the answers.
	calls := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			got[call()]++
		}
		return got
	}
	// until calls until one answers want, for at most waitFor.
	until := func(want string) {
		t.Helper()
		deadline := time.Now().Add(waitFor)
		for got := call(); got != want; got = call() {
			if time.Now().After(deadline) {
				t.Fatalf("no call answered %q in %v; last: %q", want, waitFor, got)
			}
		}
	}

	until("r1")
	if got := calls(100); got["r1"] != 100 {
		t.Fatalf("with r1 serving, 100 calls = %v, want all r1 (r2 is a lower priority)", got)
	}
	r1.stop()
	until("r2")
	if got := calls(50); got["r2"] != 50 {
		t.Fatalf("with r1 stopped, 50 calls = %v, want all r2", got)
	}
	serveVersion(t, r1.addr, "r1")
	until("r1")
	if got := calls(50); got["r1"] != 50 {
		t.Fatalf("with r1 serving again, 50 calls = %v, want all r1", got)
	}
}
