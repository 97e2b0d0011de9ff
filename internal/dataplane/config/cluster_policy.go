package config

import clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

// CircuitBreakers is envoy.config.cluster.v3.CircuitBreakers, thresholds
// of the DEFAULT priority.
type CircuitBreakers struct{}

// OutlierDetection is envoy.config.cluster.v3.OutlierDetection.
type OutlierDetection struct{}

// ConnectionOptions are a cluster's upstream connection settings.
type ConnectionOptions struct{}

// buildClusterPolicy parses c's circuit breakers, outlier detection and
// connection options into rc.
func buildClusterPolicy(c *clusterv3.Cluster, rc *Cluster) error {
	if c.GetOutlierDetection() != nil {
		return ferr("outlier_detection", "not supported")
	}
	return nil
}
