package translate

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

// TestAutoPassthroughRoundTrip checks an AUTO_PASSTHROUGH gateway against
// the sidecars that use it: every SNI a sidecar sends with ISTIO_MUTUAL
// to reviews (Istio's outbound_.PORT_.SUBSET_.HOST) has a chain on the
// gateway's port 15443, whose tcp_proxy goes to the SNI-DNAT cluster of
// that name: the outbound cluster's endpoints (EDS service_name) with no
// TLS of its own, so the client's mTLS reaches the workload's sidecar
// unopened. The gateway's ordinary outbound clusters keep auto mTLS.
func TestAutoPassthroughRoundTrip(t *testing.T) {
	in := filepath.Join(t.TempDir(), "in.yaml")
	doc := `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.default.svc.cluster.local"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`
	if err := os.WriteFile(in, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	pc := loadPushContext(t, meshFile, in)
	gw := mustGenerate(t, pc, ingressRouter())
	side := mustGenerate(t, pc, productpageSidecar())

	chains := map[string]string{} // server name -> tcp_proxy cluster
	for _, l := range gw.Listeners {
		if l.GetAddress().GetSocketAddress().GetPortValue() != 15443 {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			var tp tcpv3.TcpProxy
			fs := fc.GetFilters()
			if err := fs[len(fs)-1].GetTypedConfig().UnmarshalTo(&tp); err != nil {
				t.Fatal(err)
			}
			for _, n := range fc.GetFilterChainMatch().GetServerNames() {
				chains[n] = tp.GetCluster()
			}
		}
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range gw.Clusters {
		clusters[c.GetName()] = c
	}
	var checked []string
	for _, c := range side.Clusters {
		_, port, subset, host, ok := xdsapi.ParseClusterName(c.GetName())
		if !ok || port != 9080 || host != "reviews.default.svc.cluster.local" {
			continue
		}
		sni := upstreamTLS(t, c).GetSni()
		want := autoPassthroughSNI(9080, subset, host)
		if sni != want {
			t.Errorf("sidecar cluster %s sends SNI %q, want %q", c.GetName(), sni, want)
		}
		if chains[sni] != sni {
			t.Errorf("gateway chain for SNI %q goes to %q, want the SNI-DNAT cluster %q", sni, chains[sni], sni)
			continue
		}
		d := clusters[sni]
		if d == nil {
			t.Errorf("gateway has no cluster %q", sni)
			continue
		}
		if d.GetTransportSocket() != nil || len(d.GetTransportSocketMatches()) > 0 {
			t.Errorf("SNI-DNAT cluster %q originates TLS: %v %v", sni, d.GetTransportSocket(), d.GetTransportSocketMatches())
		}
		if d.GetEdsClusterConfig().GetServiceName() != c.GetName() {
			t.Errorf("SNI-DNAT cluster %q reads endpoints of %q, want %q", sni, d.GetEdsClusterConfig().GetServiceName(), c.GetName())
		}
		checked = append(checked, sni)
	}
	slices.Sort(checked)
	want := []string{
		"outbound_.9080_._.reviews.default.svc.cluster.local",
		"outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"outbound_.9080_.v2_.reviews.default.svc.cluster.local",
	}
	if !slices.Equal(checked, want) {
		t.Errorf("checked SNIs %v, want %v", checked, want)
	}
	if o := clusters["outbound|9080||reviews.default.svc.cluster.local"]; o == nil || len(o.GetTransportSocketMatches()) == 0 {
		t.Errorf("the gateway's own reviews cluster lost auto mTLS: %v", o)
	}
}
