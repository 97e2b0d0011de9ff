// Package fault is Envoy's fault injection HTTP filter
// (envoy.filters.http.fault, envoy.extensions.filters.http.fault.v3.HTTPFault),
// which Istio's VirtualService http[].fault is translated to: a fixed delay
// and an abort (HTTP or gRPC status), each applied to a fraction of the
// requests of a route.
//
// Data flow: parsed by config.Build through its Factory; runs in the HTTP
// connection manager's chain before the router. It must not import
// internal/dataplane/config, internal/dataplane/http or internal/controlplane.
package fault
