// Package filter is the framework of the proxy's HTTP filters (Envoy's
// http_filters of an HTTP connection manager, before the terminal router).
//
// Data flow: config.Build finds each filter's Factory in a Registry by the
// type URL of its typed_config, parses the HCM-level config and the
// route-level overrides (typed_per_filter_config) at the edge with Parse and
// ParseOverride, and compiles each listener's chain once per generation with
// Build. The HTTP connection manager matches the route first, puts a *State
// in the request's context and calls the chain; the router is the chain's
// last next handler.
//
// It must not import internal/dataplane/config or internal/dataplane/http
// (they import it), nor internal/controlplane.
package filter
