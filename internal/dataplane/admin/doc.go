// Package admin is the proxy's admin HTTP server (Envoy's admin interface,
// port 15000): /config_dump, /ready, /stats/prometheus, /clusters and
// /certs, and /agent for the certificate agent's state.
//
// It reads the published Generation and the metrics registry; it never
// changes proxy state.
//
// It must not import internal/controlplane.
package admin
