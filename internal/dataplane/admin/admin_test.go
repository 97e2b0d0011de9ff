package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestAdmin(t *testing.T) {
	var gen atomic.Pointer[config.Generation]
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "loom_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	s, err := New(Options{Generation: &gen, Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if code, _ := get(t, h, "/ready"); code != 503 {
		t.Errorf("/ready before a generation = %d, want 503", code)
	}
	g, err := config.Build(config.Resources{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Clusters["outbound|9080||reviews"] = &config.Cluster{Name: "outbound|9080||reviews", Endpoints: []config.Endpoint{
		{Address: "127.0.0.13:15006", Weight: 1}, {Address: "127.0.0.14:15006", Health: config.Unhealthy, Weight: 1}}}
	gen.Store(g)
	if code, body := get(t, h, "/ready"); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready = %d %q", code, body)
	}
	code, body := get(t, h, "/config_dump")
	if code != 200 || !json.Valid([]byte(body)) {
		t.Errorf("/config_dump = %d, valid JSON %v: %.200s", code, json.Valid([]byte(body)), body)
	}
	_, body = get(t, h, "/clusters")
	for _, want := range []string{
		"outbound|9080||reviews::127.0.0.13:15006::health_flags::healthy\n",
		"outbound|9080||reviews::127.0.0.14:15006::health_flags::/failed_eds_health\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/clusters lacks %q:\n%s", want, body)
		}
	}
	if _, body := get(t, h, "/stats/prometheus"); !strings.Contains(body, "loom_test_total 1") {
		t.Errorf("/stats/prometheus:\n%s", body)
	}
}

// TestPprof: the admin port serves Go's profiler, the counterpart of
// Envoy's /cpuprofiler and /heapprofiler.
func TestPprof(t *testing.T) {
	var gen atomic.Pointer[config.Generation]
	s, err := New(Options{Generation: &gen, Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if code, body := get(t, h, "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ = %d, %.80q; want 200 listing the profiles", code, body)
	}
	if code, body := get(t, h, "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("/debug/pprof/goroutine = %d, %.80q; want 200 with a goroutine profile", code, body)
	}
}
