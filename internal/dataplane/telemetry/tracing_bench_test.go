package telemetry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// downCollectors is a collector cluster that is always down.
type downCollectors struct{}

func (downCollectors) RoundTrip(string, *http.Request) (*http.Response, error) {
	return nil, errors.New("down")
}

func (downCollectors) GRPC(string, string) (grpc.ClientConnInterface, error) {
	return nil, errors.New("down")
}

// BenchmarkSpan is the tracing work of one request on the connection
// manager's path (StartSpan, Inject, End), without the proxying: "off" is
// the nil check a chain without tracing pays, "1pct" Istio's default
// sampling, "100pct" a recorded span with Envoy's tags per request. The
// collector is down, so export never succeeds (and never blocks).
func BenchmarkSpan(b *testing.B) {
	tr, err := NewTracing(TracingOptions{Collectors: downCollectors{}, NodeID: "sidecar~127.0.0.1~pp.default~default.svc.cluster.local"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	for _, tc := range []struct {
		name string
		cfg  *config.Tracing
	}{
		{"off", nil},
		{"1pct", &config.Tracing{Provider: config.TraceProvider{Kind: config.TracerKindOpenTelemetry, Cluster: "c"},
			ClientSampling: 100, RandomSampling: 1, OverallSampling: 100, MaxPathTagLength: 256, Egress: true}},
		{"100pct", &config.Tracing{Provider: config.TraceProvider{Kind: config.TracerKindOpenTelemetry, Cluster: "c"},
			ClientSampling: 100, RandomSampling: 100, OverallSampling: 100, MaxPathTagLength: 256, Egress: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "http://reviews:9080/reviews/0", nil)
			e := &Entry{ResponseCode: 200, UpstreamCluster: "outbound|9080||reviews.default.svc.cluster.local"}
			var t *Tracing
			if tc.cfg != nil {
				t = tr
			}
			b.ReportAllocs()
			for b.Loop() {
				h := http.Header{"User-Agent": {"bench"}}
				r.Header = h
				var s *Span
				if tc.cfg != nil && t != nil {
					s = t.StartSpan(r, tc.cfg, "reviews:9080", "rid", nil)
				}
				s.Inject(h)
				s.End(e)
			}
		})
	}
}
