package translate

import (
	"net"
	"net/netip"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// tcpRouteProxy is the tcp_proxy of the sidecar's TCP listener on port of
// svc. With a VirtualService for the host (bound to the mesh), the first
// of its tcp routes with a match that applies (tcpMatchApplies; a route
// without match always does) gives the destinations: one destination is
// the tcp_proxy's cluster, several its weighted_clusters (weight 0
// destinations left out, as Istio does). Otherwise, or when no route
// applies, the cluster is the service port's, "outbound|PORT||HOST".
// stat_prefix is the cluster's name, or the service port's for weighted
// clusters. idle_timeout is the DestinationRule's
// connectionPool.tcp.idleTimeout of a single destination, when set.
func tcpRouteProxy(pc *model.PushContext, p *model.Proxy, svc *registry.Service, port uint32, dst netip.Addr) *tcpv3.TcpProxy {
	var dests []*networking.RouteDestination
	vsNamespace := ""
	if vs := pc.VirtualServiceForHost(model.MeshGateway, svc.Hostname); vs != nil {
		for _, tr := range vs.Spec.GetTcp() {
			if tcpRouteApplies(tr, p, vs.Namespace, port, dst) {
				dests, vsNamespace = tr.GetRoute(), vs.Namespace
				break
			}
		}
	}
	return tcpProxyFor(pc, vsNamespace, dests, port, svc.Hostname)
}

// wildcardTCPChains returns the chains of svc on a transparent sidecar's
// 0.0.0.0_PORT listener, where a connection's destination is known only
// to the listener, as Istio's buildSidecarOutboundTCPFilterChainOpts:
// cidrs (the service's address ranges; none for a service without
// addresses) are the prefix_ranges of its chains. With a VirtualService
// for the host bound to the mesh, each tcp route in order: one without
// match, or with an applying match (tcpMatchApplies) without
// destinationSubnets, is a chain on cidrs and the last; the applying
// matches' destinationSubnets otherwise are one chain on those subnets.
// Unless a route took every connection, or its subnets are cidrs, the
// last chain on cidrs goes to "outbound|PORT||HOST". Chains are unnamed
// and carry tcpProxyFor's tcp_proxy.
func wildcardTCPChains(pc *model.PushContext, p *model.Proxy, svc *registry.Service, port uint32, cidrs []string) ([]*listenerv3.FilterChain, error) {
	var out []*listenerv3.FilterChain
	add := func(subnets []string, tp *tcpv3.TcpProxy) error {
		fc, err := tcpProxyFilterChain("", withPrefixRanges(nil, cidrRanges(subnets)), tp)
		if err == nil {
			out = addChain(out, fc)
		}
		return err
	}
	defaultAdded := false
	if vs := pc.VirtualServiceForHost(model.MeshGateway, svc.Hostname); vs != nil {
		for _, tr := range vs.Spec.GetTcp() {
			all := len(tr.GetMatch()) == 0
			var subnets []string
			for _, m := range tr.GetMatch() {
				if !tcpMatchApplies(m, p, vs.Namespace, port, netip.Addr{}) {
					continue
				}
				if len(m.GetDestinationSubnets()) == 0 {
					all = true
					break
				}
				subnets = append(subnets, m.GetDestinationSubnets()...)
			}
			tp := tcpProxyFor(pc, vs.Namespace, tr.GetRoute(), port, svc.Hostname)
			if all {
				return out, add(cidrs, tp)
			}
			if len(subnets) == 0 {
				continue
			}
			if err := add(subnets, tp); err != nil {
				return nil, err
			}
			defaultAdded = defaultAdded || slices.Equal(slices.Sorted(slices.Values(subnets)), slices.Sorted(slices.Values(cidrs)))
		}
	}
	if defaultAdded {
		return out, nil
	}
	return out, add(cidrs, tcpProxyFor(pc, "", nil, port, svc.Hostname))
}

// tcpProxyFor is the tcp_proxy to the destinations dests of a tcp or tls
// route of a VirtualService in vsNamespace, on listener port: one
// destination is the tcp_proxy's cluster, several its weighted_clusters
// (weight 0 destinations left out, as Istio does; two destinations of one
// cluster add up). No destination gives the cluster def, host's
// "outbound|PORT||HOST" (none for host ""). stat_prefix is the cluster's
// name, or def (else the first cluster's) for weighted clusters. idle_timeout and max_downstream_connection_duration are the
// DestinationRule's connectionPool.tcp.idleTimeout and
// maxConnectionDuration of a single destination, when set (Istio sets
// neither from a DestinationRule on weighted clusters). hash_policy is
// source_ip for consistentHash useSourceIp (tcpHashPolicy).
func tcpProxyFor(pc *model.PushContext, vsNamespace string, dests []*networking.RouteDestination, port uint32, host string) *tcpv3.TcpProxy {
	def := ""
	if host != "" {
		def = xdsapi.ClusterName(xdsapi.Outbound, port, "", host)
	}
	var clusters []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight
	for _, rd := range dests {
		if len(dests) > 1 && rd.GetWeight() == 0 {
			continue
		}
		name := destinationCluster(pc, vsNamespace, rd.GetDestination(), port)
		if i := slices.IndexFunc(clusters, func(c *tcpv3.TcpProxy_WeightedCluster_ClusterWeight) bool { return c.Name == name }); i >= 0 {
			clusters[i].Weight += uint32(rd.GetWeight())
			continue
		}
		clusters = append(clusters, &tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: name, Weight: uint32(rd.GetWeight())})
	}
	hash := tcpHashPolicy(pc, vsNamespace, dests, host)
	if len(clusters) > 1 {
		prefix := def
		if prefix == "" {
			prefix = clusters[0].Name
		}
		return &tcpv3.TcpProxy{
			StatPrefix: prefix,
			ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{
				Clusters: clusters,
			}},
			HashPolicy:      hash,
			TunnelingConfig: tcpTunnelingConfig(pc, vsNamespace, dests, host),
		}
	}
	name := def
	if len(clusters) == 1 {
		name = clusters[0].Name
	}
	// connectionPool.tcp's idleTimeout, and its maxConnectionDuration,
	// which Istio sets as the tcp_proxy's max_downstream_connection_duration
	// too (besides the cluster's, see applyConnectionPool): a connection is
	// closed, both sides, that long after it was accepted.
	tcp := tcpSettings(pc, name)
	return &tcpv3.TcpProxy{
		StatPrefix:       name,
		ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: name},
		IdleTimeout:      cloneDuration(tcp.GetIdleTimeout()),

		MaxDownstreamConnectionDuration: cloneDuration(tcp.GetMaxConnectionDuration()),
		HashPolicy:                      hash,
		TunnelingConfig:                 tcpTunnelingConfig(pc, vsNamespace, dests, host),
	}
}

// tcpTunnelingConfig is the tcp_proxy's tunneling_config for the
// destinations dests (the service of host when none), as Istio's
// tunnelingconfig.Apply: the trafficPolicy.tunnel of the DestinationRule
// of the first destination's host, hostname "targetHost:targetPort" and
// use_post for protocol POST. With one destination of a subset, the
// subset's own tunnel alone counts (none when it sets none: Istio does
// not fall back to the top-level one); with several (weighted clusters)
// only the top-level one, as the tunnel is the listener's, not a
// cluster's. portLevelSettings have no tunnel. nil when no tunnel
// applies.
func tcpTunnelingConfig(pc *model.PushContext, vsNamespace string, dests []*networking.RouteDestination, host string) *tcpv3.TcpProxy_TunnelingConfig {
	dr, subset := tcpProxyRule(pc, vsNamespace, dests, host)
	if dr == nil {
		return nil
	}
	t := dr.Spec.GetTrafficPolicy().GetTunnel()
	if subset != "" {
		t = dr.Subset(subset).GetTrafficPolicy().GetTunnel()
	}
	if t == nil {
		return nil
	}
	return &tcpv3.TcpProxy_TunnelingConfig{
		Hostname: net.JoinHostPort(t.GetTargetHost(), strconv.FormatUint(uint64(t.GetTargetPort()), 10)),
		UsePost:  t.GetProtocol() == "POST",
	}
}

// tcpHashPolicy is the tcp_proxy's hash_policy for the destinations dests
// (the service of host when none), as Istio's maybeSetHashPolicy: [source_ip]
// when the DestinationRule of the first destination's host asks for
// loadBalancer.consistentHash.useSourceIp, so that a RING_HASH or MAGLEV
// cluster keeps a client on one endpoint; nil otherwise. With one
// destination, a subset that sets loadBalancer decides alone (a simple LB,
// or another hash key, clears it); with several (weighted clusters) only
// the top-level policy counts. portLevelSettings are not read, as in
// Istio: a port-level useSourceIp makes the cluster RING_HASH without a
// hash on the tcp_proxy.
func tcpHashPolicy(pc *model.PushContext, vsNamespace string, dests []*networking.RouteDestination, host string) []*typev3.HashPolicy {
	dr, subset := tcpProxyRule(pc, vsNamespace, dests, host)
	if dr == nil {
		return nil
	}
	lb := dr.Spec.GetTrafficPolicy().GetLoadBalancer()
	if ss := dr.Subset(subset); subset != "" && ss.GetTrafficPolicy().GetLoadBalancer() != nil {
		lb = ss.GetTrafficPolicy().GetLoadBalancer()
	}
	if !lb.GetConsistentHash().GetUseSourceIp() {
		return nil
	}
	return []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
}

// tcpProxyRule is the DestinationRule whose policy a tcp_proxy takes, as
// Istio's TCP filter builders pick it: that of the first destination's
// host (the service of host when dests is empty), and the destination's
// subset when there is exactly one destination (with several, the weighted
// clusters share the listener's policy: the top-level one). nil when the
// host has no rule.
func tcpProxyRule(pc *model.PushContext, vsNamespace string, dests []*networking.RouteDestination, host string) (dr *model.DestinationRule, subset string) {
	if len(dests) > 0 {
		host = model.ResolveShortName(dests[0].GetDestination().GetHost(), vsNamespace)
	}
	if len(dests) == 1 {
		subset = dests[0].GetDestination().GetSubset()
	}
	return pc.DestinationRule(host), subset
}

// tcpSettings returns connectionPool.tcp of the DestinationRule traffic
// policy of the outbound cluster name (its port and subset level applied),
// or nil.
func tcpSettings(pc *model.PushContext, name string) *networking.ConnectionPoolSettings_TCPSettings {
	_, port, subset, host, ok := xdsapi.ParseClusterName(name)
	if !ok {
		return nil
	}
	dr := pc.DestinationRule(host)
	if dr == nil {
		return nil
	}
	var ss *networking.Subset
	if subset != "" {
		ss = dr.Subset(subset)
	}
	return clusterTrafficPolicy(dr.Spec, ss, port).GetConnectionPool().GetTcp()
}

// cloneDuration copies d (nil stays nil), so that emitted resources never
// share messages with the push context.
func cloneDuration(d *durationpb.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return &durationpb.Duration{Seconds: d.GetSeconds(), Nanos: d.GetNanos()}
}

// tcpRouteApplies reports whether a tcp route applies on the sidecar p's
// listener on port: it has no match, or one of its matches applies.
func tcpRouteApplies(tr *networking.TCPRoute, p *model.Proxy, vsNamespace string, port uint32, dst netip.Addr) bool {
	if len(tr.GetMatch()) == 0 {
		return true
	}
	return slices.ContainsFunc(tr.GetMatch(), func(m *networking.L4MatchAttributes) bool {
		return tcpMatchApplies(m, p, vsNamespace, port, dst)
	})
}

// tcpMatchApplies evaluates an L4MatchAttributes for the sidecar p's TCP
// listener on port, as Istio does when it builds the listener's filter
// chains: port must equal the listener's; sourceLabels must be contained in
// the proxy's labels and sourceNamespace equal its namespace; gateways,
// when set, must include "mesh". destinationSubnets is Envoy's
// filter_chain_match.prefix_ranges, which match the connection's
// destination address dst: in explicit mode that is always the sidecar's
// own IP, so the match applies when a subnet contains p.IP; on a listener
// of a virtual IP it is that IP. An invalid dst (a transparent sidecar's
// 0.0.0.0_PORT, where only the connection knows it) leaves
// destinationSubnets to the chain's prefix_ranges. sourceSubnet
// (source_prefix_ranges) likewise matches the client app's address, which
// in explicit mode is the sidecar's IP too.
func tcpMatchApplies(m *networking.L4MatchAttributes, p *model.Proxy, vsNamespace string, port uint32, dst netip.Addr) bool {
	if m.GetPort() != 0 && m.GetPort() != port {
		return false
	}
	if !registry.LabelsContain(p.Labels, m.GetSourceLabels()) {
		return false
	}
	if ns := m.GetSourceNamespace(); ns != "" && ns != p.Namespace {
		return false
	}
	if len(m.GetGateways()) > 0 && !slices.ContainsFunc(m.GetGateways(), func(g string) bool {
		return model.ResolveGatewayName(g, vsNamespace) == model.MeshGateway
	}) {
		return false
	}
	ip, err := netip.ParseAddr(p.IP)
	if err != nil {
		return false
	}
	if subnets := m.GetDestinationSubnets(); len(subnets) > 0 && dst.IsValid() && !slices.ContainsFunc(subnets, func(s string) bool {
		return prefixContains(s, dst)
	}) {
		return false
	}
	if s := m.GetSourceSubnet(); s != "" && !prefixContains(s, ip) {
		return false
	}
	return true
}

// prefixContains reports whether the CIDR or IP s contains ip.
func prefixContains(s string, ip netip.Addr) bool {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return pfx.Contains(ip)
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a == ip
}

// withPrefixRanges returns match with prefix_ranges ranges, a new match
// when match is nil; match itself, maybe nil, when ranges is empty.
func withPrefixRanges(match *listenerv3.FilterChainMatch, ranges []*corev3.CidrRange) *listenerv3.FilterChainMatch {
	if len(ranges) == 0 {
		return match
	}
	if match == nil {
		match = &listenerv3.FilterChainMatch{}
	}
	match.PrefixRanges = ranges
	return match
}

// cidrRanges reads destinationSubnets (IPs and CIDRs, validated) as
// Envoy's prefix ranges; an entry that does not parse is left out.
func cidrRanges(subnets []string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	for _, s := range subnets {
		if r, err := cidrRange(s); err == nil {
			out = append(out, r)
		}
	}
	return out
}
