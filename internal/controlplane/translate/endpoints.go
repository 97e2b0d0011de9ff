package translate

import (
	"cmp"
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Istio's label that says a workload has a sidecar taking mTLS; in explicit
// mode it means "reach it through its sidecar's inbound port".
const (
	tlsModeLabel = "security.istio.io/tlsMode"
	tlsModeIstio = "istio"
)

// outboundEndpoints returns a ClusterLoadAssignment per outbound EDS
// cluster. An instance of the cluster's service port is in it when its
// labels contain the subset's; its address is ADDRESS:15006 (its sidecar)
// when it is labelled security.istio.io/tlsMode=istio, else
// ADDRESS:targetPort. Every endpoint is HEALTHY. A cluster with no
// instances gets an assignment with no endpoints.
//
// Only IP addresses go in: an instance whose address is a host name (a
// DNS ServiceEntry endpoint or WorkloadEntry) or a unix:// socket is left
// out, since the proxy NACKs an endpoint update with any non-IP socket
// address, which would freeze endpoints for every cluster.
func outboundEndpoints(pc *model.PushContext) []*endpointv3.ClusterLoadAssignment {
	var out []*endpointv3.ClusterLoadAssignment
	seen := map[string]bool{}
	for _, oc := range outboundClusterSet(pc) {
		if seen[oc.name] {
			continue
		}
		seen[oc.name] = true
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: oc.name}
		var lbs []*endpointv3.LbEndpoint
		addrs := map[string]bool{}
		for _, in := range oc.service.Instances {
			if in.ServicePort.Number != oc.port.Number || !registry.LabelsContain(in.Labels, oc.subsetLabels) || !isIP(in.Address) {
				continue
			}
			port := in.TargetPort
			if in.Labels[tlsModeLabel] == tlsModeIstio {
				port = xdsapi.PortInbound
			}
			key := hostPort(in.Address, port)
			if addrs[key] {
				continue
			}
			addrs[key] = true
			lbs = append(lbs, lbEndpoint(in.Address, port, in.Weight))
		}
		slices.SortFunc(lbs, func(a, b *endpointv3.LbEndpoint) int {
			sa := a.GetEndpoint().GetAddress().GetSocketAddress()
			sb := b.GetEndpoint().GetAddress().GetSocketAddress()
			return cmp.Or(cmp.Compare(sa.GetAddress(), sb.GetAddress()), cmp.Compare(sa.GetPortValue(), sb.GetPortValue()))
		})
		if len(lbs) > 0 {
			cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
		}
		out = append(out, cla)
	}
	return out
}

// isIP reports whether addr is an IP address without a zone, the only
// endpoint address the proxy accepts.
func isIP(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.Zone() == ""
}

// lbEndpoint is a HEALTHY endpoint; weight 0 means 1.
func lbEndpoint(ip string, port, weight uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddress(ip, port),
		}},
		HealthStatus:        corev3.HealthStatus_HEALTHY,
		LoadBalancingWeight: wrapperspb.UInt32(max(weight, 1)),
	}
}
