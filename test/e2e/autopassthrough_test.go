package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// autoPassthroughYAML is an east-west gateway (Istio's
// cross-network-gateway, AUTO_PASSTHROUGH on 15443) and what a client in
// namespace remote sees of httpbin: Istio gives a proxy on another
// network httpbin's endpoints as the gateway's address on 15443; Loom
// has no network-based endpoint rewrite, so a ServiceEntry of the same
// host in the client's own namespace (which a proxy prefers, as Istio)
// says so, with a DestinationRule for ISTIO_MUTUAL to httpbin's identity.
const autoPassthroughYAML = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin-via-gateway, namespace: remote}
spec:
  hosts: [httpbin.default.svc.cluster.local]
  exportTo: ["."]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: %GW%, ports: {http: 15443}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin-via-gateway, namespace: remote}
spec:
  host: httpbin.default.svc.cluster.local
  exportTo: ["."]
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/httpbin]}
`

// TestAutoPassthroughGateway: a sidecar client calls httpbin through an
// east-west gateway with an AUTO_PASSTHROUGH server. The client's sidecar
// originates ISTIO_MUTUAL with Istio's SNI
// outbound_.9080_._.httpbin.default.svc.cluster.local; the gateway routes
// the connection by that SNI to httpbin's sidecar without terminating it;
// httpbin's sidecar terminates the client's own mTLS, so the app sees the
// client's SPIFFE ID in x-forwarded-client-cert (a gateway that
// terminated and re-originated would show its own).
func TestAutoPassthroughGateway(t *testing.T) {
	m := startMTLSMesh(t, "127.139.0", []appWorkload{
		{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: xfccApp},
	}, "1h")
	gw := m.ip(2)
	if err := os.WriteFile(filepath.Join(m.configDir, "autopassthrough.yaml"),
		[]byte(strings.ReplaceAll(autoPassthroughYAML, "%GW%", gw)), 0o644); err != nil {
		t.Fatal(err)
	}
	xds, secure := m.ip(1)+":15010", m.ip(1)+":15012"
	m.start("eastwest-proxy", "loom-proxy", "router", "--ip", gw, "--name", "istio-eastwestgateway", "--namespace", "istio-system",
		"--labels", "app=istio-eastwestgateway,istio=eastwestgateway", "--service-account", "istio-eastwestgateway",
		"--xds-addr", xds, "--ca-addr", secure, "--token-file", mintToken(t, m.dataDir, "istio-system", "istio-eastwestgateway", "istio-eastwestgateway"),
		"--root-cert", m.rootCert)
	m.start("client-proxy", "loom-proxy", "sidecar", "--ip", m.ip(clientOctet), "--name", "sleep", "--namespace", "remote",
		"--labels", "app=sleep,version=v1", "--service-account", "sleep", "--xds-addr", xds,
		"--ca-addr", secure, "--token-file", mintToken(t, m.dataDir, "remote", "sleep", "sleep"), "--root-cert", m.rootCert)

	const clientID = "URI=spiffe://cluster.local/ns/remote/sa/sleep"
	mesh := m.client(5 * time.Second)
	var xfcc string
	var err error
	// loomd reads autopassthrough.yaml a moment after the proxies start:
	// until then the client goes to httpbin's sidecar directly (its
	// identity shows as well), so ask until a call went by the gateway.
	viaGateway := func() bool {
		return fileHasLine(filepath.Join(m.logsDir, "client-proxy.log"), "outbound|9080||httpbin.default.svc.cluster.local", gw+":15443")
	}
	if !poll(40*time.Second, func() bool {
		xfcc, err = xfccOf(mesh, "http://httpbin.default.svc.cluster.local:9080/", "")
		return err == nil && strings.Contains(xfcc, clientID) && viaGateway()
	}) {
		t.Fatalf("through the gateway: XFCC %q, %v; want the client's %s\n%s", xfcc, err, clientID, m.tails())
	}
	if !strings.Contains(xfcc, "By=spiffe://cluster.local/ns/default/sa/httpbin") {
		t.Errorf("XFCC %q: want By= httpbin's SPIFFE ID", xfcc)
	}
	for i := range 20 {
		x, err := xfccOf(mesh, "http://httpbin.default.svc.cluster.local:9080/", "")
		if err != nil || !strings.Contains(x, clientID) || strings.Contains(x, "istio-eastwestgateway") {
			t.Fatalf("call %d through the gateway: XFCC %q, %v; want the client's identity only", i, x, err)
		}
	}
	const sni = "outbound_.9080_._.httpbin.default.svc.cluster.local"
	// httpbin's sidecar saw the client's own SNI: the gateway passed the
	// TLS stream on as it came.
	pollUntil(t, "httpbin's sidecar's inbound line with the client's SNI", func() bool {
		return fileHasLine(filepath.Join(m.logsDir, "httpbin-v1-proxy.log"), "inbound|9080||", sni+" ")
	})
}
