package translate

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

func teamSidecar() *model.Proxy {
	return &model.Proxy{
		Type: model.SidecarProxy, ID: "sidecar~127.0.0.20~client.team~team.svc.cluster.local",
		IP: "127.0.0.20", Name: "client", Namespace: "team", InterceptionMode: "NONE",
	}
}

// TestExportTo translates one config for sidecars of two namespaces
// through their namespace views (model.PushContext.ForNamespace): each
// sees only the VirtualServices, DestinationRules and services exported
// to it.
func TestExportTo(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "exportto", "input.yaml"))
	const internal = "outbound|9080||internal.team.svc.cluster.local"
	tests := []struct {
		name         string
		proxy        *model.Proxy
		req          request
		wantTo       string
		wantClusters []string // must be there
		noClusters   []string // must not
	}{
		{"default sees its VirtualService and subsets", productpageSidecar(), request{"reviews:9080", "/", nil}, reviewsV2,
			[]string{reviewsV1, reviewsV2}, []string{"outbound|9080|team|reviews.default.svc.cluster.local", internal}},
		{"default does not see team's private service", productpageSidecar(), request{"internal.team.svc.cluster.local:9080", "/", nil}, PassthroughCluster, nil, nil},
		{"team does not see default's private VirtualService", teamSidecar(), request{"reviews.default:9080", "/", nil}, "outbound|9080||reviews.default.svc.cluster.local",
			[]string{"outbound|9080|team|reviews.default.svc.cluster.local"}, []string{reviewsV1, reviewsV2}},
		{"team sees its private service", teamSidecar(), request{"internal:9080", "/", nil}, internal, []string{internal}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustGenerate(t, pc.ForNamespace(tt.proxy.Namespace), tt.proxy)
			if got := simulate(t, routeConfig(t, r, xdsapi.HTTPProxyRoute), tt.req); got != tt.wantTo {
				t.Errorf("%s%s: routed to %q, want %q", tt.req.authority, tt.req.path, got, tt.wantTo)
			}
			var names []string
			for _, c := range r.Clusters {
				names = append(names, c.GetName())
			}
			for _, c := range tt.wantClusters {
				if !slices.Contains(names, c) {
					t.Errorf("no cluster %q in %q", c, names)
				}
			}
			for _, c := range tt.noClusters {
				if slices.Contains(names, c) {
					t.Errorf("cluster %q is there, want it hidden", c)
				}
			}
		})
	}
}
