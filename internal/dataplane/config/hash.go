package config

import (
	"net/http"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// HashPolicy is one envoy.config.route.v3.RouteAction.HashPolicy: where a
// consistent-hash load balancer (RING_HASH, MAGLEV) takes its key from.
type HashPolicy struct{}

// buildHashPolicies parses RouteAction.hash_policy at path.
func buildHashPolicies(path string, hps []*routev3.RouteAction_HashPolicy) ([]HashPolicy, error) {
	if len(hps) > 0 {
		return nil, ferr(path, "not supported")
	}
	return nil, nil
}

// RequestHash computes the request's hash from r.HashPolicies, as Envoy
// does: ok is false when no policy produced a key (the load balancer then
// picks at random). downstreamIP is the client's address for
// connection_properties.source_ip. setCookie is non-nil when a cookie
// policy with a ttl found no cookie and generated one: the caller adds it
// to the response as Set-Cookie.
func (r *Route) RequestHash(req *http.Request, downstreamIP string) (hash uint64, ok bool, setCookie *http.Cookie) {
	return 0, false, nil
}
