package upstream

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// BenchmarkH2C measures one request over the h2c pool of a cluster with no
// connection limits: Pick, RoundTrip, body read to EOF, Done.
func BenchmarkH2C(b *testing.B) {
	srv, m, c := benchH2C(b)
	b.ReportAllocs()
	defer func() { accepted, _, _, _ := srv.stats(); b.ReportMetric(float64(accepted), "conns") }()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := send(context.Background(), m, c); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkH2CSerial is BenchmarkH2C one request at a time: the latency of
// the pool's path without contention.
func BenchmarkH2CSerial(b *testing.B) {
	_, m, c := benchH2C(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := send(context.Background(), m, c); err != nil {
			b.Fatal(err)
		}
	}
}

// benchH2C is an h2c upstream answering "ok" and a cluster manager with
// the h2c cluster "c" to it, without connection limits.
func benchH2C(b *testing.B) (*h2cServer, *ClusterManager, *config.Cluster) {
	srv := newH2CServer(b, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	m := New(Options{})
	b.Cleanup(func() { m.Close() })
	c := h2Cluster(srv.addr(), nil, config.ConnectionOptions{})
	m.Update(gen(c))
	return srv, m, c
}
