package translate

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// tlsRoutesDoc has TLS services of two ServiceEntries without VIPs:
// a.example.com and b.example.com split 90/10 by a tls route (another of
// its matches applies only to reviews), c.example.com (HTTPS) reached by
// its own name.
const tlsRoutesDoc = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: other, namespace: default}
spec:
  hosts: [c.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  tls:
  - match: [{sniHosts: [a.example.com], sourceLabels: {app: reviews}}]
    route: [{destination: {host: b.example.com}}]
  - match: [{sniHosts: [a.example.com, b.example.com], port: 443}]
    route:
    - {destination: {host: a.example.com}, weight: 90}
    - {destination: {host: b.example.com}, weight: 10}
`

// docPushContext is the push context of the config doc (YAML, several
// documents) under meshFile.
func docPushContext(t *testing.T, doc string) *model.PushContext {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in.yaml")
	if err := os.WriteFile(in, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadPushContext(t, meshFile, in)
}

// listenerDigest is the digest of r's listeners named names (their lines
// of digestResources), without istio.stats filters.
func listenerDigest(r *Resources, names ...string) []string {
	var b strings.Builder
	digestResources(&b, r)
	var got []string
	on := false
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "listener ") {
			on = slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(l, "listener "+n+" ") })
		}
		if on && !strings.Contains(l, "istio.stats") {
			got = append(got, l)
		}
	}
	return got
}

// TestSidecarTLSRoutes checks the explicit-mode sidecar's outbound TLS
// listener: tls routes by sniHosts, a weighted one, a match whose
// sourceLabels do not fit the proxy left out, and a service no tls route
// covers reached by its own name as SNI.
func TestSidecarTLSRoutes(t *testing.T) {
	r := mustGenerate(t, docPushContext(t, tlsRoutesDoc), productpageSidecar())
	got := listenerDigest(r, "127.0.0.11_443")
	want := []string{
		"listener 127.0.0.11_443 127.0.0.11:443",
		"  listener filter envoy.filters.listener.tls_inspector",
		`  chain "tls.443.default.ext.tls[1].match[0]" sni=a.example.com,b.example.com`,
		"  filter envoy.filters.network.tcp_proxy -> [outbound|443||a.example.com=90 outbound|443||b.example.com=10]",
		`  chain "outbound|443||c.example.com" sni=c.example.com`,
		"  filter envoy.filters.network.tcp_proxy -> outbound|443||c.example.com",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TLS listener (-want +got):\n%s", diff)
	}
}

// TestSidecarTLSPassthroughPolicy: the chain of a TLS service no tls
// route covers is Istio's single-destination TCP proxy, so the
// DestinationRule's idleTimeout and maxConnectionDuration apply to it as
// to a TCP service's.
func TestSidecarTLSPassthroughPolicy(t *testing.T) {
	doc := tlsRoutesDoc + `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: c, namespace: default}
spec:
  host: c.example.com
  trafficPolicy: {connectionPool: {tcp: {idleTimeout: 30s, maxConnectionDuration: 1m}}}
`
	r := mustGenerate(t, docPushContext(t, doc), productpageSidecar())
	const cluster = "outbound|443||c.example.com"
	var got *tcpv3.TcpProxy
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			if l.GetName() != "127.0.0.11_443" || fc.GetName() != cluster {
				continue
			}
			fs := fc.GetFilters()
			got = &tcpv3.TcpProxy{}
			if err := fs[len(fs)-1].GetTypedConfig().UnmarshalTo(got); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := &tcpv3.TcpProxy{
		StatPrefix:                      cluster,
		ClusterSpecifier:                &tcpv3.TcpProxy_Cluster{Cluster: cluster},
		IdleTimeout:                     durationpb.New(30 * time.Second),
		MaxDownstreamConnectionDuration: durationpb.New(time.Minute),
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("tcp_proxy of chain %s (-want +got):\n%s", cluster, diff)
	}
}
