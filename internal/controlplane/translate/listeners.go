package translate

import (
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

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
}

// sidecarListeners returns the explicit-mode sidecar's two listeners; the
// inbound one carries the authorization filters inbound.
func sidecarListeners(p *model.Proxy, inbound []*hcmv3.HttpFilter) ([]*listenerv3.Listener, error) {
	out, err := httpListener(xdsapi.VirtualOutboundListener, p.IP, xdsapi.PortOutbound, corev3.TrafficDirection_OUTBOUND,
		"outbound_"+p.IP+"_15001", xdsapi.HTTPProxyRoute, hcmOptions{})
	if err != nil {
		return nil, err
	}
	in, err := httpListener(xdsapi.VirtualInboundListener, p.IP, xdsapi.PortInbound, corev3.TrafficDirection_INBOUND,
		"inbound_"+p.IP+"_15006", xdsapi.InboundRoute, hcmOptions{authz: inbound})
	if err != nil {
		return nil, err
	}
	return []*listenerv3.Listener{out, in}, nil
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
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource:    adsConfigSource(),
		}},
		HttpFilters: append(slices.Clone(opts.authz), &hcmv3.HttpFilter{
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
	hcmAny, err := packAny(hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{
		Name:       httpConnectionManagerFilter,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
	}, nil
}
