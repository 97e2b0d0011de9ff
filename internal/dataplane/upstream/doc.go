// Package upstream is the proxy's cluster manager: per cluster, a
// round-robin picker over healthy endpoints and an HTTP connection pool
// (an http.Transport, HTTP/1.1 or h2c), all keyed by cluster name so that
// they survive config generations.
//
// Data flow: the proxy calls ClusterManager.Update with each new
// Generation before publishing it; internal/dataplane/http calls Pick per
// request attempt with the *config.Cluster of the generation it loaded.
//
// It must not import internal/controlplane.
package upstream
