package upstream

import "github.com/loom-mesh/loom/internal/dataplane/config"

// lbState is a cluster's load-balancer state across generations.
type lbState struct{}

// updateLB takes the load-balancing settings of a new generation of c.
func (st *clusterState) updateLB(c *config.Cluster) {}

// lbDone ends h's active request (LEAST_REQUEST).
func (st *clusterState) lbDone(h *Host) {}
