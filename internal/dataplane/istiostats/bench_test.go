package istiostats

import (
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// filled is a proxy's metrics after requests to n destination services
// (one label set each, as a sidecar calling n services with 200s sees).
func filled(b *testing.B, n int) (*Metrics, *prometheus.Registry) {
	m := NewMetrics(0)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	c, err := Compile(nil, false)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		host := fmt.Sprintf("svc-%d.default.svc.cluster.local", i)
		peer := &Peer{Workload: fmt.Sprintf("svc-%d-v1", i), Namespace: "default", App: fmt.Sprintf("svc-%d", i), Version: "v1"}
		var l Labels
		c.Fill(&productpage, &Facts{Peer: peer, Service: ServiceOfCluster("outbound|80||" + host), Protocol: "http", Code: 200}, &l)
		m.RecordRequest(c, &Request{Labels: &l, DurationMillis: 3, ResponseBytes: 100})
	}
	return m, reg
}

// BenchmarkScrape1000Services is one /stats/prometheus scrape (gather and
// text encoding) of a proxy with 1000 destination services in its
// metrics; it reports the heap the series hold.
func BenchmarkScrape1000Services(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, reg := filled(b, 1000)
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc-before.HeapAlloc) / 1000
	b.ResetTimer()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(heap, "heap-bytes/service")
}

// BenchmarkRecordRequest is the per-request cost of a known label set:
// labels filled and the series counted.
func BenchmarkRecordRequest(b *testing.B) {
	m, _ := filled(b, 1000)
	c, _ := Compile(nil, false)
	f := Facts{Peer: &reviews, Service: ServiceOfCluster("outbound|80||svc-7.default.svc.cluster.local"), Protocol: "http", Code: 200}
	var l Labels
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var l Labels
		for pb.Next() {
			c.Fill(&productpage, &f, &l)
			m.RecordRequest(c, &Request{Labels: &l, DurationMillis: 2, ResponseBytes: 10})
		}
	})
	_ = l
}
