package translate

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// tcpMesh is Istio's tcp-echo task in explicit mode: tcp-echo v1 and v2
// on TCP port 9000 (and an HTTP port 9080 that gets no TCP listener), a
// client, and a database on TCP 3306 that shares no port.
const tcpMesh = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}, {number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: tcp-echo}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql, namespace: default}
spec:
  hosts: [mysql.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: mysql, protocol: MySQL}]
  endpoints: [{address: 127.0.0.30}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tcp-echo-v1, namespace: default}
spec: {address: 127.0.0.21, labels: {app: tcp-echo, version: v1, security.istio.io/tlsMode: istio}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tcp-echo-v2, namespace: default}
spec: {address: 127.0.0.22, labels: {app: tcp-echo, version: v2, security.istio.io/tlsMode: istio}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination, namespace: default}
spec:
  host: tcp-echo
  trafficPolicy: {connectionPool: {tcp: {idleTimeout: 30s}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// tcpVS routes canary clients to v2 only, port 9000 80/20, anything else v1.
const tcpVS = `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{sourceLabels: {track: canary}}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
  - match: [{port: 9000, destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: tcp-echo, subset: v2}}]
  - match: [{port: 9000}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
  - route: [{destination: {host: tcp-echo, subset: v1}}]
`

func tcpSidecar(ip string, labels map[string]string) *model.Proxy {
	return &model.Proxy{Type: model.SidecarProxy, ID: "sidecar~" + ip + "~x.default~default.svc.cluster.local",
		IP: ip, Name: "x", Namespace: "default", Labels: labels, InterceptionMode: "NONE"}
}

func tcpPushContext(t *testing.T, yaml string) *model.PushContext {
	t.Helper()
	f := filepath.Join(t.TempDir(), "tcp.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadPushContext(t, f)
}

// tcpProxies returns the TcpProxy of each TCP listener of r by name.
func tcpProxies(t *testing.T, r *Resources) map[string]*tcpv3.TcpProxy {
	t.Helper()
	out := map[string]*tcpv3.TcpProxy{}
	for _, l := range r.Listeners {
		fs := l.GetFilterChains()[0].GetFilters()
		f := fs[len(fs)-1]
		if f.GetName() != tcpProxyFilter {
			continue
		}
		tp := &tcpv3.TcpProxy{}
		if err := f.GetTypedConfig().UnmarshalTo(tp); err != nil {
			t.Fatal(err)
		}
		out[l.GetName()] = tp
		if l.GetAddress().GetSocketAddress().GetAddress() != "127.0.0.100" {
			t.Errorf("listener %s binds %v, want the proxy's IP", l.GetName(), l.GetAddress())
		}
	}
	return out
}

func single(cluster string, idle *durationpb.Duration) *tcpv3.TcpProxy {
	return &tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}, IdleTimeout: idle}
}

const (
	echo9000 = "outbound|9000||tcp-echo.default.svc.cluster.local"
	echoV1   = "outbound|9000|v1|tcp-echo.default.svc.cluster.local"
	echoV2   = "outbound|9000|v2|tcp-echo.default.svc.cluster.local"
	mysql    = "outbound|3306||mysql.default.svc.cluster.local"
)

func TestSidecarTCPListeners(t *testing.T) {
	idle := durationpb.New(30e9)
	tests := []struct {
		name   string
		yaml   string
		labels map[string]string
		want   map[string]*tcpv3.TcpProxy
	}{
		{"no VirtualService: the service port's cluster", tcpMesh, nil, map[string]*tcpv3.TcpProxy{
			"127.0.0.100_9000": single(echo9000, idle),
			"127.0.0.100_3306": single(mysql, nil),
		}},
		{"port match: weighted subsets", tcpMesh + tcpVS, map[string]string{"app": "client"}, map[string]*tcpv3.TcpProxy{
			"127.0.0.100_9000": {StatPrefix: echo9000, ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
				WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
					{Name: echoV1, Weight: 80}, {Name: echoV2, Weight: 20}}}}},
			"127.0.0.100_3306": single(mysql, nil),
		}},
		{"sourceLabels match first", tcpMesh + tcpVS, map[string]string{"app": "client", "track": "canary"}, map[string]*tcpv3.TcpProxy{
			"127.0.0.100_9000": single(echoV2, idle),
			"127.0.0.100_3306": single(mysql, nil),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := tcpPushContext(t, tt.yaml)
			got := tcpProxies(t, mustGenerate(t, pc, tcpSidecar("127.0.0.100", tt.labels)))
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("TCP listeners (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSidecarTCPMaxConnectionDuration checks that a DestinationRule's
// connectionPool.tcp.maxConnectionDuration becomes the tcp_proxy's
// max_downstream_connection_duration, as Istio sets it, with the subset's
// policy over the top-level one; weighted clusters get none.
func TestSidecarTCPMaxConnectionDuration(t *testing.T) {
	mesh := strings.Replace(tcpMesh, `trafficPolicy: {connectionPool: {tcp: {idleTimeout: 30s}}}
  subsets:
  - {name: v1, labels: {version: v1}}`, `trafficPolicy: {connectionPool: {tcp: {idleTimeout: 30s, maxConnectionDuration: 1h}}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {tcp: {maxConnectionDuration: 90s}}}}`, 1)
	if mesh == tcpMesh {
		t.Fatal("the DestinationRule of tcpMesh changed; update this test")
	}
	withMax := func(tp *tcpv3.TcpProxy, d time.Duration) *tcpv3.TcpProxy {
		tp.MaxDownstreamConnectionDuration = durationpb.New(d)
		return tp
	}
	tests := []struct {
		name   string
		yaml   string
		labels map[string]string
		want   *tcpv3.TcpProxy
	}{
		{"service port: top-level policy", mesh, nil, withMax(single(echo9000, durationpb.New(30e9)), time.Hour)},
		{"subset v2: top-level policy", mesh + tcpVS, map[string]string{"track": "canary"}, withMax(single(echoV2, durationpb.New(30e9)), time.Hour)},
		{"weighted clusters: none", mesh + tcpVS, nil, &tcpv3.TcpProxy{StatPrefix: echo9000, ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
			WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
				{Name: echoV1, Weight: 80}, {Name: echoV2, Weight: 20}}}}}},
		{"subset v1: its own policy", mesh + strings.Replace(tcpVS, "subset: v2}}]\n  - match: [{port: 9000, destinationSubnets", "subset: v1}}]\n  - match: [{port: 9000, destinationSubnets", 1),
			// The subset's connectionPool replaces the top-level one whole,
			// as Istio merges traffic policies: no idle_timeout.
			map[string]string{"track": "canary"}, withMax(single(echoV1, nil), 90*time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tcpProxies(t, mustGenerate(t, tcpPushContext(t, tt.yaml), tcpSidecar("127.0.0.100", tt.labels)))["127.0.0.100_9000"]
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("tcp_proxy of port 9000 (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSidecarTCPHashPolicy checks that DestinationRule consistentHash
// useSourceIp puts hash_policy source_ip on the tcp_proxy, under the
// conditions of Istio's maybeSetHashPolicy: the top-level policy of the
// first destination's host, overridden by the subset of a single
// destination when that subset sets a loadBalancer; weighted clusters read
// the top-level policy only; portLevelSettings are never read.
func TestSidecarTCPHashPolicy(t *testing.T) {
	i := strings.Index(tcpMesh, "apiVersion: networking.istio.io/v1\nkind: DestinationRule")
	if i < 0 {
		t.Fatal("tcpMesh has no DestinationRule; update this test")
	}
	mesh := func(dr string) string {
		return tcpMesh[:i] + "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n" +
			"metadata: {name: tcp-echo-destination, namespace: default}\nspec:\n  host: tcp-echo\n" + dr
	}
	vs := func(route string) string {
		return "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp-echo, namespace: default}\n" +
			"spec:\n  hosts: [tcp-echo]\n  tcp:\n  - route: " + route + "\n"
	}
	const (
		srcIP    = "{loadBalancer: {consistentHash: {useSourceIp: true}}}"
		subsets  = "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
		toV1     = "[{destination: {host: tcp-echo, subset: v1}}]"
		toV2     = "[{destination: {host: tcp-echo, subset: v2}}]"
		weighted = "[{destination: {host: tcp-echo, subset: v1}, weight: 80}, {destination: {host: tcp-echo, subset: v2}, weight: 20}]"
	)
	sourceIP := []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	tests := []struct {
		name string
		yaml string
		want []*typev3.HashPolicy
	}{
		{"service port: top-level useSourceIp", mesh("  trafficPolicy: " + srcIP + "\n"), sourceIP},
		{"service port: another hash key", mesh("  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}\n"), nil},
		{"service port: useSourceIp false", mesh("  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: false}}}\n"), nil},
		{"subset without loadBalancer: top-level", mesh("  trafficPolicy: "+srcIP+"\n"+
			"  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {tcp: {maxConnections: 5}}}}\n") + vs(toV1), sourceIP},
		{"subset simple LB overrides", mesh("  trafficPolicy: "+srcIP+"\n"+
			"  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}\n") + vs(toV1), nil},
		{"subset's own useSourceIp", mesh("  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: "+srcIP+"}\n") + vs(toV1), sourceIP},
		{"another subset's useSourceIp", mesh("  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: "+srcIP+"}\n"+
			"  - {name: v2, labels: {version: v2}}\n") + vs(toV2), nil},
		{"weighted clusters: top-level", mesh("  trafficPolicy: "+srcIP+"\n"+subsets) + vs(weighted), sourceIP},
		{"weighted clusters: subsets not read", mesh("  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: "+srcIP+"}\n"+
			"  - {name: v2, labels: {version: v2}, trafficPolicy: "+srcIP+"}\n") + vs(weighted), nil},
		{"portLevelSettings not read", mesh("  trafficPolicy: {portLevelSettings: [{port: {number: 9000}, loadBalancer: {consistentHash: {useSourceIp: true}}}]}\n"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp := tcpProxies(t, mustGenerate(t, tcpPushContext(t, tt.yaml), tcpSidecar("127.0.0.100", nil)))["127.0.0.100_9000"]
			if tp == nil {
				t.Fatal("no tcp_proxy on port 9000")
			}
			if diff := cmp.Diff(tt.want, tp.GetHashPolicy(), protocmp.Transform()); diff != "" {
				t.Errorf("hash_policy of port 9000 (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSidecarTCPListenersSkipOwnPort checks that tcp-echo's own sidecar
// leaves out port 9000, where its app listens.
func TestSidecarTCPListenersSkipOwnPort(t *testing.T) {
	pc := tcpPushContext(t, tcpMesh)
	p := tcpSidecar("127.0.0.21", map[string]string{"app": "tcp-echo", "version": "v1"})
	ports, skipped := sidecarTCPPorts(pc, p)
	if len(ports) != 1 || ports[0].port != 3306 || !cmp.Equal(skipped, []uint32{9000}) {
		t.Errorf("ports %+v, skipped %v; want 3306 and 9000 skipped", ports, skipped)
	}
	r := mustGenerate(t, pc, p)
	var names []string
	for _, l := range r.Listeners {
		names = append(names, l.GetName())
	}
	want := []string{"127.0.0.21_3306", "virtualInbound", "virtualOutbound"}
	if !cmp.Equal(names, want) {
		t.Errorf("listeners %v, want %v", names, want)
	}
}

func TestTCPMatchApplies(t *testing.T) {
	p := tcpSidecar("10.1.2.3", map[string]string{"app": "client"})
	tests := []struct {
		name string
		yaml string // an L4MatchAttributes as prototext
		want bool
	}{
		{"empty", ``, true},
		{"port", `port: 9000`, true},
		{"other port", `port: 9001`, false},
		{"source labels", `source_labels: {key: "app" value: "client"}`, true},
		{"other source labels", `source_labels: {key: "app" value: "x"}`, false},
		{"destination subnet holds the proxy IP", `destination_subnets: "10.0.0.0/8"`, true},
		{"destination subnet does not", `destination_subnets: "192.168.0.0/16"`, false},
		{"destination IP", `destination_subnets: "10.1.2.3"`, true},
		{"source namespace", `source_namespace: "default"`, true},
		{"other source namespace", `source_namespace: "prod"`, false},
		{"gateways with mesh", `gateways: "mesh"`, true},
		{"gateways without mesh", `gateways: "ingress"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &networking.L4MatchAttributes{}
			if err := prototextUnmarshal(tt.yaml, m); err != nil {
				t.Fatal(err)
			}
			if got := tcpMatchApplies(m, p, "default", 9000, netip.MustParseAddr(p.IP)); got != tt.want {
				t.Errorf("tcpMatchApplies(%s) = %v, want %v", tt.yaml, got, tt.want)
			}
		})
	}
}

// TestTCPEndpointsSkipSidecar checks that a TCP port's endpoints are the
// apps' own addresses (explicit mode has no inbound TCP hop), while the
// HTTP port of the same workloads goes through their sidecars.
func TestTCPEndpointsSkipSidecar(t *testing.T) {
	r := mustGenerate(t, tcpPushContext(t, tcpMesh), tcpSidecar("127.0.0.100", nil))
	got := map[string][]string{}
	for _, cla := range r.Endpoints {
		for _, le := range cla.GetEndpoints() {
			for _, lb := range le.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				got[cla.GetClusterName()] = append(got[cla.GetClusterName()], hostPort(sa.GetAddress(), sa.GetPortValue()))
			}
		}
	}
	want := map[string][]string{
		echo9000: {"127.0.0.21:9000", "127.0.0.22:9000"},
		echoV1:   {"127.0.0.21:9000"},
		echoV2:   {"127.0.0.22:9000"},
		"outbound|9080||tcp-echo.default.svc.cluster.local":   {"127.0.0.21:15006", "127.0.0.22:15006"},
		"outbound|9080|v1|tcp-echo.default.svc.cluster.local": {"127.0.0.21:15006"},
		"outbound|9080|v2|tcp-echo.default.svc.cluster.local": {"127.0.0.22:15006"},
		mysql: {"127.0.0.30:3306"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
}

// TestSidecarTCPTunnel checks Istio's tunnelingconfig.Apply: the
// DestinationRule's top-level tunnel on the service port's tcp_proxy and
// on weighted clusters (a subset's is ignored there), and for a single
// subset destination only the subset's own tunnel, none when it sets
// none.
func TestSidecarTCPTunnel(t *testing.T) {
	mesh := strings.Replace(tcpMesh, `trafficPolicy: {connectionPool: {tcp: {idleTimeout: 30s}}}
  subsets:
  - {name: v1, labels: {version: v1}}`, `trafficPolicy: {tunnel: {targetHost: tcp-echo.example, targetPort: 9000}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {tunnel: {protocol: POST, targetHost: 10.0.0.9, targetPort: 8000}}}`, 1)
	if mesh == tcpMesh {
		t.Fatal("the DestinationRule of tcpMesh changed; update this test")
	}
	top := &tcpv3.TcpProxy_TunnelingConfig{Hostname: "tcp-echo.example:9000"}
	withTunnel := func(tp *tcpv3.TcpProxy, tc *tcpv3.TcpProxy_TunnelingConfig) *tcpv3.TcpProxy {
		tp.TunnelingConfig = tc
		return tp
	}
	v1First := strings.Replace(tcpVS, "subset: v2}}]\n  - match: [{port: 9000, destinationSubnets", "subset: v1}}]\n  - match: [{port: 9000, destinationSubnets", 1)
	tests := []struct {
		name   string
		yaml   string
		labels map[string]string
		want   *tcpv3.TcpProxy
	}{
		{"service port: top-level tunnel", mesh, nil, withTunnel(single(echo9000, nil), top)},
		{"subset v1: its own tunnel, POST", mesh + v1First, map[string]string{"track": "canary"},
			withTunnel(single(echoV1, nil), &tcpv3.TcpProxy_TunnelingConfig{Hostname: "10.0.0.9:8000", UsePost: true})},
		{"subset v2 without one: none", mesh + tcpVS, map[string]string{"track": "canary"}, single(echoV2, nil)},
		{"weighted clusters: top-level tunnel", mesh + tcpVS, nil, &tcpv3.TcpProxy{StatPrefix: echo9000, ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
			WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
				{Name: echoV1, Weight: 80}, {Name: echoV2, Weight: 20}}}}, TunnelingConfig: top}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tcpProxies(t, mustGenerate(t, tcpPushContext(t, tt.yaml), tcpSidecar("127.0.0.100", tt.labels)))["127.0.0.100_9000"]
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("tcp_proxy (-want +got):\n%s", diff)
			}
		})
	}
}
