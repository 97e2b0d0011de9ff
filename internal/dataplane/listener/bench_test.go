package listener

import (
	"crypto/tls"
	"net"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// BenchmarkTLSHandshake measures full TLS 1.3 handshakes (no resumption)
// on a filter chain that terminates TLS with the agent's ECDSA P-256
// certificate resolved from the secret store, one new connection per
// operation, client included (same process). "mtls" also requires and
// verifies a client certificate, as Istio's inbound chains do.
func BenchmarkTLSHandshake(b *testing.B) {
	for _, mtls := range []bool{false, true} {
		name := "tls"
		if mtls {
			name = "mtls"
		}
		b.Run(name, func(b *testing.B) {
			ca := testutil.NewCA(b, "mesh root")
			m := startManager(b, Options{Secrets: workloadSecrets(b, ca)})
			addr := freeAddr(b)
			fc := hcmChain(b, "in", nil)
			fc.TransportSocket = istioServerTLS(b, mtls, "http/1.1")
			if err := m.Update(buildGen(b, &listenerv3.Listener{Name: "in", Address: xdstest.HostPortAddress(b, addr),
				FilterChains: []*listenerv3.FilterChain{fc}})); err != nil {
				b.Fatal(err)
			}
			// An Envoy-like client: X25519 or P-256, no resumption.
			cfg := &tls.Config{RootCAs: ca.Pool, ServerName: "server.test", CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
			if mtls {
				cfg.Certificates = []tls.Certificate{ca.Issue(b, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/client"}}).TLS}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				tc := tls.Client(c, cfg)
				if err := tc.Handshake(); err != nil {
					b.Fatal(err)
				}
				// TLS 1.3: the server verifies the client certificate after
				// the client's Finished; a read waits for its verdict.
				tc.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}
