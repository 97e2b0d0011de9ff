package telemetry

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAppendEntry(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)
	tests := []struct {
		name string
		in   Entry
		want string
	}{
		{
			name: "proxied",
			in: Entry{StartTime: start, Method: "GET", Path: "/reviews/0", Protocol: "HTTP/1.1", ResponseCode: 200,
				ResponseCodeDetails: "via_upstream", BytesSent: 295, Duration: 12 * time.Millisecond,
				UpstreamServiceTime: 11 * time.Millisecond, UserAgent: "curl/8", RequestID: "rid",
				Authority: "reviews:9080", UpstreamHost: "127.0.0.13:15006",
				UpstreamCluster:        "outbound|9080||reviews.default.svc.cluster.local",
				DownstreamLocalAddress: "127.0.0.11:15001", DownstreamRemoteAddress: "127.0.0.11:40000", RouteName: "default"},
			want: `[2026-01-02T03:04:05.678Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 295 12 11 "-" "curl/8" "rid" "reviews:9080" "127.0.0.13:15006" outbound|9080||reviews.default.svc.cluster.local - 127.0.0.11:15001 127.0.0.11:40000 - default` + "\n",
		},
		{
			name: "no route, quote in header",
			in: Entry{StartTime: start, Method: "GET", Path: "/x", Protocol: "HTTP/2", ResponseCode: 404, ResponseFlags: "NR",
				ResponseCodeDetails: "route_not_found", UpstreamServiceTime: -1, UserAgent: "a\"b\nc"},
			want: `[2026-01-02T03:04:05.678Z] "GET /x HTTP/2" 404 NR route_not_found - "-" 0 0 0 - "-" "a_b_c" "-" "-" "-" - - - - - -` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, string(AppendEntry(nil, &tt.in))); d != "" {
				t.Fatalf("(-want +got)\n%s", d)
			}
		})
	}
}

type lockedBuf struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func TestAccessLogBuffersAndFlushes(t *testing.T) {
	w := &lockedBuf{}
	a := NewAccessLog(AccessLogOptions{Writer: w})
	for range 100 {
		a.Log(&Entry{Method: "GET", UpstreamServiceTime: -1})
	}
	w.mu.Lock()
	if w.writes != 0 {
		t.Errorf("%d writes before a flush: want the lines buffered", w.writes)
	}
	w.mu.Unlock()
	a.Flush()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writes != 1 || strings.Count(w.b.String(), "\n") != 100 {
		t.Errorf("after Flush: %d writes, %d lines; want 1 write of 100 lines", w.writes, strings.Count(w.b.String(), "\n"))
	}
	var disabled *AccessLog = NewAccessLog(AccessLogOptions{})
	disabled.Log(&Entry{}) // must not panic
}

// counter returns the value of the series of name whose labels include
// want, and how many series name has.
func counter(t *testing.T, m *Metrics, name string, want map[string]string) (float64, int) {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, s := range mf.GetMetric() {
			match := true
			for _, lp := range s.GetLabel() {
				if w, ok := want[lp.GetName()]; ok && w != lp.GetValue() {
					match = false
				}
			}
			if match {
				v = s.GetCounter().GetValue()
			}
		}
		return v, len(mf.GetMetric())
	}
	return 0, 0
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	m.Request("virtualOutbound", 200, "")
	m.Request("virtualOutbound", 200, "")
	m.Request("virtualOutbound", 503, "UH")
	m.Request("virtualOutbound", 1000, "")
	m.UpstreamRequest("c", 200)
	if got, _ := counter(t, m, "loom_requests_total", map[string]string{"response_code": "200"}); got != 2 {
		t.Errorf("loom_requests_total 200 = %v, want 2", got)
	}
	if got, _ := counter(t, m, "loom_requests_total", map[string]string{"response_code": "0"}); got != 1 {
		t.Errorf("out-of-range code not folded into 0: %v", got)
	}
	if got, _ := counter(t, m, "loom_requests_total", map[string]string{"response_code": "503", "response_flags": "UH"}); got != 1 {
		t.Errorf("loom_requests_total 503 UH = %v, want 1", got)
	}
	if got, _ := counter(t, m, "envoy_cluster_upstream_rq_total", map[string]string{"cluster_name": "c"}); got != 1 {
		t.Errorf("envoy_cluster_upstream_rq_total = %v", got)
	}
	m.ForgetCluster("c")
	if _, n := counter(t, m, "envoy_cluster_upstream_rq_total", nil); n != 0 {
		t.Errorf("%d series left after ForgetCluster", n)
	}
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	entered chan struct{} // gets a value when a Write starts
	release chan struct{}
	n       atomic.Int64
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	w.n.Add(int64(len(p)))
	return len(p), nil
}

func TestAccessLogSlowWriterDoesNotBlockLog(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	a := NewAccessLog(AccessLogOptions{Writer: w, BufferSize: 4 << 10})
	m := NewMetrics()
	m.WatchAccessLog(a)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	defer func() {
		close(w.release)
		cancel()
		<-runDone
	}()

	e := &Entry{Method: "GET", Path: strings.Repeat("p", 200), UpstreamServiceTime: -1}
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		// Fill the buffer so that Run starts a write that blocks, then
		// keep logging: many times the buffer's size.
		for range 10000 {
			a.Log(e)
		}
	}()
	select {
	case <-logged:
	case <-time.After(5 * time.Second):
		t.Fatal("Log blocked behind a slow writer")
	}
	select {
	case <-w.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("Run never started a write")
	}
	if a.Dropped() == 0 {
		t.Error("no line dropped although the writer blocks and the buffer is 4 KiB")
	}
	if got, _ := counter(t, m, "loom_access_log_dropped_total", nil); got != float64(a.Dropped()) {
		t.Errorf("loom_access_log_dropped_total = %v, want %d", got, a.Dropped())
	}
}

func TestWatchClusterPolicies(t *testing.T) {
	m := NewMetrics()
	stats := map[string]ClusterPolicyStats{
		"a": {CxOverflow: 3, EjectionsEnforced: 2, EjectionsActive: 1},
		"b": {EjectionsOverflow: 5},
	}
	names := []string{"a", "b"}
	m.WatchClusterPolicies(func() []string { return names }, func(c string) ClusterPolicyStats { return stats[c] })
	for _, tc := range []struct {
		metric, cluster string
		want            float64
	}{
		{"envoy_cluster_upstream_cx_overflow", "a", 3},
		{"envoy_cluster_outlier_detection_ejections_enforced_total", "a", 2},
		{"envoy_cluster_outlier_detection_ejections_active", "a", 1},
		{"envoy_cluster_outlier_detection_ejections_overflow", "b", 5},
		{"envoy_cluster_upstream_cx_overflow", "b", 0},
	} {
		if got, ok := clusterValue(t, m, tc.metric, tc.cluster); !ok || got != tc.want {
			t.Errorf("%s{cluster_name=%q} = %v (present: %v), want %v", tc.metric, tc.cluster, got, ok, tc.want)
		}
	}
	// A cluster gone from the generation is gone from the scrape.
	names = []string{"b"}
	if _, ok := clusterValue(t, m, "envoy_cluster_upstream_cx_overflow", "a"); ok {
		t.Error("a cluster no longer listed is still scraped")
	}
}

// clusterValue is the counter or gauge value of name{cluster_name=cluster}.
func clusterValue(t *testing.T, m *Metrics, name, cluster string) (float64, bool) {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == "cluster_name" && lp.GetValue() == cluster {
					return s.GetCounter().GetValue() + s.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}
