package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// isTLS reports whether a port carries TLS the sidecar routes by SNI
// without terminating it (Istio's outbound TLS and HTTPS ports).
func isTLS(p registry.Protocol) bool { return p == registry.TLS || p == registry.HTTPS }

// tlsProtocol is the protocol (egressPortProtocol) of svc's port port.
func tlsProtocol(pc *model.PushContext, svc *registry.Service, port uint32) registry.Protocol {
	for _, sp := range svc.Ports {
		if sp.Number == port {
			return egressPortProtocol(pc, port, sp.Protocol)
		}
	}
	return registry.Unknown
}

// sidecarTLSChains returns the outbound filter chains of a sidecar's TLS
// listener on port for the services svcs (each has port as a TLS or HTTPS
// port), as Istio's buildSidecarOutboundTLSFilterChainOpts: first, for
// each VirtualService bound to the mesh for one of the services (once
// each, in service order), each tls route, each match that applies
// (tlsMatchApplies), a chain matching its sniHosts (and
// destinationSubnets) with a tcp_proxy to the route's destinations
// (weighted); then, for each service no applying tls route covers, a
// chain to its cluster "outbound|PORT||HOST" that matches the SNI
// HOST when sniDefault (a wildcard listener, where SNI is the only way to
// tell services apart) or any connection (a listener on the service's own
// virtual IP). A server name goes to the first chain that claims it. dst
// is the destination address a connection on this listener has (the
// sidecar's own IP in explicit mode, the VIP, or invalid when unknown:
// then destinationSubnets, and a service's address ranges, become the
// chains' prefix_ranges).
func sidecarTLSChains(pc *model.PushContext, p *model.Proxy, port uint32, svcs []*registry.Service, dst netip.Addr, sniDefault bool) ([]*listenerv3.FilterChain, error) {
	var claims sniClaims
	var out []*listenerv3.FilterChain
	covered := map[string]bool{}
	var seen []*model.VirtualService
	for _, svc := range svcs {
		vs := pc.VirtualServiceForHost(model.MeshGateway, svc.Hostname)
		if vs == nil || slices.Contains(seen, vs) {
			continue
		}
		seen = append(seen, vs)
		for i, tr := range vs.Spec.GetTls() {
			for j, m := range tr.GetMatch() {
				if !tlsMatchApplies(m, p, vs.Namespace, port, dst) {
					continue
				}
				snis := slices.Clone(m.GetSniHosts())
				if slices.Contains(snis, "*") {
					snis = nil
				}
				slices.Sort(snis)
				names, ok := claims.claim(slices.Compact(snis))
				if !ok {
					continue
				}
				for _, s := range svcs {
					if slices.ContainsFunc(m.GetSniHosts(), func(h string) bool { return model.HostMatches(h, s.Hostname) }) {
						covered[s.Hostname] = true
					}
				}
				match := withPrefixRanges(sniMatch(names), cidrRanges(m.GetDestinationSubnets()))
				name := fmt.Sprintf("tls.%d.%s.%s.tls[%d].match[%d]", port, vs.Namespace, vs.Name, i, j)
				chain, err := tcpProxyFilterChain(name, match, tcpProxyFor(pc, vs.Namespace, tr.GetRoute(), port, ""))
				if err != nil {
					return nil, err
				}
				out = append(out, chain)
			}
		}
	}
	for _, svc := range svcs {
		if covered[svc.Hostname] {
			continue
		}
		var want []string
		if sniDefault {
			want = []string{svc.Hostname}
		}
		names, ok := claims.claim(want)
		if !ok {
			continue
		}
		cluster := xdsapi.ClusterName(xdsapi.Outbound, port, "", svc.Hostname)
		match := sniMatch(names)
		if !dst.IsValid() {
			// A range of a service on 0.0.0.0_PORT narrows its chain
			// to the range, as Istio's destinationCIDRs.
			match = withPrefixRanges(match, cidrRanges(serviceCIDRs(svc)))
		}
		// Istio's TLS passthrough chain is its single-destination TCP
		// proxy (buildSidecarOutboundTLSFilterChainOpts): the DR's
		// idleTimeout, maxConnectionDuration, useSourceIp and tunnel.
		chain, err := tcpProxyFilterChain(cluster, match, tcpProxyFor(pc, "", nil, port, svc.Hostname))
		if err != nil {
			return nil, err
		}
		out = append(out, chain)
	}
	return out, nil
}

// tlsMatchApplies evaluates a TLSMatchAttributes on the sidecar p's
// listener on port as tcpMatchApplies does its L4 match: port,
// sourceLabels, sourceNamespace, gateways ("mesh") and
// destinationSubnets; sniHosts become the chain's server names.
func tlsMatchApplies(m *networking.TLSMatchAttributes, p *model.Proxy, vsNamespace string, port uint32, dst netip.Addr) bool {
	return tcpMatchApplies(&networking.L4MatchAttributes{
		DestinationSubnets: m.GetDestinationSubnets(),
		Port:               m.GetPort(),
		SourceLabels:       m.GetSourceLabels(),
		Gateways:           m.GetGateways(),
		SourceNamespace:    m.GetSourceNamespace(),
	}, p, vsNamespace, port, dst)
}

// tlsListener is a listener on bind:port named name with tls_inspector
// and chains; bindToPort false leaves it to virtualOutbound's hand-off.
func tlsListener(name, bind string, port uint32, chains []*listenerv3.FilterChain, bindToPort bool) (*listenerv3.Listener, error) {
	inspector, err := listenerFilter(tlsInspectorListenerFilter, &tlsinspectorv3.TlsInspector{}, nil)
	if err != nil {
		return nil, err
	}
	l := &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(bind, port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters:  []*listenerv3.ListenerFilter{inspector},
		FilterChains:     chains,
	}
	if !bindToPort {
		l.BindToPort = wrapperspb.Bool(false)
	}
	return l, nil
}

// tlsPorts groups the services p sees by TLS (or HTTPS) port, sorted by
// port, each port's services in host order; ports in skip are left out.
func tlsPorts(pc *model.PushContext, skip func(uint32) bool) ([]uint32, map[uint32][]*registry.Service) {
	byPort := map[uint32][]*registry.Service{}
	var ports []uint32
	for _, svc := range pc.Services() {
		for _, port := range svc.Ports {
			if !isTLS(egressPortProtocol(pc, port.Number, port.Protocol)) || skip(port.Number) || !pc.EgressServes(svc, port.Number) {
				continue
			}
			if _, ok := byPort[port.Number]; !ok {
				ports = append(ports, port.Number)
			}
			if !slices.Contains(byPort[port.Number], svc) {
				byPort[port.Number] = append(byPort[port.Number], svc)
			}
		}
	}
	slices.Sort(ports)
	return ports, byPort
}

// sidecarTLSListeners returns the explicit-mode sidecar's outbound TLS
// listeners: one on p.IP:PORT per TLS or HTTPS port of the services p
// sees, unless a TCP listener or the proxy's own workload has the port
// (taken), with sidecarTLSChains matching by SNI (the client app
// connects to its own sidecar's IP, so only the SNI tells services
// apart). A port with no chain gets no listener.
func sidecarTLSListeners(pc *model.PushContext, p *model.Proxy, taken map[uint32]bool) ([]*listenerv3.Listener, error) {
	ports, byPort := tlsPorts(pc, func(n uint32) bool { return taken[n] })
	dst := netip.MustParseAddr(p.IP)
	var out []*listenerv3.Listener
	for _, port := range ports {
		bind := egressBind(pc, p.IP, port)
		name := tcpListenerName(bind, port)
		chains, err := sidecarTLSChains(pc.ForEgressPort(port), p, port, byPort[port], dst, true)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		if len(chains) == 0 {
			continue
		}
		l, err := tlsListener(name, bind, port, chains, true)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// redirectTLSListeners returns the transparent-mode sidecar's outbound TLS
// listeners (bind_to_port false: virtualOutbound hands connections to
// them by original destination), as Istio builds a TLS or HTTPS service
// port's outbound listener with buildSidecarOutboundTLSFilterChainOpts:
//
//   - "VIP_PORT" on each virtual IP of a service: the chains of
//     sidecarTLSChains for that service alone (tls routes by sniHosts,
//     else any connection to the service's cluster), destinationSubnets
//     evaluated against the VIP;
//   - "0.0.0.0_PORT" for the services without one, or with address
//     ranges: their chains matching by SNI (the host name of a service no
//     tls route covers, within its ranges; the sniHosts of a route, within
//     its destinationSubnets), then, unless a chain already matches every
//     connection, a last chain to the catch-all's cluster
//     (PassthroughCluster under ALLOW_ANY, BlackHoleCluster under
//     REGISTRY_ONLY), so that TLS to a name no service or route claims
//     goes where virtualOutbound would have sent it.
//
// With a Sidecar egress bind off the wildcard a service no tls route
// covers gets a chain matching every connection instead of its host name
// (Istio's buildSidecarOutboundTLSFilterChainOpts sets sniHosts only on
// the wildcard), so the first such service takes the listener. A service
// whose protocol conflicts with first[port], the protocol of the port's
// first service on the shared listener (wellKnownConflict), gets no chain
// there.
//
// When merge has a listener of the "0.0.0.0_PORT" (or egress bind's
// "BIND_PORT") name, an HTTP or TCP listener outboundPortListeners built,
// the SNI chains go first on it instead (no catch-all of their own; a
// chain without server name is dropped, as it conflicts with the
// listener's) and it gets tls_inspector, as Istio's mergeTCPFilterChains
// keeps chains that conflict with none. Other listener names in taken (a
// VIP listener) and the proxy's own ports get none; the names it uses are
// added to taken.
func redirectTLSListeners(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig, taken map[string]bool, merge map[string]*listenerv3.Listener, first map[uint32]registry.Protocol) ([]*listenerv3.Listener, error) {
	ports, byPort := tlsPorts(pc, func(n uint32) bool { return proxyPorts[n] })
	var out []*listenerv3.Listener
	for _, port := range ports {
		bind, bound := redirectEgressBinding(pc, port)
		// Istio's buildSidecarOutboundTLSFilterChainOpts matches a
		// service's host name only on the wildcard (or for a CIDR or
		// address-less service without bind); off it the chain takes
		// every connection, so the first service keeps the listener.
		sniDefault := bind == "" || bind == wildcardBind
		var wild []*registry.Service
		for _, svc := range byPort[port] {
			vips := serviceVIPs(svc)
			if bind != "" {
				vips = nil // the egress listener's bind takes every service
			}
			if (len(vips) == 0 || len(serviceCIDRs(svc)) > 0) && !wellKnownConflict(first[port], tlsProtocol(pc, svc, port)) {
				wild = append(wild, svc)
			}
			for _, vip := range vips {
				name := listenerName(vip, port)
				if taken[name] {
					continue
				}
				taken[name] = true
				chains, err := sidecarTLSChains(pc.ForEgressPort(port), p, port, []*registry.Service{svc}, netip.MustParseAddr(vip), false)
				if err != nil {
					return nil, fmt.Errorf("listener %q: %w", name, err)
				}
				if len(chains) == 0 {
					continue
				}
				l, err := tlsListener(name, vip, port, chains, false)
				if err != nil {
					return nil, err
				}
				out = append(out, l)
			}
		}
		bind = cmp.Or(bind, wildcardBind)
		name := listenerName(bind, port)
		if l := merge[name]; l != nil && len(wild) > 0 {
			// An HTTP or TCP listener has the name: Istio's
			// mergeTCPFilterChains adds the SNI chains to it (they
			// conflict with none of its chains), with tls_inspector.
			chains, err := sidecarTLSChains(pc.ForEgressPort(port), p, port, wild, netip.Addr{}, sniDefault)
			if err != nil {
				return nil, fmt.Errorf("listener %q: %w", name, err)
			}
			var sni []*listenerv3.FilterChain
			for _, fc := range chains {
				if len(fc.GetFilterChainMatch().GetServerNames()) > 0 {
					sni = addChain(sni, fc)
				}
			}
			if len(sni) == 0 {
				continue
			}
			for _, fc := range l.GetFilterChains() {
				sni = addChain(sni, fc)
			}
			l.FilterChains = sni
			fs, err := populateListenerFilters(l.GetFilterChains(), true)
			if err != nil {
				return nil, fmt.Errorf("listener %q: %w", name, err)
			}
			l.ListenerFilters = fs
			if l.ListenerFiltersTimeout == nil {
				// Istio's buildListenerFromEntry: no timeout without
				// http_inspector, so a server-first protocol waits.
				l.ContinueOnListenerFiltersTimeout = true
				l.ListenerFiltersTimeout = durationpb.New(0)
			}
			continue
		}
		if len(wild) == 0 || taken[name] {
			continue
		}
		taken[name] = true
		chains, err := sidecarTLSChains(pc.ForEgressPort(port), p, port, wild, netip.Addr{}, sniDefault)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		if chains, err = appendCatchAllChain(chains, pc, mesh); err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		l, err := tlsListener(name, bind, port, chains, bound)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// appendCatchAllChain appends virtualOutbound's catch-all chain, a
// tcp_proxy to catchAllCluster, to a 0.0.0.0_PORT listener's chains unless
// one of them already matches every connection (matchesAll), as Istio's
// appendListenerFallthroughRouteForCompleteListener.
func appendCatchAllChain(chains []*listenerv3.FilterChain, pc *model.PushContext, mesh *meshv1alpha1.MeshConfig) ([]*listenerv3.FilterChain, error) {
	if slices.ContainsFunc(chains, matchesAll) {
		return chains, nil
	}
	catchAll, err := tcpProxyChain(virtualOutboundCatchAllTCP, nil, catchAllCluster(mesh, egressProxyCluster(pc.Sidecar())))
	if err != nil {
		return nil, err
	}
	return append(chains, catchAll), nil
}

// matchesAll reports whether fc's filter_chain_match is empty, so that it
// takes every connection no more specific chain takes.
func matchesAll(fc *listenerv3.FilterChain) bool {
	return fc.GetFilterChainMatch() == nil || proto.Equal(fc.GetFilterChainMatch(), &listenerv3.FilterChainMatch{})
}
