// Package ratelimit is Loom's rate limit service: Envoy's
// envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit over gRPC,
// with envoyproxy/ratelimit's configuration format and semantics (domains
// of nested descriptors, key-only and prefix-wildcard entries, fixed
// windows per unit counted in Redis, shadow_mode, unlimited, replaces,
// hits_addend), so that the global rate limit of every proxy replica is
// one shared count.
//
// loomd runs it as a sub-server (--ratelimit-addr, --ratelimit-redis,
// --ratelimit-config): its configuration is the user's files plus the
// domain FromPolicies generates from the RateLimitPolicies of the config
// store, so a user of RateLimitPolicy writes no service config. Proxies
// reach it through a cluster (envoy_grpc) as they reach any rate limit
// service.
//
// It may import model and config; it must not import internal/dataplane.
package ratelimit
