package translate

import (
	"path/filepath"
	"slices"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
)

// TestSidecarEgressUnixListener: an egress listener with port 0 and a
// unix:// bind is Istio's unix domain socket listener, in both
// interception modes: "unix://PATH_0" at the Envoy pipe PATH, always
// bound, an HTTP connection manager on RDS "unix://PATH" whose table
// holds every HTTP port of the listener's own hosts, routed by the
// VirtualServices they import, then the catch-all; the port-less
// listener keeps the other hosts, and the imported host keeps its
// clusters.
func TestSidecarEgressUnixListener(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "sidecar-egress-unix", "input.yaml"))
	const name, route, path = "unix:///var/run/pp/egress.sock_0", "unix:///var/run/pp/egress.sock", "/var/run/pp/egress.sock"
	for _, tt := range []struct {
		name     string
		redirect bool
	}{{"redirect", true}, {"explicit", false}} {
		t.Run(tt.name, func(t *testing.T) {
			p := productpageSidecar()
			if tt.redirect {
				p = redirectSidecar(p)
			}
			r := mustGenerate(t, pc, p)
			l := findListener(r, name)
			if l == nil {
				t.Fatalf("no listener %s", name)
			}
			if got := l.GetAddress().GetPipe().GetPath(); got != path {
				t.Errorf("address %v, want pipe %s", l.GetAddress(), path)
			}
			if l.GetBindToPort() != nil && !l.GetBindToPort().GetValue() {
				t.Error("bind_to_port false: a unix socket listener is always bound")
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			if got := hcm.GetRds().GetRouteConfigName(); got != route {
				t.Errorf("RDS %q, want %q", got, route)
			}
			if got := hcm.GetStatPrefix(); got != "outbound_"+name {
				t.Errorf("stat_prefix %q", got)
			}
			var vhosts []string
			var cluster string
			for _, rc := range r.Routes {
				if rc.GetName() != route {
					continue
				}
				for _, vh := range rc.GetVirtualHosts() {
					vhosts = append(vhosts, vh.GetName())
					if vh.GetName() == "reviews.default.svc.cluster.local:9080" {
						cluster = vh.GetRoutes()[0].GetRoute().GetCluster()
					}
				}
			}
			if want := []string{"reviews.default.svc.cluster.local:9080", "allow_any"}; !cmp.Equal(want, vhosts) {
				t.Errorf("route %s virtual hosts %v, want %v", route, vhosts, want)
			}
			if cluster != "outbound|9080|v2|reviews.default.svc.cluster.local" {
				t.Errorf("reviews routed to %q, want the VirtualService's subset v2", cluster)
			}
			if findCluster(r, "outbound|9080|v2|reviews.default.svc.cluster.local") == nil {
				t.Error("no cluster for the unix listener's host")
			}
			// The port-less listener still builds details, not reviews.
			var names []string
			for _, l := range r.Listeners {
				names = append(names, l.GetName())
			}
			if slices.Contains(names, "unix:///var/run/pp/egress.sock_9080") {
				t.Errorf("the unix listener was taken for a port: %v", names)
			}
		})
	}
}
