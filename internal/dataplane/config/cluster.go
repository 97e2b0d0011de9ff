package config

import (
	"maps"
	"slices"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Cluster is envoy.config.cluster.v3.Cluster with its endpoints (from the
// ClusterLoadAssignment of the same name for EDS clusters, from
// load_assignment for STATIC ones).
type Cluster struct {
	Name           string
	ConnectTimeout time.Duration
	// LBPolicy is "ROUND_ROBIN" (the only one in this version).
	LBPolicy string
	// HTTP2 is true when the upstream speaks HTTP/2 cleartext (h2c): the
	// cluster's HttpProtocolOptions has explicit_http_config.http2_protocol_options.
	HTTP2     bool
	Endpoints []Endpoint
	// CircuitBreakers, Outlier and Conn are parsed by buildClusterPolicy
	// (cluster_policy.go).
	CircuitBreakers CircuitBreakers
	Outlier         *OutlierDetection // nil: no outlier detection
	Conn            ConnectionOptions
}

// HealthStatus of an endpoint (envoy.config.core.v3.HealthStatus, reduced).
type HealthStatus int

// Health statuses. Only Healthy endpoints are picked.
const (
	Healthy HealthStatus = iota
	Unhealthy
)

// Endpoint is one upstream host of a cluster.
type Endpoint struct {
	Address string // "ip:port"
	Health  HealthStatus
	Weight  uint32 // load_balancing_weight; 1 when unset
}

// ---- endpoints ----

func buildEndpoints(cla *endpointv3.ClusterLoadAssignment) ([]Endpoint, error) {
	if len(cla.GetNamedEndpoints()) > 0 {
		return nil, ferr("named_endpoints", "not supported")
	}
	if len(cla.GetPolicy().GetDropOverloads()) > 0 {
		return nil, ferr("policy.drop_overloads", "not supported")
	}
	var eps []Endpoint
	for i, le := range cla.GetEndpoints() {
		lp := idx("endpoints", i)
		if le.GetPriority() != 0 {
			return nil, verr(lp+".priority", strconv.FormatUint(uint64(le.GetPriority()), 10), "must be 0 (priorities are not supported)")
		}
		for j, lb := range le.GetLbEndpoints() {
			p := idx(lp+".lb_endpoints", j)
			if lb.GetEndpointName() != "" {
				return nil, ferr(p+".endpoint_name", "not supported")
			}
			addr, err := socketAddress(p+".endpoint.address", lb.GetEndpoint().GetAddress())
			if err != nil {
				return nil, err
			}
			if len(lb.GetEndpoint().GetAdditionalAddresses()) > 0 {
				return nil, ferr(p+".endpoint.additional_addresses", "not supported")
			}
			ep := Endpoint{Address: addr, Weight: 1}
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
				ep.Health = Healthy
			default:
				ep.Health = Unhealthy
			}
			if w := lb.GetLoadBalancingWeight(); w != nil {
				if w.GetValue() == 0 {
					return nil, verr(p+".load_balancing_weight", "0", "must be at least 1")
				}
				ep.Weight = w.GetValue()
			}
			eps = append(eps, ep)
		}
	}
	return eps, nil
}

// ---- clusters ----

func buildCluster(c *clusterv3.Cluster, clas map[string][]Endpoint) (*Cluster, error) {
	rc := &Cluster{Name: c.GetName(), LBPolicy: "ROUND_ROBIN"}
	var err error
	if rc.ConnectTimeout, err = duration(c.GetConnectTimeout(), "connect_timeout", DefaultConnectTimeout); err != nil {
		return nil, err
	}
	if c.GetConnectTimeout() != nil && rc.ConnectTimeout == 0 {
		return nil, verr("connect_timeout", "0s", "must be greater than 0")
	}
	if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return nil, verr("lb_policy", c.GetLbPolicy().String(), "must be ROUND_ROBIN")
	}
	if c.GetLoadBalancingPolicy() != nil {
		return nil, ferr("load_balancing_policy", "not supported")
	}
	if c.GetTransportSocket() != nil || len(c.GetTransportSocketMatches()) > 0 {
		return nil, ferr("transport_socket", "not supported (no upstream TLS in this version)")
	}
	if err := buildClusterPolicy(c, rc); err != nil {
		return nil, err
	}
	if len(c.GetHealthChecks()) > 0 {
		return nil, ferr("health_checks", "not supported")
	}
	if c.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // deprecated field still honoured.
		rc.HTTP2 = true
	}
	for _, k := range slices.Sorted(maps.Keys(c.GetTypedExtensionProtocolOptions())) {
		p := "typed_extension_protocol_options[" + strconv.Quote(k) + "]"
		if k != HTTPProtocolOptionsKey {
			return nil, ferr(p, "must be %s", HTTPProtocolOptionsKey)
		}
		var opts httpv3.HttpProtocolOptions
		if err := anyTo(c.GetTypedExtensionProtocolOptions()[k], &opts); err != nil {
			return nil, ferr(p, "%v", err)
		}
		exp := opts.GetExplicitHttpConfig()
		if exp == nil {
			return nil, ferr(p+".upstream_protocol_options", "must be explicit_http_config")
		}
		switch {
		case exp.GetHttp2ProtocolOptions() != nil:
			rc.HTTP2 = true
		case exp.GetHttpProtocolOptions() != nil:
			rc.HTTP2 = false
		default:
			return nil, ferr(p+".explicit_http_config", "must be http_protocol_options or http2_protocol_options")
		}
	}

	switch c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type:
	default:
		return nil, ferr("cluster_type", "not supported; type must be EDS or STATIC")
	}
	switch c.GetType() {
	case clusterv3.Cluster_EDS:
		cfg := c.GetEdsClusterConfig().GetEdsConfig()
		if cfg == nil || cfg.GetAds() == nil {
			return nil, ferr("eds_cluster_config.eds_config", "must be ads")
		}
		key := c.GetName()
		if sn := c.GetEdsClusterConfig().GetServiceName(); sn != "" {
			key = sn
		}
		rc.Endpoints = clas[key]
	case clusterv3.Cluster_STATIC:
		if la := c.GetLoadAssignment(); la != nil {
			eps, err := buildEndpoints(la)
			if err != nil {
				return nil, under("load_assignment", err)
			}
			rc.Endpoints = eps
		}
	default:
		return nil, verr("type", c.GetType().String(), "must be EDS or STATIC")
	}
	return rc, nil
}
