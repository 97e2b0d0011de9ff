package xds

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// TestGeneratorByNodeMetadata checks that a node whose metadata says
// GENERATOR: grpc is served by GenerateGRPC and every other node by
// Generate.
func TestGeneratorByNodeMetadata(t *testing.T) {
	grpcGenerate := func(pc *model.PushContext, p *model.Proxy) (*translate.Resources, error) {
		return &translate.Resources{Clusters: []*clusterv3.Cluster{{
			Name:                 "grpc-only",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		}}}, nil
	}
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	s := startServerOpts(t, Options{Addr: "127.0.0.1:0", Config: cfg, Generate: fakeGenerate, GenerateGRPC: grpcGenerate})

	grpcNode := func(generator string) *corev3.Node {
		n := &corev3.Node{
			Id:            "sidecar~127.0.0.20~client.default~default.svc.cluster.local",
			UserAgentName: "gRPC Go",
			Metadata:      &structpb.Struct{Fields: map[string]*structpb.Value{}},
		}
		if generator != "" {
			n.Metadata.Fields["GENERATOR"] = structpb.NewStringValue(generator)
		}
		return n
	}
	tests := []struct {
		name string
		node *corev3.Node
		want []string
	}{
		{"grpc generator", grpcNode("grpc"), []string{"grpc-only"}},
		{"other generator", grpcNode("istio"), []string{"outbound|9080||" + reviewsHost}},
		{"no generator", testNode(), []string{"outbound|9080||" + reviewsHost}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s.Addr(), tt.node)
			c.subscribe(xdsapi.ClusterType)
			if d := cmp.Diff(tt.want, names(t, c.recv(xdsapi.ClusterType))); d != "" {
				t.Fatalf("clusters (-want +got)\n%s", d)
			}
		})
	}
}
