package telemetry

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
	collectorlogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
)

// OTelLogOptions configure the OpenTelemetry access logs of Sinks.
type OTelLogOptions struct {
	// Collectors reach the collector clusters. Required.
	Collectors Collectors
	// NodeID, Zone and ServiceCluster fill Envoy's builtin resource
	// labels node_name, zone_name and cluster_name.
	NodeID, Zone, ServiceCluster string
	// ExportInterval is the longest a record waits before its batch is
	// exported (Envoy's buffer_flush_interval default, 1s); MaxQueueSize
	// the records held for export, past which new ones are dropped
	// (default 2048); ExportTimeout bounds one export (default 5s).
	ExportInterval time.Duration
	MaxQueueSize   int
	ExportTimeout  time.Duration
}

// otelLogs holds one batching logger, off the request path, per distinct
// OTel sink (collector, log name, resource), made on first use and kept
// for the process's life.
type otelLogs struct {
	opts    OTelLogOptions
	loggers sync.Map // otelSinkKey -> *otelSink
	mu      sync.Mutex
	closed  bool
}

type otelSinkKey struct {
	cluster, authority, logName, resource string
}

type otelSink struct {
	lp     *sdklog.LoggerProvider
	logger otellog.Logger
}

func newOTelLogs(o OTelLogOptions) *otelLogs {
	if o.ExportInterval <= 0 {
		o.ExportInterval = time.Second
	}
	if o.MaxQueueSize <= 0 {
		o.MaxQueueSize = 2048
	}
	if o.ExportTimeout <= 0 {
		o.ExportTimeout = 5 * time.Second
	}
	return &otelLogs{opts: o}
}

// resource is the sink's OTel resource: Envoy's builtin labels unless
// disabled, then the configured resource attributes.
func (o *otelLogs) resource(l *accesslog.OTelLog) []attribute.KeyValue {
	var kv []attribute.KeyValue
	if l.BuiltinLabels {
		kv = append(kv, attribute.String("log_name", l.LogName), attribute.String("zone_name", o.opts.Zone),
			attribute.String("cluster_name", o.opts.ServiceCluster), attribute.String("node_name", o.opts.NodeID))
	}
	for _, a := range l.ResourceAttributes {
		kv = append(kv, attribute.String(a.Key, a.Literal))
	}
	return kv
}

func (o *otelLogs) sink(l *accesslog.OTelLog) *otelSink {
	res := o.resource(l)
	var rk strings.Builder
	for _, kv := range res {
		rk.WriteString(string(kv.Key))
		rk.WriteByte(0)
		rk.WriteString(kv.Value.AsString())
		rk.WriteByte(0)
	}
	key := otelSinkKey{l.Cluster, l.Authority, l.LogName, rk.String()}
	if s, ok := o.loggers.Load(key); ok {
		return s.(*otelSink)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	if s, ok := o.loggers.Load(key); ok {
		return s.(*otelSink)
	}
	exp := &otlpLogExporter{c: o.opts.Collectors, cluster: l.Cluster, authority: l.Authority}
	lp := sdklog.NewLoggerProvider(
		sdklog.WithResource(resource.NewSchemaless(res...)),
		sdklog.WithProcessor(sdklog.NewBatchProcessor(exp, sdklog.WithExportInterval(o.opts.ExportInterval),
			sdklog.WithMaxQueueSize(o.opts.MaxQueueSize), sdklog.WithExportTimeout(o.opts.ExportTimeout))))
	s := &otelSink{lp: lp, logger: lp.Logger("loom-proxy")}
	o.loggers.Store(key, s)
	return s
}

// log emits e as one LogRecord of l: time the request's start, body and
// attributes formatted from e. It does not block on the export.
func (o *otelLogs) log(l *accesslog.OTelLog, e *Entry) {
	s := o.sink(l)
	if s == nil {
		return
	}
	var r otellog.Record
	r.SetTimestamp(e.StartTime)
	r.SetObservedTimestamp(time.Now())
	if l.Body != nil {
		r.SetBody(attribute.StringValue(string(l.Body.Append(nil, e))))
	}
	for _, a := range l.Attributes {
		r.AddAttributes(attribute.String(a.Key, string(a.Value.Append(nil, e))))
	}
	ctx := context.Background()
	if e.TraceID.IsValid() {
		// Envoy's OpenTelemetry access logger sets the record's trace_id
		// and span_id from the request's active span; the SDK takes them
		// from the context.
		ctx = trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: e.TraceID, SpanID: e.SpanID}))
	}
	s.logger.Emit(ctx, r)
}

// shutdown exports what is queued and stops every sink.
func (o *otelLogs) shutdown(ctx context.Context) error {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	var errs []error
	o.loggers.Range(func(_, v any) bool {
		errs = append(errs, v.(*otelSink).lp.Shutdown(ctx))
		return true
	})
	return errors.Join(errs...)
}

// otlpLogExporter sends batches to the collector cluster's OTLP
// LogsService over the cluster manager's gRPC connection (so exports get
// the cluster's load balancing and transport socket).
type otlpLogExporter struct {
	c                  Collectors
	cluster, authority string
}

func (x *otlpLogExporter) Export(ctx context.Context, records []sdklog.Record) error {
	if len(records) == 0 {
		return nil
	}
	cc, err := x.c.GRPC(x.cluster, x.authority)
	if err != nil {
		return err
	}
	_, err = collectorlogs.NewLogsServiceClient(cc).Export(ctx, &collectorlogs.ExportLogsServiceRequest{
		ResourceLogs: toResourceLogs(records)})
	return err
}

func (x *otlpLogExporter) Shutdown(context.Context) error   { return nil } // the cluster manager owns the connection
func (x *otlpLogExporter) ForceFlush(context.Context) error { return nil }

// toResourceLogs is records (all of one provider, hence one resource and
// scope) as OTLP. Only string bodies and attributes occur.
func toResourceLogs(records []sdklog.Record) []*logspb.ResourceLogs {
	out := make([]*logspb.LogRecord, 0, len(records))
	for i := range records {
		r := &records[i]
		lr := &logspb.LogRecord{
			TimeUnixNano:         uint64(r.Timestamp().UnixNano()),
			ObservedTimeUnixNano: uint64(r.ObservedTimestamp().UnixNano()),
		}
		// trace_id and span_id as Envoy's populateTraceContext: set
		// only when the request had a span; no flags.
		if tid := r.TraceID(); tid.IsValid() {
			lr.TraceId = tid[:]
		}
		if sid := r.SpanID(); sid.IsValid() {
			lr.SpanId = sid[:]
		}
		if b := r.Body(); b.Type() == attribute.STRING {
			lr.Body = stringAny(b.AsString())
		}
		r.WalkAttributes(func(kv attribute.KeyValue) bool {
			lr.Attributes = append(lr.Attributes, &commonpb.KeyValue{Key: string(kv.Key), Value: stringAny(kv.Value.Emit())})
			return true
		})
		out = append(out, lr)
	}
	res := &resourcepb.Resource{}
	if rs := records[0].Resource(); rs != nil {
		for _, kv := range rs.Attributes() {
			res.Attributes = append(res.Attributes, &commonpb.KeyValue{Key: string(kv.Key), Value: stringAny(kv.Value.Emit())})
		}
	}
	scope := records[0].InstrumentationScope()
	return []*logspb.ResourceLogs{{Resource: res, ScopeLogs: []*logspb.ScopeLogs{{
		Scope:      &commonpb.InstrumentationScope{Name: scope.Name, Version: scope.Version},
		LogRecords: out,
	}}}}
}

func stringAny(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}
