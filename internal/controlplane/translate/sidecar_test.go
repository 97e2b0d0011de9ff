package translate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// sidecarConfig scopes productpage to reviews (and, through the
// VirtualService's destinations, nothing else), moves its app to port
// 8080 and blocks unknown hosts.
const sidecarConfig = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
  - hosts: ["./reviews.default.svc.cluster.local"]
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`

// TestSidecarScope: a Sidecar's proxy gets only the imported services'
// clusters, endpoints and virtual hosts, its ingress defaultEndpoint's
// port and its outboundTrafficPolicy; a router is not scoped.
func TestSidecarScope(t *testing.T) {
	f := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(f, []byte(sidecarConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	pc := loadPushContext(t, meshFile, f)
	r := mustGenerate(t, pc, productpageSidecar())

	var outbound, eds []string
	for _, c := range r.Clusters {
		if strings.HasPrefix(c.GetName(), "outbound|") {
			outbound = append(outbound, c.GetName())
		}
	}
	for _, e := range r.Endpoints {
		eds = append(eds, e.GetClusterName())
	}
	wantClusters := []string{
		"outbound|9080||reviews.default.svc.cluster.local",
	}
	if diff := cmp.Diff(wantClusters, outbound); diff != "" {
		t.Errorf("outbound clusters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantClusters, eds); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	var vhosts []string
	for _, rc := range r.Routes {
		if rc.GetName() != xdsapi.HTTPProxyRoute {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			vhosts = append(vhosts, vh.GetName())
		}
	}
	if diff := cmp.Diff([]string{"reviews.default.svc.cluster.local:9080", "block_all"}, vhosts); diff != "" {
		t.Errorf("http_proxy virtual hosts (-want +got):\n%s", diff)
	}
	for _, c := range r.Clusters {
		if c.GetName() != xdsapi.ClusterName(xdsapi.Inbound, 9080, "", "") {
			continue
		}
		got := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if got.GetAddress() != "127.0.0.11" || got.GetPortValue() != 8080 {
			t.Errorf("inbound|9080|| goes to %s:%d, want 127.0.0.11:8080 (the ingress defaultEndpoint's port)", got.GetAddress(), got.GetPortValue())
		}
	}

	gw := mustGenerate(t, pc, ingressRouter())
	n := 0
	for _, c := range gw.Clusters {
		if strings.HasPrefix(c.GetName(), "outbound|9080||") {
			n++
		}
	}
	if n != 4 {
		t.Errorf("the router has %d service clusters, want bookinfo's 4: Sidecars apply to sidecars only", n)
	}
}
