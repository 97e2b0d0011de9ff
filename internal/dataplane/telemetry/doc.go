// Package telemetry is the proxy's access log and request metrics.
//
// The access log writes one line per request in Istio's default text format
// (Envoy's %START_TIME% ... %ROUTE_NAME%) through a buffered writer flushed
// at least every FlushInterval, so a request costs no syscall. Metrics are
// Prometheus counters with Envoy's and Loom's names, their label values
// bounded by config (listener and cluster names) and by small fixed sets
// (response codes and flags).
//
// Data flow: internal/dataplane/http calls AccessLog.Log and
// Metrics.Request once per request; admin serves Metrics.Registry.
//
// It must not import internal/controlplane.
package telemetry
