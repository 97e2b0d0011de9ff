// Package tcp is the proxy's envoy.filters.network.tcp_proxy: per accepted
// connection it loads the current Generation once, takes the listener's
// TcpProxy, picks a cluster (cluster or weighted_clusters, by the same
// golden-ratio sequence as HTTP routes) and an endpoint through the
// upstream ClusterManager, dials it within the cluster's connect_timeout
// and copies bytes both ways until both sides are done.
//
// Data flow: listener (accepted connection) -> Proxy.ServeConn ->
// upstream.ClusterManager.Pick -> net.Dialer -> io.Copy both ways between
// *net.TCPConn (splice(2) on Linux) -> one access log line per connection
// through internal/dataplane/telemetry.
//
// It must not import internal/controlplane.
package tcp
