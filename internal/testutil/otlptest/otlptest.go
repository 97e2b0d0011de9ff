// Package otlptest is a trace collector for tests: the real OTLP
// TraceService (go.opentelemetry.io/proto/otlp) over gRPC, and a Zipkin
// v2 JSON endpoint (openzipkin's model), both keeping every span they
// receive, flattened, for assertions. It imports no Loom package.
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

// store keeps spans; its methods are safe for concurrent use.
type store struct {
	// mu guards spans.
	mu    sync.Mutex
	spans []Span
	more  chan struct{} // closed and replaced on every add
}

func newStore() *store { return &store{more: make(chan struct{})} }

func (s *store) add(sp ...Span) {
	s.mu.Lock()
	s.spans = append(s.spans, sp...)
	close(s.more)
	s.more = make(chan struct{})
	s.mu.Unlock()
}

// Spans returns a copy of the spans received so far.
func (s *store) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Span(nil), s.spans...)
}

// Wait returns the spans once cond holds for them, or fails t after
// timeout.
func (s *store) Wait(t testing.TB, timeout time.Duration, what string, cond func([]Span) bool) []Span {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		spans := append([]Span(nil), s.spans...)
		more := s.more
		s.mu.Unlock()
		if cond(spans) {
			return spans
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s; got %d spans: %+v", timeout, what, len(spans), spans)
		}
	}
}

// OTLP is a running OTLP/gRPC trace receiver.
type OTLP struct {
	*store
	collectortrace.UnimplementedTraceServiceServer
	Addr string
	srv  *grpc.Server
}

// StartOTLP serves the OTLP TraceService on addr ("127.0.0.1:0" for any
// port) until the test ends.
func StartOTLP(t testing.TB, addr string) *OTLP {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	o := &OTLP{store: newStore(), Addr: ln.Addr().String(), srv: grpc.NewServer()}
	collectortrace.RegisterTraceServiceServer(o.srv, o)
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
