package translate

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// meshFile is the bookinfo mesh every case builds on.
var meshFile = filepath.Join("testdata", "bookinfo", "mesh.yaml")

// loadPushContext decodes files and indexes them; any decode error fails t.
func loadPushContext(t testing.TB, files ...string) *model.PushContext {
	t.Helper()
	var rs []*config.Resource
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, errs := config.Decode(f, data)
		if err := errs.Err(); err != nil {
			t.Fatalf("decode: %v", err)
		}
		rs = append(rs, got...)
	}
	return model.NewPushContext(config.NewSnapshot(1, rs))
}

func productpageSidecar() *model.Proxy {
	return &model.Proxy{
		Type:             model.SidecarProxy,
		ID:               "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local",
		IP:               "127.0.0.11",
		Name:             "productpage-v1",
		Namespace:        "default",
		Labels:           map[string]string{"app": "productpage", "version": "v1", "security.istio.io/tlsMode": "istio"},
		ServiceAccount:   "bookinfo-productpage",
		InterceptionMode: "NONE",
	}
}

// redirectSidecar is p fed by iptables REDIRECT in its own network
// namespace, as `loom-proxy --interception redirect` says it is.
func redirectSidecar(p *model.Proxy) *model.Proxy {
	p.InterceptionMode = "REDIRECT"
	return p
}

// tcpEchoSidecar is the sidecar of testdata/redirect-tcp's tcp-echo-v1.
func tcpEchoSidecar() *model.Proxy {
	return &model.Proxy{
		Type:      model.SidecarProxy,
		ID:        "sidecar~10.77.0.21~tcp-echo-v1.default~default.svc.cluster.local",
		IP:        "10.77.0.21",
		Name:      "tcp-echo-v1",
		Namespace: "default",
		Labels:    map[string]string{"app": "tcp-echo", "version": "v1", "security.istio.io/tlsMode": "istio"},
	}
}

func ingressRouter() *model.Proxy {
	return &model.Proxy{
		Type:             model.RouterProxy,
		ID:               "router~127.0.0.10~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
		IP:               "127.0.0.10",
		Name:             "istio-ingressgateway",
		Namespace:        "istio-system",
		Labels:           map[string]string{"app": "istio-ingressgateway", "istio": "ingressgateway"},
		ServiceAccount:   "istio-ingressgateway-service-account",
		InterceptionMode: "NONE",
	}
}

func mustGenerate(t *testing.T, pc *model.PushContext, p *model.Proxy) *Resources {
	t.Helper()
	r, err := Generate(pc, p)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return r
}

func prototextUnmarshal(s string, m proto.Message) error { return prototext.Unmarshal([]byte(s), m) }
