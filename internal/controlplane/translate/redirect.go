package translate

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Transparent mode (INTERCEPTION_MODE REDIRECT): iptables in the
// workload's network namespace redirects the app's outbound TCP to 15001
// and every inbound TCP connection to 15006, and the proxy reads the
// original destination (SO_ORIGINAL_DST). The listener layout is Istio's
// (pilot/pkg/networking/core listener_builder.go, listener_inbound.go):
//
//   - virtualOutbound 0.0.0.0:15001, use_original_dst: a connection is
//     handed to the listener of its original destination (VIP:PORT, else
//     0.0.0.0:PORT); unmatched ones take virtualOutbound-catchall-tcp to
//     PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY),
//     and a connection addressed to 15001 itself virtualOutbound-blackhole;
//   - per service port, bind_to_port false: "0.0.0.0_9080" (HTTP, RDS
//     "9080" routed by Host) and, for TCP, "VIP_9000" per service address
//     or "0.0.0.0_9000" for a service without one (address ranges as
//     prefix_ranges there); a port of unknown protocol is sniffed, HTTP
//     to the route table, the rest to TCP chains;
//   - virtualInbound 0.0.0.0:15006 with the original_dst listener filter
//     (and the inspectors its chains need): a filter chain per target port
//     of the workload's services, matched on destination_port, to the
//     inbound cluster "inbound|PORT||", plus Istio's passthrough chains to
//     InboundPassthroughCluster for every other port; under Sidecar ingress
//     listeners the ports are theirs, each chain named "BIND_PORT", and
//     one of captureMode NONE is a listener bound to BIND:PORT instead.

// Istio's names of transparent mode (pilot/pkg/model and networking/util).
const (
	virtualOutboundBlackholeChain = "virtualOutbound-blackhole"
	virtualOutboundCatchAllTCP    = "virtualOutbound-catchall-tcp"
	virtualInboundBlackholeChain  = "virtualInbound-blackhole"
	virtualInboundCatchAllHTTP    = "virtualInbound-catchall-http"
	inboundPassthroughCluster     = "InboundPassthroughCluster"
	wildcardBind                  = "0.0.0.0"
	rawBufferTransport            = "raw_buffer"
	tlsTransport                  = "tls"
	originalDstListenerFilter     = "envoy.filters.listener.original_dst"
	tlsInspectorListenerFilter    = "envoy.filters.listener.tls_inspector"
	httpInspectorListenerFilter   = "envoy.filters.listener.http_inspector"
	inboundPassthroughStatPrefix  = inboundPassthroughCluster
	inboundPassthroughBindAddress = "127.0.0.6"
	inboundPassthroughChainPort   = 0
)

// protocolDetectionTimeout is MeshConfig.protocolDetectionTimeout's
// default, Istio's virtualInbound listener_filters_timeout: 0, no timeout.
const protocolDetectionTimeout = 0 * time.Second

// plaintextHTTPALPNs are the application protocols http_inspector reports
// for plaintext HTTP that Istio's chains match (without HTTP/1.0).
var plaintextHTTPALPNs = []string{"http/1.1", "h2c"}

// isRedirect reports whether iptables REDIRECT feeds proxy p (its node
// metadata INTERCEPTION_MODE is REDIRECT). Any other mode, absent
// included, is served the explicit layout.
func isRedirect(p *model.Proxy) bool { return p.InterceptionMode == xdsapi.InterceptionRedirect }

// inboundAuthz are the authorization filters of virtualInbound's chains
// (authz.go): HTTP filters before an HCM's others, network filters before
// a tcp_proxy.
type inboundAuthz struct {
	http []*hcmv3.HttpFilter
	tcp  []*listenerv3.Filter
}

// redirectSidecarResources is the transparent-mode sidecar's config:
// virtualOutbound, the per-port outbound listeners and their route tables,
// virtualInbound (its chains carrying authz), a bound listener per Sidecar
// ingress listener of captureMode NONE (boundIngressListeners; its port
// has no chain in virtualInbound, as Istio's buildInboundListeners), the
// outbound clusters and
// endpoints as in explicit mode, the inbound clusters, BlackHoleCluster,
// PassthroughCluster and InboundPassthroughCluster.
func redirectSidecarResources(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig, o Options, authz inboundAuthz) (*Resources, error) {
	vo, err := virtualOutboundListener(mesh, egressProxyCluster(pc.Sidecar()))
	if err != nil {
		return nil, err
	}
	outListeners, routes, err := outboundPortListeners(pc, p, mesh)
	if err != nil {
		return nil, err
	}
	pipeListeners, pipeRoutes, err := pipeEgressListeners(pc, p, mesh)
	if err != nil {
		return nil, err
	}
	outListeners, routes = append(outListeners, pipeListeners...), append(routes, pipeRoutes...)
	chains := inboundChainConfigs(pc, p, false)
	mtls := pc.MutualTLSFor(p.Namespace, p.Labels)
	virtual := slices.DeleteFunc(slices.Clone(chains), func(cc inboundChainConfig) bool { return cc.isBound(p.IP) })
	vi, err := virtualInboundListener(virtual, authz, mtls, mesh)
	if err != nil {
		return nil, err
	}
	bound, err := boundIngressListeners(chains, p, mtls, authz, mesh)
	if err != nil {
		return nil, err
	}
	outbound, err := outboundClusters(pc, newClusterTLSEnv(pc, mesh, o), true)
	if err != nil {
		return nil, err
	}
	inbound, err := redirectInboundClusters(chains)
	if err != nil {
		return nil, err
	}
	bh, err := blackHoleCluster()
	if err != nil {
		return nil, err
	}
	clusters := append(append(outbound, inbound...), bh, redirectPassthroughCluster(), originalDstInboundCluster(inboundPassthroughCluster))
	return &Resources{
		Listeners: append(append([]*listenerv3.Listener{vo, vi}, bound...), outListeners...),
		Routes:    routes,
		Clusters:  clusters,
		Endpoints: outboundEndpoints(pc, p),
	}, nil
}

// tcpProxyChain is a filter chain whose only filter is a tcp_proxy to
// cluster, with the cluster's name as stat_prefix.
func tcpProxyChain(name string, match *listenerv3.FilterChainMatch, cluster string, before ...*listenerv3.Filter) (*listenerv3.FilterChain, error) {
	return tcpProxyFilterChain(name, match, &tcpv3.TcpProxy{
		StatPrefix:       cluster,
		ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster},
	}, before...)
}

// tcpProxyFilterChain is a filter chain of the network filters before,
// then tp.
func tcpProxyFilterChain(name string, match *listenerv3.FilterChainMatch, tp *tcpv3.TcpProxy, before ...*listenerv3.Filter) (*listenerv3.FilterChain, error) {
	a, err := packAny(tp)
	if err != nil {
		return nil, fmt.Errorf("filter chain %q: %w", name, err)
	}
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: match,
		Filters: append(slices.Clone(before), &listenerv3.Filter{
			Name:       tcpProxyFilter,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a},
		}),
	}, nil
}

// virtualOutboundListener is Istio's virtualOutbound: 0.0.0.0:15001,
// use_original_dst, with the chains of buildOutboundCatchAllNetworkFilterChains:
// virtualOutbound-blackhole for a connection whose original destination
// port is 15001 itself (no loop), and virtualOutbound-catchall-tcp to
// catchAllCluster (PassthroughCluster or the egress proxy's cluster under
// ALLOW_ANY, BlackHoleCluster under REGISTRY_ONLY) for destinations no
// listener claims.
func virtualOutboundListener(mesh *meshv1alpha1.MeshConfig, egress string) (*listenerv3.Listener, error) {
	blackhole, err := tcpProxyChain(virtualOutboundBlackholeChain,
		&listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(xdsapi.PortOutbound)}, xdsapi.BlackHoleCluster)
	if err != nil {
		return nil, err
	}
	catchAll, err := tcpProxyChain(virtualOutboundCatchAllTCP, nil, catchAllCluster(mesh, egress))
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:             xdsapi.VirtualOutboundListener,
		Address:          socketAddress(wildcardBind, xdsapi.PortOutbound),
		UseOriginalDst:   wrapperspb.Bool(true),
		FilterChains:     []*listenerv3.FilterChain{blackhole, catchAll},
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
	}, nil
}

// catchAllCluster is where virtualOutbound sends a connection no listener
// claims: PassthroughCluster under ALLOW_ANY, or egress when set (the
// Sidecar's egressProxy cluster, as Istio's
// buildOutboundCatchAllNetworkFiltersOnly), BlackHoleCluster under
// REGISTRY_ONLY.
func catchAllCluster(mesh *meshv1alpha1.MeshConfig, egress string) string {
	if outboundPolicyMode(mesh) == meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY {
		return xdsapi.BlackHoleCluster
	}
	return cmp.Or(egress, PassthroughCluster)
}

// proxyPorts are the ports of the sidecar itself and its agent, which get
// no outbound listener (Istio drops listeners that conflict with its own):
// 15000 admin, 15001, 15006, 15008 HBONE, 15010 and 15014 loomd's, 15020,
// 15021 health, 15090 Prometheus.
var proxyPorts = map[uint32]bool{
	xdsapi.PortProxyAdmin: true, xdsapi.PortOutbound: true, xdsapi.PortInbound: true, 15008: true,
	xdsapi.PortXDS: true, xdsapi.PortMonitoring: true, 15020: true, 15021: true, 15090: true,
}

// serviceVIPs returns the ServiceEntry addresses of svc that are IP
// addresses, as written; CIDRs get no listener of their own
// (serviceCIDRs).
func serviceVIPs(svc *registry.Service) []string {
	var out []string
	for _, a := range svc.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil && ip.Zone() == "" {
			out = append(out, ip.String())
		}
	}
	return out
}

// serviceCIDRs returns the ServiceEntry addresses of svc that are CIDR
// prefixes ("10.1.0.0/16", as Istio, any address with a "/"): a
// transparent sidecar matches them with prefix_ranges on 0.0.0.0_PORT.
func serviceCIDRs(svc *registry.Service) []string {
	var out []string
	for _, a := range svc.Addresses {
		if pfx, err := netip.ParsePrefix(a); err == nil && pfx.Addr().Zone() == "" {
			out = append(out, a)
		}
	}
	return out
}

// outboundTCPListener is a transparent-mode outbound listener name on
// bind:port (bind_to_port false: virtualOutbound hands connections to
// it) with chains.
func outboundTCPListener(name, bind string, port uint32, chains ...*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(bind, port),
		BindToPort:       wrapperspb.Bool(false),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     chains,
	}
}

// addChain appends fc to chains unless a chain already has its
// filter_chain_match (nil and empty alike): the first service or route to
// claim a match keeps it, as Istio's mergeTCPFilterChains, and Envoy
// refuses two chains with one match.
func addChain(chains []*listenerv3.FilterChain, fc *listenerv3.FilterChain) []*listenerv3.FilterChain {
	m := fc.GetFilterChainMatch()
	if m == nil {
		m = &listenerv3.FilterChainMatch{}
	}
	for _, c := range chains {
		cm := c.GetFilterChainMatch()
		if cm == nil {
			cm = &listenerv3.FilterChainMatch{}
		}
		if proto.Equal(m, cm) {
			return chains
		}
	}
	return append(chains, fc)
}

// listenerName is Istio's name of a listener or chain on bind:port,
// "0.0.0.0_9080" or "240.240.0.3_9000".
func listenerName(bind string, port uint32) string {
	return bind + "_" + strconv.FormatUint(uint64(port), 10)
}

// outboundPortListeners returns the transparent-mode sidecar's per-port
// outbound listeners (bind_to_port false: only virtualOutbound hands
// connections to them) and the route tables of the HTTP ones:
//
//   - "0.0.0.0_PORT" per HTTP port of the services p sees, an HTTP
//     connection manager on RDS "PORT" (outboundHTTPRoute, ending with
//     the allow_any or block_all virtual host); when a service has the
//     port with unknown protocol it is sniffed (setSniffing, Istio's
//     outbound protocol sniffing): the HTTP chain matches application
//     protocols http/1.1 and h2c (also within each address range of such
//     a service), and the TCP chains below take the rest;
//   - per port of unknown protocol of a service, "VIP_PORT" on each of
//     its virtual IPs, sniffed too: sniffHTTP's HTTP chain, then its
//     tcp_proxy;
//   - per TCP port (as isTCP) of a service, "VIP_PORT" on each of its
//     virtual IPs, with a tcp_proxy routed as tcpRouteProxy; and, for a
//     service without one or with address ranges, its wildcardTCPChains
//     on "0.0.0.0_PORT" (the services of a port merged in host order, the
//     first to claim a match keeping it; on an HTTP port's listener too,
//     which they make sniffed, as Istio's TCPOverHTTP and HTTPOverTCP on
//     the wildcard, where its HTTP chain matches http/1.1 and h2c),
//     which ends with virtualOutbound's catch-all chain unless a chain
//     takes every connection, as Istio's
//     appendListenerFallthroughRouteForCompleteListener;
//   - with a Sidecar egress bind off the wildcard (redirectEgressBinding)
//     every service of the port on "BIND_PORT": an HTTP, a TCP and a TLS
//     service there all match every connection, so the first in host
//     order (sharedListenerFirst) keeps the listener and the others'
//     chains are dropped, as Istio's mergeTCPFilterChains;
//   - on the shared listener ("0.0.0.0_PORT" or "BIND_PORT") a MySQL or
//     Mongo service and one of another protocol never merge: the later
//     one is dropped (wellKnownConflict, Istio's
//     isConflictWithWellKnownPort);
//   - per Sidecar egress listener of protocol HTTP_PROXY that imports a
//     service, an HTTP listener on its port as above (at its bind,
//     redirectEgressBinding) whose table "PORT" is egressPortRoute's:
//     every HTTP port of that listener's services, as Istio's;
//   - per TLS or HTTPS port, the listeners of redirectTLSListeners (tls
//     routes by SNI), on the names the above leave free.
//
// The proxy's own ports (proxyPorts) get none. It fails only when a typed
// config cannot be packed.
func outboundPortListeners(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig) ([]*listenerv3.Listener, []*routev3.RouteConfiguration, error) {
	var httpPorts []uint32
	// sniffed are the HTTP ports a service has with unknown protocol,
	// which a transparent sidecar sniffs on outbound as Istio's
	// ListenerProtocolAuto: HTTP (http_inspector's http/1.1 or h2c) to the
	// HTTP connection manager, anything else to TCP chains.
	sniffed := map[uint32]bool{}
	for _, svc := range pc.Services() {
		for _, port := range svc.Ports {
			proto := egressPortProtocol(pc, port.Number, port.Protocol)
			if !proto.IsHTTP() || proxyPorts[port.Number] || !pc.EgressServes(svc, port.Number) {
				continue
			}
			if !slices.Contains(httpPorts, port.Number) {
				httpPorts = append(httpPorts, port.Number)
			}
			if proto == registry.Unknown {
				sniffed[port.Number] = true
			}
		}
	}
	for _, l := range pc.Sidecar().GetListeners() {
		// An HTTP_PROXY egress listener is an HTTP listener on its port
		// as soon as it imports a service, whatever their ports: Istio
		// builds it per service of the listener.
		// A unix socket listener is pipeEgressListeners'.
		if l.Protocol == registry.HTTPProxy && l.Pipe == "" && !proxyPorts[l.Port] && !slices.Contains(httpPorts, l.Port) &&
			len(pc.ForEgressPort(l.Port).Services()) > 0 {
			httpPorts = append(httpPorts, l.Port)
		}
	}
	slices.Sort(httpPorts)
	var listeners []*listenerv3.Listener
	var routes []*routev3.RouteConfiguration
	// wild are the 0.0.0.0_PORT listeners TCP chains go on, in the order
	// first met: the services of a port merge their chains there. A
	// sniffed port's HTTP listener is one (its HTTP chain matches the
	// application protocols http_inspector reports); httpRanges are the
	// address ranges of its services of unknown protocol, each of which
	// gets an HTTP chain too.
	wild := map[string]*listenerv3.Listener{}
	var wildNames []string
	httpRanges := map[string][][]*corev3.CidrRange{}
	taken := map[string]bool{}
	// httpWild are the HTTP listeners on the wildcard that are not sniffed
	// yet: a TCP service's chains arriving there make them sniffed.
	httpWild := map[string]*listenerv3.Listener{}
	first := sharedListenerFirst(pc)
	for _, port := range httpPorts {
		bind, bound := redirectEgressBinding(pc, port)
		offWild := bind != "" && bind != wildcardBind
		// Off the wildcard a first service of another protocol keeps the
		// listener; a MySQL or Mongo one anywhere.
		dropHTTP := offWild && !sniffed[port] && !first[port].IsHTTP() || wellKnownConflict(first[port], registry.HTTP)
		bind = cmp.Or(bind, wildcardBind)
		name := listenerName(bind, port)
		routeName := strconv.FormatUint(uint64(port), 10)
		if dropHTTP && !sniffed[port] {
			continue // the TCP or TLS listener below takes the name
		}
		rc, err := egressPortRoute(pc, p, routeName, port)
		if err != nil {
			return nil, nil, err
		}
		addCatchAll(rc, mesh, egressProxyCluster(pc.Sidecar()))
		routes = append(routes, rc)
		if dropHTTP {
			continue // the table stays for the VIP listeners of sniffHTTP
		}
		taken[name] = true
		l, err := httpListener(name, bind, port, corev3.TrafficDirection_OUTBOUND, "outbound_"+name, routeName, hcmOptions{})
		if err != nil {
			return nil, nil, err
		}
		if !bound {
			l.BindToPort = wrapperspb.Bool(false)
		}
		listeners = append(listeners, l)
		switch {
		case sniffed[port]:
			l.FilterChains[0].FilterChainMatch = sniffedHTTPMatch()
			wild[name], wildNames = l, append(wildNames, name)
		case bind == wildcardBind:
			httpWild[name] = l
		}
	}
	for _, svc := range pc.Services() {
		for _, port := range svc.Ports {
			proto := egressPortProtocol(pc, port.Number, port.Protocol)
			auto := proto == registry.Unknown
			if !isTCP(proto) && !auto || proxyPorts[port.Number] || !pc.EgressServes(svc, port.Number) {
				continue
			}
			pv := pc.ForEgressPort(port.Number)
			bind, bound := redirectEgressBinding(pc, port.Number)
			vips, cidrs := serviceVIPs(svc), serviceCIDRs(svc)
			if bind != "" {
				// The egress listener's bind takes every service of the
				// port: Istio looks at a service's address only without one.
				vips, cidrs = nil, nil
			}
			for _, vip := range vips {
				name := listenerName(vip, port.Number)
				if taken[name] {
					continue
				}
				taken[name] = true
				// A VIP listener's connections all go to the VIP.
				chain, err := tcpProxyFilterChain("", nil, tcpRouteProxy(pv, p, svc, port.Number, netip.MustParseAddr(vip)))
				if err != nil {
					return nil, nil, fmt.Errorf("listener %q: %w", name, err)
				}
				l := outboundTCPListener(name, vip, port.Number, chain)
				if auto {
					if err := sniffHTTP(l, port.Number); err != nil {
						return nil, nil, err
					}
				}
				listeners = append(listeners, l)
			}
			if len(vips) > 0 && len(cidrs) == 0 {
				continue
			}
			if wellKnownConflict(first[port.Number], proto) ||
				bind != "" && bind != wildcardBind && isTLS(first[port.Number]) {
				continue // the first service's listener drops this one
			}
			bind = cmp.Or(bind, wildcardBind)
			name := listenerName(bind, port.Number)
			l := wild[name]
			if h := httpWild[name]; l == nil && h != nil {
				// Istio's TCPOverHTTP on the wildcard: the HTTP chain
				// matches http/1.1 and h2c, so merging the TCP chains
				// makes the listener sniffed. Istio goes further: it
				// sniffs every HTTP listener on the wildcard and gives it
				// a passthrough chain for the rest, TCP service or not;
				// Loom sniffs only once a TCP chain merges, so non-HTTP
				// bytes to an HTTP-only port reach the HTTP manager
				// (docs/design-notes.md, "Sidecar egress").
				h.FilterChains[0].FilterChainMatch = sniffedHTTPMatch()
				l, wild[name], wildNames = h, h, append(wildNames, name)
			}
			if l == nil {
				if taken[name] {
					continue // an HTTP listener off the wildcard has the port
				}
				taken[name] = true
				l = outboundTCPListener(name, bind, port.Number)
				if bound {
					l.BindToPort = nil
				}
				wild[name], wildNames = l, append(wildNames, name)
				listeners = append(listeners, l)
			}
			chains, err := wildcardTCPChains(pv, p, svc, port.Number, cidrs)
			if err != nil {
				return nil, nil, fmt.Errorf("listener %q: %w", name, err)
			}
			for _, fc := range chains {
				l.FilterChains = addChain(l.FilterChains, fc)
			}
			if r := cidrRanges(cidrs); auto && len(r) > 0 {
				httpRanges[name] = append(httpRanges[name], r)
			}
		}
	}
	for _, name := range wildNames {
		l := wild[name]
		chains, err := appendCatchAllChain(l.FilterChains, pc, mesh)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %q: %w", name, err)
		}
		l.FilterChains = chains
		if len(l.GetFilterChains()[0].GetFilterChainMatch().GetApplicationProtocols()) == 0 {
			continue // a TCP listener
		}
		http := l.FilterChains[0]
		for _, r := range httpRanges[name] {
			fc := proto.Clone(http).(*listenerv3.FilterChain)
			fc.FilterChainMatch.PrefixRanges = r
			l.FilterChains = addChain(l.FilterChains, fc)
		}
		if err := setSniffing(l); err != nil {
			return nil, nil, err
		}
	}
	// The HTTP and TCP listeners a TLS service's SNI chains merge into
	// when they hold the TLS port's name.
	merge := map[string]*listenerv3.Listener{}
	for _, l := range listeners {
		merge[l.GetName()] = l
	}
	tls, err := redirectTLSListeners(pc, p, mesh, taken, merge, first)
	if err != nil {
		return nil, nil, err
	}
	return append(listeners, tls...), routes, nil
}

// sharedListenerFirst returns, per outbound port, the protocol
// (egressPortProtocol) of the first service in host order whose port goes
// on the port's shared listener "BIND_PORT" or "0.0.0.0_PORT": with a
// Sidecar egress bind every service of the port; without, an HTTP one,
// and one of unknown, TCP or TLS protocol without virtual IP or with
// address ranges (Istio's listenerKey in buildSidecarOutboundListener).
// Istio keeps that service's listener entry and merges or drops the later
// ones into it. A port no such service has is absent.
func sharedListenerFirst(pc *model.PushContext) map[uint32]registry.Protocol {
	first := map[uint32]registry.Protocol{}
	for _, svc := range pc.Services() {
		for _, sp := range svc.Ports {
			if _, ok := first[sp.Number]; ok || proxyPorts[sp.Number] || !pc.EgressServes(svc, sp.Number) {
				continue
			}
			proto := egressPortProtocol(pc, sp.Number, sp.Protocol)
			bind, _ := redirectEgressBinding(pc, sp.Number)
			switch {
			case !proto.IsHTTP() && !isTCP(proto) && !isTLS(proto):
				continue // UDP and the like get no listener
			case bind != "", proto.IsHTTP() && proto != registry.Unknown:
			case len(serviceVIPs(svc)) > 0 && len(serviceCIDRs(svc)) == 0:
				continue // on its own VIP_PORT listeners
			}
			first[sp.Number] = proto
		}
	}
	return first
}

// wellKnownConflict reports whether a service port of protocol incoming
// is dropped from a shared listener whose first service has protocol
// first, as Istio's isConflictWithWellKnownPort: MySQL and Mongo share a
// listener with no other protocol, so the later service is dropped rather
// than the listener sniffed (their servers speak first, and a sniffed
// listener without protocolDetectionTimeout would wait for the client
// forever). Istio applies it by protocol, not port number.
func wellKnownConflict(first, incoming registry.Protocol) bool {
	wellKnown := func(p registry.Protocol) bool { return p == registry.MySQL || p == registry.Mongo }
	return (wellKnown(first) || wellKnown(incoming)) && first != incoming
}

// egressBind is the address of outbound port port's listener in explicit
// mode: the bind of the Sidecar egress listener that builds the port (the
// one with that port, else the port-less one; Istio's
// IstioEgressListener.bind) when it has one, else def (the proxy's IP).
func egressBind(pc *model.PushContext, def string, port uint32) string {
	if l := pc.Sidecar().EgressListenerBuilding(port); l != nil && l.Bind != "" {
		return l.Bind
	}
	return def
}

// localhostBind is Istio's actualLocalHosts for an IPv4 proxy: where an
// egress listener of captureMode NONE without bind listens.
const localhostBind = "127.0.0.1"

// redirectEgressBinding is where outbound port port's listeners sit under
// REDIRECT, as Istio's buildSidecarOutboundListeners decides from the
// Sidecar egress listener that builds the port (the one with that port,
// else the port-less one). When it sets bind, or
// captureMode NONE (then without bind 127.0.0.1, Istio's
// actualLocalHosts), bind is that address and every service of the port,
// those with a VIP or address range included, goes on the one listener
// "BIND_PORT" (Istio keys its listener by bind and port, and skips the
// service's address when a bind is set). bound is Istio's bindToPort: true
// for captureMode NONE only (a real socket on BIND:PORT that the app dials,
// iptables leaving loopback alone); DEFAULT and IPTABLES leave the
// listener reached through virtualOutbound. bind is "" when the port has
// no such egress listener: the wildcard and each service's VIPs.
func redirectEgressBinding(pc *model.PushContext, port uint32) (bind string, bound bool) {
	l := pc.Sidecar().EgressListenerBuilding(port)
	if l == nil {
		return "", false
	}
	bound = bindToPort(l.CaptureMode, false)
	switch {
	case l.Bind != "":
		return l.Bind, bound
	case bound:
		return localhostBind, true
	}
	return "", false
}

// sniffHTTP makes the TCP listener l on port, a service VIP's of unknown
// protocol, sniffed: before its chains, an HTTP chain matching
// application protocols http/1.1 and h2c with the HTTP connection manager
// of route table "PORT", the one 0.0.0.0_PORT routes by Host (Istio's
// VIP_PORT of an auto port has its own table, "HOST:PORT").
func sniffHTTP(l *listenerv3.Listener, port uint32) error {
	f, err := hcmFilter("outbound_"+l.GetName(), strconv.FormatUint(uint64(port), 10), hcmOptions{})
	if err != nil {
		return fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	http := &listenerv3.FilterChain{FilterChainMatch: sniffedHTTPMatch(), Filters: []*listenerv3.Filter{f}}
	l.FilterChains = append([]*listenerv3.FilterChain{http}, l.FilterChains...)
	return setSniffing(l)
}

// sniffedHTTPMatch is the filter_chain_match of a sniffed listener's HTTP
// chain: the application protocols http_inspector reports for plaintext
// HTTP.
func sniffedHTTPMatch() *listenerv3.FilterChainMatch {
	return &listenerv3.FilterChainMatch{ApplicationProtocols: slices.Clone(plaintextHTTPALPNs)}
}

// setSniffing gives the sniffed outbound listener l http_inspector (and
// the other inspectors its chains need, populateListenerFilters without
// original_dst: virtualOutbound restored the destination) and Istio's
// listener_filters_timeout, protocolDetectionTimeout, continuing on
// timeout as TCP. With the default (no timeout), a server-first protocol
// on such a port waits for the client, as in Istio: declare it TCP.
func setSniffing(l *listenerv3.Listener) error {
	fs, err := populateListenerFilters(l.GetFilterChains(), true)
	if err != nil {
		return fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	l.ListenerFilters = fs
	l.ContinueOnListenerFiltersTimeout = true
	l.ListenerFiltersTimeout = durationpb.New(protocolDetectionTimeout)
	return nil
}

// listenerProtocol is Istio's ListenerProtocol of an inbound port.
type listenerProtocol int

const (
	protocolTCP  listenerProtocol = iota // tcp_proxy
	protocolHTTP                         // HTTP connection manager
	protocolAuto                         // sniffed: an HTTP chain for http/1.1 and h2c, a TCP chain for the rest
)

// inboundProtocol maps a port's protocol as Istio's
// ModelProtocolToListenerProtocol: the HTTP family is HTTP, an unknown
// protocol is sniffed, the rest (TCP, TLS, HTTPS, Mongo, ...) is TCP.
func inboundProtocol(p registry.Protocol) listenerProtocol {
	switch {
	case p == registry.Unknown:
		return protocolAuto
	case p.IsHTTP():
		return protocolHTTP
	}
	return protocolTCP
}

// inboundChainConfig is one inbound port of the workload: Istio's
// inboundChainConfig; its mTLS mode is the workload's PeerAuthentication
// for targetPort (model.MTLSPolicy.ForPort).
type inboundChainConfig struct {
	// servicePort is the service's port (virtual host name), targetPort
	// the app's (chain match, chain and cluster names).
	servicePort, targetPort uint32
	protocol                registry.Protocol
	// bind is the address the chains, and a bound listener, are named
	// after ("BIND_PORT", Istio's inboundChainConfig.Name) and a bound
	// listener binds: 0.0.0.0 for a service's port, ingressBind's for a
	// Sidecar ingress listener.
	bind string
	// telemetryHost is Istio's telemetryMetadata.InstanceHostname, the
	// host of the route's trace decorator: the service's, or the
	// SidecarScope's synthetic "SIDECAR.NAMESPACE" for an ingress
	// listener.
	telemetryHost string
	// hostname is the service's, for the cluster's istio.services
	// metadata (Istio's findOrCreateService); namespace the service's.
	hostname, namespace string
	// endpoint, when valid, is the Sidecar ingress defaultEndpoint of the
	// port, resolved (ingressEndpoint): the inbound cluster is STATIC to
	// it.
	endpoint netip.AddrPort
	// pipe, when set, is the path of a Sidecar ingress unix://
	// defaultEndpoint (ingressPipe): the inbound cluster is STATIC to that
	// socket (a pipe address), and endpoint is zero.
	pipe string
	// bindToPort is Istio's getBindToPort for a Sidecar ingress
	// listener's captureMode (bindToPort): the port gets a listener of
	// its own on bind:PORT (boundIngressListener) instead of chains of
	// virtualInbound. False for a service's port.
	bindToPort bool
	// connectionPool is the inbound cluster's connection pool, as
	// Istio's buildInboundCluster chooses it (inboundConnectionPool): the
	// Sidecar's for the port (the ingress listener's connectionPool, else
	// the Sidecar's inboundConnectionPool), else the service's
	// DestinationRule's for the port; nil for none (Istio's defaults,
	// unlimited). It replaces, not merges with, what the inbound cluster
	// would otherwise have (applyInboundConnectionPool).
	connectionPool *networking.ConnectionPoolSettings
	// tls is a Sidecar ingress listener's tls (Istio's cc.tlsSettings):
	// under PeerAuthentication DISABLE for the port, the port's one chain
	// terminates it in place of the mesh's mTLS (inboundFilterChains).
	// protocol is then already the one after termination (HTTPS: HTTP,
	// TLS: TCP). Nil for a service's port.
	tls *networking.ServerTLSSettings
}

// name is Istio's inboundChainConfig.Name: "BIND_PORT", the name of the
// chains and of a bound listener.
func (cc inboundChainConfig) name() string { return listenerName(cc.bind, cc.targetPort) }

// clusterName is the chain's inbound cluster, keyed by target port as
// Istio's BuildInboundSubsetKey.
func (cc inboundChainConfig) clusterName() string {
	return xdsapi.ClusterName(xdsapi.Inbound, cc.targetPort, "", "")
}

// inboundChainConfigs lists the inbound ports of p's workload sorted by
// target port. When the Sidecar applying to p has ingress listeners, they
// are the list (sidecarIngressChainConfigs): a service port not in it is
// not served, a listener port no service has is. Otherwise one per target
// port of the instances of the services selecting it, the first service
// (in host order) winning a target port two of them share, as Istio's
// getFilterChainsByServicePort. explicit resolves defaultEndpoints for
// explicit mode (ingressEndpoint).
func inboundChainConfigs(pc *model.PushContext, p *model.Proxy, explicit bool) []inboundChainConfig {
	if hasIngress(pc) {
		return sidecarIngressChainConfigs(pc, p, explicit)
	}
	var out []inboundChainConfig
	seen := map[uint32]bool{}
	for _, si := range pc.InstancesForProxy(p) {
		tp := si.Instance.TargetPort
		if seen[tp] || proxyPorts[tp] {
			continue
		}
		seen[tp] = true
		out = append(out, inboundChainConfig{
			servicePort:    si.Instance.ServicePort.Number,
			targetPort:     tp,
			protocol:       si.Instance.ServicePort.Protocol,
			bind:           wildcardBind,
			telemetryHost:  si.Service.Hostname,
			hostname:       si.Service.Hostname,
			namespace:      si.Service.Namespace,
			connectionPool: inboundConnectionPool(pc, pc.Sidecar().GetSpec().GetInboundConnectionPool(), si.Service.Hostname, si.Instance.ServicePort.Number),
		})
	}
	slices.SortFunc(out, func(a, b inboundChainConfig) int { return cmp.Compare(a.targetPort, b.targetPort) })
	return out
}

// inboundFilterChains returns the chains of one inbound port, as Istio's
// inboundChainForOpts: one per option of inboundChainOptions for the
// port's protocol and its PeerAuthentication mode, each named
// cc.name() ("0.0.0.0_PORT" for a service's port) and matching destination_port PORT with the option's
// transport and application protocols; an HTTP option gets an HTTP
// connection manager, a TCP one a tcp_proxy, each after the authorization
// filters authz (AuthorizationPolicy on TCP ports needs this inbound hop),
// and an mTLS option terminates TLS (inboundTLSContext under mesh). A
// Sidecar ingress listener's tls replaces all that under mode DISABLE: one
// chain matching transport tls that terminates it (serverTransportSocket,
// ALPN h2, http/1.1 as Istio's BuildListenerTLSContext); under other modes
// the mesh's mTLS wins and tls is ignored, as in Istio.
func inboundFilterChains(cc inboundChainConfig, authz inboundAuthz, mode model.MTLSMode, mesh *meshv1alpha1.MeshConfig) ([]*listenerv3.FilterChain, error) {
	name := cc.name()
	var out []*listenerv3.FilterChain
	opts := inboundChainOptions(inboundProtocol(cc.protocol), mode)
	var userTLS *corev3.TransportSocket
	if cc.tls != nil && mode == model.MTLSDisable {
		// Istio's buildInboundListeners: the listener's own TLS, only
		// where it cannot clash with the mesh's mTLS; one chain matching
		// transport tls (getTLSFilterChainMatchOptions).
		opts = []chainOption{{transport: tlsTransport, http: inboundProtocol(cc.protocol) == protocolHTTP}}
		ts, err := serverTransportSocket(cc.tls, true)
		if err != nil {
			return nil, fmt.Errorf("filter chain %q: %w", name, err)
		}
		userTLS = ts
	}
	for _, opt := range opts {
		match := &listenerv3.FilterChainMatch{
			DestinationPort:      wrapperspb.UInt32(cc.targetPort),
			TransportProtocol:    opt.transport,
			ApplicationProtocols: opt.alpn,
		}
		var fc *listenerv3.FilterChain
		var err error
		if opt.http {
			rc := inboundHTTPRouteConfig(cc.clusterName(), strconv.FormatUint(uint64(cc.servicePort), 10), traceOperation(cc.telemetryHost, cc.servicePort))
			fc, err = inboundHTTPChain(name, match, "inbound_"+name, rc, hcmOptions{authz: authz.http, inbound: true})
		} else {
			fc, err = tcpProxyChain(name, match, cc.clusterName(), authz.tcp...)
		}
		if err == nil {
			err = setInboundTLS(fc, opt, mesh)
		}
		if err != nil {
			return nil, err
		}
		if userTLS != nil {
			fc.TransportSocket = userTLS
		}
		out = append(out, fc)
	}
	return out, nil
}

// inboundHTTPRouteConfig is Istio's inline inbound route table: named
// after the cluster, one virtual host "inbound|http|PORT" for any
// authority with the route "default" to cluster (no retries: the app is
// local), decorated with op (nil: none, as the passthrough chain).
func inboundHTTPRouteConfig(cluster, port string, op *routev3.Decorator) *routev3.RouteConfiguration {
	r := defaultRoute(cluster, nil)
	r.Decorator = op
	return &routev3.RouteConfiguration{
		Name: cluster,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    inboundVirtualHostName(port),
			Domains: []string{"*"},
			Routes:  []*routev3.Route{r},
		}},
		MaxDirectResponseBodySizeBytes: maxDirectResponseBody,
	}
}

// inboundHTTPChain is a chain named name with an HTTP connection manager
// carrying rc inline, with the filters of httpListener after authz.
func inboundHTTPChain(name string, match *listenerv3.FilterChainMatch, statPrefix string, rc *routev3.RouteConfiguration, opts hcmOptions) (*listenerv3.FilterChain, error) {
	l, err := httpListener(name, wildcardBind, xdsapi.PortInbound, corev3.TrafficDirection_INBOUND, statPrefix, rc.GetName(), opts)
	if err != nil {
		return nil, err
	}
	fc := l.GetFilterChains()[0]
	var h hcmv3.HttpConnectionManager
	if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
		return nil, fmt.Errorf("filter chain %q: %w", name, err)
	}
	h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	a, err := packAny(&h)
	if err != nil {
		return nil, fmt.Errorf("filter chain %q: %w", name, err)
	}
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	fc.Name, fc.FilterChainMatch = name, match
	return fc, nil
}

// inboundPassthroughChains are Istio's buildInboundPassthroughChains:
// virtualInbound-blackhole for a connection addressed to 15006 itself;
// then, for the workload's PeerAuthentication mode (port 0: every port no
// other chain names) and for each portLevelMtls port that is not one of
// the workload's service ports (ports, matched on destination_port), the
// chains of a sniffed port (inboundChainOptions): the HTTP ones named
// virtualInbound-catchall-http routing any request to
// InboundPassthroughCluster, the TCP ones named virtualInbound proxying
// there.
func inboundPassthroughChains(authz inboundAuthz, mtls model.MTLSPolicy, ports []uint32, mesh *meshv1alpha1.MeshConfig) ([]*listenerv3.FilterChain, error) {
	blackhole, err := tcpProxyChain(virtualInboundBlackholeChain,
		&listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(xdsapi.PortInbound)}, xdsapi.BlackHoleCluster)
	if err != nil {
		return nil, err
	}
	out := []*listenerv3.FilterChain{blackhole}
	type portMode struct {
		port uint32
		mode model.MTLSMode
	}
	pms := []portMode{{0, mtls.Mode}}
	for _, port := range slices.Sorted(maps.Keys(mtls.Ports)) {
		if !slices.Contains(ports, port) && port != xdsapi.PortInbound {
			pms = append(pms, portMode{port, mtls.Ports[port]})
		}
	}
	for _, pm := range pms {
		for _, opt := range inboundChainOptions(protocolAuto, pm.mode) {
			match := &listenerv3.FilterChainMatch{TransportProtocol: opt.transport, ApplicationProtocols: opt.alpn}
			if pm.port != 0 {
				match.DestinationPort = wrapperspb.UInt32(pm.port)
			}
			var fc *listenerv3.FilterChain
			if opt.http {
				rc := inboundHTTPRouteConfig(inboundPassthroughCluster, strconv.Itoa(inboundPassthroughChainPort), nil)
				fc, err = inboundHTTPChain(virtualInboundCatchAllHTTP, match, inboundPassthroughStatPrefix, rc, hcmOptions{authz: authz.http, inbound: true})
			} else {
				fc, err = tcpProxyChain(xdsapi.VirtualInboundListener, match, inboundPassthroughCluster, authz.tcp...)
			}
			if err == nil {
				err = setInboundTLS(fc, opt, mesh)
			}
			if err != nil {
				return nil, err
			}
			out = append(out, fc)
		}
	}
	return out, nil
}

// virtualInboundListener is Istio's virtualInbound: 0.0.0.0:15006, the
// passthrough chains then the chains of every inbound port, each under the
// workload's PeerAuthentication mtls (TLS terminated under mesh), with
// continue_on_listener_filters_timeout, listener_filters_timeout 0s (mesh
// protocolDetectionTimeout's default: no timeout) and the listener filters
// of populateListenerFilters.
func virtualInboundListener(ccs []inboundChainConfig, authz inboundAuthz, mtls model.MTLSPolicy, mesh *meshv1alpha1.MeshConfig) (*listenerv3.Listener, error) {
	var ports []uint32
	for _, cc := range ccs {
		ports = append(ports, cc.targetPort)
	}
	chains, err := inboundPassthroughChains(authz, mtls, ports, mesh)
	if err != nil {
		return nil, err
	}
	for _, cc := range ccs {
		cs, err := inboundFilterChains(cc, authz, mtls.ForPort(cc.targetPort), mesh)
		if err != nil {
			return nil, err
		}
		chains = append(chains, cs...)
	}
	l := &listenerv3.Listener{
		Name:                             xdsapi.VirtualInboundListener,
		Address:                          socketAddress(wildcardBind, xdsapi.PortInbound),
		FilterChains:                     chains,
		TrafficDirection:                 corev3.TrafficDirection_INBOUND,
		ContinueOnListenerFiltersTimeout: true,
		ListenerFiltersTimeout:           durationpb.New(protocolDetectionTimeout),
	}
	if l.ListenerFilters, err = inboundListenerFilters(chains); err != nil {
		return nil, err
	}
	return l, nil
}

// inboundListenerFilters is Istio's populateListenerFilters for a listener
// that does not bind its port: original_dst first; tls_inspector when a
// chain matches transport_protocol tls; http_inspector when a chain
// matches application protocol http/1.1 or h2c. Chains without a
// destination_port (port 0) speak for every port no chain names. As
// Istio's buildTLSInspector, tls_inspector enabled for port 0 is disabled
// on the named ports that do not need it, else enabled only on those that
// do; as buildHTTPInspector, http_inspector is disabled on every port
// (0 included) that does not need it (filter_disabled).
func inboundListenerFilters(chains []*listenerv3.FilterChain) ([]*listenerv3.ListenerFilter, error) {
	return populateListenerFilters(chains, false)
}

// boundListenerFilters is inboundListenerFilters for a listener that binds
// its port (explicitIngressListeners): the inspectors alone, without
// original_dst, as Istio's populateListenerFilters with bindToPort.
func boundListenerFilters(chains []*listenerv3.FilterChain) ([]*listenerv3.ListenerFilter, error) {
	return populateListenerFilters(chains, true)
}

// populateListenerFilters is inboundListenerFilters, with original_dst
// unless bound.
func populateListenerFilters(chains []*listenerv3.FilterChain, bound bool) ([]*listenerv3.ListenerFilter, error) {
	type inspectors struct{ tls, http bool }
	byPort := map[uint32]inspectors{}
	for _, fc := range chains {
		m := fc.GetFilterChainMatch()
		port := m.GetDestinationPort().GetValue()
		i := byPort[port]
		// A server name is read by tls_inspector too (Istio's
		// needTLSInspector: a chain with sniHosts).
		i.tls = i.tls || m.GetTransportProtocol() == tlsTransport || len(m.GetServerNames()) > 0
		i.http = i.http || slices.ContainsFunc(m.GetApplicationProtocols(), func(ap string) bool { return ap == "http/1.1" || ap == "h2c" })
		byPort[port] = i
	}
	ports := make([]uint32, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	where := func(want func(inspectors) bool, skipZero bool) (out []uint32) {
		for _, p := range ports {
			if (p != 0 || !skipZero) && want(byPort[p]) {
				out = append(out, p)
			}
		}
		return out
	}
	var out []*listenerv3.ListenerFilter
	if !bound {
		od, err := listenerFilter(originalDstListenerFilter, &originaldstv3.OriginalDst{}, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, od)
	}
	if len(where(func(i inspectors) bool { return i.tls }, false)) > 0 {
		var pred *listenerv3.ListenerFilterChainMatchPredicate
		if byPort[0].tls {
			if off := where(func(i inspectors) bool { return !i.tls }, true); len(off) > 0 {
				pred = portsPredicate(off)
			}
		} else if on := where(func(i inspectors) bool { return i.tls }, true); len(on) > 0 {
			pred = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{
				NotMatch: portsPredicate(on),
			}}
		}
		f, err := listenerFilter(tlsInspectorListenerFilter, &tlsinspectorv3.TlsInspector{}, pred)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	if len(where(func(i inspectors) bool { return i.http }, false)) > 0 {
		var pred *listenerv3.ListenerFilterChainMatchPredicate
		if off := where(func(i inspectors) bool { return !i.http }, false); len(off) > 0 {
			pred = portsPredicate(off)
		}
		f, err := listenerFilter(httpInspectorListenerFilter, &httpinspectorv3.HttpInspector{}, pred)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// portsPredicate matches a connection to any of ports: a
// destination_port_range [p, p+1) each, or-ed when there are several, as
// Istio's listenerPredicateExcludePorts.
func portsPredicate(ports []uint32) *listenerv3.ListenerFilterChainMatchPredicate {
	var rules []*listenerv3.ListenerFilterChainMatchPredicate
	for _, p := range ports {
		rules = append(rules, &listenerv3.ListenerFilterChainMatchPredicate{
			Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
				DestinationPortRange: &typev3.Int32Range{Start: int32(p), End: int32(p) + 1},
			},
		})
	}
	if len(rules) == 1 {
		return rules[0]
	}
	return &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_OrMatch{
		OrMatch: &listenerv3.ListenerFilterChainMatchPredicate_MatchSet{Rules: rules},
	}}
}

// listenerFilter packs a listener filter with its typed config.
func listenerFilter(name string, cfg proto.Message, disabled *listenerv3.ListenerFilterChainMatchPredicate) (*listenerv3.ListenerFilter, error) {
	a, err := packAny(cfg)
	if err != nil {
		return nil, fmt.Errorf("listener filter %q: %w", name, err)
	}
	return &listenerv3.ListenerFilter{
		Name:           name,
		ConfigType:     &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a},
		FilterDisabled: disabled,
	}, nil
}

// redirectInboundClusters returns the inbound cluster of every chain
// config: Istio's ORIGINAL_DST cluster to the connection's original
// destination (the app's IP and port) from 127.0.0.6, which iptables lets
// through (ISTIO_OUTPUT returns for source 127.0.0.6 on lo); or, for a
// Sidecar ingress defaultEndpoint, a STATIC cluster to that endpoint
// (127.0.0.1:PORT is the app's loopback in its network namespace,
// 0.0.0.0:PORT the workload's IP), as Istio's buildInboundClustersFromSidecar.
//
// Each carries Istio's filter_metadata.istio.services of the port's
// service, as in explicit mode (inboundClusters): the destination
// reporter's destination_service.
func redirectInboundClusters(ccs []inboundChainConfig) ([]*clusterv3.Cluster, error) {
	var out []*clusterv3.Cluster
	for _, cc := range ccs {
		if cc.pipe != "" {
			// No upstream_bind_config: a unix socket has no source
			// address to choose, and no iptables in its way.
			c, err := staticInboundClusterAt(cc.clusterName(), cc.protocol, pipeAddress(cc.pipe), cc.hostname, cc.namespace)
			if err != nil {
				return nil, err
			}
			if err := applyInboundConnectionPool(c, cc.protocol, cc.connectionPool); err != nil {
				return nil, err
			}
			out = append(out, c)
			continue
		}
		if !cc.endpoint.IsValid() {
			c := originalDstInboundCluster(cc.clusterName())
			if err := setProtocolOptions(c, cc.protocol, true); err != nil {
				return nil, err
			}
			c.Metadata = istioServiceMetadata(cc.hostname, cc.namespace)
			if err := applyInboundConnectionPool(c, cc.protocol, cc.connectionPool); err != nil {
				return nil, err
			}
			out = append(out, c)
			continue
		}
		c, err := staticInboundCluster(cc.clusterName(), cc.protocol, cc.endpoint, cc.hostname, cc.namespace)
		if err != nil {
			return nil, err
		}
		if err := applyInboundConnectionPool(c, cc.protocol, cc.connectionPool); err != nil {
			return nil, err
		}
		if a := cc.endpoint.Addr(); a != netip.IPv4Unspecified() && a != netip.AddrFrom4([4]byte{127, 0, 0, 1}) && a != netip.IPv6Loopback() {
			// The workload's own IP: from 127.0.0.6, as Istio's
			// buildInboundCluster binds it (all but 127.0.0.1 and ::1).
			// The app sees that peer, and iptables lets it through
			// where a uid-1337 proxy's call to its own IP would go back
			// to 15006.
			c.UpstreamBindConfig = inboundBindConfig()
		}
		out = append(out, c)
	}
	return out, nil
}

// originalDstInboundCluster is Istio's inbound ORIGINAL_DST cluster called
// name: redirectOriginalDstCluster connecting from 127.0.0.6
// (upstream_bind_config).
func originalDstInboundCluster(name string) *clusterv3.Cluster {
	c := redirectOriginalDstCluster(name)
	c.UpstreamBindConfig = inboundBindConfig()
	return c
}

// inboundBindConfig binds an inbound cluster's connections to 127.0.0.6,
// the source the sidecar's iptables let through to the app.
func inboundBindConfig() *corev3.BindConfig {
	return &corev3.BindConfig{
		SourceAddress: &corev3.SocketAddress{
			Address:       inboundPassthroughBindAddress,
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
		},
	}
}

// redirectPassthroughCluster is Istio's PassthroughCluster of transparent
// mode: ORIGINAL_DST to the connection's original destination.
func redirectPassthroughCluster() *clusterv3.Cluster {
	return redirectOriginalDstCluster(PassthroughCluster)
}

// redirectOriginalDstCluster is an ORIGINAL_DST cluster to the
// connection's original destination (CLUSTER_PROVIDED, no header), with
// unlimited circuit breakers.
func redirectOriginalDstCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(connectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		CircuitBreakers:      &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{defaultThresholds()}},
	}
}
