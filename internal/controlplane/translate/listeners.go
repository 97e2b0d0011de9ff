package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Envoy's well-known filter names.
const (
	httpConnectionManagerFilter = "envoy.filters.network.http_connection_manager"
	routerFilter                = "envoy.filters.http.router"
)

// gatewayBind is the address in a gateway listener's name: Istio's
// gateways listen on 0.0.0.0; in explicit mode the socket binds the
// proxy's IP but the name stays Istio's.
const gatewayBind = "0.0.0.0"

// hcmOptions are what differs between the HTTP connection managers of
// listeners: the inbound and gateway ones carry authorization filters
// (authz.go), and a gateway's trusts the peer's address rather than
// X-Forwarded-For (Istio's use_remote_address on gateways).
type hcmOptions struct {
	// authz are HTTP filters placed before the others, in their order:
	// jwt_authn (request authentication), then the authorization filters.
	authz            []*hcmv3.HttpFilter
	useRemoteAddress bool
	// inbound marks a sidecar's inbound manager: Istio's
	// forward_client_cert_details APPEND_FORWARD with the peer
	// certificate's subject, URI and DNS SANs in XFCC, so the app sees
	// the caller's SPIFFE ID.
	inbound bool
}

// sidecarListeners returns the explicit-mode sidecar's two listeners; the
// inbound one (explicitInboundListener) carries the HTTP authorization
// filters of inbound. Under Sidecar ingress listeners, the listeners of
// explicitIngressListeners follow, with inbound's filters.
func sidecarListeners(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig, inbound inboundAuthz) ([]*listenerv3.Listener, error) {
	out, err := httpListener(xdsapi.VirtualOutboundListener, p.IP, xdsapi.PortOutbound, corev3.TrafficDirection_OUTBOUND,
		"outbound_"+p.IP+"_15001", xdsapi.HTTPProxyRoute, hcmOptions{})
	if err != nil {
		return nil, err
	}
	in, err := explicitInboundListener(pc, p, mesh, inbound.http)
	if err != nil {
		return nil, err
	}
	ingress, err := explicitIngressListeners(pc, p, mesh, inbound)
	if err != nil {
		return nil, err
	}
	return append([]*listenerv3.Listener{out, in}, ingress...), nil
}

// explicitEgressHTTPListeners are the explicit-mode sidecar's bound
// listeners of its Sidecar egress listeners with a port, as Istio's
// buildSidecarOutboundListeners with bind_to_port: per such listener that
// imports a service with an HTTP port of that number (and, when the
// port-less listener has a bind, per HTTP port it builds), "BIND_PORT" on
// BIND:PORT (bind the listener's, default the proxy's IP) with an HTTP
// connection manager of route table "PORT", which holds only that
// listener's hosts (egressPortRoute: for an HTTP_PROXY listener, every
// HTTP port of them, and a listener as soon as it imports a service) and
// then the catch-all. A name
// another listener of ls has (a TCP or TLS listener of the port), and a
// port of the proxy's IP its own workload holds, get none. HTTP to other
// ports goes through http_proxy (15001) as before.
func explicitEgressHTTPListeners(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig, ls []*listenerv3.Listener) ([]*listenerv3.Listener, []*routev3.RouteConfiguration, error) {
	sc := pc.Sidecar()
	if sc == nil {
		return nil, nil, nil
	}
	taken := map[string]bool{}
	for _, l := range ls {
		taken[l.GetName()] = true
	}
	_, own := sidecarTCPPorts(pc, p)
	own = append(own, ingressOwnPorts(pc, p)...)
	for _, si := range pc.InstancesForProxy(p) {
		own = append(own, si.Instance.TargetPort)
	}
	var ports []uint32
	for _, el := range sc.Listeners {
		if el.Port != 0 {
			ports = append(ports, el.Port)
		}
	}
	if l := sc.EgressListenerBuilding(0); l != nil && l.Bind != "" {
		// The port-less listener (what builds "port 0") has a bind: it
		// takes the HTTP ports it builds, as Istio's catch-all does.
		for _, svc := range pc.Services() {
			for _, port := range svc.Ports {
				if port.Protocol.IsHTTP() && sc.EgressListenerForPort(port.Number) == nil && !proxyPorts[port.Number] &&
					!slices.Contains(ports, port.Number) && pc.EgressServes(svc, port.Number) {
					ports = append(ports, port.Number)
				}
			}
		}
	}
	slices.Sort(ports)
	var listeners []*listenerv3.Listener
	var routes []*routev3.RouteConfiguration
	for _, port := range ports {
		bind := egressBind(pc, p.IP, port)
		name := tcpListenerName(bind, port)
		if taken[name] || bind == p.IP && (slices.Contains(own, port) || port == xdsapi.PortOutbound || port == xdsapi.PortInbound ||
			port == xdsapi.PortProxyAdmin || port == xdsapi.PortXDS || port == xdsapi.PortMonitoring) {
			continue
		}
		routeName := strconv.FormatUint(uint64(port), 10)
		rc, err := egressPortRoute(pc, p, routeName, port)
		if err != nil {
			return nil, nil, err
		}
		if len(rc.GetVirtualHosts()) == 0 && !(isHTTPProxyPort(pc, port) && len(pc.ForEgressPort(port).Services()) > 0) {
			continue // no HTTP service of the port
		}
		addCatchAll(rc, mesh, egressProxyCluster(sc))
		l, err := httpListener(name, bind, port, corev3.TrafficDirection_OUTBOUND, "outbound_"+name, routeName, hcmOptions{})
		if err != nil {
			return nil, nil, err
		}
		taken[name] = true
		listeners, routes = append(listeners, l), append(routes, rc)
	}
	return listeners, routes, nil
}

// explicitIngressListeners are Istio's inbound listeners of a sidecar
// without interception (bind_to_port, buildInboundListeners with
// interception NONE): under Sidecar ingress listeners, the bound listeners
// of boundIngressListeners, on PROXY_IP:PORT (or the listener's bind) and
// named so ("127.0.0.11_9080"). It is how a port no service has, and a TCP port,
// get an inbound hop here: peers reach TCP ports at IP:PORT, and HTTP
// ports of a service keep their IP:15006 route too. It fails only when a
// typed config cannot be packed.
func explicitIngressListeners(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig, authz inboundAuthz) ([]*listenerv3.Listener, error) {
	if !hasIngress(pc) {
		return nil, nil
	}
	return boundIngressListeners(sidecarIngressChainConfigs(pc, p, true), p, pc.MutualTLSFor(p.Namespace, p.Labels), authz, mesh)
}

// boundIngressListeners returns a listener bound to BIND:PORT and named so
// (Istio's inboundCustomListener) for each chain config of ccs that
// isBound, with the chains virtualInbound would have for the port
// (inboundFilterChains: HTTP or tcp_proxy as the port's protocol says,
// under its PeerAuthentication mode in mtls, after authz) and the
// inspectors they need without original_dst (boundListenerFilters). It
// fails only when a typed config cannot be packed.
func boundIngressListeners(ccs []inboundChainConfig, p *model.Proxy, mtls model.MTLSPolicy, authz inboundAuthz, mesh *meshv1alpha1.MeshConfig) ([]*listenerv3.Listener, error) {
	var out []*listenerv3.Listener
	for _, cc := range ccs {
		if !cc.isBound(p.IP) {
			continue
		}
		chains, err := inboundFilterChains(cc, authz, mtls.ForPort(cc.targetPort), mesh)
		if err != nil {
			return nil, err
		}
		l := &listenerv3.Listener{
			Name:                             cc.name(),
			Address:                          socketAddress(cc.bind, cc.targetPort),
			FilterChains:                     chains,
			TrafficDirection:                 corev3.TrafficDirection_INBOUND,
			ContinueOnListenerFiltersTimeout: true,
			ListenerFiltersTimeout:           durationpb.New(protocolDetectionTimeout),
		}
		if l.ListenerFilters, err = boundListenerFilters(chains); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// isBound reports whether cc gets a listener of its own
// (boundIngressListeners) on the workload at proxyIP: its captureMode
// binds the port (bindToPort) and it has a defaultEndpoint that is not the
// socket the listener would take. Without a defaultEndpoint the inbound
// cluster is the app on the port itself (explicit mode) or the
// connection's original destination, the listener itself (REDIRECT), so
// the port is served as unbound instead: through IP:15006 in explicit
// mode, as a virtualInbound chain under REDIRECT. An endpoint on the same
// port at the workload's IP, at the bind address or under a wildcard bind
// (0.0.0.0 or ::) is the app's socket: no listener either (explicit mode's app binding
// PROXY_IP:PORT itself). A unix:// defaultEndpoint (pipe) never is.
func (cc inboundChainConfig) isBound(proxyIP string) bool {
	if cc.pipe != "" {
		// A unix socket is never the port's own socket.
		return cc.bindToPort
	}
	if !cc.bindToPort || !cc.endpoint.IsValid() {
		return false
	}
	if uint32(cc.endpoint.Port()) != cc.targetPort {
		return true
	}
	ep := cc.endpoint.Addr().String()
	bind, err := netip.ParseAddr(cc.bind)
	return ep != proxyIP && ep != cc.bind && err == nil && !bind.IsUnspecified()
}

// Names of the explicit-mode inbound listener's chains.
const (
	explicitInboundMTLSChain      = "virtualInbound-mtls"
	explicitInboundPlaintextChain = "virtualInbound-plaintext"
)

// explicitInboundListener is virtualInbound on p.IP:15006, an HTTP
// connection manager routed by inbound|http, under the PeerAuthentication
// of p's workload. The listener cannot tell the workload ports apart before
// the request is read, so it has a chain per kind of connection that some
// HTTP port takes (any port when the workload has none): an mTLS chain
// (transport tls, ALPN istio/istio-peer-exchange...) for ports not
// DISABLE, a plaintext chain (raw_buffer) for ports not STRICT, chosen by
// tls_inspector as Istio's PERMISSIVE chains are; a connection no chain
// takes is closed. When portLevelMtls gives the ports different modes,
// each chain's route table keeps only the ports of its kind (inline, in
// place of RDS), so a STRICT port is never served in plaintext. With only
// DISABLE the listener is the single plaintext chain, without inspector.
func explicitInboundListener(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig, authz []*hcmv3.HttpFilter) (*listenerv3.Listener, error) {
	mtls := pc.MutualTLSFor(p.Namespace, p.Labels)
	modes := map[model.MTLSMode]bool{}
	if hasIngress(pc) {
		for _, cc := range sidecarIngressChainConfigs(pc, p, true) {
			if inboundProtocol(cc.protocol) != protocolTCP {
				modes[mtls.ForPort(cc.targetPort)] = true
			}
		}
	}
	for _, si := range pc.InstancesForProxy(p) {
		if !hasIngress(pc) && si.Instance.ServicePort.Protocol.IsHTTP() {
			modes[mtls.ForPort(si.Instance.TargetPort)] = true
		}
	}
	if len(modes) == 0 {
		modes[mtls.Mode] = true
	}
	opts := hcmOptions{authz: authz, inbound: true}
	l, err := httpListener(xdsapi.VirtualInboundListener, p.IP, xdsapi.PortInbound, corev3.TrafficDirection_INBOUND,
		"inbound_"+p.IP+"_15006", xdsapi.InboundRoute, opts)
	if err != nil {
		return nil, err
	}
	takesTLS := modes[model.MTLSStrict] || modes[model.MTLSPermissive]
	takesPlain := modes[model.MTLSDisable] || modes[model.MTLSPermissive]
	if !takesTLS {
		return l, nil
	}
	mixed := len(modes) > 1
	chain := func(name string, opt chainOption, keep func(model.MTLSMode) bool) (*listenerv3.FilterChain, error) {
		match := &listenerv3.FilterChainMatch{TransportProtocol: opt.transport, ApplicationProtocols: opt.alpn}
		var fc *listenerv3.FilterChain
		var err error
		if mixed {
			rc := inboundRouteFor(pc, p, func(targetPort uint32) bool { return keep(mtls.ForPort(targetPort)) })
			fc, err = inboundHTTPChain(name, match, "inbound_"+p.IP+"_15006", rc, opts)
		} else {
			fc = proto.Clone(l.GetFilterChains()[0]).(*listenerv3.FilterChain)
			fc.Name, fc.FilterChainMatch = name, match
		}
		if err == nil {
			err = setInboundTLS(fc, opt, mesh)
		}
		return fc, err
	}
	var chains []*listenerv3.FilterChain
	// The PERMISSIVE options of an HTTP port: mTLS from a sidecar, then
	// plaintext.
	opts2 := inboundChainOptions(protocolHTTP, model.MTLSPermissive)
	tlsOpt := opts2[0]
	if !takesPlain {
		tlsOpt = inboundChainOptions(protocolHTTP, model.MTLSStrict)[0]
	}
	fc, err := chain(explicitInboundMTLSChain, tlsOpt, func(m model.MTLSMode) bool { return m != model.MTLSDisable })
	if err != nil {
		return nil, err
	}
	chains = append(chains, fc)
	if takesPlain {
		fc, err := chain(explicitInboundPlaintextChain, opts2[1], func(m model.MTLSMode) bool { return m != model.MTLSStrict })
		if err != nil {
			return nil, err
		}
		chains = append(chains, fc)
	}
	l.FilterChains = chains
	l.ContinueOnListenerFiltersTimeout = true
	l.ListenerFiltersTimeout = durationpb.New(protocolDetectionTimeout)
	tlsInspector, err := listenerFilter(tlsInspectorListenerFilter, &tlsinspectorv3.TlsInspector{}, nil)
	if err != nil {
		return nil, err
	}
	l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspector}
	return l, nil
}

// websocketUpgrade is the upgrade_type Istio allows on every HTTP
// connection manager.
const websocketUpgrade = "websocket"

// httpListener is a listener whose only filter is an HTTP connection
// manager taking its routes from RDS over ADS, with Istio's HTTP filters
// in Istio's order: the authorization filters of opts, the fault filter
// and the CORS filter, both empty (no fault and no CORS unless a route
// configures them), then the router. With opts.useRemoteAddress the
// manager trusts the peer's address as the client's (use_remote_address). As
// Istio's buildHTTPConnectionManager, the manager allows WebSocket upgrades
// (upgrade_configs [{upgrade_type: websocket}]) and disables the stream
// idle timeout (stream_idle_timeout 0s: gRPC streams and WebSockets may
// stay quiet for long). Codec AUTO serves HTTP/1.1 and h2c (HTTP/2 with
// prior knowledge, which gRPC clients use) on the same port. It fails
// only when a typed config cannot be packed.
func httpListener(name, ip string, port uint32, dir corev3.TrafficDirection, statPrefix, routeName string, opts hcmOptions) (*listenerv3.Listener, error) {
	f, err := hcmFilter(statPrefix, routeName, opts)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", name, err)
	}
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ip, port),
		TrafficDirection: dir,
		FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{f}}},
	}, nil
}

// hcmFilter is the HTTP connection manager network filter of httpListener.
func hcmFilter(statPrefix, routeName string, opts hcmOptions) (*listenerv3.Filter, error) {
	cors, err := packAny(&corsv3.Cors{})
	if err != nil {
		return nil, err
	}
	fault, err := packAny(&faultv3.HTTPFault{})
	if err != nil {
		return nil, err
	}
	router, err := packAny(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	filters := slices.Clone(opts.authz)
	if !opts.inbound {
		// Istio's buildHTTPConnectionManager adds its ALPN filter to every
		// manager but sidecar inbound ones, before fault and CORS.
		alpn, err := alpnFilter()
		if err != nil {
			return nil, err
		}
		filters = append(filters, alpn)
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource:    adsConfigSource(),
		}},
		HttpFilters: append(filters, &hcmv3.HttpFilter{
			Name:       faultFilter,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: fault},
		}, &hcmv3.HttpFilter{
			Name:       corsFilter,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cors},
		}, &hcmv3.HttpFilter{
			Name:       routerFilter,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}),
		UpgradeConfigs:    []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: websocketUpgrade}},
		StreamIdleTimeout: durationpb.New(0),
	}
	if opts.useRemoteAddress {
		hcm.UseRemoteAddress = wrapperspb.Bool(true)
	}
	if opts.inbound {
		hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
		hcm.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Uri: true, Dns: true}
	}
	hcmAny, err := packAny(hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{
		Name:       httpConnectionManagerFilter,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
	}, nil
}
