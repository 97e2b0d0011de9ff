package translate

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

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
	// subsetLabels select the instances of a subset cluster; nil for the
	// service port's own cluster.
	subsetLabels map[string]string
}

// outboundClusterSet lists the outbound clusters of pc: per service port
// "outbound|PORT||HOST", and per subset of the DestinationRule applying to
// the host "outbound|PORT|SUBSET|HOST". Order: services by host, ports by
// number, the plain cluster then subsets in DestinationRule order.
func outboundClusterSet(pc *model.PushContext) []outboundCluster {
	var out []outboundCluster
	for _, svc := range pc.Services() {
		dr := pc.DestinationRule(svc.Hostname)
		for _, port := range svc.Ports {
			out = append(out, outboundCluster{
				name:    xdsapi.ClusterName(xdsapi.Outbound, port.Number, "", svc.Hostname),
				service: svc,
				port:    port,
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
					subsetLabels: labels,
				})
			}
		}
	}
	return out
}

// outboundClusters returns an EDS cluster per outbound cluster of pc.
func outboundClusters(pc *model.PushContext) ([]*clusterv3.Cluster, error) {
	var out []*clusterv3.Cluster
	seen := map[string]bool{}
	for _, oc := range outboundClusterSet(pc) {
		if seen[oc.name] {
			continue
		}
		seen[oc.name] = true
		c, err := edsCluster(oc.name, oc.port.Protocol)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// inboundClusters returns "inbound|PORT||" per service port of the
// services selecting p's workload: STATIC, to the app at p.IP:targetPort.
func inboundClusters(pc *model.PushContext, p *model.Proxy) ([]*clusterv3.Cluster, error) {
	var out []*clusterv3.Cluster
	seen := map[uint32]bool{}
	for _, si := range pc.InstancesForProxy(p) {
		port := si.Instance.ServicePort
		if seen[port.Number] {
			continue
		}
		seen[port.Number] = true
		name := xdsapi.ClusterName(xdsapi.Inbound, port.Number, "", "")
		c, err := baseCluster(name, port.Protocol)
		if err != nil {
			return nil, err
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(p.IP, si.Instance.TargetPort, 1)},
			}},
		}
		out = append(out, c)
	}
	return out, nil
}

// blackHoleCluster is a STATIC cluster with no endpoints: 503 for all.
func blackHoleCluster() (*clusterv3.Cluster, error) {
	c, err := baseCluster(xdsapi.BlackHoleCluster, registry.Unknown)
	if err != nil {
		return nil, err
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: xdsapi.BlackHoleCluster}
	return c, nil
}

// edsCluster is a cluster whose endpoints come over ADS.
func edsCluster(name string, proto registry.Protocol) (*clusterv3.Cluster, error) {
	c, err := baseCluster(name, proto)
	if err != nil {
		return nil, err
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{
		EdsConfig:   adsConfigSource(),
		ServiceName: name,
	}
	return c, nil
}

// baseCluster has what every cluster has: name, connect timeout, round
// robin, and h2c upstream when the port speaks HTTP/2 (HTTP2, GRPC). It
// fails only when the protocol options cannot be packed.
func baseCluster(name string, proto registry.Protocol) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(connectTimeout),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
	if proto.IsHTTP2() {
		opts, err := packAny(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			},
		})
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: opts}
	}
	return c, nil
}
