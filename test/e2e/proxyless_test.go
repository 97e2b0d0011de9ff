package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"

	loomapi "github.com/loom-mesh/loom/internal/loomctl"
)

// versionApp answers UnaryCall with its version in the payload.
type versionApp struct {
	testpb.UnimplementedTestServiceServer
	version string
}

func (a *versionApp) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(a.version)}}, nil
}

// proxylessConfig is reviews (gRPC on 9080, served on 50051) with v1 on
// .10 and v2 on .11, and the 80/20 split. Both WorkloadEntries carry the
// sidecar tlsMode label: a proxyless client must still dial the apps
// themselves, not :15006.
const proxylessConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: grpc, protocol: GRPC, targetPort: 50051}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec:
  address: %[1]s.10
  labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec:
  address: %[1]s.11
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

// TestProxylessGRPC runs loomd as a process and a grpc-go client in the
// test process with no sidecar: its xDS resolver reads loomd's LDS, RDS,
// CDS and EDS (node metadata GENERATOR: grpc) and splits 1000 calls 80/20
// between two grpc-go servers on their own IPs.
func TestProxylessGRPC(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	const prefix = "127.62.0"
	for _, v := range []struct{ version, ip string }{{"v1", prefix + ".10"}, {"v2", prefix + ".11"}} {
		gs := grpc.NewServer()
		testpb.RegisterTestServiceServer(gs, &versionApp{version: v.version})
		serveApp(t, v.ip+":50051", gs.Serve, gs.Stop)
	}

	m := &appMesh{t: t, prefix: prefix, configDir: t.TempDir(), logsDir: t.TempDir()}
	t.Cleanup(m.stop)
	if err := os.WriteFile(filepath.Join(m.configDir, "reviews.yaml"), fmt.Appendf(nil, proxylessConfig, prefix), 0o644); err != nil {
		t.Fatal(err)
	}
	xdsAddr := m.ip(1) + ":15010"
	m.start("loomd", "loomd", "--config-dir", m.configDir, "--xds-addr", xdsAddr, "--monitoring-addr", m.ip(1)+":15014", "--dashboard-addr", m.ip(1)+":20001")
	if !poll(30*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", xdsAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("loomd does not listen on %s after 30 s\n%s", xdsAddr, m.tails())
	}

	// The bootstrap Istio's agent writes for a proxyless app (node ID
	// sidecar~IP~POD.NS~NS.svc.cluster.local, GENERATOR: grpc). grpc-go
	// reads GRPC_XDS_BOOTSTRAP_CONFIG once, when its package initialises,
	// so setting the variable here would be too late; the resolver built
	// from the same JSON is the test's own and touches no process state.
	nodeID := "sidecar~" + prefix + ".100~client.default~default.svc.cluster.local"
	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {
    "id": %q,
    "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}
  }
}`, xdsAddr, nodeID)
	resolver, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///reviews.default.svc.cluster.local:9080",
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testpb.NewTestServiceClient(cc)

	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		return string(r.GetPayload().GetBody()), err
	}
	// The first call waits for the resolver's LDS/RDS/CDS/EDS round trips.
	var lastErr error
	if !poll(30*time.Second, func() bool { _, lastErr = call(); return lastErr == nil }) {
		t.Fatalf("no call through xds:/// succeeded in 30 s: %v\n%s", lastErr, m.tails())
	}

	const n = 1000
	counts := map[string]int{}
	for i := range n {
		v, err := call()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		counts[v]++
	}
	// grpc-go's weighted_target picks a cluster at random per call, so the
	// v1 count is binomial(1000, 0.8): σ ≈ 12.6 calls, and ±5 % (50 calls)
	// is about ±4σ, which a correct split leaves once in ~16000 runs.
	if counts["v1"]+counts["v2"] != n || counts["v1"] < 750 || counts["v1"] > 850 {
		t.Fatalf("versions over %d calls = %v, want v1 800 ± 50 and the rest v2", n, counts)
	}
	t.Logf("versions over %d calls: %v", n, counts)

	// grpc-go ACKs what it accepts and NACKs the rest with its reason:
	// loomd's /debug/syncz must show the client SYNCED on every type.
	m.loomd = loomapi.NewClient(m.ip(1)+":15014", &http.Client{Timeout: 2 * time.Second})
	if !poll(10*time.Second, func() bool { return m.synced([]string{nodeID}) }) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ss, err := m.loomd.Syncz(ctx)
		t.Fatalf("client %s not SYNCED on every type after 10 s: syncz = %+v, %v", nodeID, ss, err)
	}
}
