package translate

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// sidecarFile writes a Sidecar of spec body (indented two spaces) for
// workloads labelled app=app to a file of its own and returns its path.
func sidecarFile(t *testing.T, app, body string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "sidecar.yaml")
	doc := "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: " + app + ", namespace: default}\nspec:\n  workloadSelector: {labels: {app: " + app + "}}\n" + body
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// poolSummary is the circuit breaker thresholds, connect timeout and
// upstream idle timeout of cluster c, "-" for a threshold at Istio's
// unlimited default.
func poolSummary(t *testing.T, c *clusterv3.Cluster) string {
	t.Helper()
	th := c.GetCircuitBreakers().GetThresholds()[0]
	n := func(v uint32) string {
		if v == ^uint32(0) {
			return "-"
		}
		return strconv.FormatUint(uint64(v), 10)
	}
	s := "conns=" + n(th.GetMaxConnections().GetValue()) + " pending=" + n(th.GetMaxPendingRequests().GetValue()) +
		" requests=" + n(th.GetMaxRequests().GetValue()) + " connect=" + c.GetConnectTimeout().AsDuration().String()
	if a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a != nil {
		var opts upstreamhttpv3.HttpProtocolOptions
		if err := a.UnmarshalTo(&opts); err != nil {
			t.Fatal(err)
		}
		if it := opts.GetCommonHttpProtocolOptions().GetIdleTimeout(); it != nil {
			s += " idle=" + it.AsDuration().String()
		}
		if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
			s += " h2"
		}
	}
	return s
}

// TestSidecarIngressConnectionPool: a Sidecar's connection pools set the
// inbound clusters' circuit breakers and timeouts, as Istio's
// InboundConnectionPoolForPort: an ingress listener's connectionPool for
// its port, else the Sidecar's inboundConnectionPool, else Istio's
// unlimited defaults; the port's pool replaces the Sidecar-wide one, not
// merges with it. Both interception modes, STATIC and ORIGINAL_DST
// clusters alike; an HTTP/2 port keeps its h2c options.
func TestSidecarIngressConnectionPool(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	sc := sidecarFile(t, "moved", `  inboundConnectionPool:
    tcp: {maxConnections: 50}
    http: {http1MaxPendingRequests: 100}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 7, idleTimeout: 30s}
  - port: {number: 9081, protocol: TCP, name: tcp-pod}
    defaultEndpoint: 0.0.0.0:8081
  - port: {number: 9082, protocol: GRPC, name: grpc}
    connectionPool: {http: {http2MaxRequests: 3}}
`)
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), sc)
	want := map[string]string{
		"inbound|9080||": "conns=1 pending=1 requests=7 connect=2s idle=30s",
		"inbound|9081||": "conns=50 pending=100 requests=- connect=10s",
		"inbound|9082||": "conns=- pending=- requests=3 connect=10s h2",
	}
	for _, p := range []*model.Proxy{movedSidecar(), explicitMoved()} {
		r := mustGenerate(t, pc, p)
		got := map[string]string{}
		for _, c := range r.Clusters {
			if _, ok := want[c.GetName()]; ok {
				got[c.GetName()] = poolSummary(t, c)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: inbound cluster pools (-want +got):\n%s", p.InterceptionMode, diff)
		}
	}

	// Without the Sidecar the inbound cluster is unlimited.
	base := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"))
	for _, c := range mustGenerate(t, base, movedSidecar()).Clusters {
		if c.GetName() == "inbound|9080||" {
			if got := poolSummary(t, c); got != "conns=- pending=- requests=- connect=10s" {
				t.Errorf("without the Sidecar: inbound|9080|| %s, want unlimited", got)
			}
		}
	}
}

// TestSidecarInboundConnectionPoolServicePorts: without ingress
// listeners, the Sidecar's inboundConnectionPool applies to the inbound
// cluster of every service port.
func TestSidecarInboundConnectionPoolServicePorts(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	sc := sidecarFile(t, "moved", "  inboundConnectionPool: {tcp: {maxConnections: 5}}\n")
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), sc)
	for _, p := range []*model.Proxy{movedSidecar(), explicitMoved()} {
		n := 0
		for _, c := range mustGenerate(t, pc, p).Clusters {
			if strings.HasPrefix(c.GetName(), "inbound|") {
				n++
				if got := poolSummary(t, c); got != "conns=5 pending=- requests=- connect=10s" {
					t.Errorf("%s: %s %s, want conns=5", p.InterceptionMode, c.GetName(), got)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no inbound cluster", p.InterceptionMode)
		}
	}
}

// explicitMoved is movedSidecar without interception.
func explicitMoved() *model.Proxy {
	p := movedSidecar()
	p.InterceptionMode = "NONE"
	return p
}

// TestSidecarIngressBind: an ingress listener's bind names its chains and
// places its bound listener, as Istio's buildInboundChainConfigs (cc.bind
// = bind, else getSidecarInboundBindIPs): under REDIRECT the
// virtualInbound chains of a captured port are "BIND_PORT" (still matched
// by port alone) and a NONE port's listener binds BIND:PORT; in explicit
// mode every bound listener takes BIND:PORT instead of the proxy's IP.
func TestSidecarIngressBind(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	sc := sidecarFile(t, "moved", `  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 0.0.0.0
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9081, protocol: TCP, name: tcp-pod}
    bind: 127.0.0.99
    defaultEndpoint: 0.0.0.0:8081
  - port: {number: 9082, protocol: HTTP, name: http-none}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:8082
`)
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), sc)
	bound := func(r *Resources) []string {
		var out []string
		for _, l := range r.Listeners {
			if l.GetTrafficDirection().String() == "INBOUND" && l.GetName() != xdsapi.VirtualInboundListener {
				sa := l.GetAddress().GetSocketAddress()
				out = append(out, l.GetName()+" @"+sa.GetAddress()+":"+strconv.FormatUint(uint64(sa.GetPortValue()), 10))
			}
		}
		return out
	}

	r := mustGenerate(t, pc, movedSidecar())
	for _, tt := range []struct {
		entry string
		c     conn
		want  string
	}{
		{xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9080", http: "moved:9080"}, "virtualInbound/0.0.0.0_9080 -> inbound|9080||"},
		{xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9081"}, "virtualInbound/127.0.0.99_9081 -> inbound|9081||"},
		{"127.0.0.1_9082", conn{dst: "127.0.0.1:9082", http: "moved:9082"}, "127.0.0.1_9082/127.0.0.1_9082 -> inbound|9082||"},
	} {
		if got := simulateConn(t, r, tt.entry, tt.c); got != tt.want {
			t.Errorf("REDIRECT: got  %s\nwant %s", got, tt.want)
		}
	}
	if diff := cmp.Diff([]string{"127.0.0.1_9082 @127.0.0.1:9082"}, bound(r)); diff != "" {
		t.Errorf("REDIRECT: bound inbound listeners (-want +got):\n%s", diff)
	}

	r = mustGenerate(t, pc, explicitMoved())
	want := []string{"0.0.0.0_9080 @0.0.0.0:9080", "127.0.0.1_9082 @127.0.0.1:9082", "127.0.0.99_9081 @127.0.0.99:9081"}
	if diff := cmp.Diff(want, bound(r)); diff != "" {
		t.Errorf("explicit: bound inbound listeners (-want +got):\n%s", diff)
	}
	if got, want := simulateConn(t, r, "127.0.0.99_9081", conn{dst: "127.0.0.99:9081"}), "127.0.0.99_9081/127.0.0.99_9081 -> inbound|9081||"; got != want {
		t.Errorf("explicit: got  %s\nwant %s", got, want)
	}
}

// TestIngressBind: bind wins over the default and is written canonically;
// without it, Istio's getSidecarInboundBindIPs (explicit mode: the
// proxy's IP).
func TestIngressBind(t *testing.T) {
	for _, tt := range []struct {
		bind, ip string
		explicit bool
		want     string
	}{
		{"", "10.0.0.5", false, "10.0.0.5"},
		{"", "127.0.0.11", false, "0.0.0.0"},
		{"", "127.0.0.11", true, "127.0.0.11"},
		{"0.0.0.0", "10.0.0.5", false, "0.0.0.0"},
		{"127.0.0.1", "127.0.0.11", true, "127.0.0.1"},
		{"::0", "10.0.0.5", false, "::"},
	} {
		if got := ingressBind(tt.bind, tt.ip, tt.explicit); got != tt.want {
			t.Errorf("ingressBind(%q, %s, explicit %v) = %s, want %s", tt.bind, tt.ip, tt.explicit, got, tt.want)
		}
	}
}
