package config

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	rawbufv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/matcher"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// istioDownstream is the DownstreamTlsContext Istio writes on an inbound
// mTLS filter chain: the agent's certificate and trust bundle over SDS,
// a client certificate required, h2 and http/1.1.
func istioDownstream() *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
				CipherSuites: []string{"ECDHE-ECDSA-AES256-GCM-SHA384", "[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]"}},
			AlpnProtocols:                  []string{"h2", "http/1.1"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/"}},
				}}},
				ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA),
			}},
		},
	}
}

// istioUpstream is the UpstreamTlsContext of Istio's ISTIO_MUTUAL
// (tlsMode-istio) transport socket.
func istioUpstream() *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{
		Sni: "outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"istio-peer-exchange", "istio"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC(secret.WorkloadCertificate)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchSubjectAltNames: []*matcherv3.StringMatcher{{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}}}},
				ValidationContextSdsSecretConfig: xdstest.SDSGRPC(secret.RootCA),
			}},
		},
	}
}

func tlsListener(t testing.TB, dc *tlsv3.DownstreamTlsContext) *listenerv3.Listener {
	fc := tcpChain(t, "tls", &listenerv3.FilterChainMatch{TransportProtocol: "tls"})
	fc.TransportSocket = xdstest.TLSSocket(t, dc)
	return &listenerv3.Listener{Name: "l", Address: xdstest.SocketAddress("0.0.0.0", 15006),
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: TLSInspectorName}},
		FilterChains:    []*listenerv3.FilterChain{fc}}
}

func TestBuildDownstreamTLS(t *testing.T) {
	rl, err := buildOneListener(t, tlsListener(t, istioDownstream()))
	if err != nil {
		t.Fatal(err)
	}
	got := rl.FilterChains[0].TLS
	want := &DownstreamTLS{
		CommonTLS: CommonTLS{
			Certificates: []CertSource{{Ref: &SecretRef{Name: "default", Source: SecretLocal}}},
			Validation: &ValidationContext{Ref: &SecretRef{Name: "ROOTCA", Source: SecretLocal},
				SANs: []SANMatcher{{Type: SANURI, Matcher: matcher.MustString(&matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/"}})}}},
			ALPN:       []string{"h2", "http/1.1"},
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
				tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256},
			Curves: []tls.CurveID{tls.X25519, tls.CurveP256},
		},
		RequireClientCertificate: true,
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(matcher.String{})); diff != "" {
		t.Errorf("DownstreamTLS (-want +got):\n%s", diff)
	}
}

// Envoy adds the original_dst listener filter itself when a listener has
// use_original_dst and lists none, as Istio's virtualOutbound does.
func TestUseOriginalDstAddsTheFilter(t *testing.T) {
	l := tlsListener(t, istioDownstream())
	l.UseOriginalDst = wrapperspb.Bool(true)
	g, err := Build(Resources{Listeners: []proto.Message{l}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := g.Listeners["l"].ListenerFilters
	if len(got) != 2 || got[0].Kind != OriginalDst || got[1].Kind != TLSInspector {
		t.Fatalf("listener filters %+v, want original_dst then the listed tls_inspector", got)
	}
}

func TestBuildClusterTransportSocketMatches(t *testing.T) {
	c := testCluster()
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{Name: "tlsMode-istio", Match: &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
			TransportSocket: xdstest.TLSSocket(t, istioUpstream())},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{},
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(t, &rawbufv3.RawBuffer{})}}},
	}
	meta := func(v string) *corev3.Metadata {
		return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{TransportSocketMatchKey: {
			Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(v)}}}}
	}
	cla := testCLA(reviewsV1, "127.0.0.1", "127.0.0.2", "127.0.0.3")
	cla.Endpoints[0].LbEndpoints[0].Metadata = meta("istio")
	cla.Endpoints[0].LbEndpoints[1].Metadata = meta("disabled")
	// The third endpoint's locality says istio.
	cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{Metadata: meta("istio"), Priority: 1,
		LbEndpoints: []*endpointv3.LbEndpoint{cla.Endpoints[0].LbEndpoints[2]}})
	cla.Endpoints[0].LbEndpoints = cla.Endpoints[0].LbEndpoints[:2]
	g, err := Build(Resources{Clusters: []proto.Message{c}, Endpoints: []proto.Message{cla}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := g.Clusters[reviewsV1]
	if len(rc.Transports) != 3 || rc.Transports[0].TLS != nil || rc.Transports[1].TLS == nil || rc.Transports[2].TLS != nil {
		t.Fatalf("Transports = %+v: want [plaintext default, tlsMode-istio TLS, tlsMode-disabled plaintext]", rc.Transports)
	}
	up := rc.Transports[1].TLS
	if up.SNI != "outbound_.9080_.v1_.reviews.default.svc.cluster.local" || up.MaxVersion != tls.VersionTLS12 || up.MaxSessionKeys != 1 ||
		len(up.Validation.SANs) != 1 || up.Validation.SANs[0].Type != SANAny || rc.Transports[1].Key == "" {
		t.Errorf("tlsMode-istio = %+v", rc.Transports[1])
	}
	var got []int
	for _, ep := range rc.Endpoints {
		got = append(got, ep.Transport)
	}
	if diff := cmp.Diff([]int{1, 2, 1}, got); diff != "" {
		t.Errorf("endpoint transports (-want +got):\n%s", diff)
	}
	if rc.Transport(&rc.Endpoints[0]).Name != "tlsMode-istio" {
		t.Errorf("Transport(endpoint 0) = %+v", rc.Transport(&rc.Endpoints[0]))
	}
	if diff := cmp.Diff([]string{"ROOTCA", "default"}, g.LocalSecretNames()); diff != "" {
		t.Errorf("LocalSecretNames (-want +got):\n%s", diff)
	}
}

func TestSecretNames(t *testing.T) {
	dc := istioDownstream()
	dc.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{xdstest.SDS("kubernetes://gateway-cert")}
	dc.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
		ValidationContextSdsSecretConfig: xdstest.SDSGRPC("file-root:/etc/certs/root-cert.pem")}
	c := testCluster()
	uc := istioUpstream()
	uc.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC("file-cert:/etc/certs/cert-chain.pem~/etc/certs/key.pem")}
	c.TransportSocket = xdstest.TLSSocket(t, uc)
	g, err := Build(Resources{Listeners: []proto.Message{tlsListener(t, dc)}, Clusters: []proto.Message{c}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"kubernetes://gateway-cert"}, g.ADSSecretNames()); diff != "" {
		t.Errorf("ADSSecretNames (-want +got):\n%s", diff)
	}
	want := []string{"ROOTCA", "file-cert:/etc/certs/cert-chain.pem~/etc/certs/key.pem", "file-root:/etc/certs/root-cert.pem"}
	if diff := cmp.Diff(want, g.LocalSecretNames()); diff != "" {
		t.Errorf("LocalSecretNames (-want +got):\n%s", diff)
	}
}

// TestBuildTLSErrors: every field this version does not implement is
// refused with its path, never ignored.
func TestBuildTLSErrors(t *testing.T) {
	withDC := func(f func(dc *tlsv3.DownstreamTlsContext)) *listenerv3.Listener {
		dc := istioDownstream()
		f(dc)
		return tlsListener(t, dc)
	}
	const ts = `listener "l": filter_chains[0].transport_socket.typed_config.`
	tests := []struct {
		name string
		l    *listenerv3.Listener
		want string
	}{
		{"session ticket keys", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.SessionTicketKeysType = &tlsv3.DownstreamTlsContext_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{}}
		}), ts + "session_ticket_keys: not supported"},
		{"prefer client ciphers", withDC(func(dc *tlsv3.DownstreamTlsContext) { dc.PreferClientCiphers = true }),
			ts + `prefer_client_ciphers = "true": not supported`},
		{"certificate provider", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.TlsCertificateProviderInstance = &tlsv3.CertificateProviderPluginInstance{InstanceName: "x"}
		}), ts + "common_tls_context.tls_certificate_provider_instance: not supported"},
		{"cipher Go lacks", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.TlsParams.CipherSuites = []string{"ECDHE-PSK-CHACHA20-POLY1305"}
		}), ts + `common_tls_context.tls_params.cipher_suites[0] = "ECDHE-PSK-CHACHA20-POLY1305": cipher suite "ECDHE-PSK-CHACHA20-POLY1305" is not supported`},
		{"curve", withDC(func(dc *tlsv3.DownstreamTlsContext) { dc.CommonTlsContext.TlsParams.EcdhCurves = []string{"P-224"} }),
			ts + `common_tls_context.tls_params.ecdh_curves[0] = "P-224": must be X25519, P-256, P-384, P-521 or X25519MLKEM768`},
		{"signature algorithms", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.TlsParams.SignatureAlgorithms = []string{"ecdsa_secp256r1_sha256"}
		}), ts + "common_tls_context.tls_params.signature_algorithms: not supported"},
		{"min over max", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.TlsParams.TlsMaximumProtocolVersion = tlsv3.TlsParameters_TLSv1_1
		}), ts + `common_tls_context.tls_params.tls_minimum_protocol_version = "TLSv1_2": must not exceed tls_maximum_protocol_version (TLSv1_1)`},
		{"no certificate", withDC(func(dc *tlsv3.DownstreamTlsContext) { dc.CommonTlsContext.TlsCertificateSdsSecretConfigs = nil }),
			ts + "common_tls_context: must have tls_certificates or tls_certificate_sds_secret_configs"},
		{"client cert without validation", withDC(func(dc *tlsv3.DownstreamTlsContext) { dc.CommonTlsContext.ValidationContextType = nil }),
			ts + `require_client_certificate = "true": needs a validation context to verify the client certificate with`},
		{"ROOTCA as certificate", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{xdstest.SDSGRPC("ROOTCA")}
		}), ts + `common_tls_context.tls_certificate_sds_secret_configs[0].name = "ROOTCA": must be "default" or file-cert:CERT~KEY for the sds-grpc cluster`},
		{"static secret", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: "default"}}
		}), ts + "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: must be set (static secrets are not supported)"},
		{"sds over another cluster", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			s := xdstest.SDSGRPC("default")
			s.SdsConfig.GetApiConfigSource().GrpcServices[0].GetEnvoyGrpc().ClusterName = "other"
			dc.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{s}
		}), ts + `common_tls_context.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name = "other": must be sds-grpc (secrets served in-process)`},
		{"sds from a path", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: "x", SdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: "/x"}}}}}
		}), ts + "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config.path_config_source: not supported"},
		{"spki pinning", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.VerifyCertificateSpki = []string{"x"}
		}), ts + "common_tls_context.combined_validation_context.default_validation_context.verify_certificate_spki: not supported"},
		{"other name SAN", withDC(func(dc *tlsv3.DownstreamTlsContext) {
			dc.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].SanType = tlsv3.SubjectAltNameMatcher_OTHER_NAME
		}), ts + `common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].san_type = "OTHER_NAME": must be DNS, URI, EMAIL or IP_ADDRESS`},
		{"unknown transport socket", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "alts",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(t, &tlsv3.UpstreamTlsContext{})}}
			return l
		}(), `listener "l": filter_chains[0].transport_socket.typed_config.type_url = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": must be type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext or type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer`},
		{"source type set to an unknown value", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.FilterChains[0].FilterChainMatch.SourceType = 7
			return l
		}(), `listener "l": filter_chains[0].filter_chain_match.source_type = "7": must be ANY, SAME_IP_OR_LOOPBACK or EXTERNAL`},
		{"address suffix", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.FilterChains[0].FilterChainMatch.AddressSuffix = "::"
			return l
		}(), `listener "l": filter_chains[0].filter_chain_match.address_suffix = "::": not supported`},
		{"proxy protocol", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.FilterChains[0].UseProxyProto = wrapperspb.Bool(true) //nolint:staticcheck // refused
			return l
		}(), `listener "l": filter_chains[0].use_proxy_proto: not supported`},
		{"tls_inspector option", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.ListenerFilters[0].ConfigType = &listenerv3.ListenerFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &tlsinspv3.TlsInspector{EnableJa3Fingerprinting: wrapperspb.Bool(true)})}
			return l
		}(), `listener "l": listener_filters[0].typed_config.enable_ja3_fingerprinting: not supported`},
		{"listener buffer limit", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(1024)
			return l
		}(), `listener "l": per_connection_buffer_limit_bytes: not supported`},
		{"partial wildcard server name", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.FilterChains[0].FilterChainMatch.ServerNames = []string{"www.*.com"}
			return l
		}(), `listener "l": filter_chains[0].filter_chain_match.server_names[0] = "www.*.com": must be a host name or a wildcard "*.example.com"`},
		{"overlapping server names", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.FilterChains[0].FilterChainMatch.ServerNames = []string{"a.com", "b.com"}
			other := tcpChain(t, "other", &listenerv3.FilterChainMatch{TransportProtocol: "tls", ServerNames: []string{"c.com", "b.com"}})
			l.FilterChains = append(l.FilterChains, other)
			return l
		}(), `listener "l": filter_chains[1].filter_chain_match: must differ from filter_chains[0]'s (multiple filter chains with the same matching rules)`},
		{"unknown network filter", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.FilterChains[0].Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.mongo_proxy"}}, l.FilterChains[0].Filters...)
			return l
		}(), `listener "l": filter_chains[0].filters[0].name = "envoy.filters.network.mongo_proxy": unknown network filter`},
		{"tcp_proxy not last", func() *listenerv3.Listener {
			l := tlsListener(t, istioDownstream())
			l.FilterChains[0].Filters = append(l.FilterChains[0].Filters, l.FilterChains[0].Filters[0])
			return l
		}(), `listener "l": filter_chains[0].filters[0].name = "envoy.filters.network.tcp_proxy": must be the last filter of the chain`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(Resources{Listeners: []proto.Message{tt.l}}, nil)
			if err == nil {
				t.Fatalf("Build succeeded, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestBuildUpstreamTLSErrors(t *testing.T) {
	withUC := func(f func(uc *tlsv3.UpstreamTlsContext)) *clusterv3.Cluster {
		uc := istioUpstream()
		f(uc)
		c := testCluster()
		c.TransportSocket = xdstest.TLSSocket(t, uc)
		return c
	}
	const p = `cluster "outbound|9080|v1|reviews.default.svc.cluster.local": transport_socket.typed_config.`
	tests := []struct {
		name string
		c    *clusterv3.Cluster
		want string
	}{
		{"auto sni", withUC(func(uc *tlsv3.UpstreamTlsContext) { uc.AutoHostSni = true }), p + `auto_host_sni = "true": not supported`},
		{"two client certs", withUC(func(uc *tlsv3.UpstreamTlsContext) {
			uc.CommonTlsContext.TlsCertificateSdsSecretConfigs = append(uc.CommonTlsContext.TlsCertificateSdsSecretConfigs, xdstest.SDS("other"))
		}), p + "common_tls_context: must have at most one client certificate"},
		{"bad inline key", withUC(func(uc *tlsv3.UpstreamTlsContext) {
			uc.CommonTlsContext.TlsCertificateSdsSecretConfigs = nil
			uc.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: xdstest.InlineBytes([]byte("x")), PrivateKey: xdstest.InlineBytes([]byte("y"))}}
		}), p + "common_tls_context.tls_certificates[0]: certificate chain and private key: tls: failed to find any PEM data in certificate input"},
		{"unreadable trusted_ca file", withUC(func(uc *tlsv3.UpstreamTlsContext) {
			uc.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/nonexistent/root.pem"}}}}
		}), p + `common_tls_context.validation_context.trusted_ca.filename = "/nonexistent/root.pem": cannot be read`},
		{"HTTP/2 without h2 in ALPN", func() *clusterv3.Cluster {
			c := withUC(func(*tlsv3.UpstreamTlsContext) {})
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} //nolint:staticcheck // the deprecated form is read too
			return c
		}(), p + "common_tls_context.alpn_protocols: must include h2 on an HTTP/2 cluster"},
		{"matcher api", func() *clusterv3.Cluster {
			c := withUC(func(*tlsv3.UpstreamTlsContext) {})
			c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{Name: "m"}}
			return c
		}(), `cluster "outbound|9080|v1|reviews.default.svc.cluster.local": transport_socket_matches[0].transport_socket: must be set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(Resources{Clusters: []proto.Message{tt.c}}, nil)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error:\n got %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestBuildSecretAndDump(t *testing.T) {
	ca := testutil.NewCA(t, "root")
	leaf := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/gw"}})
	sec, err := BuildSecret(&tlsv3.Secret{Name: "kubernetes://gw", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: xdstest.InlineBytes(leaf.CertPEM), PrivateKey: xdstest.InlineBytes(leaf.KeyPEM)}}})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Name != "kubernetes://gw" || sec.Certificate == nil || sec.Certificate.Leaf.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("secret = %+v", sec)
	}
	roots, err := BuildSecret(&tlsv3.Secret{Name: "kubernetes://gw-cacert", Type: &tlsv3.Secret_ValidationContext{
		ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: xdstest.InlineBytes(ca.PEM)}}})
	if err != nil || roots.Roots == nil {
		t.Fatalf("roots = %+v, %v", roots, err)
	}
	if _, err := BuildSecret(&tlsv3.Secret{Name: "x", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: xdstest.InlineBytes(ca.PEM), MatchSubjectAltNames: []*matcherv3.StringMatcher{{}}}}}); err == nil ||
		err.Error() != `secret "x": validation_context.match_subject_alt_names: not supported` {
		t.Errorf("SAN matchers in a secret: %v", err)
	}

	// config_dump: secrets and inline keys in listeners never show a key.
	dc := istioDownstream()
	dc.CommonTlsContext.TlsCertificateSdsSecretConfigs = nil
	dc.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: xdstest.InlineBytes(leaf.CertPEM), PrivateKey: xdstest.InlineBytes(leaf.KeyPEM)}}
	g, err := Build(Resources{Listeners: []proto.Message{tlsListener(t, dc)}, Versions: map[string]string{xdsapi.ListenerType: "1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sec.Source, sec.Version = secret.SourceADS, "7"
	agentLeaf := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/proxy"}})
	agentSecret := &secret.Secret{Name: "default", Certificate: &agentLeaf.TLS, Source: secret.SourceAgent} // no CertificatePEM
	b, err := g.ConfigDumpWithSecrets([]*secret.Secret{sec, roots, agentSecret})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "PRIVATE KEY") || strings.Contains(string(b), string(leaf.KeyPEM[30:60])) {
		t.Fatalf("config dump shows a private key:\n%s", b)
	}
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatal(err)
	}
	last := dump.Configs[len(dump.Configs)-1]
	if last["@type"] != "type.googleapis.com/envoy.admin.v3.SecretsConfigDump" {
		t.Fatalf("last config is %v", last["@type"])
	}
	flat := strings.Join(strings.Fields(string(b)), "")
	for _, want := range []string{`"name":"kubernetes://gw"`, `"versionInfo":"7"`, `"name":"default"`,
		`"certificateChain":{"inlineBytes":"` + base64.StdEncoding.EncodeToString(agentLeaf.CertPEM) + `"}`, `"privateKey":{"inlineString":"[redacted]"}`, `"trustedCa":{"inlineBytes":`} {
		if !strings.Contains(flat, want) {
			t.Errorf("config dump lacks %s", want)
		}
	}
	// The generation's source keeps its key (only the dump is redacted).
	res, err := g.Source()
	if err != nil {
		t.Fatal(err)
	}
	src := res.Listeners[0].(*listenerv3.Listener)
	var kept tlsv3.DownstreamTlsContext
	if err := src.FilterChains[0].TransportSocket.GetTypedConfig().UnmarshalTo(&kept); err != nil ||
		string(kept.CommonTlsContext.TlsCertificates[0].PrivateKey.GetInlineBytes()) != string(leaf.KeyPEM) {
		t.Error("redaction changed the generation's source")
	}
}
