// Package upstream is the proxy's cluster manager: per cluster, its load
// balancer over healthy endpoints, circuit breakers, outlier detection and
// connection pools (HTTP/1.1, h2c, and the same over TLS), all keyed by
// cluster name so that they survive config generations.
//
// Each endpoint is reached over the transport socket its cluster's
// transport_socket_matches choose (Istio's auto mTLS: TLS for endpoints
// labelled tlsMode: istio). Pools are keyed by transport as well as by
// address, so a TLS and a plaintext connection to one address never mix;
// TLS origination resolves its client certificate and trust bundle by
// name in the secret store at each handshake.
//
// Data flow: the proxy calls ClusterManager.Update with each new
// Generation before publishing it; internal/dataplane/http calls Pick per
// request attempt with the *config.Cluster of the generation it loaded,
// and internal/dataplane/tcp calls Pick and Host.Dial per connection.
//
// It must not import internal/controlplane.
package upstream
