// Package tcp is the proxy's envoy.filters.network.tcp_proxy: per accepted
// connection it takes its filter chain's TcpProxy, picks a cluster
// (cluster or weighted_clusters, by the same golden-ratio sequence as HTTP
// routes) and an endpoint through the upstream ClusterManager (an
// ORIGINAL_DST cluster: the connection's original destination), connects
// to it within the cluster's connect_timeout over the endpoint's transport
// socket (TLS origination included) and copies bytes both ways until both
// sides are done. Bytes the listener filters peeked (a ClientHello for SNI
// passthrough) are replayed upstream first.
//
// Data flow: listener (accepted connection, filter.Connection in ctx) ->
// Proxy.ServeConn -> upstream.ClusterManager.Pick -> Host.Dial -> io.Copy
// both ways (splice(2) between TCP sockets on Linux) -> one access log line
// per connection through internal/dataplane/telemetry.
//
// It must not import internal/controlplane.
package tcp
