package translate

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// connectTimeout is Istio's default (MeshConfig.connectTimeout).
const connectTimeout = 10 * time.Second

// httpProtocolOptionsKey is where a cluster's upstream HTTP options go in
// typed_extension_protocol_options.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// outboundCluster is one outbound cluster: a service port, or a
// DestinationRule subset of it.
type outboundCluster struct {
	name    string
	service *registry.Service
	port    registry.Port
	// subset and subsetLabels name and select the instances of a subset
	// cluster; "" and nil for the service port's own cluster.
	subset       string
	subsetLabels map[string]string
	// policy is the DestinationRule traffic policy merged for this port and
	// subset (clusterTrafficPolicy); nil when none applies.
	policy *networking.TrafficPolicy
}

// sni is the SNI Istio's clients send to the cluster over ISTIO_MUTUAL,
// which an AUTO_PASSTHROUGH gateway routes by (autoPassthroughSNI).
func (oc outboundCluster) sni() string {
	return autoPassthroughSNI(oc.port.Number, oc.subset, oc.service.Hostname)
}

// outboundClusterSet lists the outbound clusters of pc: per service port
// its egress listeners import (PushContext.EgressClusterPort)
// "outbound|PORT||HOST", and per subset of the DestinationRule applying to
// the host "outbound|PORT|SUBSET|HOST". Order: services by host, ports by
// number, the plain cluster then subsets in DestinationRule order.
func outboundClusterSet(pc *model.PushContext) []outboundCluster {
	var out []outboundCluster
	for _, svc := range pc.Services() {
		dr := pc.DestinationRule(svc.Hostname)
		var drSpec *networking.DestinationRule
		if dr != nil {
			drSpec = dr.Spec
		}
		for _, port := range svc.Ports {
			if !pc.EgressClusterPort(svc, port.Number) {
				continue
			}
			out = append(out, outboundCluster{
				name:    xdsapi.ClusterName(xdsapi.Outbound, port.Number, "", svc.Hostname),
				service: svc,
				port:    port,
				policy:  clusterTrafficPolicy(drSpec, nil, port.Number),
			})
			if dr == nil {
				continue
			}
			for _, ss := range dr.Spec.GetSubsets() {
				if ss.GetName() == "" {
					continue
				}
				labels := ss.GetLabels()
				if labels == nil {
					labels = map[string]string{}
				}
				out = append(out, outboundCluster{
					name:         xdsapi.ClusterName(xdsapi.Outbound, port.Number, ss.GetName(), svc.Hostname),
					service:      svc,
					port:         port,
					subset:       ss.GetName(),
					subsetLabels: labels,
					policy:       clusterTrafficPolicy(drSpec, ss, port.Number),
				})
			}
		}
	}
	return out
}

// outboundClusters returns a cluster per outbound cluster of pc, with its
// DestinationRule traffic policy applied (applyTrafficPolicy), discovered
// as its ServiceEntry's resolution says (setDiscovery), its transport
// socket chosen by the DestinationRule's tls or auto mTLS under env
// (applyClusterTLS) and wrapped for the rule's proxyProtocol
// (applyUpstreamProxyProtocol); sidecar says they are a sidecar's
// (upstreamProtocolOptions).
func outboundClusters(pc *model.PushContext, env clusterTLSEnv, sidecar bool) ([]*clusterv3.Cluster, error) {
	var out []*clusterv3.Cluster
	seen := map[string]bool{}
	for _, oc := range outboundClusterSet(pc) {
		if seen[oc.name] {
			continue
		}
		seen[oc.name] = true
		c, err := buildOutboundCluster(oc.name, oc.port.Protocol, sidecar, oc.policy)
		if err != nil {
			return nil, err
		}
		setDiscovery(c, oc)
		if err := applyClusterTLS(c, oc, env); err != nil {
			return nil, err
		}
		if err := applyUpstreamProxyProtocol(c, oc.policy.GetProxyProtocol()); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// buildOutboundCluster returns the EDS cluster called name for a port speaking proto,
// of a sidecar when sidecar (upstreamProtocolOptions), with traffic policy
// tp (nil: Istio's defaults) applied. It fails only when the protocol
// options cannot be packed.
func buildOutboundCluster(name string, proto registry.Protocol, sidecar bool, tp *networking.TrafficPolicy) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(connectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig:   adsConfigSource(),
			ServiceName: name,
		},
		Filters: []*clusterv3.Filter{mxClusterFilter()},
	}
	opts := finishHTTPProtocolOptions(applyTrafficPolicy(c, tp, proto, upstreamProtocolOptions(proto, sidecar)))
	applyLocalityWeightedLB(c, tp)
	if opts != nil {
		a, err := packAny(opts)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: a}
	}
	return c, nil
}

// applyLocalityWeightedLB sets common_lb_config.locality_weighted_lb_config
// when the localityLbSetting in effect for tp has distribute, as Istio's
// applyLocalityLoadBalancer: the proxy then weighs localities by the
// load_balancing_weight applyLocalityWeights gives them.
func applyLocalityWeightedLB(c *clusterv3.Cluster, tp *networking.TrafficPolicy) {
	if len(localityLbSetting(tp).GetDistribute()) == 0 {
		return
	}
	if c.CommonLbConfig == nil {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
	}
	c.CommonLbConfig.LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
		LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
	}
}

// inboundClusters returns the explicit-mode sidecar's inbound clusters,
// STATIC each. Without Sidecar ingress listeners, "inbound|PORT||" per
// service port of the services selecting p's workload, to the app at
// p.IP:targetPort. With them, "inbound|PORT||" per ingress listener port
// (sidecarIngressChainConfigs) and none for the service ports, to the
// listener's defaultEndpoint (ingressEndpoint: in local mode the app binds
// its workload's IP; a unix:// one is a pipe, ingressPipe) or, without
// one, to p.IP:PORT.
func inboundClusters(pc *model.PushContext, p *model.Proxy) ([]*clusterv3.Cluster, error) {
	var out []*clusterv3.Cluster
	if hasIngress(pc) {
		own := netip.MustParseAddr(p.IP) // checked by GenerateWith
		for _, cc := range sidecarIngressChainConfigs(pc, p, true) {
			ep := cc.endpoint
			if !ep.IsValid() {
				ep = netip.AddrPortFrom(own, uint16(cc.targetPort))
			}
			addr := socketAddress(ep.Addr().String(), uint32(ep.Port()))
			if cc.pipe != "" {
				addr = pipeAddress(cc.pipe)
			}
			c, err := staticInboundClusterAt(cc.clusterName(), cc.protocol, addr, cc.hostname, cc.namespace)
			if err != nil {
				return nil, err
			}
			if err := applyInboundConnectionPool(c, cc.protocol, cc.connectionPool); err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, nil
	}
	seen := map[uint32]bool{}
	for _, si := range pc.InstancesForProxy(p) {
		port := si.Instance.ServicePort
		if seen[port.Number] {
			continue
		}
		seen[port.Number] = true
		ep := netip.AddrPortFrom(netip.MustParseAddr(p.IP), uint16(si.Instance.TargetPort))
		var host, ns string
		if si.Service != nil {
			host, ns = si.Service.Hostname, si.Service.Namespace
		}
		c, err := staticInboundCluster(xdsapi.ClusterName(xdsapi.Inbound, port.Number, "", ""), port.Protocol, ep, host, ns)
		if err != nil {
			return nil, err
		}
		cp := inboundConnectionPool(pc, pc.Sidecar().GetSpec().GetInboundConnectionPool(), host, port.Number)
		if err := applyInboundConnectionPool(c, port.Protocol, cp); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// inboundConnectionPool is the connection pool of the inbound cluster of
// a workload port, as Istio's buildInboundCluster chooses it: the
// Sidecar's for the port (sidecarPool, InboundConnectionPoolForPort's:
// the ingress listener's connectionPool, else inboundConnectionPool) when
// set, replacing the rest; else that of the DestinationRule of the port's
// service host (model.InboundDestinationRule), its portLevelSettings
// entry for port (the service port; an ingress listener's own port)
// before its top-level trafficPolicy, an entry without connectionPool
// giving none (portTrafficPolicy); nil for neither (Istio's unlimited
// defaults). Istio applies only the pool of the rule inbound: no outlier
// detection, load balancer, tls or h2UpgradePolicy.
func inboundConnectionPool(pc *model.PushContext, sidecarPool *networking.ConnectionPoolSettings, host string, port uint32) *networking.ConnectionPoolSettings {
	if sidecarPool != nil {
		return sidecarPool
	}
	dr := pc.InboundDestinationRule(host)
	if dr == nil {
		return nil
	}
	tp, _ := portTrafficPolicy(dr.Spec.GetTrafficPolicy(), port)
	return tp.GetConnectionPool()
}

// applyInboundConnectionPool sets connection pool cp (inboundConnectionPool's)
// on inbound cluster c of a port speaking proto, as Istio's
// buildInboundCluster applies it: circuit breaker thresholds, connect
// timeout, keepalive and the upstream HTTP options of applyConnectionPool,
// replacing Istio's unlimited defaults, and http.useClientProtocol (the
// app is spoken to in the downstream's protocol). Nil cp leaves c
// unchanged. It fails only when protocol options cannot be packed.
func applyInboundConnectionPool(c *clusterv3.Cluster, proto registry.Protocol, cp *networking.ConnectionPoolSettings) error {
	if cp == nil {
		return nil
	}
	opts := applyConnectionPool(c, cp, upstreamProtocolOptions(proto, true))
	if cp.GetHttp().GetUseClientProtocol() {
		opts = setUseDownstreamProtocol(opts)
	}
	opts = finishHTTPProtocolOptions(opts)
	if opts == nil {
		return nil
	}
	a, err := packAny(opts)
	if err != nil {
		return fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: a}
	return nil
}

// staticInboundCluster is the inbound cluster called name for a port
// speaking proto: STATIC to ep, with Istio's unlimited circuit breakers
// (as on outbound clusters: without them Envoy's 1024 connections and 3
// retries would cap the app) and, when host is set, Istio's telemetry
// metadata naming the service it serves (the stats filter's
// destination_service). It fails only when protocol options cannot be
// packed.
func staticInboundCluster(name string, proto registry.Protocol, ep netip.AddrPort, host, namespace string) (*clusterv3.Cluster, error) {
	return staticInboundClusterAt(name, proto, socketAddress(ep.Addr().String(), uint32(ep.Port())), host, namespace)
}

// staticInboundClusterAt is staticInboundCluster to the endpoint at addr:
// a socket address, or the pipe of a Sidecar ingress unix://
// defaultEndpoint (pipeAddress).
func staticInboundClusterAt(name string, proto registry.Protocol, addr *corev3.Address, host, namespace string) (*clusterv3.Cluster, error) {
	c, err := baseCluster(name, proto, true)
	if err != nil {
		return nil, err
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{defaultThresholds()}}
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{lbEndpointAt(addr, 1)},
		}},
	}
	if host != "" {
		c.Metadata = istioServiceMetadata(host, namespace)
	}
	return c, nil
}

// blackHoleCluster is a STATIC cluster with no endpoints: 503 for all.
func blackHoleCluster() (*clusterv3.Cluster, error) {
	c, err := baseCluster(xdsapi.BlackHoleCluster, registry.Unknown, false)
	if err != nil {
		return nil, err
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: xdsapi.BlackHoleCluster}
	return c, nil
}

// baseCluster has what every cluster has: name, connect timeout, round
// robin, and the upstream HTTP options of a port speaking proto, on a
// sidecar's cluster when sidecar (setProtocolOptions). It fails only when
// the protocol options cannot be packed.
func baseCluster(name string, proto registry.Protocol, sidecar bool) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(connectTimeout),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
	if err := setProtocolOptions(c, proto, sidecar); err != nil {
		return nil, err
	}
	return c, nil
}

// setProtocolOptions sets c's upstream HTTP options for a port speaking
// proto (upstreamProtocolOptions): h2c for HTTP2 and GRPC, the
// downstream's protocol on a sidecar's cluster (sidecar) of a port of
// unknown protocol, nothing otherwise. It fails only when the options
// cannot be packed.
func setProtocolOptions(c *clusterv3.Cluster, proto registry.Protocol, sidecar bool) error {
	if h := upstreamProtocolOptions(proto, sidecar); h != nil {
		opts, err := packAny(h)
		if err != nil {
			return fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: opts}
	}
	return nil
}

// istioServiceMetadata is Istio's cluster metadata
// filter_metadata.istio.services: [{host, name, namespace}], with name the
// host's first label, as istiod writes it for the stats filter.
func istioServiceMetadata(host, namespace string) *corev3.Metadata {
	name, _, _ := strings.Cut(host, ".")
	svc := &structpb.Struct{Fields: map[string]*structpb.Value{
		"host":      structpb.NewStringValue(host),
		"name":      structpb.NewStringValue(name),
		"namespace": structpb.NewStringValue(namespace),
	}}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
		"services": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStructValue(svc)}}),
	}}}}
}
