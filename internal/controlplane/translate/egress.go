package translate

import (
	"cmp"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
)

// Istio's names for the outbound catch-all (pilot/pkg/networking/util).
const (
	// PassthroughCluster is the ORIGINAL_DST cluster ALLOW_ANY routes to.
	PassthroughCluster = "PassthroughCluster"
	// allowAnyName names the virtual host and route of ALLOW_ANY.
	allowAnyName = "allow_any"
	// blockAllName names the virtual host and route of REGISTRY_ONLY.
	blockAllName = "block_all"
)

// originalDstHeader is where an ORIGINAL_DST cluster takes its destination
// in explicit HTTP-proxy mode: the request's authority (no iptables
// interception gives the proxy an original destination address).
const originalDstHeader = ":authority"

// dnsRefreshRate is MeshConfig.dnsRefreshRate's default, which Istio sets
// on DNS clusters.
const dnsRefreshRate = 60 * time.Second

// outboundPolicyMode is mesh's outboundTrafficPolicy.mode; a nil mesh or
// policy is Istio's default, ALLOW_ANY.
func outboundPolicyMode(mesh *meshv1alpha1.MeshConfig) meshv1alpha1.MeshConfig_OutboundTrafficPolicy_Mode {
	if p := mesh.GetOutboundTrafficPolicy(); p != nil {
		return p.GetMode()
	}
	return meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY
}

// catchAllVirtualHost is Istio's last virtual host of the outbound route
// (BuildCatchAllVirtualHost): under ALLOW_ANY "allow_any", routing every
// other authority to PassthroughCluster, or to egress when set (the
// Sidecar's egressProxy cluster, egressProxyCluster), with no timeout;
// under REGISTRY_ONLY "block_all", answering 502.
func catchAllVirtualHost(mesh *meshv1alpha1.MeshConfig, egress string) *routev3.VirtualHost {
	match := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if outboundPolicyMode(mesh) == meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY {
		return &routev3.VirtualHost{
			Name:    blockAllName,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:   blockAllName,
				Match:  match,
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
			}},
			IncludeRequestAttemptCount: true,
		}
	}
	return &routev3.VirtualHost{
		Name:    allowAnyName,
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Name:  allowAnyName,
			Match: match,
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cmp.Or(egress, PassthroughCluster)},
				Timeout:          durationpb.New(0),
				MaxGrpcTimeout:   durationpb.New(0), //nolint:staticcheck // as Istio
			}},
		}},
		IncludeRequestAttemptCount: true,
	}
}

// addCatchAll appends catchAllVirtualHost to the sidecar's outbound route
// rc, unless a virtual host already claims the domain "*"; egress is
// catchAllVirtualHost's.
func addCatchAll(rc *routev3.RouteConfiguration, mesh *meshv1alpha1.MeshConfig, egress string) {
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			if d == "*" {
				return
			}
		}
	}
	rc.VirtualHosts = append(rc.VirtualHosts, catchAllVirtualHost(mesh, egress))
}

// passthroughCluster is Istio's PassthroughCluster: ORIGINAL_DST with
// lb_policy CLUSTER_PROVIDED and unlimited circuit breakers. In explicit
// mode the destination is the request's authority
// (original_dst_lb_config.use_http_header on ":authority"), which the proxy
// resolves when it is a host name.
func passthroughCluster() *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:            PassthroughCluster,
		ConnectTimeout:  durationpb.New(connectTimeout),
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{defaultThresholds()}},
	}
	setOriginalDst(c)
	return c
}

// setOriginalDst makes c an ORIGINAL_DST cluster reading its destination
// from the authority.
func setOriginalDst(c *clusterv3.Cluster) {
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
	c.EdsClusterConfig = nil
	c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
		UseHttpHeader:  true,
		HttpHeaderName: originalDstHeader,
	}}
}

// isEDS reports whether outbound cluster oc is an EDS cluster: its
// service's resolution is STATIC and its loadBalancer is not PASSTHROUGH
// (an ORIGINAL_DST cluster). DNS, DNS_ROUND_ROBIN and NONE are not.
func isEDS(oc outboundCluster) bool {
	if oc.policy.GetLoadBalancer().GetSimple() == networking.LoadBalancerSettings_PASSTHROUGH {
		return false
	}
	switch oc.service.Resolution {
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN, networking.ServiceEntry_NONE:
		return false
	}
	return true
}

// setDiscovery sets the discovery type of c, the outbound cluster oc, by
// its ServiceEntry's resolution, as Istio's buildOutboundClusters: STATIC
// stays EDS; DNS is STRICT_DNS and DNS_ROUND_ROBIN LOGICAL_DNS, whose
// load_assignment holds the endpoints (host names or IPs) or, when the
// service has no instance at all (no endpoints, no selected
// WorkloadEntry), the host itself at the port's target port (a subset
// with labels then has none); NONE is ORIGINAL_DST on the authority, as PassthroughCluster.
func setDiscovery(c *clusterv3.Cluster, oc outboundCluster) {
	if c.GetType() == clusterv3.Cluster_ORIGINAL_DST && oc.service.Resolution != networking.ServiceEntry_NONE {
		// loadBalancer PASSTHROUGH: Istio's applyLoadBalancer runs after
		// the discovery type is set and overrides it, whatever the
		// resolution.
		return
	}
	switch oc.service.Resolution {
	case networking.ServiceEntry_NONE:
		setOriginalDst(c)
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		typ := clusterv3.Cluster_STRICT_DNS
		if oc.service.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN {
			typ = clusterv3.Cluster_LOGICAL_DNS
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
		c.EdsClusterConfig = nil
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
		c.DnsRefreshRate = durationpb.New(dnsRefreshRate)
		c.RespectDnsTtl = true
		lbs := instanceEndpoints(oc, false)
		if len(oc.service.Instances) == 0 && len(oc.subsetLabels) == 0 {
			lbs = []*endpointv3.LbEndpoint{lbEndpoint(oc.service.Hostname, oc.port.TargetPort, 1)}
		}
		if typ == clusterv3.Cluster_LOGICAL_DNS && len(lbs) > 1 {
			lbs = lbs[:1]
		}
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: oc.name}
		if len(lbs) > 0 {
			c.LoadAssignment.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
		}
	}
}
