package analysis

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

func snapshot(t *testing.T, file string, data []byte) *config.Snapshot {
	t.Helper()
	rs, errs := config.Decode(file, data)
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	return config.NewSnapshot(1, rs)
}

// TestPortNameSample runs Istio's own analyzer input unchanged: tcp-foo
// follows the convention, and the waypoint's and gateway's Services (an
// hbone appProtocol, a port named "mesh") are gateway-managed, so nothing
// is reported.
func TestPortNameSample(t *testing.T) {
	f := filepath.Join("../../../../shared/istio-samples", "analyzers/service-port-name.yaml")
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := Analyze(snapshot(t, "service-port-name.yaml", data)); len(got) != 0 {
		t.Errorf("messages: %v", got)
	}
}

func TestPortName(t *testing.T) {
	const in = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: web, port: 80, targetPort: 8080}
  - {name: http-api, port: 81}
  - {name: metrics, port: 82, targetPort: metrics, appProtocol: http}
  - {name: custom, port: 83, appProtocol: example.com/x}
  - {name: mysql-db, port: 3306}
  - {name: db, port: 3307}
---
apiVersion: v1
kind: Service
metadata: {name: unnamed, namespace: shop}
spec:
  ports: [{port: 9080, targetPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: unnamed-dns, namespace: shop}
spec:
  ports: [{port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  ports: [{name: metrics, port: 9153}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop, labels: {gateway.istio.io/managed: istio.io-mesh-controller}}
spec:
  ports: [{name: mesh, port: 15008, appProtocol: hbone}]
`
	var got []string
	for _, m := range Analyze(snapshot(t, "svc.yaml", []byte(in))) {
		got = append(got, m.String())
	}
	want := []string{
		"Info [IST0118] (Service shop/unnamed svc.yaml:13) Port name  (port: 9080, targetPort: 9080) doesn't follow the naming convention of Istio port.",
		"Info [IST0118] (Service shop/web svc.yaml:1) Port name web (port: 80, targetPort: 8080) doesn't follow the naming convention of Istio port.",
		"Info [IST0118] (Service shop/web svc.yaml:1) Port name custom (port: 83, targetPort: 83) doesn't follow the naming convention of Istio port.",
		"Info [IST0118] (Service shop/web svc.yaml:1) Port name db (port: 3307, targetPort: 3307) doesn't follow the naming convention of Istio port.",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("messages (-want +got):\n%s", d)
	}
}
