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
// service.
func (m *ClusterManager) meshEndpoint(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return addr
	}
	np := m.names.Load()
	if np == nil {
		return addr
	}
	c := (*np)[addr]
	if c == nil {
		return addr
	}
	h, err := m.Pick(c, PickOptions{})
	if err != nil {
		return addr // the resolver will say the name is unknown
	}
	h.Done(Result{})
	return h.Addr
}
