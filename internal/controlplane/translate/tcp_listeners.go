package translate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// tcpProxyFilter is Envoy's TCP proxy network filter.
const tcpProxyFilter = "envoy.filters.network.tcp_proxy"

// isTCP reports whether a port's traffic is proxied as opaque TCP: TCP and
// the protocols Istio proxies as TCP by default (Mongo, MySQL, Redis).
// HTTPS and TLS need tls routes (SNI) and UDP is not proxied.
func isTCP(p registry.Protocol) bool {
	switch p {
	case registry.TCP, registry.Mongo, registry.MySQL, registry.Redis:
		return true
	}
	return false
}

// tcpPort is one outbound TCP listener port and the service it carries.
type tcpPort struct {
	port    uint32
	service *registry.Service
}

// sidecarTCPPorts lists the ports of the explicit-mode sidecar's outbound
// TCP listeners, sorted by port: each TCP port of the services p sees
// (pc.Services), carried for the first service in host order that has it,
// as Istio keeps the first service on a conflicting 0.0.0.0_PORT listener.
// Left out, and returned in skipped, are the ports the proxy's own workload
// listens on (a target port of its instances: its app is bound there; a
// Sidecar ingress listener's port or its defaultEndpoint's, ingressOwnPorts) and
// the sidecar's own ports 15000, 15001, 15006, 15010 and 15014.
func sidecarTCPPorts(pc *model.PushContext, p *model.Proxy) (ports []tcpPort, skipped []uint32) {
	own := map[uint32]bool{xdsapi.PortOutbound: true, xdsapi.PortInbound: true, xdsapi.PortProxyAdmin: true,
		xdsapi.PortXDS: true, xdsapi.PortMonitoring: true}
	for _, si := range pc.InstancesForProxy(p) {
		own[si.Instance.TargetPort] = true
	}
	for _, n := range ingressOwnPorts(pc, p) {
		own[n] = true
	}
	taken := map[uint32]bool{}
	for _, svc := range pc.Services() {
		for _, port := range svc.Ports {
			if !isTCP(egressPortProtocol(pc, port.Number, port.Protocol)) || taken[port.Number] || !pc.EgressServes(svc, port.Number) {
				continue
			}
			taken[port.Number] = true
			if own[port.Number] {
				skipped = append(skipped, port.Number)
				continue
			}
			ports = append(ports, tcpPort{port: port.Number, service: svc})
		}
	}
	slices.SortFunc(ports, func(a, b tcpPort) int { return cmp.Compare(a.port, b.port) })
	slices.Sort(skipped)
	return ports, skipped
}

// tcpListenerName is the name Istio gives an outbound TCP listener on
// bind:port ("0.0.0.0_9000" with interception; "PROXY_IP_9000" here, as
// the socket binds the proxy's IP).
func tcpListenerName(bind string, port uint32) string {
	return bind + "_" + strconv.FormatUint(uint64(port), 10)
}

// sidecarTCPListeners returns the explicit-mode sidecar's outbound TCP
// listeners, one per port of sidecarTCPPorts, bound to p.IP:PORT: the
// client app connects to its own sidecar's IP and the service's port. Each
// has one filter chain whose only filter is a tcp_proxy to the service
// port's cluster, or to the destinations of the first matching tcp route
// of the service's VirtualService (tcpRouteProxy). It fails only when a
// typed config cannot be packed.
func sidecarTCPListeners(pc *model.PushContext, p *model.Proxy) ([]*listenerv3.Listener, error) {
	ports, _ := sidecarTCPPorts(pc, p)
	out := make([]*listenerv3.Listener, 0, len(ports))
	for _, tp := range ports {
		bind := egressBind(pc, p.IP, tp.port)
		name := tcpListenerName(bind, tp.port)
		// In explicit mode the client connects to its own sidecar's IP.
		proxy := tcpRouteProxy(pc.ForEgressPort(tp.port), p, tp.service, tp.port, netip.MustParseAddr(p.IP))
		a, err := packAny(proxy)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, &listenerv3.Listener{
			Name:             name,
			Address:          socketAddress(bind, tp.port),
			TrafficDirection: corev3.TrafficDirection_OUTBOUND,
			FilterChains: []*listenerv3.FilterChain{{
				Filters: []*listenerv3.Filter{{
					Name:       tcpProxyFilter,
					ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a},
				}},
			}},
		})
	}
	return out, nil
}

// appendTCPListeners appends sidecarTCPListeners and then
// sidecarTLSListeners, on the ports neither a TCP listener nor the
// proxy's own workload (or the sidecar itself) has, to ls.
func appendTCPListeners(ls []*listenerv3.Listener, pc *model.PushContext, p *model.Proxy) ([]*listenerv3.Listener, error) {
	tcp, err := sidecarTCPListeners(pc, p)
	if err != nil {
		return nil, err
	}
	ports, skipped := sidecarTCPPorts(pc, p)
	taken := map[uint32]bool{xdsapi.PortOutbound: true, xdsapi.PortInbound: true, xdsapi.PortProxyAdmin: true,
		xdsapi.PortXDS: true, xdsapi.PortMonitoring: true}
	for _, tp := range ports {
		taken[tp.port] = true
	}
	for _, n := range skipped {
		taken[n] = true
	}
	for _, si := range pc.InstancesForProxy(p) {
		taken[si.Instance.TargetPort] = true
	}
	for _, n := range ingressOwnPorts(pc, p) {
		taken[n] = true
	}
	tls, err := sidecarTLSListeners(pc, p, taken)
	if err != nil {
		return nil, err
	}
	return append(append(ls, tcp...), tls...), nil
}

// ingressOwnPorts are the ports of PROXY_IP that the Sidecar ingress
// listeners of p's workload hold in explicit mode: each listener's port
// (its bound listener, or the app's socket) and each defaultEndpoint's
// port on the workload's IP (the app's socket). No outbound listener may
// take them.
func ingressOwnPorts(pc *model.PushContext, p *model.Proxy) []uint32 {
	var out []uint32
	own := netip.MustParseAddr(p.IP) // checked by GenerateWith
	for _, cc := range sidecarIngressChainConfigs(pc, p, true) {
		out = append(out, cc.targetPort)
		if cc.endpoint.IsValid() && cc.endpoint.Addr() == own {
			out = append(out, uint32(cc.endpoint.Port()))
		}
	}
	return out
}
