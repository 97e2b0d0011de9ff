package authzoracle

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// TestProxyAcceptsTranslation: what the control plane emits for proxies
// with every kind of policy (CUSTOM with both provider kinds, AUDIT,
// DENY, ALLOW, dry-run) is a generation the proxy builds: no NACK.
func TestProxyAcceptsTranslation(t *testing.T) {
	const custom = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: CUSTOM
  provider: {name: %s}
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
`
	translateTestdata := "../../internal/controlplane/translate/testdata"
	for _, provider := range []string{"default", "http"} {
		t.Run(provider, func(t *testing.T) {
			dir := t.TempDir()
			f := filepath.Join(dir, "custom.yaml")
			if err := os.WriteFile(f, []byte(fmt.Sprintf(custom, provider)), 0o644); err != nil {
				t.Fatal(err)
			}
			svc := filepath.Join(dir, "svc.yaml")
			if err := os.WriteFile(svc, []byte(extAuthzServiceYAML), 0o644); err != nil {
				t.Fatal(err)
			}
			pc := loadPushContext(t, filepath.Join(translateTestdata, "bookinfo", "mesh.yaml"),
				filepath.Join(translateTestdata, "authz", "input.yaml"), f, svc)
			http := httpProvider()
			http.Name = "http"
			mesh := meshWith("", nil, grpcProvider("my-custom-ext-authz.foo.svc.cluster.local", durationpb.New(1e9), true), http)
			for _, p := range []*model.Proxy{productpage(), {Type: model.RouterProxy, ID: "router~127.0.0.10~gw.istio-system~istio-system.svc.cluster.local",
				IP: "127.0.0.10", Name: "gw", Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway"}}} {
				res, err := translate.GenerateMesh(pc, p, mesh)
				if err != nil {
					t.Fatal(err)
				}
				var in config.Resources
				for _, l := range res.Listeners {
					in.Listeners = append(in.Listeners, proto.Message(l))
				}
				for _, r := range res.Routes {
					in.Routes = append(in.Routes, r)
				}
				for _, c := range res.Clusters {
					in.Clusters = append(in.Clusters, c)
				}
				for _, e := range res.Endpoints {
					in.Endpoints = append(in.Endpoints, e)
				}
				g, err := config.Build(in, nil)
				if err != nil {
					t.Fatalf("%s: the proxy refuses the translation: %v", p.ID, err)
				}
				if p.Type == model.SidecarProxy {
					// CUSTOM's rbac and ext_authz, AUDIT, DENY and ALLOW rbac,
					// fault and cors, before the router.
					var names []string
					for _, f := range g.Listeners["virtualInbound"].FilterChains[0].HTTPFilters {
						names = append(names, f.Name)
					}
					want := []string{"envoy.filters.http.rbac", "envoy.filters.http.ext_authz", "envoy.filters.http.rbac", "envoy.filters.http.rbac",
						"envoy.filters.http.rbac", "envoy.filters.http.fault", "envoy.filters.http.cors"}
					if fmt.Sprint(names) != fmt.Sprint(want) {
						t.Errorf("virtualInbound filters %v, want %v", names, want)
					}
				}
			}
		})
	}
}

func productpage() *model.Proxy {
	return &model.Proxy{Type: model.SidecarProxy, ID: "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local", IP: "127.0.0.11",
		Name: "productpage-v1", Namespace: "default", Labels: map[string]string{"app": "productpage", "version": "v1"}, ServiceAccount: "bookinfo-productpage"}
}
