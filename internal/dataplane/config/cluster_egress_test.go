package config

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func egressEndpoint(host string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
	}}}
}

func dnsCluster(typ clusterv3.Cluster_DiscoveryType, eps ...*endpointv3.LbEndpoint) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 "outbound|80||external.test",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80||external.test",
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}},
	}
}

func originalDst(cfg *clusterv3.Cluster_OriginalDstLbConfig) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 "PassthroughCluster",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
	}
	if cfg != nil {
		c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: cfg}
	}
	return c
}

func TestBuildClusterEgress(t *testing.T) {
	tests := []struct {
		name    string
		in      *clusterv3.Cluster
		want    *Cluster // DNSNetwork, OriginalDst, LBPolicy and Endpoints are compared
		wantErr string
	}{
		{"strict dns host names and IPs", func() *clusterv3.Cluster {
			c := dnsCluster(clusterv3.Cluster_STRICT_DNS, egressEndpoint("external.test", 8081), egressEndpoint("127.0.0.1", 80))
			c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
			return c
		}(), &Cluster{DNSNetwork: "tcp4", LBPolicy: LBRoundRobin,
			Endpoints: []Endpoint{{Address: "external.test:8081", Weight: 1}, {Address: "127.0.0.1:80", Weight: 1}}}, ""},
		{"logical dns auto", dnsCluster(clusterv3.Cluster_LOGICAL_DNS, egressEndpoint("a.example.", 443)),
			&Cluster{DNSNetwork: "tcp", LBPolicy: LBRoundRobin,
				Endpoints: []Endpoint{{Address: "a.example.:443", Weight: 1}}}, ""},
		{"original dst authority", originalDst(&clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true, HttpHeaderName: ":authority"}),
			&Cluster{LBPolicy: LBClusterProvided, OriginalDst: &OriginalDstConfig{Header: ":authority"}}, ""},
		{"original dst default header and port override", originalDst(&clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true,
			UpstreamPortOverride: wrapperspb.UInt32(8080)}),
			&Cluster{LBPolicy: LBClusterProvided, OriginalDst: &OriginalDstConfig{Header: DefaultOriginalDstHeader, PortOverride: 8080}}, ""},

		{"dns bad host name", dnsCluster(clusterv3.Cluster_STRICT_DNS, egressEndpoint("bad_host", 80)), nil,
			`load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address = "bad_host": must be an IP address or a DNS name`},
		{"dns no port", dnsCluster(clusterv3.Cluster_STRICT_DNS, egressEndpoint("external.test", 0)), nil,
			`load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value = "0": must be 1-65535`},
		{"dns no load assignment", &clusterv3.Cluster{ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}}, nil,
			`load_assignment: must be set on a STRICT_DNS cluster`},
		{"logical dns two endpoints", dnsCluster(clusterv3.Cluster_LOGICAL_DNS, egressEndpoint("a.test", 80), egressEndpoint("b.test", 80)), nil,
			`load_assignment.endpoints: must hold exactly one lb_endpoint on a LOGICAL_DNS cluster`},
		{"dns custom resolver", func() *clusterv3.Cluster {
			c := dnsCluster(clusterv3.Cluster_STRICT_DNS, egressEndpoint("a.test", 80))
			c.TypedDnsResolverConfig = &corev3.TypedExtensionConfig{Name: "cares"}
			return c
		}(), nil, `typed_dns_resolver_config: not supported (the proxy uses the system resolver)`},
		{"static host name still refused", func() *clusterv3.Cluster {
			return dnsCluster(clusterv3.Cluster_STATIC, egressEndpoint("external.test", 80))
		}(), nil, `load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address = "external.test": must be an IP address`},
		// Istio's PassthroughCluster: the connection's original destination.
		{"original dst without header", originalDst(nil), &Cluster{LBPolicy: LBClusterProvided, OriginalDst: &OriginalDstConfig{}}, ""},
		{"original dst header name without use_http_header", originalDst(&clusterv3.Cluster_OriginalDstLbConfig{HttpHeaderName: "x-dst"}), nil,
			`original_dst_lb_config.http_header_name = "x-dst": must be empty without use_http_header`},
		{"original dst round robin", func() *clusterv3.Cluster {
			c := originalDst(&clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true})
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
			return c
		}(), nil, `lb_policy = "ROUND_ROBIN": must be CLUSTER_PROVIDED on an ORIGINAL_DST cluster`},
		{"original dst bad header", originalDst(&clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true, HttpHeaderName: "x y"}), nil,
			`original_dst_lb_config.http_header_name = "x y": must be a header name`},
		{"original dst port 0", originalDst(&clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true, UpstreamPortOverride: wrapperspb.UInt32(0)}), nil,
			`original_dst_lb_config.upstream_port_override = "0": must be 1-65535`},
		{"original dst endpoints", func() *clusterv3.Cluster {
			c := originalDst(&clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true})
			c.LoadAssignment = dnsCluster(clusterv3.Cluster_STATIC, egressEndpoint("127.0.0.1", 80)).LoadAssignment
			return c
		}(), nil, `load_assignment: must be empty on an ORIGINAL_DST cluster`},
		{"cluster provided elsewhere", func() *clusterv3.Cluster {
			c := dnsCluster(clusterv3.Cluster_STRICT_DNS, egressEndpoint("a.test", 80))
			c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
			return c
		}(), nil, `lb_policy = "CLUSTER_PROVIDED": must be ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV`},
		{"original dst config on eds", func() *clusterv3.Cluster {
			c := dnsCluster(clusterv3.Cluster_STRICT_DNS, egressEndpoint("a.test", 80))
			c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}}
			return c
		}(), nil, `original_dst_lb_config: must be set only on an ORIGINAL_DST cluster`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := buildCluster(tt.in, nil)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			opt := cmpopts.IgnoreFields(Cluster{}, "Name", "ConnectTimeout", "CircuitBreakers", "Conn")
			if d := cmp.Diff(tt.want, got, opt); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}
