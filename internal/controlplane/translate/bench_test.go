package translate

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// benchMesh is the bookinfo mesh, its RateLimitPolicy case, and n more
// HTTP services of namespace default, each with 5 workloads of one
// service account and a RateLimitPolicy that selects only them: the
// push context of a mid-sized mesh whose policies mostly do not apply to
// the proxy translated.
func benchMesh(b *testing.B, n int) *model.PushContext {
	b.Helper()
	base := loadPushContext(b, meshFile, filepath.Join("testdata", "ratelimitpolicy-sidecar", "input.yaml"))
	var y strings.Builder
	for i := range n {
		fmt.Fprintf(&y, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc%[1]d, namespace: default}
spec:
  hosts: [svc%[1]d.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  workloadSelector: {labels: {app: svc%[1]d}}
---
apiVersion: loom.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: svc%[1]d, namespace: default}
spec:
  selector: {matchLabels: {app: svc%[1]d}}
  limits: [{requestsPerUnit: 10, unit: second}, {match: {path: {prefix: /api}}, requestsPerUnit: 5, unit: minute, scope: global}]
---
`, i)
		for w := range 5 {
			fmt.Fprintf(&y, `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc%[1]d-%[2]d, namespace: default}
spec:
  address: 10.1.%[1]d.%[2]d
  labels: {app: svc%[1]d, security.istio.io/tlsMode: istio}
  serviceAccount: svc%[1]d
---
`, i, w+1)
		}
	}
	extra, errs := config.Decode("bench.yaml", []byte(y.String()))
	if err := errs.Err(); err != nil {
		b.Fatal(err)
	}
	return model.NewPushContext(config.NewSnapshot(2, append(base.Config.All(), extra...)))
}

// BenchmarkGenerateSidecar translates productpage's sidecar in a mesh of
// 200 more services (and 200 RateLimitPolicies that do not select it), as
// a push does for every proxy: run with -benchmem.
func BenchmarkGenerateSidecar(b *testing.B) {
	pc := benchMesh(b, 200)
	p := productpageSidecar()
	o := Options{RateLimitService: "127.0.0.1:8081"}
	if _, err := GenerateWith(pc, p, o); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := GenerateWith(pc, p, o); err != nil {
			b.Fatal(err)
		}
	}
}
