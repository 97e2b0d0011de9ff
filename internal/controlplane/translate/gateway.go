package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// serverKind is how a gateway server's connections are served, from its
// port protocol and TLS mode, as Istio's gateway listener builder decides:
// a server is HTTP when its protocol is of the HTTP family, or HTTPS with
// its TLS terminated; the other servers are network (TCP) servers.
type serverKind int

const (
	// serverHTTP is plain-text HTTP: routed by the port's "http.PORT"
	// table, shared by every such server of the port.
	serverHTTP serverKind = iota
	// serverHTTPS terminates TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL,
	// ISTIO_MUTUAL) and routes HTTP by the server's own table
	// "https.PORT.PORTNAME.GATEWAY.NAMESPACE".
	serverHTTPS
	// serverTLSTerminated terminates TLS on a TLS server and routes the
	// decrypted bytes by VirtualService tcp routes.
	serverTLSTerminated
	// serverPassthrough routes the still-encrypted connection by its SNI
	// with VirtualService tls routes (PASSTHROUGH on TLS or HTTPS).
	serverPassthrough
	// serverAutoPassthrough routes by an SNI that names the cluster,
	// "outbound_.PORT_.SUBSET_.HOST" (AUTO_PASSTHROUGH).
	serverAutoPassthrough
	// serverTCP is plain TCP (TCP, MONGO, REDIS, MYSQL): routed by
	// VirtualService tcp routes.
	serverTCP
)

// portKind is what one gateway port listens for: every server on a port
// must agree, as Istio's gateway merging keeps only the servers that do.
type portKind int

const (
	portHTTP portKind = iota // plain-text HTTP servers, one HTTP connection manager
	portTLS                  // TLS servers (terminated or not), chains by SNI
	portTCP                  // one plain TCP server
)

func (k serverKind) port() portKind {
	switch k {
	case serverHTTP:
		return portHTTP
	case serverTCP:
		return portTCP
	}
	return portTLS
}

// classifyServer returns the kind of server s, and false for a server
// that gets no listener (a protocol Loom does not proxy: UDP, unknown).
func classifyServer(s *networking.Server) (serverKind, bool) {
	proto := registry.ParseProtocol(s.GetPort().GetProtocol(), s.GetPort().GetName())
	mode := s.GetTls().GetMode()
	passthrough := mode == networking.ServerTLSSettings_PASSTHROUGH || mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH
	kind := serverPassthrough
	if mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH {
		kind = serverAutoPassthrough
	}
	switch {
	case proto == registry.HTTPS && passthrough, proto == registry.TLS && passthrough:
		return kind, true
	case proto == registry.HTTPS:
		return serverHTTPS, true
	case proto == registry.TLS:
		return serverTLSTerminated, true
	case proto.IsHTTP():
		return serverHTTP, true
	case isTCP(proto):
		return serverTCP, true
	}
	return 0, false
}

// gatewayServer is one server of a Gateway selecting the router.
type gatewayServer struct {
	gateway *model.Gateway
	server  *networking.Server
	kind    serverKind
}

// routeName is the name of the route table of an HTTPS server, as Istio
// names it: "https.443.https-port.my-gateway.istio-system".
func (gs gatewayServer) routeName() string {
	return fmt.Sprintf("https.%d.%s.%s.%s", gs.server.GetPort().GetNumber(), gs.server.GetPort().GetName(),
		gs.gateway.Name, gs.gateway.Namespace)
}

// gatewayPort is a port the router listens on, with the servers on it.
type gatewayPort struct {
	port    uint32
	kind    portKind
	servers []gatewayServer
}

// gatewayServers groups the servers of the Gateways selecting p by port,
// sorted by port, each port's servers in Gateway (namespace/name) then
// server order. A port's kind is its first server's; a later server of
// another kind (plain-text HTTP beside HTTPS, a second TCP server) is left
// out, as Istio's gateway merging drops conflicting servers.
func gatewayServers(pc *model.PushContext, p *model.Proxy) []gatewayPort {
	byPort := map[uint32]*gatewayPort{}
	var out []*gatewayPort
	for _, g := range pc.GatewaysForProxy(p) {
		for _, s := range g.Spec.GetServers() {
			port := s.GetPort()
			kind, ok := classifyServer(s)
			if port.GetNumber() == 0 || !ok {
				continue
			}
			gp := byPort[port.GetNumber()]
			if gp == nil {
				gp = &gatewayPort{port: port.GetNumber(), kind: kind.port()}
				byPort[gp.port] = gp
				out = append(out, gp)
			}
			if gp.kind != kind.port() || gp.kind == portTCP && len(gp.servers) > 0 {
				continue
			}
			gp.servers = append(gp.servers, gatewayServer{gateway: g, server: s, kind: kind})
		}
	}
	slices.SortFunc(out, func(a, b *gatewayPort) int { return cmp.Compare(a.port, b.port) })
	ports := make([]gatewayPort, len(out))
	for i, gp := range out {
		ports[i] = *gp
	}
	return ports
}

// gatewayListeners returns a listener per gateway port, named as Istio's
// ("0.0.0.0_8080") but bound to the proxy's IP: an HTTP port's has one
// HTTP connection manager with the gateway's authorization filters authz;
// a TLS port's has tls_inspector and a filter chain per server name
// (gatewayTLSChains); a TCP port's one tcp_proxy chain. A port whose
// servers yield no chain gets no listener.
func gatewayListeners(pc *model.PushContext, p *model.Proxy, ports []gatewayPort, authz []*hcmv3.HttpFilter) ([]*listenerv3.Listener, error) {
	var out []*listenerv3.Listener
	for _, gp := range ports {
		name := xdsapi.GatewayListenerName(gatewayBind, gp.port)
		statPrefix := "outbound_" + name
		switch gp.kind {
		case portHTTP:
			l, err := httpListener(name, p.IP, gp.port, corev3.TrafficDirection_OUTBOUND,
				statPrefix, xdsapi.GatewayRouteName(gp.port), hcmOptions{authz: authz, useRemoteAddress: true})
			if err != nil {
				return nil, err
			}
			out = append(out, l)
		case portTLS:
			chains, err := gatewayTLSChains(pc, p, gp, statPrefix, authz)
			if err != nil {
				return nil, fmt.Errorf("listener %q: %w", name, err)
			}
			if len(chains) == 0 {
				continue
			}
			l, err := tlsListener(name, p.IP, gp.port, chains, true)
			if err != nil {
				return nil, err
			}
			out = append(out, l)
		case portTCP:
			gs := gp.servers[0]
			tp := gatewayTCPProxy(pc, gs)
			if tp == nil {
				continue
			}
			chain, err := tcpProxyFilterChain(name, nil, tp)
			if err != nil {
				return nil, err
			}
			out = append(out, &listenerv3.Listener{
				Name:             name,
				Address:          socketAddress(p.IP, gp.port),
				TrafficDirection: corev3.TrafficDirection_OUTBOUND,
				FilterChains:     []*listenerv3.FilterChain{chain},
			})
		}
	}
	return out, nil
}

// sniClaims hands out SNI server names to the filter chains of one
// listener in order, so that no two chains match the same name (the proxy
// refuses overlapping chains, as Envoy does): a name goes to the first
// chain that asks for it, and the chain without server names (any SNI,
// none) to the first that asks for it. Later claims lose, as Istio keeps
// the first server of a duplicate host.
type sniClaims struct {
	names    map[string]bool
	wildcard bool
}

// claim returns the names of want not yet taken, and whether the chain is
// still wanted: a chain that asked for names and got none, or asked for
// the wildcard (nil want) when it is taken, is dropped.
func (c *sniClaims) claim(want []string) ([]string, bool) {
	if len(want) == 0 {
		if c.wildcard {
			return nil, false
		}
		c.wildcard = true
		return nil, true
	}
	if c.names == nil {
		c.names = map[string]bool{}
	}
	var got []string
	for _, n := range want {
		if !c.names[n] {
			c.names[n] = true
			got = append(got, n)
		}
	}
	return got, len(got) > 0
}

// serverSNIHosts are the SNI names a server's TLS chain matches: its hosts
// without their namespace part, sorted and unique; nil (any SNI) when one
// is "*", as Istio's getSNIHostsForServer.
func serverSNIHosts(s *networking.Server) []string {
	var out []string
	for _, h := range s.GetHosts() {
		_, host := splitServerHost(h)
		if host == "*" {
			return nil
		}
		out = append(out, host)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// gatewayTLSChains returns the filter chains of a TLS port: per server in
// order, a terminating chain (HTTPS: an HTTP connection manager on the
// server's table; TLS: a tcp_proxy by the tcp routes) matching the
// server's hosts as SNI, or, for PASSTHROUGH, a chain per tls route match
// that applies (gatewayPassthroughChains), or for AUTO_PASSTHROUGH a chain
// per cluster SNI.
func gatewayTLSChains(pc *model.PushContext, p *model.Proxy, gp gatewayPort, statPrefix string, authz []*hcmv3.HttpFilter) ([]*listenerv3.FilterChain, error) {
	var claims sniClaims
	var out []*listenerv3.FilterChain
	for _, gs := range gp.servers {
		switch gs.kind {
		case serverHTTPS, serverTLSTerminated:
			names, ok := claims.claim(serverSNIHosts(gs.server))
			if !ok {
				continue
			}
			ts, err := gatewayTransportSocket(gs)
			if err != nil {
				return nil, err
			}
			chain := &listenerv3.FilterChain{
				Name:             gs.routeName(),
				FilterChainMatch: sniMatch(names),
				TransportSocket:  ts,
			}
			if gs.kind == serverHTTPS {
				f, err := hcmFilter(statPrefix, gs.routeName(), hcmOptions{authz: authz, useRemoteAddress: true})
				if err != nil {
					return nil, err
				}
				chain.Filters = []*listenerv3.Filter{f}
			} else {
				tp := gatewayTCPProxy(pc, gs)
				if tp == nil {
					continue
				}
				tc, err := tcpProxyFilterChain(chain.Name, chain.FilterChainMatch, tp)
				if err != nil {
					return nil, err
				}
				chain.Filters = tc.Filters
				chain.Name = strings.Replace(chain.Name, "https.", "tls.", 1)
			}
			out = append(out, chain)
		case serverPassthrough:
			chains, err := gatewayPassthroughChains(pc, gs, &claims)
			if err != nil {
				return nil, err
			}
			out = append(out, chains...)
		case serverAutoPassthrough:
			chains, err := gatewayAutoPassthroughChains(pc, gs, &claims)
			if err != nil {
				return nil, err
			}
			out = append(out, chains...)
		}
	}
	return out, nil
}

// sniMatch is the filter chain match of server names; nil for none.
func sniMatch(names []string) *listenerv3.FilterChainMatch {
	if len(names) == 0 {
		return nil
	}
	return &listenerv3.FilterChainMatch{ServerNames: names}
}

// gatewayVirtualServices returns the VirtualServices bound to gs's Gateway
// that gs may serve (serverNamespaceAllows), each with the hosts it shares
// with the server's hosts.
func gatewayVirtualServices(pc *model.PushContext, gs gatewayServer) []*model.VirtualService {
	var out []*model.VirtualService
	for _, vs := range pc.VirtualServicesForGateway(gs.gateway.Ref()) {
		if len(serverHostsFor(gs, vs)) > 0 {
			out = append(out, vs)
		}
	}
	return out
}

// serverHostsFor returns the hosts vs shares with the server gs (the more
// specific of each intersecting pair), unique, in order.
func serverHostsFor(gs gatewayServer, vs *model.VirtualService) []string {
	var out []string
	for _, sh := range gs.server.GetHosts() {
		ns, host := splitServerHost(sh)
		if !serverNamespaceAllows(ns, vs.Namespace, gs.gateway.Namespace) {
			continue
		}
		for _, vh := range vs.Hosts {
			if h, ok := intersectHosts(vh, host); ok && !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// l4MatchAppliesToGateway reports whether a tls or tcp route match applies
// on gateway gs: its gateways, when set, name gs's Gateway, and its port,
// when set, is the server's. sourceLabels never apply on a router, as in
// Istio's gateway l4 match.
func l4MatchAppliesToGateway(gateways []string, port uint32, gs gatewayServer, vsNamespace string) bool {
	if port != 0 && port != gs.server.GetPort().GetNumber() {
		return false
	}
	return len(gateways) == 0 || slices.ContainsFunc(gateways, func(g string) bool {
		return model.ResolveGatewayName(g, vsNamespace) == gs.gateway.Ref()
	})
}

// gatewayTCPProxy is the tcp_proxy of a TCP or TLS-terminating server: the
// first tcp route (of the VirtualServices bound to the Gateway whose hosts
// meet the server's, in namespace/name order) whose match applies
// (l4MatchAppliesToGateway; a route without match always does), as Istio's
// buildGatewayNetworkFiltersFromTCPRoutes. Nil when none does: the server
// then gets no chain.
func gatewayTCPProxy(pc *model.PushContext, gs gatewayServer) *tcpv3.TcpProxy {
	port := gs.server.GetPort().GetNumber()
	for _, vs := range gatewayVirtualServices(pc, gs) {
		for _, tr := range vs.Spec.GetTcp() {
			applies := len(tr.GetMatch()) == 0 || slices.ContainsFunc(tr.GetMatch(), func(m *networking.L4MatchAttributes) bool {
				return l4MatchAppliesToGateway(m.GetGateways(), m.GetPort(), gs, vs.Namespace)
			})
			if applies && len(tr.GetRoute()) > 0 {
				return tcpProxyFor(pc, vs.Namespace, tr.GetRoute(), port, "")
			}
		}
	}
	return nil
}

// gatewayPassthroughChains returns the chains of a PASSTHROUGH server: for
// each VirtualService bound to the Gateway whose hosts meet the server's,
// each tls route, each match that applies (l4MatchAppliesToGateway), a
// chain matching the match's sniHosts that the server's hosts cover
// (claimed in order) and its destinationSubnets, with a tcp_proxy to the
// route's destinations, as Istio's buildGatewayNetworkFiltersFromTLSRoutes.
func gatewayPassthroughChains(pc *model.PushContext, gs gatewayServer, claims *sniClaims) ([]*listenerv3.FilterChain, error) {
	port := gs.server.GetPort().GetNumber()
	var out []*listenerv3.FilterChain
	for _, vs := range gatewayVirtualServices(pc, gs) {
		hosts := serverHostsFor(gs, vs)
		for i, tr := range vs.Spec.GetTls() {
			for j, m := range tr.GetMatch() {
				if !l4MatchAppliesToGateway(m.GetGateways(), m.GetPort(), gs, vs.Namespace) {
					continue
				}
				snis := sniHostsWithin(m.GetSniHosts(), hosts)
				if snis == nil {
					continue
				}
				names, ok := claims.claim(snis)
				if !ok {
					continue
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
	return out, nil
}

// sniHostsWithin returns the sniHosts a server covering hosts may match:
// each sniHost intersected with the hosts (the more specific of a pair),
// sorted and unique. "*" in the result means any SNI and returns an empty
// non-nil slice; nil means none applies.
func sniHostsWithin(sniHosts, hosts []string) []string {
	var out []string
	for _, s := range sniHosts {
		for _, h := range hosts {
			if x, ok := intersectHosts(s, h); ok {
				if x == "*" {
					return []string{}
				}
				out = append(out, x)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// gatewayAutoPassthroughChains returns the chains of an AUTO_PASSTHROUGH
// server: for each service port (and DestinationRule subset) whose host
// the server's hosts cover, a chain matching the SNI Istio's clients send
// for it, "outbound_.PORT_.SUBSET_.HOST", with a tcp_proxy to the
// SNI-DNAT cluster of that name (sniDNATClusters). This is what Istio's
// sni_cluster filter does with one chain; Loom lists the names instead.
func gatewayAutoPassthroughChains(pc *model.PushContext, gs gatewayServer, claims *sniClaims) ([]*listenerv3.FilterChain, error) {
	var hosts []string
	for _, sh := range gs.server.GetHosts() {
		_, h := splitServerHost(sh)
		hosts = append(hosts, h)
	}
	var out []*listenerv3.FilterChain
	for _, oc := range autoPassthroughClusters(pc, hosts) {
		sni := oc.sni()
		names, ok := claims.claim([]string{sni})
		if !ok {
			continue
		}
		// The SNI-DNAT cluster of that name (sniDNATClusters).
		chain, err := tcpProxyChain(sni, sniMatch(names), sni)
		if err != nil {
			return nil, err
		}
		out = append(out, chain)
	}
	return out, nil
}

// autoPassthroughClusters are the outbound clusters of pc whose host one
// of hosts (an AUTO_PASSTHROUGH server's) covers: those a gateway passes
// mTLS through to, by their SNI.
func autoPassthroughClusters(pc *model.PushContext, hosts []string) []outboundCluster {
	var out []outboundCluster
	for _, oc := range outboundClusterSet(pc) {
		if slices.ContainsFunc(hosts, func(h string) bool { return model.HostMatches(h, oc.service.Hostname) }) {
			out = append(out, oc)
		}
	}
	return out
}

// sniDNATClusters returns Istio's SNI-DNAT clusters of a gateway with
// AUTO_PASSTHROUGH servers (buildOutboundSniDnatClusters): for each
// outbound cluster whose host an AUTO_PASSTHROUGH server's hosts cover, a
// cluster named by the SNI a client sends for it,
// "outbound_.PORT_.SUBSET_.HOST", with the same endpoints (EDS
// service_name: the outbound cluster's name; a DNS cluster's own
// load_assignment) and DestinationRule policy, but no TLS of its own: the
// gateway passes the client's mTLS through to the endpoint's sidecar
// untouched, where the outbound cluster would wrap it in a second
// ISTIO_MUTUAL. None without such a server.
func sniDNATClusters(pc *model.PushContext, ports []gatewayPort) ([]*clusterv3.Cluster, error) {
	var hosts []string
	for _, gp := range ports {
		for _, gs := range gp.servers {
			if gs.kind != serverAutoPassthrough {
				continue
			}
			for _, sh := range gs.server.GetHosts() {
				_, h := splitServerHost(sh)
				hosts = append(hosts, h)
			}
		}
	}
	if len(hosts) == 0 {
		return nil, nil
	}
	var out []*clusterv3.Cluster
	for _, oc := range autoPassthroughClusters(pc, hosts) {
		name := oc.sni()
		c, err := buildOutboundCluster(name, registry.TCP, false, oc.policy)
		if err != nil {
			return nil, err
		}
		setDiscovery(c, oc)
		if c.GetEdsClusterConfig() != nil {
			c.EdsClusterConfig.ServiceName = oc.name
		}
		if c.GetLoadAssignment() != nil {
			c.LoadAssignment.ClusterName = name
		}
		out = append(out, c)
	}
	return out, nil
}

// autoPassthroughSNI is the SNI an Istio client sends to reach a cluster
// through an AUTO_PASSTHROUGH gateway (Istio's BuildDNSSrvSubsetKey):
// "outbound_.9080_.v1_.reviews.default.svc.cluster.local".
func autoPassthroughSNI(port uint32, subset, host string) string {
	return "outbound_." + strconv.FormatUint(uint64(port), 10) + "_." + subset + "_." + host
}

// gatewayRoutes returns the route tables of the gateway ports: "http.PORT"
// for every plain-text HTTP port, from all its servers, and
// "https.PORT.PORTNAME.GATEWAY.NAMESPACE" for each HTTPS server, from that
// server alone (gatewayRouteTable).
func gatewayRoutes(pc *model.PushContext, p *model.Proxy, ports []gatewayPort) ([]*routev3.RouteConfiguration, error) {
	var out []*routev3.RouteConfiguration
	for _, gp := range ports {
		switch gp.kind {
		case portHTTP:
			rc, err := gatewayRouteTable(pc, p, xdsapi.GatewayRouteName(gp.port), gp.port, gp.servers)
			if err != nil {
				return nil, err
			}
			out = append(out, rc)
		case portTLS:
			for _, gs := range gp.servers {
				if gs.kind != serverHTTPS || slices.ContainsFunc(out, func(rc *routev3.RouteConfiguration) bool { return rc.GetName() == gs.routeName() }) {
					continue
				}
				rc, err := gatewayRouteTable(pc, p, gs.routeName(), gp.port, []gatewayServer{gs})
				if err != nil {
					return nil, err
				}
				out = append(out, rc)
			}
		}
	}
	return out, nil
}

// gatewayRouteTable is the route table name of servers on port: a virtual
// host per host of the VirtualServices bound to the servers' Gateways,
// intersected with the servers' hosts, with the routes of every such
// VirtualService in namespace/name order. A host of a server with
// tls.httpsRedirect gets require_tls ALL (a 301 to https for every
// request), and such a server's hosts get a virtual host even with no
// VirtualService, as Istio's gateway route builder does.
func gatewayRouteTable(pc *model.PushContext, p *model.Proxy, name string, port uint32, servers []gatewayServer) (*routev3.RouteConfiguration, error) {
	// binding is a VirtualService serving a host on this port, with every
	// Gateway through which it does: a VirtualService bound to two
	// Gateways selecting the router on one port is emitted once, and a
	// match naming either Gateway applies.
	type binding struct {
		vs       *model.VirtualService
		gateways []string
	}
	byHost := map[string][]*binding{}
	redirect := map[string]bool{}
	for _, gs := range servers {
		ref := gs.gateway.Ref()
		httpsRedirect := gs.server.GetTls().GetHttpsRedirect()
		if httpsRedirect {
			for _, sh := range gs.server.GetHosts() {
				_, host := splitServerHost(sh)
				redirect[host] = true
				if _, ok := byHost[host]; !ok {
					byHost[host] = nil
				}
			}
		}
		for _, vs := range pc.VirtualServicesForGateway(ref) {
			for _, h := range serverHostsFor(gs, vs) {
				if httpsRedirect {
					redirect[h] = true
				}
				i := slices.IndexFunc(byHost[h], func(b *binding) bool { return b.vs == vs })
				if i < 0 {
					byHost[h] = append(byHost[h], &binding{vs: vs})
					i = len(byHost[h]) - 1
				}
				if b := byHost[h][i]; !slices.Contains(b.gateways, ref) {
					b.gateways = append(b.gateways, ref)
				}
			}
		}
	}
	rc := &routev3.RouteConfiguration{Name: name, MaxDirectResponseBodySizeBytes: maxDirectResponseBody}
	for h, bs := range byHost {
		slices.SortFunc(bs, func(a, b *binding) int {
			return cmp.Or(cmp.Compare(a.vs.Namespace, b.vs.Namespace), cmp.Compare(a.vs.Name, b.vs.Name))
		})
		var routes []*routev3.Route
		for _, b := range bs {
			rs, err := virtualServiceRoutes(pc, p, b.vs, b.gateways, port)
			if err != nil {
				return nil, err
			}
			routes = append(routes, rs...)
		}
		if len(routes) == 0 && !redirect[h] {
			continue
		}
		domains := []string{"*"}
		if h != "*" {
			domains = []string{h, hostPort(h, port)}
		}
		vh := &routev3.VirtualHost{Name: hostPort(h, port), Domains: domains, Routes: routes}
		if redirect[h] {
			vh.RequireTls = routev3.VirtualHost_ALL
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	sortVirtualHosts(rc)
	return rc, nil
}
