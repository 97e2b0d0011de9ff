package ca

import (
	"testing"
	"time"
)

// BenchmarkIssue measures the CA's issuance rate: one CSR parsed, checked
// and signed per op (ops/s = CSRs signed per second), with the self-signed
// ECDSA P-256 root and with Istio's sample plug-in CA (RSA 2048).
func BenchmarkIssue(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"self-signed-p256", Options{}},
		{"plugin-rsa2048", Options{PluginDir: samples}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newTestCA(b, bc.opts)
			id, err := WorkloadID(c.TrustDomain(), "default", "bookinfo-reviews")
			if err != nil {
				b.Fatal(err)
			}
			csr := csrPEM(b, ecKey(b), id.String())
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				req, err := ParseCSR(csr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Sign(req, id, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
		})
	}
}
