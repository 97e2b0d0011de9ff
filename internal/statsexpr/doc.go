// Package statsexpr parses the value expressions of Istio metric tags
// (the Telemetry API's metrics[].overrides[].tagOverrides[].value, the
// stats filter's MetricConfig.dimensions): the subset of CEL over Envoy's
// attributes that Loom's proxy evaluates.
//
// It is the one parser both planes use: loomd (translate) sends only what
// it parses, replacing the rest with 'unknown', and the proxy's stats
// filter (dataplane/istiostats) parses the same text into what it
// evaluates, so the two cannot disagree. It is a leaf: it imports only
// the standard library (internal/archtest keeps it so).
package statsexpr
