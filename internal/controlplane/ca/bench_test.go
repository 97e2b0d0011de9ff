//go:build unix

package ca

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkIssue measures the CA's issuance rate: one CSR parsed, checked
// and signed per op, with the self-signed ECDSA P-256 root and with
// Istio's sample plug-in CA (RSA 2048). certs/s is wall-clock on one
// goroutine; cpu-µs/cert is the process's CPU time (user and system) per
// certificate, which a busy machine disturbs less: 1e6 / cpu-µs/cert is the
// rate one free core would sustain.
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
			start, cpu0 := time.Now(), cpuTime(b)
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
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/cert")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
