package filter

import "github.com/loom-mesh/loom/internal/dataplane/routestats"

// Deps are what Factory.Build may use besides the filter's config: facts of
// the generation being built and of the proxy. The zero value is valid: no
// cluster exists, which is what a config validated without a running proxy
// (a bootstrap check, a unit test) sees. Calls to clusters go through the
// request's State.Upstreams.
type Deps struct {
	// HasCluster reports whether the generation being built has a cluster
	// named name. Nil means it has none. A filter that names a cluster
	// (envoy_grpc.cluster_name) fails Build when it is absent, as Envoy
	// refuses an unknown gRPC client cluster.
	HasCluster func(name string) bool
	// ServiceCluster is the proxy's service cluster: the xDS node's
	// cluster (Envoy's --service-cluster), which the source_cluster rate
	// limit action reads.
	ServiceCluster string
	// RouteStats, when set, gives the stats handle of a route with a
	// stat_prefix (Route.stat_prefix) in the virtual host named vhost; nil
	// keeps no route stats. It must not block.
	RouteStats func(vhost, statPrefix string) *routestats.Stats
}
