// Package http is the proxy's HTTP connection manager and router: per
// request it loads the current Generation once, finds the listener's route
// table, the virtual host for :authority and the first matching route,
// picks a cluster by weight and an endpoint through the upstream
// ClusterManager, and forwards the request with Envoy's retry, timeout and
// response-flag semantics (NR, NC, UH, UF, UC, UT, URX).
//
// Data flow: listener (accepted HTTP/1.1 or h2c request) -> ConnectionManager
// handler -> upstream.ClusterManager.Pick -> http.RoundTripper -> response
// streamed back with pooled buffers; one access log line and counter
// increments per request through internal/dataplane/telemetry.
//
// It must not import internal/controlplane.
package http
