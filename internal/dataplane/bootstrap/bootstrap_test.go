package bootstrap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

func TestLoadBenchBootstrap(t *testing.T) {
	t.Setenv("LISTEN_ADDR", "127.0.0.1:18080")
	t.Setenv("UPSTREAM_ADDR", "127.0.0.1:18000")
	t.Setenv("ADMIN_ADDR", "")
	b, err := Load(filepath.Join("..", "..", "..", "bench", "loom-bootstrap.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if b.AdminAddress != "127.0.0.1:15000" {
		t.Errorf("AdminAddress = %q, want the default 127.0.0.1:15000", b.AdminAddress)
	}
	if len(b.Resources.Listeners) != 1 || len(b.Resources.Clusters) != 1 || len(b.Resources.Endpoints) != 1 || b.Resources.Routes != nil {
		t.Fatalf("Resources = %+v", b.Resources)
	}
	g, err := config.Build(b.Resources, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	l := g.Listeners["bench"]
	if l == nil || l.Address != "127.0.0.1:18080" {
		t.Fatalf("listener = %+v", l)
	}
	rt := g.Routes[l.FilterChains[0].RouteConfigName]
	vh := rt.VirtualHostFor("anything:1")
	if vh == nil || len(vh.Routes) != 1 || config.PickCluster(vh.Routes[0], 0) != "upstream" || vh.Routes[0].Timeout != 0 {
		t.Fatalf("route table = %+v", rt)
	}
	want := &config.Cluster{Name: "upstream", ConnectTimeout: time.Second, LBPolicy: "ROUND_ROBIN",
		Endpoints: []config.Endpoint{{Address: "127.0.0.1:18000", Weight: 1}}}
	if diff := cmp.Diff(want, g.Clusters["upstream"]); diff != "" {
		t.Errorf("cluster (-want +got):\n%s", diff)
	}
}

func TestLoadErrors(t *testing.T) {
	const good = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
static_resources:
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: "$UP"}}}}]}]
`
	tests := []struct {
		name    string
		yaml    string
		env     map[string]string
		wantErr string // substring, after "bootstrap FILE: "
	}{
		{"ok", good, map[string]string{"UP": "127.0.0.2:80"}, ""},
		{"unset variable", good, nil, "environment variable UP is not set"},
		{"unknown field", "admin: {adress: {}}", nil, `envoy.config.bootstrap.v3.Bootstrap: proto:`},
		{"bad yaml", "admin: [", nil, "yaml: "},
		{"dynamic", "dynamic_resources: {ads_config: {}}", nil, "dynamic_resources: not supported"},
		{"eds cluster", "static_resources: {clusters: [{name: c, type: EDS}]}", nil,
			"static_resources.clusters[0].type = EDS: needs a control plane"},
		{"bad endpoint", good, map[string]string{"UP": "127.0.0.2:http"}, `static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address: address = "127.0.0.2:http": port must be 1-65535`},
		{"build error", "static_resources: {clusters: [{name: c, type: STATIC, lb_policy: CLUSTER_PROVIDED}]}", nil,
			`cluster "c": lb_policy = "CLUSTER_PROVIDED": must be ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV`},
		{"admin hostname", "admin: {address: {socket_address: {address: localhost, port_value: 1}}}", nil,
			`admin.address.socket_address.address = "localhost": must be an IP address`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := Load(path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", tc.wantErr)
			}
			prefix := "bootstrap " + path + ": "
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Load error = %q, want %q then %q", err, prefix, tc.wantErr)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct{ in, want string }{
		{"x ${A} $A y", "x 1 1 y"},
		{"${B:-7}", "7"},
		{"${EMPTY:-d}", "d"},
		{"${EMPTY}", ""},
		{`regex: "^/api/.*$"`, `regex: "^/api/.*$"`},
		{"$1 ${1}", "$1 $1"},
	}
	for _, tc := range tests {
		got, err := expand(tc.in, lookup)
		if err != nil || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestLoadBenchFeaturesBootstrap: the route-features candidate of the
// benchmark builds, with its retries, header rewrites and filters.
func TestLoadBenchFeaturesBootstrap(t *testing.T) {
	t.Setenv("LISTEN_ADDR", "127.0.0.1:18080")
	t.Setenv("UPSTREAM_ADDR", "127.0.0.1:18000")
	b, err := Load(filepath.Join("..", "..", "..", "bench", "loom-bootstrap-features.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	g, err := config.Build(b.Resources, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	l := g.Listeners["bench"].FilterChains[0]
	r := g.Routes[l.RouteConfigName].VirtualHostFor("anything").Routes[0]
	if r.Retry == nil || r.Retry.NumRetries != 2 {
		t.Errorf("route retry policy = %+v, want Istio's default (2 retries)", r.Retry)
	}
	if n := len(l.HTTPFilters); n != 2 {
		t.Errorf("listener has %d HTTP filters before the router, want cors and fault", n)
	}
}
