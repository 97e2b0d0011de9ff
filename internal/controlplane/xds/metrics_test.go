package xds

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loom-mesh/loom/internal/testutil/promtest"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// TestMetricsAfterXDSActivity drives a real ADS stream through a first
// config, a NACK, a config change and its ACK, then scrapes the server's
// metrics over HTTP and parses them with Prometheus's text parser.
func TestMetricsAfterXDSActivity(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	s := startServerOpts(t, Options{Addr: "127.0.0.1:0", Config: cfg, Generate: fakeGenerate, Registerer: reg,
		DebounceAfter: time.Millisecond, DebounceMax: 10 * time.Millisecond})
	hs := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer hs.Close()

	c := dial(t, s.Addr(), testNode())
	id := c.node.GetId()
	c.subscribe(xdsapi.ClusterType)
	cds1 := c.recv(xdsapi.ClusterType)
	c.subscribe(xdsapi.ListenerType)
	c.ack(c.recv(xdsapi.ListenerType))
	c.nack(cds1, "", "cluster x: type = EDS: must be STATIC")
	waitStatus(t, s, id, xdsapi.ClusterType, func(ts TypeStatus) bool { return ts.Nacked != "" })

	// The change adds a cluster: CDS changes, LDS does not.
	cfg.setHosts(2, reviewsHost, ratingsHost)
	s.Trigger()
	cds2 := c.recv(xdsapi.ClusterType)
	c.ack(cds2)
	waitStatus(t, s, id, xdsapi.ClusterType, func(ts TypeStatus) bool { return ts.Acked == cds2.GetVersionInfo() })

	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"pilot_xds_pushes", map[string]string{"type": "cds"}, 2},
		{"pilot_xds_pushes", map[string]string{"type": "lds"}, 1},
		{"pilot_total_xds_rejects", map[string]string{"type": "cds"}, 1},
		{"pilot_xds", map[string]string{"version": "loom-proxy/1.0.0"}, 1},
		{"pilot_services", nil, 2},
		// One config change, which changed only CDS for the one proxy.
		{"pilot_proxy_convergence_time", nil, 1},
		{"pilot_xds_push_time", map[string]string{"type": "cds"}, 1},
		{"pilot_debounce_time", nil, 1},
		{"pilot_pushcontext_init_seconds", nil, 1},
	}
	var fams promtest.Families
	// The push counts its histograms right after the snapshot is set, so
	// the scrape may come first: poll.
	deadline := time.Now().Add(waitFor)
	for {
		var err error
		fams, err = promtest.Scrape(hs.URL)
		if err != nil {
			t.Fatal(err)
		}
		ok := true
		for _, w := range want {
			if v, _ := fams.Value(w.name, w.labels); v != w.value {
				ok = false
			}
		}
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	for _, w := range want {
		v, ok := fams.Value(w.name, w.labels)
		if !ok || v != w.value {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, v, ok, w.value)
		}
	}
	if v, _ := fams.Value("pilot_xds_pushes", map[string]string{"type": "eds"}); v != 0 {
		t.Errorf("pilot_xds_pushes{type=eds} = %v for a proxy that never asked for EDS", v)
	}
	conv := fams["pilot_proxy_convergence_time"].GetMetric()[0].GetHistogram()
	if s := conv.GetSampleSum(); s <= 0 || s > waitFor.Seconds() {
		t.Errorf("convergence time %vs, want a positive time under %v", s, waitFor)
	}
}

// TestConnectedProxiesGauge: pilot_xds follows streams opening and
// closing.
func TestConnectedProxiesGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := &fakeConfig{}
	cfg.setHosts(1, reviewsHost)
	s := startServerOpts(t, Options{Addr: "127.0.0.1:0", Config: cfg, Generate: fakeGenerate, Registerer: reg})
	connected := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for _, mf := range mfs {
			if mf.GetName() == "pilot_xds" {
				for _, m := range mf.GetMetric() {
					n += m.GetGauge().GetValue()
				}
			}
		}
		return n
	}
	if n := connected(); n != 0 {
		t.Fatalf("pilot_xds = %v before any stream", n)
	}
	c := dial(t, s.Addr(), testNode())
	c.subscribe(xdsapi.ClusterType)
	c.recv(xdsapi.ClusterType)
	if n := connected(); n != 1 {
		t.Fatalf("pilot_xds = %v with one stream", n)
	}
	c.stream.CloseSend()
	deadline := time.Now().Add(waitFor)
	for connected() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("pilot_xds never went back to 0 after the stream closed")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}
