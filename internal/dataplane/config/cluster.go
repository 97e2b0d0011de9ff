package config

import (
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Cluster is envoy.config.cluster.v3.Cluster with its endpoints (from the
// ClusterLoadAssignment of the same name for EDS clusters, from
// load_assignment for STATIC ones).
type Cluster struct {
	Name string
	// IstioService is the first of the cluster's metadata
	// filter_metadata.istio.services (host, name, namespace), the service
	// Istio's stats report as destination_service; zero when absent
	// (Generation.IstioServiceOf then falls back on the cluster's name).
	IstioService   istiostats.Service
	ConnectTimeout time.Duration
	// UpstreamBind is upstream_bind_config.source_address: the IP address
	// (canonical form) every connection of the cluster is made from, the
	// kernel picking the port; "" lets the kernel pick the address too.
	// Istio binds an inbound cluster to the pod's own IP to 127.0.0.6, the
	// source its iptables let through to the app and the peer the app
	// sees.
	UpstreamBind string
	// DNSNetwork is the network a STRICT_DNS or LOGICAL_DNS cluster dials
	// its host names on, from dns_lookup_family: "tcp4" (V4_ONLY), "tcp6"
	// (V6_ONLY) or "tcp" (AUTO, V4_PREFERRED, ALL). Empty for other types.
	DNSNetwork string
	// OriginalDst is original_dst_lb_config; set only when Type is
	// TypeOriginalDst.
	OriginalDst *OriginalDstConfig
	// LBPolicy is Cluster.lb_policy: LBRoundRobin (the default),
	// LBLeastRequest, LBRandom, LBRingHash or LBMaglev.
	LBPolicy string
	// LeastRequest is least_request_lb_config; set only when LBPolicy is
	// LBLeastRequest.
	LeastRequest *LeastRequestConfig
	// RingHash is ring_hash_lb_config; set only when LBPolicy is LBRingHash.
	RingHash *RingHashConfig
	// Maglev is maglev_lb_config; set only when LBPolicy is LBMaglev.
	Maglev *MaglevConfig
	// SlowStart is the slow_start_config of round_robin_lb_config or
	// least_request_lb_config; nil when unset or its slow_start_window is
	// 0 (no endpoint is ever in slow start, as in Envoy).
	SlowStart *SlowStartConfig
	// HealthyPanicThreshold is common_lb_config.healthy_panic_threshold in
	// whole percent (0-100, truncated as Envoy does): when fewer than this
	// share of the endpoints are usable (healthy and not ejected), the
	// balancer uses all of them. nil means Envoy's default,
	// DefaultHealthyPanicThreshold; 0 disables panic mode.
	HealthyPanicThreshold *uint32
	// HTTP2 is true when the upstream speaks HTTP/2 cleartext (h2c): the
	// cluster's HttpProtocolOptions has explicit_http_config.http2_protocol_options.
	HTTP2 bool
	// DownstreamHTTP2 is use_downstream_protocol_config with
	// http2_protocol_options (Istio's useClientProtocol): a request that
	// came over HTTP/2 goes upstream over HTTP/2 (over TLS only when the
	// transport socket offers h2 in ALPN or the request's istio.alpn has
	// an HTTP2 override), others over HTTP/1.1. HTTP2 is
	// then false.
	DownstreamHTTP2 bool
	// NoALPNOverride is filter_metadata istio.alpn_override "false",
	// which istiod sets on clusters of DestinationRule SIMPLE or MUTUAL
	// TLS: the istio.alpn filter leaves their ALPN alone.
	NoALPNOverride bool
	// LocalityWeighted is common_lb_config.locality_weighted_lb_config
	// (not for RING_HASH or MAGLEV, as Envoy): within a priority, a
	// locality is chosen first, in proportion to its LocalityWeight scaled
	// by its share of usable endpoints times the overprovisioning factor.
	LocalityWeighted bool
	Endpoints        []Endpoint
	// CircuitBreakers, Outlier and Conn are parsed by buildClusterPolicy
	// (cluster_policy.go).
	CircuitBreakers CircuitBreakers
	Outlier         *OutlierDetection // nil: no outlier detection
	Conn            ConnectionOptions
	// Transports are the cluster's transport_socket (index 0) and its
	// transport_socket_matches (1..n), indexed by Endpoint.Transport; nil
	// when the cluster sets neither (every endpoint plaintext).
	Transports []UpstreamTransport
	// MetadataExchange is the ALPN protocol of the cluster's
	// istio.metadata_exchange upstream filter ("" for none): a TLS
	// connection to an endpoint that negotiates it runs Istio's TCP
	// metadata exchange (istiostats.MXConn), as istiod configures every
	// outbound cluster.
	MetadataExchange string
}

// DefaultOriginalDstHeader is original_dst_lb_config.http_header_name when
// empty (Envoy's x-envoy-original-dst-host).
const DefaultOriginalDstHeader = "x-envoy-original-dst-host"

// OriginalDstConfig is envoy.config.cluster.v3.Cluster.OriginalDstLbConfig:
// a request goes to the destination a header names (use_http_header), else
// to its connection's original destination (restored by the original_dst
// listener filter on an intercepted connection). A connection whose
// destination was not restored has no original destination: its request
// fails 503 UF.
type OriginalDstConfig struct {
	// Header is http_header_name, lower-cased; DefaultOriginalDstHeader when
	// unset; "" when use_http_header is false. ":authority" and "host" both
	// name the request's authority. Its value is "HOST[:PORT]"; a host name
	// in it is resolved by the proxy at dial time (a Loom extension: Envoy
	// takes only IP:PORT). A request without the header goes to its
	// connection's original destination.
	Header string
	// PortOverride is upstream_port_override (1-65535); 0 when unset.
	PortOverride uint32
}

// Authority reports whether the destination is read from the request's
// authority (Header ":authority" or "host").
func (o *OriginalDstConfig) Authority() bool { return o.Header == ":authority" || o.Header == "host" }

// UseHeader reports whether a request header may name the destination
// (use_http_header).
func (o *OriginalDstConfig) UseHeader() bool { return o.Header != "" }

// Load-balancing policies (Cluster.lb_policy) this version implements.
const (
	LBRoundRobin   = "ROUND_ROBIN"
	LBLeastRequest = "LEAST_REQUEST"
	LBRandom       = "RANDOM"
	LBRingHash     = "RING_HASH"
	LBMaglev       = "MAGLEV"
	// LBClusterProvided is the policy of an ORIGINAL_DST cluster: the
	// request picks its host.
	LBClusterProvided = "CLUSTER_PROVIDED"
)

// Load-balancer defaults Envoy applies when a field is unset, and its limits.
const (
	// DefaultHealthyPanicThreshold is common_lb_config.healthy_panic_threshold
	// when unset, in percent.
	DefaultHealthyPanicThreshold = 50
	// DefaultChoiceCount is least_request_lb_config.choice_count when unset.
	DefaultChoiceCount = 2
	// DefaultMinRingSize and DefaultMaxRingSize are ring_hash_lb_config's
	// minimum_ring_size and maximum_ring_size when unset; MaxRingSize is
	// the largest either may be.
	DefaultMinRingSize = 1024
	DefaultMaxRingSize = 8 << 20
	MaxRingSize        = 8 << 20
	// DefaultMaglevTableSize is maglev_lb_config.table_size when unset;
	// MaxMaglevTableSize is the largest (a table size must be prime).
	DefaultMaglevTableSize = 65537
	MaxMaglevTableSize     = 5000011
	// DefaultSlowStartMinWeightPercent is slow_start_config.min_weight_percent
	// when unset, in percent.
	DefaultSlowStartMinWeightPercent = 10
	// DefaultOverprovisioningFactor is
	// ClusterLoadAssignment.policy.overprovisioning_factor when unset, in
	// percent: a priority (or locality) with at least 100/1.4 ≈ 72 % of its
	// endpoints usable counts as fully available. Only this value is served.
	DefaultOverprovisioningFactor = 140
)

// LeastRequestConfig is envoy.config.cluster.v3.Cluster.LeastRequestLbConfig.
type LeastRequestConfig struct {
	// ChoiceCount is how many random hosts are compared (>= 2; default
	// DefaultChoiceCount).
	ChoiceCount uint32
	// ActiveRequestBias is active_request_bias.default_value (>= 0; default
	// 1): with unequal weights a host's weight is divided by
	// (active requests + 1)^ActiveRequestBias.
	ActiveRequestBias float64
}

// SlowStartConfig is envoy.config.cluster.v3.Cluster.SlowStartConfig
// (Istio's DestinationRule loadBalancer.warmupDurationSecs, or warmup's
// duration, aggression and minimumPercent). An endpoint that joins the
// cluster after its first endpoints is in slow start for Window: its
// load-balancing weight is scaled by
// max(MinWeightPercent/100, (max(age, 1ms)/Window)^(1/Aggression)).
type SlowStartConfig struct {
	Window time.Duration // slow_start_window, > 0
	// Aggression is aggression.default_value, finite and > 0; default 1
	// (a linear ramp).
	Aggression float64
	// MinWeightPercent is min_weight_percent.value, 0-100; default
	// DefaultSlowStartMinWeightPercent.
	MinWeightPercent float64
}

// RingHashConfig is envoy.config.cluster.v3.Cluster.RingHashLbConfig with
// the XX_HASH hash function (the only one supported).
type RingHashConfig struct {
	MinRingSize uint64 // entries, 1 to MaxRingSize; default DefaultMinRingSize
	MaxRingSize uint64 // entries, MinRingSize to MaxRingSize; default DefaultMaxRingSize
}

// MaglevConfig is envoy.config.cluster.v3.Cluster.MaglevLbConfig.
type MaglevConfig struct {
	TableSize uint64 // a prime up to MaxMaglevTableSize; default DefaultMaglevTableSize
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
	// Address is "ip:port", or "hostname:port" in a STRICT_DNS or
	// LOGICAL_DNS cluster (resolved when a connection is dialed).
	Address string
	Health  HealthStatus
	Weight  uint32 // load_balancing_weight; 1 when unset
	// Priority is the priority of the endpoint's LocalityLbEndpoints
	// (0 highest); the balancer sends traffic to lower priorities only as
	// higher ones lose healthy endpoints (Envoy's priority levels).
	Priority uint32
	// Locality is the LocalityLbEndpoints' locality, "region/zone/subzone"
	// ("" for none); endpoints of one locality and priority form one
	// locality of the balancer.
	Locality string
	// LocalityWeight is the LocalityLbEndpoints' load_balancing_weight
	// (>= 1); 0 when unset. Read only when the cluster is
	// LocalityWeighted, where a locality without a weight takes no traffic.
	LocalityWeight uint32
	// Transport indexes the cluster's Transports: the transport socket
	// its transport_socket_matches chose (0: the cluster's own).
	Transport int
	// Workload is the endpoint's Istio telemetry metadata
	// (filter_metadata.istio.workload, xdsapi.EndpointWorkload; its app
	// and version are unknown); nil when absent or malformed. A source
	// reporter's peer when no metadata exchange told it.
	Workload *istiostats.Peer
}

// ---- endpoints ----

// loadAssignment is a ClusterLoadAssignment's endpoints with the metadata
// transport_socket_matches read (parallel slices).
type loadAssignment struct {
	eps  []Endpoint
	meta []endpointMeta
}

func buildEndpoints(cla *endpointv3.ClusterLoadAssignment) (loadAssignment, error) {
	return buildEndpointsWith(cla, endpointAddress)
}

// endpointAddress is the Address of an endpoint of a STATIC or EDS
// cluster: "ip:port" of a socket_address, or the path of a pipe (a unix
// domain socket, as Envoy's PipeInstance: "/path", or "@name" in Linux's
// abstract namespace). A pipe's mode applies to listeners only and is
// ignored here, as Envoy ignores it for a connection it makes.
func endpointAddress(path string, a *corev3.Address) (string, error) {
	if a.GetPipe() != nil {
		return pipeAddress(path, a)
	}
	return socketAddress(path, a)
}

// buildEndpointsWith is buildEndpoints with addr parsing each endpoint's
// address into "host:port".
func buildEndpointsWith(cla *endpointv3.ClusterLoadAssignment, addr func(path string, a *corev3.Address) (string, error)) (la loadAssignment, err error) {
	defer func() {
		if err != nil {
			la = loadAssignment{}
		}
	}()
	if len(cla.GetNamedEndpoints()) > 0 {
		return la, ferr("named_endpoints", "not supported")
	}
	if len(cla.GetPolicy().GetDropOverloads()) > 0 {
		return la, ferr("policy.drop_overloads", "not supported")
	}
	if f := cla.GetPolicy().GetOverprovisioningFactor(); f != nil && f.GetValue() != DefaultOverprovisioningFactor {
		return la, verr("policy.overprovisioning_factor.value", strconv.FormatUint(uint64(f.GetValue()), 10), "must be %d (unset)", DefaultOverprovisioningFactor)
	}
	if cla.GetPolicy().GetWeightedPriorityHealth() {
		return la, verr("policy.weighted_priority_health", "true", "not supported")
	}
	type prioLocality struct {
		prio     uint32
		locality string
	}
	seen := map[prioLocality]bool{}
	for i, le := range cla.GetEndpoints() {
		lp := idx("endpoints", i)
		loc := le.GetLocality()
		locality := loc.GetRegion() + "/" + loc.GetZone() + "/" + loc.GetSubZone()
		if loc == nil {
			locality = ""
		}
		// Envoy: "duplicate locality ... found in priority ...".
		k := prioLocality{le.GetPriority(), locality}
		if seen[k] {
			return la, verr(lp+".locality", locality, "must not repeat a locality of priority %d", le.GetPriority())
		}
		seen[k] = true
		var lw uint32
		if w := le.GetLoadBalancingWeight(); w != nil {
			if w.GetValue() == 0 {
				return la, verr(lp+".load_balancing_weight", "0", "must be at least 1")
			}
			lw = w.GetValue()
		}
		if le.GetLedsClusterLocalityConfig() != nil {
			return la, ferr(lp+".leds_cluster_locality_config", "not supported")
		}
		if le.GetLbConfig() != nil {
			return la, ferr(lp+".load_balancer_config", "not supported")
		}
		for j, lb := range le.GetLbEndpoints() {
			p := idx(lp+".lb_endpoints", j)
			if lb.GetEndpointName() != "" {
				return la, ferr(p+".endpoint_name", "not supported")
			}
			a, err := addr(p+".endpoint.address", lb.GetEndpoint().GetAddress())
			if err != nil {
				return la, err
			}
			if len(lb.GetEndpoint().GetAdditionalAddresses()) > 0 {
				return la, ferr(p+".endpoint.additional_addresses", "not supported")
			}
			ep := Endpoint{Address: a, Weight: 1, Priority: le.GetPriority(), Locality: locality, LocalityWeight: lw}
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
				ep.Health = Healthy
			default:
				ep.Health = Unhealthy
			}
			if w := lb.GetLoadBalancingWeight(); w != nil {
				if w.GetValue() == 0 {
					return la, verr(p+".load_balancing_weight", "0", "must be at least 1")
				}
				ep.Weight = w.GetValue()
			}
			ep.Workload = endpointWorkload(lb.GetMetadata())
			la.eps = append(la.eps, ep)
			la.meta = append(la.meta, endpointMeta{endpoint: transportSocketMeta(lb.GetMetadata()), locality: transportSocketMeta(le.GetMetadata())})
		}
	}
	return la, nil
}

// ---- clusters ----

func buildCluster(c *clusterv3.Cluster, clas map[string]loadAssignment) (*Cluster, error) {
	rc := &Cluster{Name: c.GetName()}
	rc.NoALPNOverride = c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["alpn_override"].GetStringValue() == "false"
	if svcs := c.GetMetadata().GetFilterMetadata()["istio"].GetFields()["services"].GetListValue().GetValues(); len(svcs) > 0 {
		f := svcs[0].GetStructValue().GetFields()
		rc.IstioService = istiostats.Service{Host: f["host"].GetStringValue(), Name: f["name"].GetStringValue(), Namespace: f["namespace"].GetStringValue()}
		if rc.IstioService.Name == "" {
			rc.IstioService.Name, _, _ = strings.Cut(rc.IstioService.Host, ".")
		}
	}
	var err error
	if rc.ConnectTimeout, err = duration(c.GetConnectTimeout(), "connect_timeout", DefaultConnectTimeout); err != nil {
		return nil, err
	}
	if c.GetConnectTimeout() != nil && rc.ConnectTimeout == 0 {
		return nil, verr("connect_timeout", "0s", "must be greater than 0")
	}
	if rc.UpstreamBind, err = buildUpstreamBind(c.GetUpstreamBindConfig()); err != nil {
		return nil, err
	}
	if err := buildLB(c, rc); err != nil {
		return nil, err
	}
	if err := buildClusterPolicy(c, rc); err != nil {
		return nil, err
	}
	if err := buildClusterFilters(c.GetFilters(), rc); err != nil {
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
		if ud := opts.GetUseDownstreamProtocolConfig(); ud != nil {
			if ud.GetHttp3ProtocolOptions() != nil {
				return nil, ferr(p+".use_downstream_protocol_config.http3_protocol_options", "not supported")
			}
			rc.HTTP2 = false
			rc.DownstreamHTTP2 = ud.GetHttp2ProtocolOptions() != nil
			continue
		}
		exp := opts.GetExplicitHttpConfig()
		if exp == nil {
			return nil, ferr(p+".upstream_protocol_options", "must be explicit_http_config or use_downstream_protocol_config")
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

	var meta []endpointMeta
	switch c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type:
	default:
		return nil, ferr("cluster_type", "not supported; type must be EDS, STATIC, STRICT_DNS, LOGICAL_DNS or ORIGINAL_DST")
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
		la := clas[key]
		rc.Endpoints, meta = la.eps, la.meta
	case clusterv3.Cluster_STATIC:
		if la := c.GetLoadAssignment(); la != nil {
			eps, err := buildEndpoints(la)
			if err != nil {
				return nil, under("load_assignment", err)
			}
			rc.Endpoints, meta = eps.eps, eps.meta
		}
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		if meta, err = buildDNSCluster(c, rc); err != nil {
			return nil, err
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		if err := buildOriginalDstCluster(c, rc); err != nil {
			return nil, err
		}
	default:
		return nil, verr("type", c.GetType().String(), "must be EDS, STATIC, STRICT_DNS, LOGICAL_DNS or ORIGINAL_DST")
	}
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST && c.GetOriginalDstLbConfig() != nil {
		return nil, ferr("original_dst_lb_config", "must be set only on an ORIGINAL_DST cluster")
	}
	if err := buildClusterTransports(c, rc, meta); err != nil {
		return nil, err
	}
	if rc.HTTP2 {
		// net/http speaks HTTP/2 to a TLS upstream only after ALPN chose
		// it, unless an istio.alpn override replaces the ALPN (the
		// upstream pool then speaks HTTP/2 whatever was negotiated). (A
		// DownstreamHTTP2 cluster uses HTTP/1.1 over a TLS transport that
		// offers neither h2 nor such an override.)
		for i, t := range rc.Transports {
			if t.TLS != nil && !slices.Contains(t.TLS.ALPN, "h2") {
				p := "transport_socket"
				if i > 0 {
					p = idx("transport_socket_matches", i-1) + ".transport_socket"
				}
				return nil, ferr(p+".typed_config.common_tls_context.alpn_protocols", "must include h2 on an HTTP/2 cluster")
			}
		}
	}
	return rc, nil
}

// buildUpstreamBind parses a cluster's upstream_bind_config (Envoy's
// BindConfig) into the address its connections are made from: "" when b
// is nil. Only source_address, an IP address with port 0 over TCP, is
// served; anything else is an error naming the field.
func buildUpstreamBind(b *corev3.BindConfig) (string, error) {
	const p = "upstream_bind_config"
	switch {
	case b == nil:
		return "", nil
	case b.GetFreebind().GetValue():
		return "", ferr(p+".freebind", "not supported")
	case len(b.GetSocketOptions()) > 0:
		return "", ferr(p+".socket_options", "not supported")
	case len(b.GetExtraSourceAddresses()) > 0:
		return "", ferr(p+".extra_source_addresses", "not supported")
	case len(b.GetAdditionalSourceAddresses()) > 0: //nolint:staticcheck // deprecated field still refused.
		return "", ferr(p+".additional_source_addresses", "not supported")
	case b.GetLocalAddressSelector() != nil:
		return "", ferr(p+".local_address_selector", "not supported")
	}
	sa := b.GetSourceAddress()
	if sa == nil {
		return "", ferr(p+".source_address", "must be set")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", verr(p+".source_address.protocol", sa.GetProtocol().String(), "must be TCP")
	}
	a, err := netip.ParseAddr(sa.GetAddress())
	if err != nil || a.Zone() != "" {
		return "", verr(p+".source_address.address", sa.GetAddress(), "must be an IP address")
	}
	if sa.GetNamedPort() != "" {
		return "", ferr(p+".source_address.named_port", "not supported")
	}
	if sa.GetPortValue() != 0 {
		return "", verr(p+".source_address.port_value", strconv.FormatUint(uint64(sa.GetPortValue()), 10), "must be 0 (the kernel picks the source port)")
	}
	return a.String(), nil
}

// buildLB parses c's lb_policy, its policy's lb_config and common_lb_config
// into rc.
func buildLB(c *clusterv3.Cluster, rc *Cluster) error {
	if c.GetLoadBalancingPolicy() != nil {
		return ferr("load_balancing_policy", "not supported")
	}
	if c.GetLbSubsetConfig() != nil {
		return ferr("lb_subset_config", "not supported")
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		rc.LBPolicy = LBRoundRobin
		ss, err := buildSlowStart(c.GetRoundRobinLbConfig().GetSlowStartConfig())
		if err != nil {
			return under("round_robin_lb_config.slow_start_config", err)
		}
		rc.SlowStart = ss
	case clusterv3.Cluster_LEAST_REQUEST:
		rc.LBPolicy = LBLeastRequest
		lr, err := buildLeastRequest(c.GetLeastRequestLbConfig())
		if err != nil {
			return under("least_request_lb_config", err)
		}
		rc.LeastRequest = lr
		ss, err := buildSlowStart(c.GetLeastRequestLbConfig().GetSlowStartConfig())
		if err != nil {
			return under("least_request_lb_config.slow_start_config", err)
		}
		rc.SlowStart = ss
	case clusterv3.Cluster_RANDOM:
		rc.LBPolicy = LBRandom
	case clusterv3.Cluster_RING_HASH:
		rc.LBPolicy = LBRingHash
		rh, err := buildRingHash(c.GetRingHashLbConfig())
		if err != nil {
			return under("ring_hash_lb_config", err)
		}
		rc.RingHash = rh
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		// Envoy's only policy for an ORIGINAL_DST cluster, and only for it.
		if c.GetType() != clusterv3.Cluster_ORIGINAL_DST {
			return verr("lb_policy", c.GetLbPolicy().String(), "must be ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV")
		}
		rc.LBPolicy = LBClusterProvided
		return nil
	case clusterv3.Cluster_MAGLEV:
		rc.LBPolicy = LBMaglev
		size := uint64(DefaultMaglevTableSize)
		if v := c.GetMaglevLbConfig().GetTableSize(); v != nil {
			size = v.GetValue()
		}
		if size > MaxMaglevTableSize || !isPrime(size) {
			return verr("maglev_lb_config.table_size", strconv.FormatUint(size, 10), "must be a prime number up to %d", MaxMaglevTableSize)
		}
		rc.Maglev = &MaglevConfig{TableSize: size}
	default:
		return verr("lb_policy", c.GetLbPolicy().String(), "must be ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV")
	}
	if c.GetType() == clusterv3.Cluster_ORIGINAL_DST {
		return verr("lb_policy", c.GetLbPolicy().String(), "must be CLUSTER_PROVIDED on an ORIGINAL_DST cluster")
	}
	cl := c.GetCommonLbConfig()
	if cl == nil {
		return nil
	}
	if t := cl.GetHealthyPanicThreshold(); t != nil {
		v := t.GetValue()
		if math.IsNaN(v) || v < 0 || v > 100 {
			return verr("common_lb_config.healthy_panic_threshold.value", strconv.FormatFloat(v, 'g', -1, 64), "must be 0 to 100")
		}
		pct := uint32(v) // Envoy truncates to the nearest 1%.
		rc.HealthyPanicThreshold = &pct
	}
	switch cl.GetLocalityConfigSpecifier().(type) {
	case nil:
	case *clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_:
		switch c.GetLbPolicy() {
		case clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV:
			// Envoy ignores locality weights under consistent hashing.
		default:
			rc.LocalityWeighted = true
		}
	default:
		return ferr("common_lb_config.zone_aware_lb_config", "not supported (zone aware load balancing)")
	}
	if cl.GetCloseConnectionsOnHostSetChange() {
		return verr("common_lb_config.close_connections_on_host_set_change", "true", "not supported")
	}
	if cl.GetOverrideHostStatus() != nil {
		return ferr("common_lb_config.override_host_status", "not supported")
	}
	if ch := cl.GetConsistentHashingLbConfig(); ch != nil {
		if ch.GetUseHostnameForHashing() {
			return verr("common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing", "true", "not supported")
		}
		if ch.GetHashBalanceFactor() != nil {
			return ferr("common_lb_config.consistent_hashing_lb_config.hash_balance_factor", "not supported")
		}
	}
	return nil
}

func buildLeastRequest(cfg *clusterv3.Cluster_LeastRequestLbConfig) (*LeastRequestConfig, error) {
	lr := &LeastRequestConfig{ChoiceCount: DefaultChoiceCount, ActiveRequestBias: 1}
	if v := cfg.GetChoiceCount(); v != nil {
		if v.GetValue() < 2 {
			return nil, verr("choice_count", strconv.FormatUint(uint64(v.GetValue()), 10), "must be at least 2")
		}
		lr.ChoiceCount = v.GetValue()
	}
	if b := cfg.GetActiveRequestBias(); b != nil {
		v := b.GetDefaultValue()
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, verr("active_request_bias.default_value", strconv.FormatFloat(v, 'g', -1, 64), "must be a finite number >= 0")
		}
		lr.ActiveRequestBias = v
	}
	return lr, nil
}

// buildSlowStart parses a slow_start_config; nil cfg, or a
// slow_start_window of 0, is no slow start.
func buildSlowStart(cfg *clusterv3.Cluster_SlowStartConfig) (*SlowStartConfig, error) {
	if cfg == nil {
		return nil, nil
	}
	ss := &SlowStartConfig{Aggression: 1, MinWeightPercent: DefaultSlowStartMinWeightPercent}
	var err error
	if ss.Window, err = duration(cfg.GetSlowStartWindow(), "slow_start_window", 0); err != nil {
		return nil, err
	}
	if a := cfg.GetAggression(); a != nil {
		v := a.GetDefaultValue()
		if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			return nil, verr("aggression.default_value", strconv.FormatFloat(v, 'g', -1, 64), "must be a finite number > 0")
		}
		ss.Aggression = v
	}
	if p := cfg.GetMinWeightPercent(); p != nil {
		v := p.GetValue()
		if math.IsNaN(v) || v < 0 || v > 100 {
			return nil, verr("min_weight_percent.value", strconv.FormatFloat(v, 'g', -1, 64), "must be 0 to 100")
		}
		ss.MinWeightPercent = v
	}
	if ss.Window == 0 {
		return nil, nil
	}
	return ss, nil
}

func buildRingHash(cfg *clusterv3.Cluster_RingHashLbConfig) (*RingHashConfig, error) {
	rh := &RingHashConfig{MinRingSize: DefaultMinRingSize, MaxRingSize: DefaultMaxRingSize}
	if cfg.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
		return nil, verr("hash_function", cfg.GetHashFunction().String(), "must be XX_HASH")
	}
	if v := cfg.GetMinimumRingSize(); v != nil {
		if v.GetValue() < 1 || v.GetValue() > MaxRingSize {
			return nil, verr("minimum_ring_size", strconv.FormatUint(v.GetValue(), 10), "must be 1 to %d", MaxRingSize)
		}
		rh.MinRingSize = v.GetValue()
	}
	if v := cfg.GetMaximumRingSize(); v != nil {
		if v.GetValue() < 1 || v.GetValue() > MaxRingSize {
			return nil, verr("maximum_ring_size", strconv.FormatUint(v.GetValue(), 10), "must be 1 to %d", MaxRingSize)
		}
		rh.MaxRingSize = v.GetValue()
	}
	if rh.MinRingSize > rh.MaxRingSize {
		return nil, verr("minimum_ring_size", strconv.FormatUint(rh.MinRingSize, 10), "must not exceed maximum_ring_size (%d)", rh.MaxRingSize)
	}
	return rh, nil
}

// isPrime reports whether n is prime, by trial division (n is at most
// MaxMaglevTableSize: at most ~1100 divisions).
func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// IstioServiceOf is the destination service Istio's stats report for
// traffic sent to cluster: its Cluster's IstioService when the metadata
// gave one, else the service the cluster's outbound name says. It does
// not allocate.
func (g *Generation) IstioServiceOf(cluster string) istiostats.Service {
	if g != nil {
		if cl := g.Clusters[cluster]; cl != nil && cl.IstioService.Host != "" {
			return cl.IstioService
		}
	}
	return istiostats.ServiceOfCluster(cluster)
}

// endpointWorkload reads an endpoint's Istio telemetry metadata.
func endpointWorkload(md *corev3.Metadata) *istiostats.Peer {
	v := md.GetFilterMetadata()[xdsapi.EndpointMetadataNamespace].GetFields()[xdsapi.EndpointMetadataWorkload].GetStringValue()
	if v == "" {
		return nil
	}
	w, ok := xdsapi.ParseEndpointWorkload(v)
	if !ok {
		return nil
	}
	return &istiostats.Peer{Workload: w.Name, Namespace: w.Namespace, Service: w.CanonicalService,
		Revision: w.CanonicalRevision, Cluster: w.ClusterID}
}
