// Package metricnames is the one list of the Prometheus metric families
// Loom emits: the proxies' Istio standard metrics (15090
// /stats/prometheus) and loomd's control-plane metrics (15014 /metrics).
// The Grafana dashboards under manifests/addons/grafana may query only
// these (their test checks it), and the emitters' tests check that what
// they export is listed. It imports nothing but the standard library.
package metricnames

import "strings"

// Type is a metric family's Prometheus type.
type Type string

// The types the list uses.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// ProxyLabels are the labels of Istio's standard metrics, in the order
// of Istio's stats filter
// (https://istio.io/latest/docs/reference/config/metrics/#labels): loomd
// checks Telemetry tag overrides against them, the proxy emits them.
var ProxyLabels = []string{
	"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision",
	"source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_app", "destination_version", "destination_service",
	"destination_canonical_service", "destination_canonical_revision",
	"destination_service_name", "destination_service_namespace", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags",
	"connection_security_policy",
}

// Proxy are Istio's standard metrics as every proxy exports them, with
// Istio's labels (reporter, source_*, destination_*, request_protocol,
// response_code, grpc_response_status, response_flags,
// connection_security_policy).
var Proxy = map[string]Type{
	"istio_requests_total":                Counter,
	"istio_request_duration_milliseconds": Histogram,
	"istio_request_bytes":                 Histogram,
	"istio_response_bytes":                Histogram,
	"istio_request_messages_total":        Counter,
	"istio_response_messages_total":       Counter,
	"istio_tcp_sent_bytes_total":          Counter,
	"istio_tcp_received_bytes_total":      Counter,
	"istio_tcp_connections_opened_total":  Counter,
	"istio_tcp_connections_closed_total":  Counter,
}

// ControlPlane are loomd's metrics with istiod's names (pilot_*, galley_*,
// citadel_server_*) and Loom's own (loom_*).
var ControlPlane = map[string]Type{
	"pilot_xds":                      Gauge,
	"pilot_xds_pushes":               Counter,
	"pilot_total_xds_rejects":        Counter,
	"pilot_proxy_convergence_time":   Histogram,
	"pilot_xds_push_time":            Histogram,
	"pilot_debounce_time":            Histogram,
	"pilot_pushcontext_init_seconds": Histogram,
	"pilot_services":                 Gauge,
	"pilot_virt_services":            Gauge,

	"galley_validation_passed": Counter,
	"galley_validation_failed": Counter,
	"loom_config_errors":       Gauge,

	"citadel_server_csr_count":                    Counter,
	"citadel_server_success_cert_issuance_count":  Counter,
	"citadel_server_authentication_failure_count": Counter,
	"citadel_server_csr_parsing_err_count":        Counter,
	"citadel_server_csr_sign_err_count":           Counter,
	"citadel_server_root_cert_expiry_timestamp":   Gauge,
	"citadel_server_root_cert_expiry_seconds":     Gauge,
	"citadel_server_cert_chain_expiry_timestamp":  Gauge,
	"citadel_server_cert_chain_expiry_seconds":    Gauge,
	"loom_ca_last_issued_cert_expiry_timestamp":   Gauge,
}

// Runtime are the Go runtime's and the process's metrics that loomd
// exports (client_golang's collectors) and the dashboards use.
var Runtime = map[string]Type{
	"process_cpu_seconds_total":     Counter,
	"process_resident_memory_bytes": Gauge,
	"go_goroutines":                 Gauge,
	"go_memstats_heap_alloc_bytes":  Gauge,
}

// Lookup returns the family of a series name: the name itself, or for a
// histogram's _bucket, _sum and _count series the histogram's name; ok is
// false when Loom emits no such family.
func Lookup(series string) (family string, t Type, ok bool) {
	for _, m := range []map[string]Type{Proxy, ControlPlane, Runtime} {
		if t, ok := m[series]; ok {
			return series, t, true
		}
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(series, suffix)
		if !found {
			continue
		}
		for _, m := range []map[string]Type{Proxy, ControlPlane} {
			if m[base] == Histogram {
				return base, Histogram, true
			}
		}
	}
	return "", "", false
}
