package translate

import (
	networking "istio.io/api/networking/v1alpha3"
)

// clusterTrafficPolicy returns the traffic policy of one outbound cluster:
// the DestinationRule's trafficPolicy for the cluster's port, then the
// subset's (nil subset: the service port's own cluster), as Istio's
// MergeSubsetTrafficPolicy:
//
//   - a portLevelSettings entry for port replaces its policy wholesale: a
//     field it omits takes the default, not the destination-level value;
//   - the subset's policy (itself resolved for port) then replaces the
//     loadBalancer, connectionPool, outlierDetection and tls it sets, or all
//     four when it has a portLevelSettings entry for port;
//   - retryBudget has no port-level form: the destination-level one stays
//     under a portLevelSettings entry, and the subset's replaces it when
//     set (Istio's MergeTrafficPolicy, istio/istio#59667).
//
// It returns nil when nothing applies. The result shares messages with dr
// and must not be modified.
func clusterTrafficPolicy(dr *networking.DestinationRule, subset *networking.Subset, port uint32) *networking.TrafficPolicy {
	base, _ := portTrafficPolicy(dr.GetTrafficPolicy(), port)
	if subset.GetTrafficPolicy() == nil {
		return base
	}
	sub, portLevel := portTrafficPolicy(subset.GetTrafficPolicy(), port)
	if base == nil {
		return sub
	}
	merged := shallowTrafficPolicy(base)
	if sub.ConnectionPool != nil || portLevel {
		merged.ConnectionPool = sub.ConnectionPool
	}
	if sub.OutlierDetection != nil || portLevel {
		merged.OutlierDetection = sub.OutlierDetection
	}
	if sub.LoadBalancer != nil || portLevel {
		merged.LoadBalancer = sub.LoadBalancer
	}
	if sub.Tls != nil || portLevel {
		merged.Tls = sub.Tls
	}
	if sub.Tunnel != nil {
		merged.Tunnel = sub.Tunnel
	}
	if sub.ProxyProtocol != nil {
		merged.ProxyProtocol = sub.ProxyProtocol
	}
	if sub.RetryBudget != nil {
		merged.RetryBudget = sub.RetryBudget
	}
	return merged
}

// portTrafficPolicy resolves tp for port: the portLevelSettings entry for
// port as a whole policy (portLevel true), else tp without its port-level
// settings. Nil tp gives nil.
func portTrafficPolicy(tp *networking.TrafficPolicy, port uint32) (_ *networking.TrafficPolicy, portLevel bool) {
	if tp == nil {
		return nil, false
	}
	for _, pls := range tp.GetPortLevelSettings() {
		if pls.GetPort() != nil && pls.GetPort().GetNumber() == port {
			return &networking.TrafficPolicy{
				LoadBalancer:     pls.GetLoadBalancer(),
				ConnectionPool:   pls.GetConnectionPool(),
				OutlierDetection: pls.GetOutlierDetection(),
				Tls:              pls.GetTls(),
				RetryBudget:      tp.GetRetryBudget(),
			}, true
		}
	}
	return shallowTrafficPolicy(tp), false
}

// shallowTrafficPolicy copies tp's top-level fields, without its
// portLevelSettings.
func shallowTrafficPolicy(tp *networking.TrafficPolicy) *networking.TrafficPolicy {
	return &networking.TrafficPolicy{
		LoadBalancer:     tp.GetLoadBalancer(),
		ConnectionPool:   tp.GetConnectionPool(),
		OutlierDetection: tp.GetOutlierDetection(),
		Tls:              tp.GetTls(),
		Tunnel:           tp.GetTunnel(),
		ProxyProtocol:    tp.GetProxyProtocol(),
		RetryBudget:      tp.GetRetryBudget(),
	}
}
