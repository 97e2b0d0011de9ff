// Package localratelimit is Envoy's local rate limit HTTP filter
// (envoy.filters.http.local_ratelimit,
// envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit), which
// Istio installs through an EnvoyFilter (Istio's "local rate limit" task):
// a token bucket per listener filter, or per route or virtual host
// override, that answers requests over the limit with 429 and the response
// flag RL. Descriptors give requests buckets of their own: the route's rate
// limit actions of the filter's stage make the request's descriptors, each
// configured descriptor they match takes a token from its bucket, and a
// descriptor entry without a value gives each distinct value a bucket
// (Envoy's dynamic descriptors), as Loom's RateLimitPolicy uses for limits
// per header value.
//
// Data flow: parsed by config.Build through its Factory; runs in the HTTP
// connection manager's chain before the router. It must not import
// internal/dataplane/config, internal/dataplane/http or internal/controlplane.
package localratelimit
