package upstream

import (
	"net"
	"net/netip"
	"strconv"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// meshNames maps "HOST:PORT" of the mesh's services to their outbound
// cluster ("outbound|PORT||HOST", EDS or STATIC) in the latest generation.
// A host name a DNS cluster dials is looked up here before Go's resolver:
// in local mode there is no cluster DNS, and this gives what kube-dns and
// kube-proxy give on Kubernetes, an endpoint of the service.
type meshNames map[string]*config.Cluster

// updateMeshNames indexes gen's outbound service clusters; call with m.mu
// held.
func (m *ClusterManager) updateMeshNames(gen *config.Generation) {
	names := meshNames{}
	for name, c := range gen.Clusters {
		if c.DNSNetwork != "" || c.OriginalDst != nil {
			continue // a DNS cluster's name would resolve to itself
		}
		dir, port, subset, host, ok := xdsapi.ParseClusterName(name)
		if !ok || dir != xdsapi.Outbound || subset != "" || host == "" {
			continue
		}
		names[net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))] = c
	}
	m.names.Store(&names)
}

// meshEndpoint returns the address to dial for addr ("host:port"): an
// endpoint of the mesh service it names, picked by that service's
// cluster's balancer, or addr itself when it is an IP address or names no
// service. The pick is one attempt of the service's cluster, as
// dialCluster's: the caller calls done with the dial's error once the dial
// is over (never nil; a no-op when nothing was picked), so that the
// balancer's active count, the circuit breaker and outlier detection see
// the connection's outcome.
func (m *ClusterManager) meshEndpoint(addr string) (dial string, done func(error)) {
	noop := func(error) {}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, noop
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return addr, noop
	}
	np := m.names.Load()
	if np == nil {
		return addr, noop
	}
	c := (*np)[addr]
	if c == nil {
		return addr, noop
	}
	h, err := m.Pick(c, PickOptions{})
	if err != nil {
		return addr, noop // the resolver will say the name is unknown
	}
	return h.Addr, h.dialDone
}
