// Package otlptest is a trace and log collector for tests: the real OTLP
// TraceService and LogsService (go.opentelemetry.io/proto/otlp) over
// gRPC, and a Zipkin v2 JSON endpoint (openzipkin's model), all keeping
// every span or log record they receive, flattened, for assertions. It
// imports no Loom package.
package otlptest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Span is one received span, in hex ids, with its string attributes.
type Span struct {
	Service      string // the resource's service.name (Zipkin: localEndpoint.serviceName)
	Name         string
	Kind         string // "SERVER", "CLIENT", ...
	TraceID      string
	SpanID       string
	ParentSpanID string // "" for a root span
	Attrs        map[string]string
	Error        bool // OTLP status ERROR, or Zipkin's error tag
}

// Log is one received OTLP log record, with its string body and
// attributes, its resource's attributes, and its trace context in hex
// ("" when the record has none).
type Log struct {
	Body            string
	Attrs           map[string]string
	Resource        map[string]string
	Time            time.Time
	TraceID, SpanID string
}

// items keeps what a receiver got; its methods are safe for concurrent
// use.
type items[T any] struct {
	// mu guards all.
	mu   sync.Mutex
	all  []T
	more chan struct{} // closed and replaced on every add
}

func newItems[T any]() *items[T] { return &items[T]{more: make(chan struct{})} }

func (s *items[T]) add(x ...T) {
	s.mu.Lock()
	s.all = append(s.all, x...)
	close(s.more)
	s.more = make(chan struct{})
	s.mu.Unlock()
}

func (s *items[T]) snapshot() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]T(nil), s.all...)
}

func (s *items[T]) wait(t testing.TB, timeout time.Duration, what string, cond func([]T) bool) []T {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		all := append([]T(nil), s.all...)
		more := s.more
		s.mu.Unlock()
		if cond(all) {
			return all
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s; got %d: %+v", timeout, what, len(all), all)
		}
	}
}

// store keeps spans.
type store struct{ items *items[Span] }

func newStore() *store { return &store{newItems[Span]()} }

func (s *store) add(sp ...Span) { s.items.add(sp...) }

// Spans returns a copy of the spans received so far.
func (s *store) Spans() []Span { return s.items.snapshot() }

// Wait returns the spans once cond holds for them, or fails t after
// timeout.
func (s *store) Wait(t testing.TB, timeout time.Duration, what string, cond func([]Span) bool) []Span {
	t.Helper()
	return s.items.wait(t, timeout, what, cond)
}

// OTLP is a running OTLP/gRPC receiver of traces and logs.
type OTLP struct {
	*store
	collectortrace.UnimplementedTraceServiceServer
	Addr string
	srv  *grpc.Server
	logs *items[Log]
}

// StartOTLP serves the OTLP TraceService and LogsService on addr
// ("127.0.0.1:0" for any port) until the test ends.
func StartOTLP(t testing.TB, addr string) *OTLP {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	o := &OTLP{store: newStore(), Addr: ln.Addr().String(), srv: grpc.NewServer(), logs: newItems[Log]()}
	collectortrace.RegisterTraceServiceServer(o.srv, o)
	collectorlogs.RegisterLogsServiceServer(o.srv, logService{logs: o.logs})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = o.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		o.srv.Stop()
		<-done
	})
	return o
}

// Export implements the OTLP TraceService.
func (o *OTLP) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				s := Span{
					Service: service,
					Name:    sp.GetName(),
					Kind:    kindName(sp.GetKind()),
					TraceID: hex.EncodeToString(sp.GetTraceId()),
					SpanID:  hex.EncodeToString(sp.GetSpanId()),
					Attrs:   attrs(sp.GetAttributes()),
					Error:   sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
				}
				if len(sp.GetParentSpanId()) > 0 {
					s.ParentSpanID = hex.EncodeToString(sp.GetParentSpanId())
				}
				out = append(out, s)
			}
		}
	}
	o.add(out...)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// Logs returns a copy of the log records received so far.
func (o *OTLP) Logs() []Log { return o.logs.snapshot() }

// WaitLogs returns the log records once cond holds for them, or fails t
// after timeout.
func (o *OTLP) WaitLogs(t testing.TB, timeout time.Duration, what string, cond func([]Log) bool) []Log {
	t.Helper()
	return o.logs.wait(t, timeout, what, cond)
}

// logService is the OTLP LogsService of an OTLP receiver.
type logService struct {
	collectorlogs.UnimplementedLogsServiceServer
	logs *items[Log]
}

func (l logService) Export(_ context.Context, req *collectorlogs.ExportLogsServiceRequest) (*collectorlogs.ExportLogsServiceResponse, error) {
	var out []Log
	for _, rl := range req.GetResourceLogs() {
		res := attrs(rl.GetResource().GetAttributes())
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				out = append(out, Log{Body: lr.GetBody().GetStringValue(), Attrs: attrs(lr.GetAttributes()), Resource: res,
					Time: time.Unix(0, int64(lr.GetTimeUnixNano())), TraceID: hex.EncodeToString(lr.GetTraceId()),
					SpanID: hex.EncodeToString(lr.GetSpanId())})
			}
		}
	}
	l.logs.add(out...)
	return &collectorlogs.ExportLogsServiceResponse{}, nil
}

func kindName(k tracepb.Span_SpanKind) string {
	switch k {
	case tracepb.Span_SPAN_KIND_SERVER:
		return "SERVER"
	case tracepb.Span_SPAN_KIND_CLIENT:
		return "CLIENT"
	case tracepb.Span_SPAN_KIND_INTERNAL:
		return "INTERNAL"
	case tracepb.Span_SPAN_KIND_PRODUCER:
		return "PRODUCER"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		return "CONSUMER"
	}
	return "UNSPECIFIED"
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	return m
}

// Zipkin is a running Zipkin v2 JSON receiver (POST /api/v2/spans).
type Zipkin struct {
	*store
	Addr string
	srv  *http.Server
}

// StartZipkin serves Zipkin's span API on addr until the test ends.
func StartZipkin(t testing.TB, addr string) *Zipkin {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	z := &Zipkin{store: newStore(), Addr: ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v2/spans", func(w http.ResponseWriter, r *http.Request) {
		var spans []zipkinmodel.SpanModel
		if err := json.NewDecoder(r.Body).Decode(&spans); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var out []Span
		for _, sp := range spans {
			s := Span{Name: sp.Name, Kind: string(sp.Kind), TraceID: sp.TraceID.String(), SpanID: sp.ID.String(), Attrs: sp.Tags}
			if sp.LocalEndpoint != nil {
				s.Service = sp.LocalEndpoint.ServiceName
			}
			if sp.ParentID != nil {
				s.ParentSpanID = sp.ParentID.String()
			}
			_, s.Error = sp.Tags["error"]
			out = append(out, s)
		}
		z.add(out...)
		w.WriteHeader(http.StatusAccepted)
	})
	z.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = z.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = z.srv.Close()
		<-done
	})
	return z
}
