// Package telemetry is the proxy's access log and request metrics.
//
// The access log writes one line per request in Istio's default text format
// (Envoy's %START_TIME% ... %ROUTE_NAME%) through a buffered writer flushed
// at least every FlushInterval, so a request costs no syscall. Metrics are
// Prometheus counters with Envoy's and Loom's names, their label values
// bounded by config (listener and cluster names) and by small fixed sets
// (response codes and flags).
//
// Tracing makes Envoy-style spans with the OpenTelemetry SDK (tracing.go):
// the connection manager calls Tracing.StartSpan for a chain with tracing,
// Span.Inject before forwarding and Span.End with the request's Entry;
// spans are batched and exported off the request path through the
// collector's cluster.
//
// Data flow: internal/dataplane/http calls AccessLog.Log and
// Metrics.Request once per request; admin serves Metrics.Registry.
//
// It must not import internal/controlplane.
package telemetry
