package xdsapi

import (
	"fmt"
	"strconv"
	"strings"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Type URLs of the four xDS resource types Loom serves, in the order a
// proxy must apply them (CDS, EDS, LDS, RDS) to never route to a cluster it
// does not know.
const (
	ClusterType  = resourcev3.ClusterType
	EndpointType = resourcev3.EndpointType
	ListenerType = resourcev3.ListenerType
	RouteType    = resourcev3.RouteType
)

// SecretType is the type URL of SDS secrets (TLS certificates and trust
// bundles) a proxy asks for by name over its ADS stream; it is not in
// TypeURLs, which are subscribed to as wildcards.
const SecretType = resourcev3.SecretType

// TypeURLs lists the served types in apply order.
var TypeURLs = []string{ClusterType, EndpointType, ListenerType, RouteType}

// ShortType is the short name istioctl prints for a type URL: CDS, EDS, LDS, RDS.
func ShortType(typeURL string) string {
	switch typeURL {
	case ClusterType:
		return "CDS"
	case EndpointType:
		return "EDS"
	case ListenerType:
		return "LDS"
	case RouteType:
		return "RDS"
	case SecretType:
		return "SDS"
	}
	return typeURL
}

// Listener and route configuration names, as Istio names them.
const (
	// VirtualOutboundListener is the sidecar's outbound listener (port 15001).
	// In explicit mode it is an HTTP proxy: the app sets HTTP_PROXY to it
	// and requests are routed by Host through the HTTPProxyRoute table.
	VirtualOutboundListener = "virtualOutbound"
	// VirtualInboundListener is the sidecar's inbound listener (port 15006).
	VirtualInboundListener = "virtualInbound"
	// HTTPProxyRoute is the route configuration of the explicit HTTP proxy
	// (Istio's RDSHttpProxy).
	HTTPProxyRoute = "http_proxy"
	// InboundRoute is the route configuration of the inbound listener.
	InboundRoute = "inbound|http"
	// BlackHoleCluster has no endpoints; routes to it answer 503.
	BlackHoleCluster = "BlackHoleCluster"
)

// Well-known ports, as Istio's.
const (
	PortOutbound   = 15001
	PortInbound    = 15006
	PortProxyAdmin = 15000
	// PortProxyStats is Envoy's Prometheus listener in Istio (/stats/prometheus).
	PortProxyStats = 15090
	// PortMergedMetrics is Istio's agent's merged (proxy and app) metrics.
	PortMergedMetrics = 15020
	PortXDS           = 15010
	PortMonitoring    = 15014
)

// GatewayRouteName is the route configuration name of a gateway server on
// port, as Istio names it: "http.8080".
func GatewayRouteName(port uint32) string { return "http." + strconv.FormatUint(uint64(port), 10) }

// GatewayListenerName is the listener name of a gateway server: "0.0.0.0_8080".
func GatewayListenerName(bind string, port uint32) string {
	return bind + "_" + strconv.FormatUint(uint64(port), 10)
}

// TrafficDirection is the first part of an Istio cluster name.
type TrafficDirection string

// Directions of a cluster.
const (
	Outbound TrafficDirection = "outbound"
	Inbound  TrafficDirection = "inbound"
)

// ClusterName builds Istio's cluster name:
// "outbound|9080|v2|reviews.default.svc.cluster.local", or for inbound
// "inbound|9080||". An empty subset or host leaves its field empty.
func ClusterName(dir TrafficDirection, port uint32, subset, host string) string {
	return fmt.Sprintf("%s|%d|%s|%s", dir, port, subset, host)
}

// ParseClusterName splits a name made by ClusterName. ok is false for
// names that do not have its four parts (BlackHoleCluster, static clusters).
func ParseClusterName(name string) (dir TrafficDirection, port uint32, subset, host string, ok bool) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 {
		return "", 0, "", "", false
	}
	p, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return "", 0, "", "", false
	}
	return TrafficDirection(parts[0]), uint32(p), parts[2], parts[3], true
}
