package translate

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

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
// cluster (resolution STATIC; DNS clusters carry their load_assignment,
// NONE clusters have none), with the endpoints instanceEndpoints gives.
// Every endpoint is HEALTHY. A cluster with no instances gets an
// assignment with no endpoints.
//
// Only IP addresses go in: an instance whose address is a host name (a
// WorkloadEntry of a STATIC ServiceEntry) or a unix:// socket is left out,
// since the proxy NACKs an endpoint update with any non-IP socket address,
// which would freeze endpoints for every cluster.
func outboundEndpoints(pc *model.PushContext) []*endpointv3.ClusterLoadAssignment {
	var out []*endpointv3.ClusterLoadAssignment
	seen := map[string]bool{}
	for _, oc := range outboundClusterSet(pc) {
		if seen[oc.name] || !isEDS(oc.service) {
			continue
		}
		seen[oc.name] = true
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: oc.name}
		lbs := instanceEndpoints(oc, true)
		if len(lbs) > 0 {
			cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
		}
		out = append(out, cla)
	}
	return out
}

// instanceEndpoints returns the endpoints of outbound cluster oc: an
// instance of its service port is in it when its labels contain the
// subset's; its address is ADDRESS:15006 (its sidecar) when it is labelled
// security.istio.io/tlsMode=istio and the port is HTTP, else
// ADDRESS:targetPort: in explicit mode a sidecar cannot learn a TCP
// connection's original destination, so TCP goes to the app directly. Duplicates are
// dropped; the list is sorted by address and port. ipOnly leaves out every
// address that is not an IP (for EDS); otherwise only unix:// sockets are
// left out (for DNS clusters, whose host names the proxy resolves).
func instanceEndpoints(oc outboundCluster, ipOnly bool) []*endpointv3.LbEndpoint {
	var lbs []*endpointv3.LbEndpoint
	addrs := map[string]bool{}
	for _, in := range oc.service.Instances {
		if in.ServicePort.Number != oc.port.Number || !registry.LabelsContain(in.Labels, oc.subsetLabels) {
			continue
		}
		if ipOnly && !isIP(in.Address) || !ipOnly && strings.HasPrefix(in.Address, "unix://") {
			continue
		}
		port := in.TargetPort
		if in.Labels[tlsModeLabel] == tlsModeIstio && oc.port.Protocol.IsHTTP() {
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
	return lbs
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
