// Package ratelimit is Envoy's global rate limit HTTP filter
// (envoy.filters.http.ratelimit,
// envoy.extensions.filters.http.ratelimit.v3.RateLimit), which Istio's
// global rate limit task installs through an EnvoyFilter and Loom's
// RateLimitPolicy of scope global generates: for each request it makes the
// descriptors of the matched route's rate limits (RouteAction.rate_limits
// and VirtualHost.rate_limits of the filter's stage), asks the rate limit
// service of its cluster with envoy.service.ratelimit.v3.RateLimitService/
// ShouldRateLimit, and answers 429 with the response flag RL when any
// descriptor is over its limit. When the service cannot be asked (it is
// down, times out or answers an error) the request goes on, or with
// failure_mode_deny it gets 500 with the flag RLSE.
//
// Data flow: parsed by config.Build through its Factory, which checks that
// the service's cluster is in the config; runs in the HTTP connection
// manager's chain before the router, calling the service over the
// cluster's long-lived gRPC connection from the request's
// filter.State.Upstreams (one per cluster, kept across generations by the
// proxy's cluster manager). It must
// not import internal/dataplane/config, internal/dataplane/http or
// internal/controlplane.
package ratelimit
