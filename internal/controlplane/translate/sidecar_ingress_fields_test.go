package translate

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// sidecarFile writes a Sidecar of spec body (indented two spaces) for
// workloads labelled app=app to a file of its own and returns its path.
func sidecarFile(t *testing.T, app, body string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "sidecar.yaml")
	doc := "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: " + app + ", namespace: default}\nspec:\n  workloadSelector: {labels: {app: " + app + "}}\n" + body
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// poolSummary is the circuit breaker thresholds, connect timeout and
// upstream idle timeout of cluster c, "-" for a threshold at Istio's
// unlimited default.
func poolSummary(t *testing.T, c *clusterv3.Cluster) string {
	t.Helper()
	th := c.GetCircuitBreakers().GetThresholds()[0]
	n := func(v uint32) string {
		if v == ^uint32(0) {
			return "-"
		}
		return strconv.FormatUint(uint64(v), 10)
	}
	s := "conns=" + n(th.GetMaxConnections().GetValue()) + " pending=" + n(th.GetMaxPendingRequests().GetValue()) +
		" requests=" + n(th.GetMaxRequests().GetValue()) + " connect=" + c.GetConnectTimeout().AsDuration().String()
	if a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a != nil {
		var opts upstreamhttpv3.HttpProtocolOptions
		if err := a.UnmarshalTo(&opts); err != nil {
			t.Fatal(err)
		}
		if it := opts.GetCommonHttpProtocolOptions().GetIdleTimeout(); it != nil {
			s += " idle=" + it.AsDuration().String()
		}
		if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
			s += " h2"
		}
	}
	return s
}

// TestSidecarIngressConnectionPool: a Sidecar's connection pools set the
// inbound clusters' circuit breakers and timeouts, as Istio's
// InboundConnectionPoolForPort: an ingress listener's connectionPool for
// its port, else the Sidecar's inboundConnectionPool, else Istio's
// unlimited defaults; the port's pool replaces the Sidecar-wide one, not
// merges with it. Both interception modes, STATIC and ORIGINAL_DST
// clusters alike; an HTTP/2 port keeps its h2c options.
func TestSidecarIngressConnectionPool(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	sc := sidecarFile(t, "moved", `  inboundConnectionPool:
    tcp: {maxConnections: 50}
    http: {http1MaxPendingRequests: 100}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 7, idleTimeout: 30s}
  - port: {number: 9081, protocol: TCP, name: tcp-pod}
    defaultEndpoint: 0.0.0.0:8081
  - port: {number: 9082, protocol: GRPC, name: grpc}
    connectionPool: {http: {http2MaxRequests: 3}}
`)
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), sc)
	want := map[string]string{
		"inbound|9080||": "conns=1 pending=1 requests=7 connect=2s idle=30s",
		"inbound|9081||": "conns=50 pending=100 requests=- connect=10s",
		"inbound|9082||": "conns=- pending=- requests=3 connect=10s h2",
	}
	for _, p := range []*model.Proxy{movedSidecar(), explicitMoved()} {
		r := mustGenerate(t, pc, p)
		got := map[string]string{}
		for _, c := range r.Clusters {
			if _, ok := want[c.GetName()]; ok {
				got[c.GetName()] = poolSummary(t, c)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: inbound cluster pools (-want +got):\n%s", p.InterceptionMode, diff)
		}
	}

	// Without the Sidecar the inbound cluster is unlimited.
	base := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"))
	for _, c := range mustGenerate(t, base, movedSidecar()).Clusters {
		if c.GetName() == "inbound|9080||" {
			if got := poolSummary(t, c); got != "conns=- pending=- requests=- connect=10s" {
				t.Errorf("without the Sidecar: inbound|9080|| %s, want unlimited", got)
			}
		}
	}
}

// TestSidecarInboundConnectionPoolServicePorts: without ingress
// listeners, the Sidecar's inboundConnectionPool applies to the inbound
// cluster of every service port.
func TestSidecarInboundConnectionPoolServicePorts(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	sc := sidecarFile(t, "moved", "  inboundConnectionPool: {tcp: {maxConnections: 5}}\n")
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), sc)
	for _, p := range []*model.Proxy{movedSidecar(), explicitMoved()} {
		n := 0
		for _, c := range mustGenerate(t, pc, p).Clusters {
			if strings.HasPrefix(c.GetName(), "inbound|") {
				n++
				if got := poolSummary(t, c); got != "conns=5 pending=- requests=- connect=10s" {
					t.Errorf("%s: %s %s, want conns=5", p.InterceptionMode, c.GetName(), got)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no inbound cluster", p.InterceptionMode)
		}
	}
}

// explicitMoved is movedSidecar without interception.
func explicitMoved() *model.Proxy {
	p := movedSidecar()
	p.InterceptionMode = "NONE"
	return p
}

// TestSidecarIngressBind: an ingress listener's bind names its chains and
// places its bound listener, as Istio's buildInboundChainConfigs (cc.bind
// = bind, else getSidecarInboundBindIPs): under REDIRECT the
// virtualInbound chains of a captured port are "BIND_PORT" (still matched
// by port alone) and a NONE port's listener binds BIND:PORT; in explicit
// mode every bound listener takes BIND:PORT instead of the proxy's IP.
func TestSidecarIngressBind(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	sc := sidecarFile(t, "moved", `  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 0.0.0.0
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9081, protocol: TCP, name: tcp-pod}
    bind: 127.0.0.99
    defaultEndpoint: 0.0.0.0:8081
  - port: {number: 9082, protocol: HTTP, name: http-none}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:8082
`)
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), sc)
	bound := func(r *Resources) []string {
		var out []string
		for _, l := range r.Listeners {
			if l.GetTrafficDirection().String() == "INBOUND" && l.GetName() != xdsapi.VirtualInboundListener {
				sa := l.GetAddress().GetSocketAddress()
				out = append(out, l.GetName()+" @"+sa.GetAddress()+":"+strconv.FormatUint(uint64(sa.GetPortValue()), 10))
			}
		}
		return out
	}

	r := mustGenerate(t, pc, movedSidecar())
	for _, tt := range []struct {
		entry string
		c     conn
		want  string
	}{
		{xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9080", http: "moved:9080"}, "virtualInbound/0.0.0.0_9080 -> inbound|9080||"},
		{xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9081"}, "virtualInbound/127.0.0.99_9081 -> inbound|9081||"},
		{"127.0.0.1_9082", conn{dst: "127.0.0.1:9082", http: "moved:9082"}, "127.0.0.1_9082/127.0.0.1_9082 -> inbound|9082||"},
	} {
		if got := simulateConn(t, r, tt.entry, tt.c); got != tt.want {
			t.Errorf("REDIRECT: got  %s\nwant %s", got, tt.want)
		}
	}
	if diff := cmp.Diff([]string{"127.0.0.1_9082 @127.0.0.1:9082"}, bound(r)); diff != "" {
		t.Errorf("REDIRECT: bound inbound listeners (-want +got):\n%s", diff)
	}

	r = mustGenerate(t, pc, explicitMoved())
	want := []string{"0.0.0.0_9080 @0.0.0.0:9080", "127.0.0.1_9082 @127.0.0.1:9082", "127.0.0.99_9081 @127.0.0.99:9081"}
	if diff := cmp.Diff(want, bound(r)); diff != "" {
		t.Errorf("explicit: bound inbound listeners (-want +got):\n%s", diff)
	}
	if got, want := simulateConn(t, r, "127.0.0.99_9081", conn{dst: "127.0.0.99:9081"}), "127.0.0.99_9081/127.0.0.99_9081 -> inbound|9081||"; got != want {
		t.Errorf("explicit: got  %s\nwant %s", got, want)
	}
}

// TestIngressBind: bind wins over the default and is written canonically;
// without it, Istio's getSidecarInboundBindIPs (explicit mode: the
// proxy's IP).
func TestIngressBind(t *testing.T) {
	for _, tt := range []struct {
		bind, ip string
		explicit bool
		want     string
	}{
		{"", "10.0.0.5", false, "10.0.0.5"},
		{"", "127.0.0.11", false, "0.0.0.0"},
		{"", "127.0.0.11", true, "127.0.0.11"},
		{"0.0.0.0", "10.0.0.5", false, "0.0.0.0"},
		{"127.0.0.1", "127.0.0.11", true, "127.0.0.1"},
		{"::0", "10.0.0.5", false, "::"},
	} {
		if got := ingressBind(tt.bind, tt.ip, tt.explicit); got != tt.want {
			t.Errorf("ingressBind(%q, %s, explicit %v) = %s, want %s", tt.bind, tt.ip, tt.explicit, got, tt.want)
		}
	}
}

// chainTLS summarizes the downstream TLS of chain fc: "none", "mesh" for
// the proxy's own certificate (Istio's mTLS), else the certificate's SDS
// name, the trust bundle's when a client certificate is validated, and
// "require" when one is required.
func chainTLS(t *testing.T, fc *listenerv3.FilterChain) string {
	t.Helper()
	if fc.GetTransportSocket() == nil {
		return "none"
	}
	var dc tlsv3.DownstreamTlsContext
	if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(&dc); err != nil {
		t.Fatal(err)
	}
	common := dc.GetCommonTlsContext()
	cert := common.GetTlsCertificateSdsSecretConfigs()[0].GetName()
	if cert == workloadCertSecret {
		return "mesh"
	}
	s := cert + " alpn=" + strings.Join(common.GetAlpnProtocols(), ",")
	if ca := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName(); ca != "" {
		s += " ca=" + ca
	}
	if dc.GetRequireClientCertificate().GetValue() {
		s += " require"
	}
	return s
}

// TestSidecarIngressTLS: an ingress listener's tls terminates TLS on its
// port with the listener's certificate instead of the mesh's mTLS, as
// Istio's buildInboundListeners, where PeerAuthentication is DISABLE for
// the port: one chain matching transport tls, its protocol the one after
// termination (HTTPS: an HTTP manager; TLS: tcp_proxy), the certificate
// files read by the proxy (file-cert:, file-root:), ALPN h2, http/1.1.
// Under PERMISSIVE the mesh's chains stay and tls is ignored, as in
// Istio. Redirect mode's virtualInbound chains and explicit mode's bound
// listeners alike.
func TestSidecarIngressTLS(t *testing.T) {
	dir := filepath.Join("testdata", "sidecar-ingress-redirect")
	sc := sidecarFile(t, "moved", `  ingress:
  - port: {number: 9443, protocol: HTTPS, name: https}
    defaultEndpoint: 127.0.0.1:8080
    tls: {mode: SIMPLE, serverCertificate: /certs/cert.pem, privateKey: /certs/key.pem}
  - port: {number: 9444, protocol: TLS, name: tls}
    defaultEndpoint: 127.0.0.1:8081
    tls: {mode: MUTUAL, serverCertificate: /certs/cert.pem, privateKey: /certs/key.pem, caCertificates: /certs/ca.pem}
  - port: {number: 9445, protocol: HTTPS, name: https-mesh}
    defaultEndpoint: 127.0.0.1:8082
    tls: {mode: SIMPLE, serverCertificate: /certs/cert.pem, privateKey: /certs/key.pem}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: moved, namespace: default}
spec:
  selector: {matchLabels: {app: moved}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    9443: {mode: DISABLE}
    9444: {mode: DISABLE}
`)
	pc := loadPushContext(t, meshFile, filepath.Join(dir, "services.yaml"), sc)
	const simple = "file-cert:/certs/cert.pem~/certs/key.pem alpn=h2,http/1.1"
	want := []string{
		"9443 tls http " + simple,
		"9444 tls tcp " + simple + " ca=file-root:/certs/ca.pem require",
		// PERMISSIVE: the mesh's mTLS chain and the plaintext one.
		"9445 tls http mesh",
		"9445 raw_buffer http none",
	}
	summary := func(chains []*listenerv3.FilterChain) []string {
		var out []string
		for _, fc := range chains {
			port := fc.GetFilterChainMatch().GetDestinationPort().GetValue()
			if port < 9443 || port > 9445 {
				continue
			}
			kind := "tcp"
			if chainHCM(t, fc) != nil {
				kind = "http"
			}
			out = append(out, strconv.Itoa(int(port))+" "+fc.GetFilterChainMatch().GetTransportProtocol()+" "+kind+" "+chainTLS(t, fc))
		}
		return out
	}

	r := mustGenerate(t, pc, movedSidecar())
	if diff := cmp.Diff(want, summary(findListener(r, xdsapi.VirtualInboundListener).GetFilterChains())); diff != "" {
		t.Errorf("REDIRECT: virtualInbound chains (-want +got):\n%s", diff)
	}
	if got, want := simulateConn(t, r, xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9443", sni: "moved.example.com", http: "moved.example.com"}), "virtualInbound/10.78.0.31_9443 -> inbound|9443||"; got != want {
		t.Errorf("REDIRECT: TLS to 9443: got  %s\nwant %s", got, want)
	}
	if got, want := simulateConn(t, r, xdsapi.VirtualInboundListener, conn{dst: "10.78.0.31:9443", http: "moved:9443"}), "no chain"; !strings.Contains(got, want) {
		t.Errorf("REDIRECT: plaintext to 9443: got %s, want %s", got, want)
	}

	r = mustGenerate(t, pc, explicitMoved())
	var chains []*listenerv3.FilterChain
	for _, name := range []string{"10.78.0.31_9443", "10.78.0.31_9444", "10.78.0.31_9445"} {
		l := findListener(r, name)
		if l == nil {
			t.Fatalf("explicit: no bound listener %s", name)
		}
		chains = append(chains, l.GetFilterChains()...)
	}
	if diff := cmp.Diff(want, summary(chains)); diff != "" {
		t.Errorf("explicit: bound listeners' chains (-want +got):\n%s", diff)
	}
}
