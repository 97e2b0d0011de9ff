// Package istiostats is the proxy's side of Istio's stats filter
// (`istio.stats`): the compiled filter config (Config, from Istio's
// stats.PluginConfig, with its metric overrides and dimension
// expressions), the peer identities the metadata exchange carries, and
// the standard metrics themselves (istio_requests_total and the others,
// with Istio's labels).
//
// Data flow: internal/dataplane/config compiles each filter chain's
// istio.stats filters with Compile; the HTTP connection manager and the
// TCP proxy report every request and connection; admin serves the
// metrics on /stats/prometheus.
//
// It imports neither internal/dataplane/config nor
// internal/dataplane/telemetry (both depend on it), and never
// internal/controlplane.
package istiostats
