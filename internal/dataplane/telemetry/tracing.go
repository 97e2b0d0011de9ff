package telemetry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/zipkin"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// Collectors reach the clusters spans are exported through; the proxy's
// cluster manager (upstream.ClusterManager) is one, so exports get the
// clusters' load balancing and transport sockets.
type Collectors interface {
	// RoundTrip sends req to an endpoint of cluster.
	RoundTrip(cluster string, req *http.Request) (*http.Response, error)
	// GRPC returns a connection to cluster, kept across calls.
	GRPC(cluster, authority string) (grpc.ClientConnInterface, error)
}

// TracingOptions configure Tracing.
type TracingOptions struct {
	// Collectors export spans. Required.
	Collectors Collectors
	// NodeID and Zone are the node_id and zone span tags (Envoy's local
	// info); ServiceCluster is the node's cluster, Zipkin's service name.
	NodeID, Zone, ServiceCluster string
	// Getenv reads environment custom tags; nil: none is set (their
	// default applies).
	Getenv func(string) string
	Logger *slog.Logger
	// BatchTimeout is the longest a finished span waits before its batch
	// is exported (default 1s); MaxQueueSize the spans held for export,
	// past which new ones are dropped (default 2048).
	BatchTimeout time.Duration
	MaxQueueSize int
}

// Tracing holds one exporter, batching off the request path, per
// distinct config.TraceProvider, made on first use and kept across
// generations. It is safe for concurrent use; a nil *Tracing traces
// nothing.
type Tracing struct {
	opts TracingOptions
	// tracers is copied on write; requests only Load it.
	tracers atomic.Pointer[map[config.TraceProvider]*tracer]
	// mu guards writes to tracers and closed.
	mu     sync.Mutex
	closed bool
}

// NewTracing makes a Tracing. It fails when Collectors is nil.
func NewTracing(o TracingOptions) (*Tracing, error) {
	if o.Collectors == nil {
		return nil, errors.New("tracing: Collectors is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BatchTimeout <= 0 {
		o.BatchTimeout = time.Second
	}
	if o.MaxQueueSize <= 0 {
		o.MaxQueueSize = sdktrace.DefaultMaxQueueSize
	}
	t := &Tracing{opts: o}
	t.tracers.Store(&map[config.TraceProvider]*tracer{})
	return t, nil
}

// Shutdown exports the spans still queued, within ctx, and stops every
// exporter; later requests are not traced. It is safe to call more than
// once.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	t.closed = true
	m := *t.tracers.Load()
	t.tracers.Store(&map[config.TraceProvider]*tracer{})
	t.mu.Unlock()
	var errs []error
	for _, tr := range m {
		errs = append(errs, tr.tp.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// ForceFlush exports every queued span now (tests, and a proxy about to
// exit).
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var errs []error
	for _, tr := range *t.tracers.Load() {
		errs = append(errs, tr.tp.ForceFlush(ctx))
	}
	return errors.Join(errs...)
}

// tracer is one provider's exporter and its SDK tracer.
type tracer struct {
	tp       *sdktrace.TracerProvider
	tr       trace.Tracer
	inject   propagation.TextMapPropagator
	injectB3 bool // write B3 headers (beside W3C for OpenTelemetry)
}

// get returns p's tracer, making it on first use; nil after Shutdown or
// when the exporter cannot be made (logged).
func (t *Tracing) get(p config.TraceProvider) *tracer {
	if tr, ok := (*t.tracers.Load())[p]; ok {
		return tr
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	old := *t.tracers.Load()
	if tr, ok := old[p]; ok {
		return tr
	}
	tr, err := t.newTracer(p)
	if err != nil {
		t.opts.Logger.Error("tracing provider unusable; its spans are dropped", "cluster", p.Cluster, "err", err)
	}
	m := make(map[config.TraceProvider]*tracer, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[p] = tr // nil on error: not retried per request
	t.tracers.Store(&m)
	return tr
}

func (t *Tracing) newTracer(p config.TraceProvider) (*tracer, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	authority := p.Authority
	if authority == "" {
		authority = p.Cluster
	}
	var (
		exp      sdktrace.SpanExporter
		service  string
		inject   []propagation.TextMapPropagator
		injectB3 bool
		ids      sdktrace.IDGenerator
	)
	switch p.Kind {
	case config.TracerKindOpenTelemetry:
		exp = otlptrace.NewUnstarted(&otlpClient{c: t.opts.Collectors, cluster: p.Cluster, authority: authority, timeout: timeout})
		service = p.ServiceName
		inject = []propagation.TextMapPropagator{propagation.TraceContext{}}
		injectB3 = true
	case config.TracerKindZipkin:
		z, err := zipkin.New("http://"+authority+p.Path, zipkin.WithClient(&http.Client{
			Timeout:   timeout,
			Transport: clusterTransport{c: t.opts.Collectors, cluster: p.Cluster},
		}))
		if err != nil {
			return nil, fmt.Errorf("zipkin exporter: %w", err)
		}
		exp = z
		service = t.opts.ServiceCluster
		injectB3 = true
		if p.ZipkinW3C {
			inject = append(inject, propagation.TraceContext{})
		}
		if p.ZipkinTraceID64 {
			ids = traceID64{}
		}
	default:
		return nil, fmt.Errorf("tracer kind %d: unknown", p.Kind)
	}
	if injectB3 {
		inject = append(inject, b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)))
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(t.opts.BatchTimeout), sdktrace.WithMaxQueueSize(t.opts.MaxQueueSize),
			sdktrace.WithExportTimeout(timeout)),
		sdktrace.WithSampler(decisionSampler{}),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	}
	if ids != nil {
		opts = append(opts, sdktrace.WithIDGenerator(ids))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return &tracer{tp: tp, tr: tp.Tracer("loom-proxy"), inject: propagation.NewCompositeTextMapPropagator(inject...), injectB3: injectB3}, nil
}

// otlpClient is otlptrace's Client over the collector cluster's gRPC
// connection (the OTLP TraceService's Export).
type otlpClient struct {
	c                  Collectors
	cluster, authority string
	timeout            time.Duration
}

func (o *otlpClient) Start(context.Context) error { return nil }
func (o *otlpClient) Stop(context.Context) error  { return nil } // the cluster manager owns the connection

func (o *otlpClient) UploadTraces(ctx context.Context, spans []*tracepb.ResourceSpans) error {
	cc, err := o.c.GRPC(o.cluster, o.authority)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	_, err = collectortrace.NewTraceServiceClient(cc).Export(ctx, &collectortrace.ExportTraceServiceRequest{ResourceSpans: spans})
	return err
}

// clusterTransport sends the Zipkin exporter's requests to its cluster.
type clusterTransport struct {
	c       Collectors
	cluster string
}

func (ct clusterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return ct.c.RoundTrip(ct.cluster, req)
}

// traceID64 makes Zipkin's 64-bit trace ids (trace_id_128bit false): the
// high half of a new trace id is zero.
type traceID64 struct{}

func (traceID64) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	var sid trace.SpanID
	_, _ = rand.Read(tid[8:])
	_, _ = rand.Read(sid[:])
	return tid, sid
}

func (traceID64) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	var sid trace.SpanID
	_, _ = rand.Read(sid[:])
	return sid
}

// decisionKey carries the connection manager's sampling decision to
// decisionSampler.
type decisionKey struct{}

// decisionSampler samples as the connection manager decided (Envoy's
// tracing decision: the parent's flag, else client/random/overall
// sampling), which differs per HTTP connection manager while the SDK's
// sampler is per provider.
type decisionSampler struct{}

func (decisionSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	d := sdktrace.Drop
	if v, _ := p.ParentContext.Value(decisionKey{}).(bool); v {
		d = sdktrace.RecordAndSample
	}
	return sdktrace.SamplingResult{Decision: d, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
}

func (decisionSampler) Description() string { return "EnvoyTracingDecision" }

// extractors read an incoming trace context: W3C first, then B3 (single
// header, then multi header).
var (
	w3c       = propagation.TraceContext{}
	b3Extract = b3.New()
)

// Span is a request's span (the connection manager's, and the router's
// upstream span when spawn_upstream_span is set). A nil *Span does
// nothing.
type Span struct {
	t    *Tracing
	tr   *tracer
	cfg  *config.Tracing
	ctx  context.Context
	span trace.Span
	// parent is the parent span's id (zero for a root span), for
	// x-b3-parentspanid.
	parent trace.SpanID
	// b3single: the request carried the single b3 header, which is then
	// rewritten rather than left stale.
	b3single bool
	// responseOperation is the ingress route's decorator the response
	// carries back in x-envoy-decorator-operation ("" none).
	responseOperation string
}

// HeaderDecoratorOperation carries a route decorator's operation between
// proxies, as Envoy's x-envoy-decorator-operation: an egress proxy sends
// its route's upstream and the ingress proxy names its server span with
// it; an ingress proxy returns its own in the response and the egress
// proxy names its client span with that.
const HeaderDecoratorOperation = "X-Envoy-Decorator-Operation"

// decorate applies Envoy's traceRequest to the request headers h: egress
// sends route's operation upstream when it propagates; ingress takes the
// operation a client sent, which it returns (removing the header so the
// app never sees it). It returns that client's operation, "" when none.
func decorate(h http.Header, egress bool, route *config.Route) string {
	if egress {
		if route != nil && route.Operation != "" && route.PropagateOperation {
			h[HeaderDecoratorOperation] = []string{route.Operation}
		}
		return ""
	}
	v, ok := h[HeaderDecoratorOperation]
	if !ok {
		return ""
	}
	delete(h, HeaderDecoratorOperation)
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// DecorateResponse applies Envoy's decorator rules to the response
// headers h before they go downstream: an ingress span returns its route's
// operation; an egress span takes the upstream's as its name and removes
// it, so the app never sees it. Nil-safe.
func (s *Span) DecorateResponse(h http.Header) {
	if s == nil {
		return
	}
	if !s.cfg.Egress {
		if s.responseOperation != "" {
			h[HeaderDecoratorOperation] = []string{s.responseOperation}
		}
		return
	}
	if v, ok := h[HeaderDecoratorOperation]; ok {
		if len(v) > 0 && v[0] != "" {
			s.span.SetName(v[0])
		}
		delete(h, HeaderDecoratorOperation)
	}
}

// StartSpan starts the connection manager's span for r under cfg, as
// Envoy's traceRequest: the parent is the incoming W3C or B3 context, the
// sampling decision the parent's flag, else x-envoy-force-trace, else
// x-client-trace-id with client_sampling, else random_sampling; then
// overall_sampling. host is the request's authority, requestID its
// x-request-id, route the matched route (nil: none), whose decorator
// names the span (DecorateRequest). An unsampled span is not recorded, but
// its context is propagated (flags 00). It returns nil when t is nil or
// the provider is unusable.
func (t *Tracing) StartSpan(r *http.Request, cfg *config.Tracing, host, requestID string, route *config.Route) *Span {
	if t == nil {
		return nil
	}
	tr := t.get(cfg.Provider)
	if tr == nil {
		return nil
	}
	carrier := propagation.HeaderCarrier(r.Header)
	ctx := r.Context()
	var parent trace.SpanContext
	if _, ok := r.Header["Traceparent"]; ok {
		ctx = w3c.Extract(ctx, carrier)
		parent = trace.SpanContextFromContext(ctx)
	}
	if !parent.IsValid() && (r.Header["B3"] != nil || r.Header["X-B3-Traceid"] != nil) {
		ctx = b3Extract.Extract(r.Context(), carrier)
		parent = trace.SpanContextFromContext(ctx)
	}
	var sampled bool
	switch {
	case parent.IsValid():
		sampled = parent.IsSampled()
	case r.Header.Get("X-Envoy-Force-Trace") != "":
		sampled = true
	case r.Header.Get("X-Client-Trace-Id") != "" && roll(cfg.ClientSampling):
		sampled = true
	default:
		sampled = roll(cfg.RandomSampling)
	}
	sampled = sampled && roll(cfg.OverallSampling)
	ctx = context.WithValue(ctx, decisionKey{}, sampled)

	kind := trace.SpanKindClient
	name := "egress " + host
	if !cfg.Egress {
		name = "ingress"
	}
	if !cfg.Egress || cfg.SpawnUpstreamSpan {
		kind = trace.SpanKindServer
	}
	if route != nil && route.Operation != "" {
		name = route.Operation
	}
	op := decorate(r.Header, cfg.Egress, route)
	if op != "" {
		name = op
	}
	ctx, span := tr.tr.Start(ctx, name, trace.WithSpanKind(kind))
	s := &Span{t: t, tr: tr, cfg: cfg, ctx: ctx, span: span, b3single: r.Header.Get("B3") != ""}
	if !cfg.Egress && op == "" && route != nil && route.PropagateOperation {
		s.responseOperation = route.Operation
	}
	if parent.IsValid() {
		s.parent = parent.SpanID()
	}
	if span.IsRecording() {
		s.requestTags(r, host, requestID)
	}
	return s
}

// roll is true with probability pct percent.
func roll(pct float64) bool {
	switch {
	case pct >= 100:
		return true
	case pct <= 0:
		return false
	}
	return mrand.Float64()*100 < pct
}

// requestTags are Envoy's request span tags and the custom tags.
func (s *Span) requestTags(r *http.Request, host, requestID string) {
	proto := r.Header.Get("X-Forwarded-Proto")
	if proto == "" {
		proto = "http"
		if r.TLS != nil {
			proto = "https"
		}
	}
	path := r.Header.Get("X-Envoy-Original-Path")
	if path == "" {
		path = r.URL.RequestURI()
	}
	url := proto + "://" + host + path
	if n := s.cfg.MaxPathTagLength; n > 0 && len(url) > n {
		url = url[:n]
	}
	orDash := func(v string) string {
		if v == "" {
			return "-"
		}
		return v
	}
	protocol := r.Proto
	if r.ProtoMajor == 2 {
		protocol = "HTTP/2"
	}
	peer := r.RemoteAddr
	if h, _, err := net.SplitHostPort(peer); err == nil {
		peer = h
	}
	attrs := make([]attribute.KeyValue, 0, 12+len(s.cfg.CustomTags))
	attrs = append(attrs,
		attribute.String("component", "proxy"),
		attribute.String("node_id", s.t.opts.NodeID),
		attribute.String("zone", s.t.opts.Zone),
		attribute.String("guid:x-request-id", requestID),
		attribute.String("http.url", url),
		attribute.String("http.method", r.Method),
		attribute.String("downstream_cluster", orDash(r.Header.Get("X-Envoy-Downstream-Service-Cluster"))),
		attribute.String("user_agent", orDash(r.Header.Get("User-Agent"))),
		attribute.String("http.protocol", protocol),
		attribute.String("peer.address", peer),
	)
	if v := r.Header.Get("X-Client-Trace-Id"); v != "" {
		attrs = append(attrs, attribute.String("guid:x-client-trace-id", v))
	}
	s.span.SetAttributes(s.customTags(attrs, r)...)
}

// customTags appends the custom tags' values for r to attrs.
func (s *Span) customTags(attrs []attribute.KeyValue, r *http.Request) []attribute.KeyValue {
	for i := range s.cfg.CustomTags {
		ct := &s.cfg.CustomTags[i]
		var v string
		switch ct.Kind {
		case config.TagLiteral:
			v = ct.Value
		case config.TagEnvironment:
			if s.t.opts.Getenv != nil {
				v = s.t.opts.Getenv(ct.Name)
			}
		case config.TagRequestHeader:
			v = r.Header.Get(ct.Name)
		case config.TagMetadata:
			// The proxy's filters write no dynamic metadata: as Envoy
			// with the key absent, only the default applies.
		}
		if v == "" {
			v = ct.Default
		}
		if v == "" && ct.Kind != config.TagLiteral {
			continue
		}
		attrs = append(attrs, attribute.String(ct.Tag, v))
	}
	return attrs
}

// Inject writes the span's context into h for the upstream request:
// traceparent/tracestate and/or B3 per the provider, and the single b3
// header when the request came with one. Stale B3 parent and flags
// headers are removed.
func (s *Span) Inject(h http.Header) {
	if s == nil {
		return
	}
	s.tr.inject.Inject(s.ctx, propagation.HeaderCarrier(h))
	if s.tr.injectB3 {
		delete(h, "X-B3-Parentspanid")
		delete(h, "X-B3-Flags")
		if s.parent.IsValid() {
			h["X-B3-Parentspanid"] = []string{s.parent.String()}
		}
	}
	if s.b3single {
		b3.New(b3.WithInjectEncoding(b3.B3SingleHeader)).Inject(s.ctx, propagation.HeaderCarrier(h))
	}
	if tid := s.span.SpanContext().TraceID(); s.tr.injectB3 && tid[0]|tid[1]|tid[2]|tid[3]|tid[4]|tid[5]|tid[6]|tid[7] == 0 {
		// A 64-bit trace id (Zipkin's trace_id_128bit false) is
		// written as 16 hex digits, as B3 and Envoy write it.
		if v := h["X-B3-Traceid"]; len(v) == 1 && len(v[0]) == 32 {
			h["X-B3-Traceid"] = []string{v[0][16:]}
		}
		if v := h["B3"]; len(v) == 1 && len(v[0]) > 32 {
			h["B3"] = []string{v[0][16:]}
		}
	}
}

// TraceID is the span's trace id in hex ("" for nil).
func (s *Span) TraceID() string {
	if s == nil {
		return ""
	}
	return s.span.SpanContext().TraceID().String()
}

// IDs are the span's trace and span id, valid whether or not it is
// sampled (an unsampled span is propagated too); zero for nil.
func (s *Span) IDs() (trace.TraceID, trace.SpanID) {
	if s == nil {
		return trace.TraceID{}, trace.SpanID{}
	}
	sc := s.span.SpanContext()
	return sc.TraceID(), sc.SpanID()
}

// SpawnsUpstream reports whether the router starts its own client span
// under s (spawn_upstream_span); false for nil.
func (s *Span) SpawnsUpstream() bool { return s != nil && s.cfg.SpawnUpstreamSpan }

// StartUpstream starts the router's client span under s for r to cluster
// (spawn_upstream_span), named as Envoy's "router CLUSTER egress", with
// Envoy's upstream tags and the custom tags.
func (s *Span) StartUpstream(r *http.Request, cluster string) *Span {
	if s == nil {
		return nil
	}
	// The child inherits the parent's decision through the context.
	ctx, span := s.tr.tr.Start(s.ctx, "router "+cluster+" egress", trace.WithSpanKind(trace.SpanKindClient))
	c := &Span{t: s.t, tr: s.tr, cfg: s.cfg, ctx: ctx, span: span, b3single: s.b3single, parent: s.span.SpanContext().SpanID()}
	if span.IsRecording() {
		protocol := r.Proto
		if r.ProtoMajor == 2 {
			protocol = "HTTP/2"
		}
		span.SetAttributes(c.customTags([]attribute.KeyValue{attribute.String("component", "proxy"),
			attribute.String("upstream_cluster", cluster), attribute.String("upstream_cluster.name", cluster),
			attribute.String("http.protocol", protocol)}, r)...)
	}
	return c
}

// End finishes the span with Envoy's response tags from e (the access
// log entry of the request).
func (s *Span) End(e *Entry) {
	if s == nil {
		return
	}
	if s.span.IsRecording() {
		flags := e.ResponseFlags
		if flags == "" {
			flags = "-"
		}
		s.span.SetAttributes(
			attribute.String("request_size", strconv.FormatInt(e.BytesReceived, 10)),
			attribute.String("response_size", strconv.FormatInt(e.BytesSent, 10)),
			attribute.String("upstream_cluster", orDashS(e.UpstreamCluster)),
			attribute.String("upstream_cluster.name", orDashS(e.UpstreamCluster)),
			attribute.String("http.status_code", strconv.Itoa(e.ResponseCode)),
			attribute.String("response_flags", flags),
		)
		if e.UpstreamHost != "" {
			s.span.SetAttributes(attribute.String("upstream_address", e.UpstreamHost))
		}
		if e.ResponseCode == 0 || e.ResponseCode >= 500 {
			s.span.SetAttributes(attribute.String("error", "true"))
			s.span.SetStatus(codes.Error, "")
		}
	}
	s.span.End()
}

func orDashS(v string) string {
	if v == "" {
		return "-"
	}
	return v
}
