package grpcgen

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// HTTP filter names grpc-go's client supports (gRFC A39 router, A33
// fault); Istio's grpcgen lists exactly these two on a client listener.
const (
	faultFilter  = "envoy.filters.http.fault"
	routerFilter = "envoy.filters.http.router"
)

// Generate builds the xDS resources of proxyless gRPC client p from pc. It
// is pure and safe for concurrent use: the same pc and p give equal
// resources, each list sorted by name.
//
// For every HTTP-family port of every service p sees (exportTo, Sidecar
// egress) it gives:
//   - a Listener "HOST:PORT" whose api_listener is an HttpConnectionManager
//     with http_filters [fault, router] and RDS over ADS for the route
//     configuration "outbound|PORT||HOST" (Istio's grpcgen names it by the
//     service's cluster key);
//   - that RouteConfiguration, holding the virtual host the sidecar
//     translation builds for HOST:PORT (VirtualService matches, weighted
//     subsets, retries, fault, hash policy), with the route timeout given
//     as max_stream_duration, which is the field grpc-go reads (gRFC A31),
//     and per-filter configs other than fault's dropped;
//
// and for every outbound EDS cluster of such a port, the Cluster with only the fields
// grpc-go reads (EDS over ADS, lb_policy ROUND_ROBIN, RING_HASH or
// LEAST_REQUEST and their configs, circuit_breakers, outlier_detection)
// and its ClusterLoadAssignment from translate.ProxylessEndpoints: the
// workloads' own address and target port (there is no sidecar in the path,
// so an endpoint labelled security.istio.io/tlsMode=istio is not sent to
// :15006), in localities with priorities and weights from Istio's locality
// load balancing for the client's node locality, as Istio serves a
// proxyless client the sidecar's EDS. No TLS is configured (Istio's
// grpcgen leaves mTLS off by default).
//
// It fails as translate.Generate does: nil arguments, a missing or bad
// p.IP, or a typed config that cannot be packed.
func Generate(pc *model.PushContext, p *model.Proxy) (*translate.Resources, error) {
	if pc == nil || p == nil {
		return nil, fmt.Errorf("grpcgen: nil push context or proxy")
	}
	// The sidecar's outbound view is what a proxyless client needs; its
	// inbound and listener parts are dropped. An explicit (NONE) sidecar
	// never rewrites ports for iptables.
	sc := *p
	sc.Type = model.SidecarProxy
	sc.InterceptionMode = xdsapi.InterceptionNone
	full, err := translate.Generate(pc, &sc)
	if err != nil {
		return nil, fmt.Errorf("grpcgen: %w", err)
	}
	view := pc.ForProxy(p)

	vhosts := map[string]*routev3.VirtualHost{}
	for _, rc := range full.Routes {
		if rc.GetName() != xdsapi.HTTPProxyRoute {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			vhosts[vh.GetName()] = vh
		}
	}

	out := &translate.Resources{}
	for _, svc := range view.Services() {
		for _, port := range svc.Ports {
			if !port.Protocol.IsHTTP() {
				continue
			}
			name := ListenerName(svc.Hostname, port.Number)
			vh := vhosts[name]
			if vh == nil {
				continue
			}
			routeName := RouteName(svc.Hostname, port.Number)
			l, err := apiListener(name, routeName)
			if err != nil {
				return nil, fmt.Errorf("grpcgen proxy %q: %w", p.ID, err)
			}
			out.Listeners = append(out.Listeners, l)
			out.Routes = append(out.Routes, &routev3.RouteConfiguration{
				Name:         routeName,
				VirtualHosts: []*routev3.VirtualHost{grpcVirtualHost(vh)},
			})
		}
	}

	endpoints := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, cla := range translate.ProxylessEndpoints(pc, &sc) {
		endpoints[cla.GetClusterName()] = cla
	}
	for _, c := range full.Clusters {
		dir, portNum, _, host, ok := xdsapi.ParseClusterName(c.GetName())
		if !ok || dir != xdsapi.Outbound || c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		svc := view.ServiceForHost(host)
		if svc == nil {
			continue
		}
		port, ok := svc.Port(portNum)
		if !ok || !port.Protocol.IsHTTP() {
			continue // grpc-go dials HTTP/2 only
		}
		out.Clusters = append(out.Clusters, grpcCluster(c))
		cla := endpoints[c.GetName()]
		if cla == nil {
			cla = &endpointv3.ClusterLoadAssignment{ClusterName: c.GetName()}
		}
		out.Endpoints = append(out.Endpoints, cla)
	}

	slices.SortFunc(out.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortFunc(out.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return cmp.Compare(a.GetClusterName(), b.GetClusterName())
	})
	return out, nil
}

// ListenerName is the Listener a grpc-go client asks for when it dials
// "xds:///HOST:PORT": "HOST:PORT" (grpc-go's default
// client_default_listener_resource_name_template "%s").
func ListenerName(host string, port uint32) string {
	return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
}

// RouteName is the RouteConfiguration of ListenerName(host, port): the
// service's default cluster name "outbound|PORT||HOST", as Istio's grpcgen
// names it.
func RouteName(host string, port uint32) string {
	return xdsapi.ClusterName(xdsapi.Outbound, port, "", host)
}

// apiListener is a client-side listener of grpc-go: no address, an
// api_listener HttpConnectionManager taking routeName over ADS, with the
// fault filter and the router.
func apiListener(name, routeName string) (*listenerv3.Listener, error) {
	fault, err := packAny(&faultv3.HTTPFault{})
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", name, err)
	}
	router, err := packAny(&routerv3.Router{})
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", name, err)
	}
	hcm, err := packAny(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: faultFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: fault}},
			{Name: routerFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", name, err)
	}
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: hcm},
	}, nil
}

// grpcVirtualHost is a copy of the sidecar's virtual host vh reshaped for
// grpc-go: per-filter configs other than fault's are dropped (grpc-go
// NACKs an override of a filter it does not implement, such as CORS), a
// route timeout becomes max_stream_duration, and a retry policy of zero
// retries, which grpc-go NACKs, is dropped (no retry, as Envoy reads it).
func grpcVirtualHost(vh *routev3.VirtualHost) *routev3.VirtualHost {
	out := proto.Clone(vh).(*routev3.VirtualHost)
	out.TypedPerFilterConfig = faultOnly(out.TypedPerFilterConfig)
	for _, r := range out.Routes {
		r.TypedPerFilterConfig = faultOnly(r.TypedPerFilterConfig)
		a := r.GetRoute()
		if a == nil {
			continue
		}
		for _, wc := range a.GetWeightedClusters().GetClusters() {
			wc.TypedPerFilterConfig = faultOnly(wc.TypedPerFilterConfig)
		}
		if t := a.GetTimeout(); t != nil {
			if t.AsDuration() > 0 && a.MaxStreamDuration == nil {
				a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: t}
			}
			a.Timeout = nil
		}
		a.MaxGrpcTimeout = nil //nolint:staticcheck // grpc-go reads max_stream_duration only
		if n := a.GetRetryPolicy().GetNumRetries(); n != nil && n.GetValue() == 0 {
			a.RetryPolicy = nil
		}
	}
	return out
}

// faultOnly keeps the fault filter's entry of a typed_per_filter_config.
func faultOnly(m map[string]*anypb.Any) map[string]*anypb.Any {
	f, ok := m[faultFilter]
	if !ok {
		return nil
	}
	return map[string]*anypb.Any{faultFilter: f}
}

// grpcCluster is sidecar cluster c with only the fields grpc-go's CDS
// reads. An lb_policy grpc-go does not implement (RANDOM, MAGLEV) becomes
// ROUND_ROBIN, as Istio's grpcgen applies only round robin and consistent
// hashing; MAGLEV, Istio's consistent hash choice for Envoy, becomes
// RING_HASH so that the hash policy still pins requests.
func grpcCluster(c *clusterv3.Cluster) *clusterv3.Cluster {
	out := &clusterv3.Cluster{
		Name:                 c.GetName(),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			ServiceName: c.GetEdsClusterConfig().GetServiceName(),
			EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
		},
		ConnectTimeout:   c.GetConnectTimeout(),
		CircuitBreakers:  c.GetCircuitBreakers(),
		OutlierDetection: c.GetOutlierDetection(),
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_RING_HASH:
		out.LbPolicy = clusterv3.Cluster_RING_HASH
		if rh := c.GetRingHashLbConfig(); rh != nil {
			rh = proto.Clone(rh).(*clusterv3.Cluster_RingHashLbConfig)
			rh.HashFunction = clusterv3.Cluster_RingHashLbConfig_XX_HASH // the only one grpc-go accepts
			out.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: rh}
		}
	case clusterv3.Cluster_MAGLEV:
		out.LbPolicy = clusterv3.Cluster_RING_HASH
	case clusterv3.Cluster_LEAST_REQUEST:
		out.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		if lr := c.GetLeastRequestLbConfig(); lr != nil && (lr.GetChoiceCount() == nil || lr.GetChoiceCount().GetValue() >= 2) {
			out.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: lr}
		}
	default:
		out.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
	return out
}

// packAny packs m deterministically into an Any.
func packAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("pack %T: %w", m, err)
	}
	return a, nil
}
