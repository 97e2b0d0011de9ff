package translate

import (
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

var egressFile = filepath.Join("testdata", "egress", "input.yaml")

func meshWithPolicy(mode meshv1alpha1.MeshConfig_OutboundTrafficPolicy_Mode) *meshv1alpha1.MeshConfig {
	return &meshv1alpha1.MeshConfig{OutboundTrafficPolicy: &meshv1alpha1.MeshConfig_OutboundTrafficPolicy{Mode: mode}}
}

// TestOutboundTrafficPolicy: a host no service declares goes out through
// PassthroughCluster under ALLOW_ANY (the default) and gets 502 under
// REGISTRY_ONLY; a declared host is routed as before either way.
func TestOutboundTrafficPolicy(t *testing.T) {
	pc := loadPushContext(t, meshFile, egressFile)
	tests := []struct {
		name string
		mesh *meshv1alpha1.MeshConfig
		req  request
		want string
	}{
		{"default mesh", nil, request{"example.com", "/", nil}, PassthroughCluster},
		{"allow any", meshWithPolicy(meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY), request{"10.1.2.3:8080", "/x", nil}, PassthroughCluster},
		{"registry only", meshWithPolicy(meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY), request{"example.com", "/", nil}, "direct 502 "},
		{"registry only, declared host", meshWithPolicy(meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY),
			request{"external.test:8081", "/", nil}, "outbound|8081||external.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := GenerateMesh(pc, productpageSidecar(), tt.mesh)
			if err != nil {
				t.Fatal(err)
			}
			var rc *routev3.RouteConfiguration
			for _, x := range r.Routes {
				if x.GetName() == xdsapi.HTTPProxyRoute {
					rc = x
				}
			}
			if got := simulate(t, rc, tt.req); got != tt.want {
				t.Errorf("%s%s: routed to %q, want %q", tt.req.authority, tt.req.path, got, tt.want)
			}
			if last := rc.GetVirtualHosts()[len(rc.GetVirtualHosts())-1].GetName(); last != allowAnyName && last != blockAllName {
				t.Errorf("last virtual host %q, want the catch-all", last)
			}
		})
	}
}

// TestServiceEntryResolution: each resolution gets Istio's cluster type,
// and only EDS clusters get a ClusterLoadAssignment.
func TestServiceEntryResolution(t *testing.T) {
	pc := loadPushContext(t, meshFile, egressFile)
	r := mustGenerate(t, pc, productpageSidecar())
	tests := []struct {
		cluster string
		typ     clusterv3.Cluster_DiscoveryType
		eps     []string
	}{
		{"outbound|80||api.example.com", clusterv3.Cluster_STRICT_DNS, []string{"api.example.com:80"}},
		{"outbound|8081||external.test", clusterv3.Cluster_STRICT_DNS, []string{"127.54.0.200:8081", "backend.example.com:8081"}},
		{"outbound|80||one.example.com", clusterv3.Cluster_LOGICAL_DNS, []string{"one.example.com:8080"}},
		{"outbound|80||any.example.com", clusterv3.Cluster_ORIGINAL_DST, []string{}},
		{"outbound|80||static.example.com", clusterv3.Cluster_EDS, []string{"127.54.0.201:80"}},
		{PassthroughCluster, clusterv3.Cluster_ORIGINAL_DST, []string{}},
	}
	eds := map[string]bool{}
	for _, cla := range r.Endpoints {
		eds[cla.GetClusterName()] = true
	}
	for _, tt := range tests {
		t.Run(tt.cluster, func(t *testing.T) {
			var c *clusterv3.Cluster
			for _, x := range r.Clusters {
				if x.GetName() == tt.cluster {
					c = x
				}
			}
			if c == nil {
				t.Fatalf("no cluster %q", tt.cluster)
			}
			if c.GetType() != tt.typ {
				t.Errorf("type %v, want %v", c.GetType(), tt.typ)
			}
			if d := cmp.Diff(tt.eps, endpointsOf(t, r, tt.cluster)); d != "" {
				t.Errorf("endpoints (-want +got)\n%s", d)
			}
			if eds[tt.cluster] != (tt.typ == clusterv3.Cluster_EDS) {
				t.Errorf("ClusterLoadAssignment sent: %v, want it only for EDS", eds[tt.cluster])
			}
			switch tt.typ {
			case clusterv3.Cluster_ORIGINAL_DST:
				want := &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true, HttpHeaderName: ":authority"}
				if d := cmp.Diff(want, c.GetOriginalDstLbConfig(), protocmp.Transform()); d != "" || c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
					t.Errorf("lb_policy %v, original_dst_lb_config (-want +got)\n%s", c.GetLbPolicy(), d)
				}
			case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
				if c.GetDnsLookupFamily() != clusterv3.Cluster_V4_ONLY || c.GetEdsClusterConfig() != nil {
					t.Errorf("dns_lookup_family %v, eds_cluster_config %v", c.GetDnsLookupFamily(), c.GetEdsClusterConfig())
				}
			}
		})
	}
}

// TestPassthroughLoadBalancer: a DestinationRule's loadBalancer simple
// PASSTHROUGH makes the cluster ORIGINAL_DST (CLUSTER_PROVIDED, no
// load_assignment, no EDS and no ClusterLoadAssignment) whatever the
// ServiceEntry's resolution, as Istio's applyLoadBalancer overrides the
// discovery type; subsets without it keep theirs.
func TestPassthroughLoadBalancer(t *testing.T) {
	drs := filepath.Join(t.TempDir(), "dr.yaml")
	if err := os.WriteFile(drs, []byte(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: static-passthrough, namespace: default}
spec:
  host: static.example.com
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dns-passthrough, namespace: default}
spec:
  host: api.example.com
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
  subsets:
  - name: rr
    labels: {}
    trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	pc := loadPushContext(t, meshFile, egressFile, drs)
	r := mustGenerate(t, pc, productpageSidecar())
	eds := map[string]bool{}
	for _, cla := range r.Endpoints {
		eds[cla.GetClusterName()] = true
	}
	for _, tt := range []struct {
		cluster string
		typ     clusterv3.Cluster_DiscoveryType
	}{
		{"outbound|80||static.example.com", clusterv3.Cluster_ORIGINAL_DST},
		{"outbound|80||api.example.com", clusterv3.Cluster_ORIGINAL_DST},
		{"outbound|80|rr|api.example.com", clusterv3.Cluster_STRICT_DNS},
	} {
		t.Run(tt.cluster, func(t *testing.T) {
			var c *clusterv3.Cluster
			for _, x := range r.Clusters {
				if x.GetName() == tt.cluster {
					c = x
				}
			}
			if c == nil {
				t.Fatalf("no cluster %q", tt.cluster)
			}
			if c.GetType() != tt.typ {
				t.Fatalf("type %v, want %v", c.GetType(), tt.typ)
			}
			if tt.typ != clusterv3.Cluster_ORIGINAL_DST {
				return
			}
			if c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED || c.GetLoadAssignment() != nil || c.GetEdsClusterConfig() != nil ||
				c.GetOriginalDstLbConfig() != nil {
				t.Errorf("lb_policy %v, load_assignment %v, eds_cluster_config %v, original_dst_lb_config %v: want CLUSTER_PROVIDED and none",
					c.GetLbPolicy(), c.GetLoadAssignment(), c.GetEdsClusterConfig(), c.GetOriginalDstLbConfig())
			}
			if eds[tt.cluster] {
				t.Error("a ClusterLoadAssignment was sent for an ORIGINAL_DST cluster")
			}
		})
	}
}
