package translate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// configFile writes docs (YAML documents) to a file of its own and
// returns its path.
func configFile(t *testing.T, docs string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte(docs), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// movedDR is a DestinationRule called name for the "moved" service of
// testdata/sidecar-ingress-redirect, of spec body (indented two spaces).
func movedDR(name, body string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name + ", namespace: default}\nspec:\n  host: moved.default.svc.cluster.local\n" + body
}

// movedPoolDR has a top-level pool, a pool for port 9090 (which replaces
// it there) and policies Istio never applies inbound.
var movedPoolDR = movedDR("moved", `  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 3s}
      http: {http1MaxPendingRequests: 5, idleTimeout: 20s}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}
    loadBalancer: {simple: RANDOM}
    portLevelSettings:
    - port: {number: 9090}
      connectionPool: {tcp: {maxConnections: 2}}
    - port: {number: 9081}
      connectionPool: {tcp: {maxConnections: 4}}
`)

// inboundPools is poolSummary of every inbound cluster p gets from pc.
func inboundPools(t *testing.T, pc *model.PushContext, p *model.Proxy) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, c := range mustGenerate(t, pc, p).Clusters {
		if strings.HasPrefix(c.GetName(), "inbound|") {
			got[c.GetName()] = poolSummary(t, c)
		}
	}
	return got
}

// TestDestinationRuleInboundConnectionPool: the connectionPool of the
// DestinationRule of the workload's service applies to its inbound
// clusters too, as Istio's buildInboundCluster (the server side gets the
// capacity the clients are given): the portLevelSettings entry for the
// service port before the top-level pool, never merged; nothing else of
// the rule (outlier detection, load balancer) applies inbound. Both
// interception modes.
func TestDestinationRuleInboundConnectionPool(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	base := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"))
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), configFile(t, movedPoolDR))
	want := map[string]string{
		"inbound|9080||": "conns=10 pending=5 requests=- connect=3s idle=20s",
		"inbound|9090||": "conns=2 pending=- requests=- connect=10s",
	}
	for _, p := range []*model.Proxy{movedSidecar(), explicitMoved()} {
		if diff := cmp.Diff(want, inboundPools(t, pc, p)); diff != "" {
			t.Errorf("%s: inbound cluster pools (-want +got):\n%s", p.InterceptionMode, diff)
		}
		// Apart from the pool, the inbound clusters are those without the rule.
		without := map[string]*clusterv3.Cluster{}
		for _, c := range mustGenerate(t, base, p).Clusters {
			without[c.GetName()] = c
		}
		for _, c := range mustGenerate(t, pc, p).Clusters {
			if !strings.HasPrefix(c.GetName(), "inbound|") {
				continue
			}
			c, w := stripPool(c), stripPool(without[c.GetName()])
			if !proto.Equal(c, w) {
				t.Errorf("%s: %s differs beyond its pool:\n got %v\nwant %v", p.InterceptionMode, c.GetName(), c, w)
			}
		}
	}
}

// stripPool is a copy of cluster c without what a connection pool sets.
func stripPool(c *clusterv3.Cluster) *clusterv3.Cluster {
	c = proto.Clone(c).(*clusterv3.Cluster)
	c.CircuitBreakers, c.ConnectTimeout, c.TypedExtensionProtocolOptions = nil, nil, nil
	return c
}

// TestInboundConnectionPoolPrecedence: a Sidecar's pools win over the
// DestinationRule's, replacing it whole (Istio's buildInboundCluster sets
// InboundConnectionPoolForPort's pool as the policy's connectionPool).
// With ingress listeners, the rule is the one of the service whose target
// port is the listener's port, read for the listener's port; a listener
// no service backs has none.
func TestInboundConnectionPoolPrecedence(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	dr := configFile(t, movedPoolDR)
	cases := []struct {
		name, sidecar string
		want          map[string]string
	}{
		{"inboundConnectionPool over the rule", "  inboundConnectionPool: {tcp: {maxConnections: 7}}\n", map[string]string{
			"inbound|9080||": "conns=7 pending=- requests=- connect=10s",
			"inbound|9090||": "conns=7 pending=- requests=- connect=10s",
		}},
		{"ingress listeners", `  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9081, protocol: TCP, name: tcp-pod}
    defaultEndpoint: 0.0.0.0:8081
  - port: {number: 9090, protocol: HTTP, name: http-admin}
    connectionPool: {http: {http2MaxRequests: 9}}
`, map[string]string{
			// The rule's top-level pool: 9080 is its own service port.
			"inbound|9080||": "conns=10 pending=5 requests=- connect=3s idle=20s",
			// No service has target port 9081: no rule, though it has
			// an entry for 9081.
			"inbound|9081||": "conns=- pending=- requests=- connect=10s",
			// The listener's pool, not the rule's entry for 9090.
			"inbound|9090||": "conns=- pending=- requests=9 connect=10s",
		}},
		{"inboundConnectionPool over the rule, with ingress listeners", `  inboundConnectionPool: {tcp: {maxConnections: 7}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    connectionPool: {tcp: {maxConnections: 1}}
  - port: {number: 9090, protocol: HTTP, name: http-admin}
`, map[string]string{
			"inbound|9080||": "conns=1 pending=- requests=- connect=10s",
			"inbound|9090||": "conns=7 pending=- requests=- connect=10s",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), dr, sidecarFile(t, "moved", tc.sidecar))
			for _, p := range []*model.Proxy{movedSidecar(), explicitMoved()} {
				if diff := cmp.Diff(tc.want, inboundPools(t, pc, p)); diff != "" {
					t.Errorf("%s: inbound cluster pools (-want +got):\n%s", p.InterceptionMode, diff)
				}
			}
		})
	}
}

// TestInboundDestinationRuleChoice: which DestinationRule's pool the
// inbound clusters get, as Istio's SidecarScope.DestinationRule for the
// inbound direction: a rule with a workloadSelector never applies inbound
// (a selector-less rule of the same host stands in), and a Sidecar whose
// egress does not import the workload's service sees no rule for it.
func TestInboundDestinationRuleChoice(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	unlimited := map[string]string{
		"inbound|9080||": "conns=- pending=- requests=- connect=10s",
		"inbound|9090||": "conns=- pending=- requests=- connect=10s",
	}
	selected := movedDR("a-selected", `  workloadSelector: {matchLabels: {app: moved}}
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}
`)
	cases := []struct {
		name string
		docs []string
		want map[string]string
	}{
		{"selector-less rule of the same host", []string{selected, movedDR("b-plain", "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 3}}}\n")}, map[string]string{
			"inbound|9080||": "conns=3 pending=- requests=- connect=10s",
			"inbound|9090||": "conns=3 pending=- requests=- connect=10s",
		}},
		{"only a rule with a workloadSelector", []string{selected}, unlimited},
		{"own service not imported", []string{movedPoolDR, `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: moved, namespace: default}
spec:
  workloadSelector: {labels: {app: moved}}
  egress: [{hosts: ["istio-system/*"]}]
`}, unlimited},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), configFile(t, strings.Join(tc.docs, "---\n")))
			for _, p := range []*model.Proxy{movedSidecar(), explicitMoved()} {
				if diff := cmp.Diff(tc.want, inboundPools(t, pc, p)); diff != "" {
					t.Errorf("%s: inbound cluster pools (-want +got):\n%s", p.InterceptionMode, diff)
				}
			}
		})
	}
}

// TestInboundUseClientProtocol: a pool's http.useClientProtocol applies
// inbound too (Istio's applyConnectionPool): the app is spoken to in the
// downstream's protocol.
func TestInboundUseClientProtocol(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	for _, src := range []string{
		movedDR("moved", "  trafficPolicy: {connectionPool: {http: {useClientProtocol: true}}}\n"),
		`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: moved, namespace: default}
spec:
  workloadSelector: {labels: {app: moved}}
  inboundConnectionPool: {http: {useClientProtocol: true}}
`,
	} {
		pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), configFile(t, src))
		for _, p := range []*model.Proxy{movedSidecar(), explicitMoved()} {
			n := 0
			for _, c := range mustGenerate(t, pc, p).Clusters {
				if !strings.HasPrefix(c.GetName(), "inbound|") {
					continue
				}
				n++
				var opts upstreamhttpv3.HttpProtocolOptions
				if a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a == nil || a.UnmarshalTo(&opts) != nil || opts.GetUseDownstreamProtocolConfig() == nil {
					t.Errorf("%s: %s: no use_downstream_protocol_config (%v)", p.InterceptionMode, c.GetName(), &opts)
				}
			}
			if n == 0 {
				t.Errorf("%s: no inbound cluster", p.InterceptionMode)
			}
		}
	}
}
