// Package grafana holds Loom's Grafana dashboards (mesh, service,
// workload, control plane) as Grafana JSON, embedded for installers. They
// query Istio's metric names, so Istio's own habits carry over; the
// package's test checks each is a valid dashboard and that every metric
// it queries is one Loom emits (internal/metricnames).
package grafana

import "embed"

// Dashboards holds the dashboards' JSON files, loom-*.json.
//
//go:embed loom-*.json
var Dashboards embed.FS
