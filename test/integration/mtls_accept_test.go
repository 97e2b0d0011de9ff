package integration

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
	dpconfig "github.com/loom-mesh/loom/internal/dataplane/config"
)

// TestProxyAcceptsMutualTLS: what loomd emits for every PeerAuthentication
// mode (mesh, namespace, workload, port level) and DestinationRule tls
// mode, on explicit and transparent sidecars and on the ingress gateway,
// is a generation the proxy builds: no NACK. So are DestinationRule
// tunnel and proxyProtocol.
func TestProxyAcceptsMutualTLS(t *testing.T) {
	const testdata = "../../internal/controlplane/translate/testdata"
	policies := map[string]string{
		"default": "",
		"strict": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
`,
		"disable": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: DISABLE}}
`,
		"port-level": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pp, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  mtls: {mode: STRICT}
  portLevelMtls: {9080: {mode: PERMISSIVE}, 15021: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage-admin, namespace: default}
spec:
  hosts: [productpage-admin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9443, name: http-admin, protocol: HTTP, targetPort: 9443}, {number: 9444, name: tcp-admin, protocol: TCP}]
  workloadSelector: {labels: {app: productpage}}
`,
		"destination-rules": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: DISABLE}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    tls: {mode: SIMPLE, sni: ratings.example, caCertificates: /etc/ca.pem, subjectAltNames: [ratings.example]}
    portLevelSettings: [{port: {number: 9080}, tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, insecureSkipVerify: true}}]
`,
		"destination-rule-credential": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: client-cred}}
  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: SIMPLE, credentialName: client-cred}}}]
`,
	}
	// DestinationRule tunnel (tcp_proxy tunneling_config) and
	// proxyProtocol (upstream_proxy_protocol around plaintext, TLS and
	// auto mTLS's matches).
	tunnel, err := os.ReadFile(filepath.Join(testdata, "dr-tunnel", "input.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policies["dr-tunnel"] = string(tunnel)
	proxies := []*model.Proxy{
		{Type: model.SidecarProxy, ID: "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local", IP: "127.0.0.11",
			Name: "productpage-v1", Namespace: "default", Labels: map[string]string{"app": "productpage", "version": "v1"}, InterceptionMode: "NONE"},
		{Type: model.SidecarProxy, ID: "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local", IP: "127.0.0.11",
			Name: "productpage-v1", Namespace: "default", Labels: map[string]string{"app": "productpage", "version": "v1"}, InterceptionMode: "REDIRECT"},
		{Type: model.RouterProxy, ID: "router~127.0.0.10~gw.istio-system~istio-system.svc.cluster.local",
			IP: "127.0.0.10", Name: "gw", Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway"}},
	}
	for name, yaml := range policies {
		t.Run(name, func(t *testing.T) {
			files := []string{filepath.Join(testdata, "bookinfo", "mesh.yaml"), filepath.Join(testdata, "bookinfo", "input.yaml")}
			if yaml != "" {
				f := filepath.Join(t.TempDir(), "extra.yaml")
				if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			var rs []*config.Resource
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				got, errs := config.Decode(f, data)
				if err := errs.Err(); err != nil {
					t.Fatal(err)
				}
				rs = append(rs, got...)
			}
			pc := model.NewPushContext(config.NewSnapshot(1, rs))
			for _, p := range proxies {
				res, err := translate.Generate(pc, p)
				if err != nil {
					t.Fatal(err)
				}
				var in dpconfig.Resources
				for _, l := range res.Listeners {
					in.Listeners = append(in.Listeners, l)
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
				if _, err := dpconfig.Build(in, nil); err != nil {
					t.Errorf("%s (%s): the proxy refuses the translation: %v", p.ID, p.InterceptionMode, err)
				}
			}
		})
	}
}
