package translate

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// sidecarMeshConfig returns mesh with the outboundTrafficPolicy of Sidecar
// sc (Sidecar.outboundTrafficPolicy.mode), which overrides the mesh
// config's for the proxies it applies to, as in Istio. mesh itself when sc
// is nil or sets none; mesh is never modified.
func sidecarMeshConfig(sc *model.Sidecar, mesh *meshv1alpha1.MeshConfig) *meshv1alpha1.MeshConfig {
	tp := sc.GetSpec().GetOutboundTrafficPolicy()
	if tp == nil {
		return mesh
	}
	mode := meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY
	if tp.GetMode() == networking.OutboundTrafficPolicy_ALLOW_ANY {
		mode = meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY
	}
	out := &meshv1alpha1.MeshConfig{}
	if mesh != nil {
		out = proto.Clone(mesh).(*meshv1alpha1.MeshConfig)
	}
	out.OutboundTrafficPolicy = &meshv1alpha1.MeshConfig_OutboundTrafficPolicy{Mode: mode}
	return out
}

// egressProxyCluster is the cluster of the Sidecar's
// outboundTrafficPolicy.egressProxy, where unknown outbound traffic goes
// instead of PassthroughCluster, as Istio's BuildCatchAllVirtualHost and
// buildOutboundCatchAllNetworkFiltersOnly (GetDestinationCluster with no
// service): "outbound|PORT|SUBSET|HOST", the host taken as written. The
// host must be among the Sidecar's egress hosts for the cluster to exist
// (the API's note); otherwise the proxy answers 503 NC. "" when the
// Sidecar names none or its mode is not ALLOW_ANY (validation refuses
// that).
func egressProxyCluster(sc *model.Sidecar) string {
	tp := sc.GetSpec().GetOutboundTrafficPolicy()
	d := tp.GetEgressProxy()
	if d.GetHost() == "" || tp.GetMode() != networking.OutboundTrafficPolicy_ALLOW_ANY {
		return ""
	}
	return xdsapi.ClusterName(xdsapi.Outbound, d.GetPort().GetNumber(), d.GetSubset(), d.GetHost())
}

// isHTTPProxyPort reports whether the Sidecar egress listener of outbound
// port port has protocol HTTP_PROXY: its listener is an explicit HTTP
// proxy on BIND:PORT routing every HTTP port of the services it imports
// (egressPortRoute).
func isHTTPProxyPort(pc *model.PushContext, port uint32) bool {
	l := pc.Sidecar().EgressListenerForPort(port)
	return l != nil && l.Protocol == registry.HTTPProxy
}

// egressPortRoute is the route table name of outbound port port's HTTP
// listener: outboundHTTPRoute of that port's HTTP services, or, for an
// HTTP_PROXY egress listener, of every HTTP port of the services that
// listener imports, as Istio's BuildSidecarOutboundVirtualHosts takes
// listenerPort 0 for it (as for http_proxy) and the listener's own
// services and VirtualServices. The caller adds the catch-all.
func egressPortRoute(pc *model.PushContext, p *model.Proxy, name string, port uint32) (*routev3.RouteConfiguration, error) {
	if isHTTPProxyPort(pc, port) {
		return outboundHTTPRoute(pc.ForEgressPort(port), p, name, 0)
	}
	return outboundHTTPRoute(pc, p, name, port)
}

// egressPortProtocol is the protocol outbound port port's listener is
// built for: the port.protocol of the Sidecar egress listener with that
// port, as Istio's buildSidecarOutboundListeners builds that listener for
// the egress listener's port whatever the imported services' ports say
// (an HTTP service on a TCP egress listener is proxied as TCP; a TCP
// service on an HTTP one gets no chain), else svcProto, the service
// port's own. Route tables still hold the HTTP ports of services only.
func egressPortProtocol(pc *model.PushContext, port uint32, svcProto registry.Protocol) registry.Protocol {
	if l := pc.Sidecar().EgressListenerForPort(port); l != nil && l.Protocol != "" {
		return l.Protocol
	}
	return svcProto
}

// hasIngress reports whether the Sidecar applying to the proxy of pc has
// ingress listeners (Istio's SidecarScope.HasIngressListener): the
// workload's inbound ports then come from that list alone
// (sidecarIngressChainConfigs), not from its services' ports.
func hasIngress(pc *model.PushContext) bool {
	return len(pc.Sidecar().GetSpec().GetIngress()) > 0
}

// sidecarIngressChainConfigs lists the inbound ports of p's workload as
// the ingress listeners of the Sidecar applying to it declare them, as
// Istio's buildInboundChainConfigs with ingress listeners: one per
// listener, its port number being both the port the chain matches and the
// inbound cluster's ("inbound|PORT||"; the API has no targetPort), its
// protocol and name the port's (registry.ParseProtocol). The first
// listener wins a port two of them name; the proxy's own ports are left
// out. Istio names a listener's chains, and the listener it binds, after
// the ingress listener's bind and port, not after a service: bind is
// ingressBind's (the listener's bind, else the proxy's default). Its telemetry hostname (the route's trace decorator) is
// Istio's synthetic "SIDECAR.NAMESPACE" of the SidecarScope; only the
// inbound cluster's istio.services metadata names a service, as Istio's
// findOrCreateService: the first one selecting the workload whose target
// port is the listener's port, else the same synthetic name in the
// Sidecar's namespace. The endpoint is the defaultEndpoint's
// (ingressEndpoint), or its unix socket (ingressPipe); zero without one. bindToPort is Istio's
// getBindToPort for the listener's captureMode. Sorted by port; nil when
// the Sidecar has no ingress listeners.
func sidecarIngressChainConfigs(pc *model.PushContext, p *model.Proxy, explicit bool) []inboundChainConfig {
	sc := pc.Sidecar()
	if len(sc.GetSpec().GetIngress()) == 0 {
		return nil
	}
	instances := pc.InstancesForProxy(p)
	scope := sc.Name + "." + sc.Namespace
	var out []inboundChainConfig
	seen := map[uint32]bool{}
	for _, in := range sc.GetSpec().GetIngress() {
		port := in.GetPort()
		if port == nil || port.GetNumber() == 0 || seen[port.GetNumber()] || proxyPorts[port.GetNumber()] {
			continue
		}
		seen[port.GetNumber()] = true
		cc := inboundChainConfig{
			servicePort:   port.GetNumber(),
			targetPort:    port.GetNumber(),
			protocol:      registry.ParseProtocol(port.GetProtocol(), port.GetName()),
			bind:          ingressBind(in.GetBind(), p.IP, explicit),
			telemetryHost: scope,
			hostname:      scope,
			namespace:     sc.Namespace,
			endpoint:      ingressEndpoint(in.GetDefaultEndpoint(), p.IP, explicit),
			pipe:          ingressPipe(in.GetDefaultEndpoint()),
			bindToPort:    bindToPort(in.GetCaptureMode(), explicit),
		}
		if in.GetTls() != nil {
			// Istio's buildInboundChainConfigs: the port speaks what
			// is left after the listener terminates TLS.
			cc.tls = in.GetTls()
			cc.protocol = afterTLSTermination(cc.protocol)
		}
		for _, si := range instances {
			if si.Instance.TargetPort == cc.targetPort && si.Service != nil {
				cc.hostname, cc.namespace = si.Service.Hostname, si.Service.Namespace
				break
			}
		}
		// The port's own pool overrides the Sidecar's, as Istio's
		// InboundConnectionPoolForPort; without either, the rule of the
		// service found above, for the listener's port, as Istio's
		// buildInboundCluster given findOrCreateService's service.
		cc.connectionPool = inboundConnectionPool(pc, cmp.Or(in.GetConnectionPool(), sc.GetSpec().GetInboundConnectionPool()), cc.hostname, cc.targetPort)
		out = append(out, cc)
	}
	slices.SortFunc(out, func(a, b inboundChainConfig) int { return cmp.Compare(a.targetPort, b.targetPort) })
	return out
}

// ingressBind is the address an ingress listener is named after and, when
// it binds its port, bound to, as Istio's buildInboundChainConfigs: the
// listener's bind when set (an IP, validated; written canonically), else
// Istio's getSidecarInboundBindIPs, the proxy's IP when it is a global
// unicast address (its GlobalUnicastIP) and 0.0.0.0 otherwise. In
// explicit mode the default is the proxy's IP whatever it is: local
// mode's workloads share the host's loopback, so a wildcard bind would
// take the port from all of them. bind only names and places the
// listener: chains still match on the port alone (Istio's
// ToFilterChainMatch).
func ingressBind(bind, proxyIP string, explicit bool) string {
	if bind != "" {
		if ip, err := netip.ParseAddr(bind); err == nil {
			return ip.String()
		}
	}
	if explicit {
		return proxyIP
	}
	if ip, err := netip.ParseAddr(proxyIP); err == nil && ip.IsGlobalUnicast() {
		return ip.String()
	}
	return wildcardBind
}

// afterTLSTermination is Istio's Protocol.AfterTLSTermination: HTTPS is
// HTTP once the proxy has terminated TLS, TLS is TCP; others unchanged.
func afterTLSTermination(p registry.Protocol) registry.Protocol {
	switch p {
	case registry.HTTPS:
		return registry.HTTP
	case registry.TLS:
		return registry.TCP
	}
	return p
}

// bindToPort is Istio's getBindToPort: whether an ingress listener of
// captureMode mode gets a listener bound to its port (true) or is only a
// chain of virtualInbound, fed by iptables (false). DEFAULT follows the
// proxy's interception: bound in explicit mode (Istio's NONE), virtual
// under REDIRECT; IPTABLES is never bound and NONE always is, in either
// mode.
func bindToPort(mode networking.CaptureMode, explicit bool) bool {
	if mode == networking.CaptureMode_DEFAULT {
		return explicit
	}
	return mode == networking.CaptureMode_NONE
}

// ingressPipe is the socket path of an ingress listener's unix://PATH
// defaultEndpoint, as Istio's buildInboundClustersFromSidecar takes it
// (the endpoint's family unix, its address the path; BuildAddress drops
// the scheme): an absolute path or "@NAME" (validated). "" for any other
// defaultEndpoint.
func ingressPipe(ep string) string {
	path, ok := strings.CutPrefix(ep, registry.UnixAddressPrefix)
	if !ok {
		return ""
	}
	return path
}

// ingressEndpoint resolves an ingress listener's defaultEndpoint for the
// proxy at proxyIP as Istio's buildInboundClustersFromSidecar: 0.0.0.0,
// :: or no host mean the workload's own IP; 127.0.0.1 and ::1 the
// workload's loopback, except in explicit mode, where there is no pod and
// the app binds its workload's IP, so they mean proxyIP too. Zero for ""
// (Istio's ORIGINAL_DST passthrough) and for what validation refuses
// (unix://, other hosts).
func ingressEndpoint(ep, proxyIP string, explicit bool) netip.AddrPort {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return netip.AddrPort{}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return netip.AddrPort{}
	}
	own, err := netip.ParseAddr(proxyIP)
	if err != nil {
		return netip.AddrPort{}
	}
	switch host {
	case "", "0.0.0.0", "::":
		return netip.AddrPortFrom(own, uint16(n))
	case "127.0.0.1", "::1":
		if explicit {
			return netip.AddrPortFrom(own, uint16(n))
		}
		return netip.AddrPortFrom(netip.MustParseAddr(host), uint16(n))
	}
	return netip.AddrPort{}
}

// pipeEgressListeners returns the listeners, and their route tables, of
// the unix domain socket egress listeners of the Sidecar applying to p
// (model.Sidecar.PipeListeners: port number 0, bind unix://PATH), as
// Istio's buildSidecarOutboundListeners builds them in either interception
// mode: always bound (an iptables-fed listener makes no sense on a socket
// file), named after the bind and port 0 (getListenerName:
// "unix://PATH_0"), at the Envoy Address.pipe PATH (BuildAddress), an
// HTTP connection manager on RDS "unix://PATH" (the bind: Istio's
// rdsName for port 0). The table holds every HTTP port of the services
// the listener's hosts import, routed by the VirtualServices they import
// (outboundHTTPRoute with port 0 over PushContext.ForEgressPipe, Istio's
// BuildSidecarOutboundVirtualHosts with listenerPort 0), then the
// catch-all. A listener that imports no service gets nothing, as Istio
// builds it per service. Validation admits HTTP protocols only on such a
// listener. It fails only when a typed config cannot be packed.
func pipeEgressListeners(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig) ([]*listenerv3.Listener, []*routev3.RouteConfiguration, error) {
	var listeners []*listenerv3.Listener
	var routes []*routev3.RouteConfiguration
	for _, el := range pc.Sidecar().PipeListeners() {
		if !el.Protocol.IsHTTP() || el.Protocol == registry.Unknown {
			continue // refused by validation
		}
		view := pc.ForEgressPipe(el.Pipe)
		if len(view.Services()) == 0 {
			continue
		}
		bind := registry.UnixAddressPrefix + el.Pipe
		rc, err := outboundHTTPRoute(view, p, bind, 0)
		if err != nil {
			return nil, nil, err
		}
		addCatchAll(rc, mesh, egressProxyCluster(pc.Sidecar()))
		name := listenerName(bind, 0)
		l, err := httpListener(name, "", 0, corev3.TrafficDirection_OUTBOUND, "outbound_"+name, bind, hcmOptions{})
		if err != nil {
			return nil, nil, err
		}
		l.Address = pipeAddress(el.Pipe)
		listeners, routes = append(listeners, l), append(routes, rc)
	}
	return listeners, routes, nil
}
