package config

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// buildDNSCluster parses a STRICT_DNS or LOGICAL_DNS cluster's
// load_assignment (host names or IPs) and DNS settings into rc.
//
// The proxy resolves a host name with Go's resolver each time it dials a
// new connection, not on Envoy's dns_refresh_rate timer: a host name is one
// host to the load balancer, and the dialer tries its addresses in order.
// dns_refresh_rate, dns_jitter, dns_failure_refresh_rate and
// respect_dns_ttl are therefore accepted and have no effect; a custom
// resolver is refused.
func buildDNSCluster(c *clusterv3.Cluster, rc *Cluster) ([]endpointMeta, error) {
	switch {
	case len(c.GetDnsResolvers()) > 0: //nolint:staticcheck // deprecated field still refused.
		return nil, ferr("dns_resolvers", "not supported (the proxy uses the system resolver)")
	case c.GetDnsResolutionConfig() != nil: //nolint:staticcheck // deprecated field still refused.
		return nil, ferr("dns_resolution_config", "not supported (the proxy uses the system resolver)")
	case c.GetTypedDnsResolverConfig() != nil:
		return nil, ferr("typed_dns_resolver_config", "not supported (the proxy uses the system resolver)")
	case c.GetUseTcpForDnsLookups(): //nolint:staticcheck // deprecated field still refused.
		return nil, verr("use_tcp_for_dns_lookups", "true", "not supported (the proxy uses the system resolver)")
	}
	switch c.GetDnsLookupFamily() {
	case clusterv3.Cluster_V4_ONLY:
		rc.DNSNetwork = "tcp4"
	case clusterv3.Cluster_V6_ONLY:
		rc.DNSNetwork = "tcp6"
	case clusterv3.Cluster_AUTO, clusterv3.Cluster_V4_PREFERRED, clusterv3.Cluster_ALL:
		rc.DNSNetwork = "tcp"
	default:
		return nil, verr("dns_lookup_family", c.GetDnsLookupFamily().String(), "must be AUTO, V4_ONLY, V6_ONLY, V4_PREFERRED or ALL")
	}
	la := c.GetLoadAssignment()
	if la == nil {
		return nil, ferr("load_assignment", "must be set on a %s cluster", c.GetType())
	}
	eps, err := buildEndpointsWith(la, dnsSocketAddress)
	if err != nil {
		return nil, under("load_assignment", err)
	}
	// Envoy: a LOGICAL_DNS cluster has exactly one locality with one endpoint.
	if c.GetType() == clusterv3.Cluster_LOGICAL_DNS &&
		(len(la.GetEndpoints()) != 1 || len(la.GetEndpoints()[0].GetLbEndpoints()) != 1) {
		return nil, ferr("load_assignment.endpoints", "must hold exactly one lb_endpoint on a LOGICAL_DNS cluster")
	}
	rc.Endpoints = eps.eps
	return eps.meta, nil
}

// buildOriginalDstCluster parses an ORIGINAL_DST cluster into rc. It must
// take its destination from a request header (use_http_header), as the
// proxy has no intercepted connection whose original destination it could
// use, and it has no endpoints of its own.
func buildOriginalDstCluster(c *clusterv3.Cluster, rc *Cluster) error {
	if c.GetLoadAssignment() != nil && len(c.GetLoadAssignment().GetEndpoints()) > 0 {
		return ferr("load_assignment", "must be empty on an ORIGINAL_DST cluster")
	}
	cfg := c.GetOriginalDstLbConfig()
	if cfg.GetMetadataKey() != nil {
		return ferr("original_dst_lb_config.metadata_key", "not supported")
	}
	od := &OriginalDstConfig{}
	if cfg.GetUseHttpHeader() {
		od.Header = strings.ToLower(cfg.GetHttpHeaderName())
		if od.Header == "" {
			od.Header = DefaultOriginalDstHeader
		}
		if !od.Authority() && !validHeaderName(od.Header) {
			return verr("original_dst_lb_config.http_header_name", cfg.GetHttpHeaderName(), "must be a header name")
		}
	} else if cfg.GetHttpHeaderName() != "" {
		return verr("original_dst_lb_config.http_header_name", cfg.GetHttpHeaderName(), "must be empty without use_http_header")
	}
	if p := cfg.GetUpstreamPortOverride(); p != nil {
		if p.GetValue() == 0 || p.GetValue() > 65535 {
			return verr("original_dst_lb_config.upstream_port_override", strconv.FormatUint(uint64(p.GetValue()), 10), "must be 1-65535")
		}
		od.PortOverride = p.GetValue()
	}
	rc.OriginalDst = od
	return nil
}

// dnsSocketAddress is socketAddress that also takes a host name.
func dnsSocketAddress(path string, a *corev3.Address) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", ferr(path+".socket_address", "must be set")
	}
	if _, err := netip.ParseAddr(sa.GetAddress()); err == nil {
		return socketAddress(path, a)
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", verr(path+".socket_address.protocol", sa.GetProtocol().String(), "must be TCP")
	}
	if sa.GetResolverName() != "" || sa.GetNamedPort() != "" {
		return "", ferr(path+".socket_address", "resolver_name and named_port are not supported")
	}
	if !ValidHostname(sa.GetAddress()) {
		return "", verr(path+".socket_address.address", sa.GetAddress(), "must be an IP address or a DNS name")
	}
	port := sa.GetPortValue()
	if port == 0 || port > 65535 {
		return "", verr(path+".socket_address.port_value", strconv.FormatUint(uint64(port), 10), "must be 1-65535")
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port), 10)), nil
}

// ValidHostname reports whether h is a DNS name (RFC 1123): at most 253
// characters of dot-separated labels of 1-63 letters, digits and hyphens,
// not starting or ending with a hyphen; one trailing dot is allowed.
func ValidHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-') {
				return false
			}
		}
	}
	return true
}

// validHeaderName reports whether s is an HTTP field name (RFC 9110 token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b <= ' ' || b >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", b) >= 0 {
			return false
		}
	}
	return true
}
