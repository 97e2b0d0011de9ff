package upstream

import "github.com/loom-mesh/loom/internal/dataplane/config"

// updateLB takes the load-balancing settings of a new generation of c.
func (st *clusterState) updateLB(c *config.Cluster) {}

// lbDone ends h's active request (LEAST_REQUEST).
func (st *clusterState) lbDone(h *Host) {}
