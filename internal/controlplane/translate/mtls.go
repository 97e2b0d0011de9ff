package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	alpnpb "istio.io/api/envoy/config/filter/http/alpn/v2alpha1"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// Mutual TLS between sidecars, as Istio builds it
// (pilot/pkg/networking/core/cluster_tls.go, filterchain_options.go,
// pilot/pkg/security/authn/utils): the client's outbound cluster
// originates ISTIO_MUTUAL with the agent's secrets "default" and "ROOTCA"
// (auto mTLS chooses it per endpoint through transport_socket_matches on
// the endpoint metadata tlsMode: istio), and the server's inbound
// listener terminates it, as its PeerAuthentication says, on filter chains
// chosen by tls_inspector's transport protocol and the client's ALPN.

// Istio's names and values.
const (
	systemRootsName         = "system"
	rawBufferTransportSock  = "envoy.transport_sockets.raw_buffer"
	transportSocketMatchKey = "envoy.transport_socket_match"
	tlsModeMetadataKey      = "tlsMode"
	tlsModeMatchIstio       = "tlsMode-istio"
	tlsModeMatchDisabled    = "tlsMode-disabled"
)

// Istio's ALPN lists (pilot/pkg/networking/util).
var (
	// alpnInMeshWithMxc is what an ISTIO_MUTUAL client offers
	// (ALPNInMeshWithMxc); an HTTP/2 cluster adds h2 (ALPNInMeshH2WithMxc).
	alpnInMeshWithMxc   = []string{"istio-peer-exchange", "istio"}
	alpnInMeshH2WithMxc = []string{"istio-peer-exchange", "istio", "h2"}
	// alpnDownstreamWithMxc is what an inbound TCP mTLS chain's server
	// offers (an HTTP one's is alpnHTTP, Istio's ALPNHttp).
	alpnDownstreamWithMxc = []string{"istio-peer-exchange", "h2", "http/1.1"}
	alpnH2Only            = []string{"h2"}
	// The ALPNs inbound chains match (filterchain_options.go).
	mtlsHTTPALPNs       = []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}
	mtlsTCPWithMxcALPNs = []string{"istio-peer-exchange", "istio"}
	allIstioMtlsALPNs   = []string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}
)

// inboundCipherSuites are Istio's SupportedCiphers for sidecar servers
// (TLS 1.2; TLS 1.3 suites are not configurable).
var inboundCipherSuites = []string{
	"ECDHE-ECDSA-AES256-GCM-SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384",
	"ECDHE-ECDSA-AES128-GCM-SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256",
	"AES256-GCM-SHA384",
	"AES128-GCM-SHA256",
}

// trustDomains is the mesh's trust domain then its aliases, as the
// authorization filters read them.
func trustDomains(mesh *meshv1alpha1.MeshConfig) []string {
	td := mesh.GetTrustDomain()
	if td == "" {
		td = meshconfig.DefaultTrustDomain
	}
	out := []string{td}
	for _, a := range mesh.GetTrustDomainAliases() {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// inboundTLSContext is Istio's BuildInboundTLS for a STRICT or PERMISSIVE
// inbound chain: the workload certificate "default", client certificates
// required and verified against "ROOTCA" (any SPIFFE ID of the root: who
// may call is AuthorizationPolicy's business), TLS 1.2 to 1.3 with Istio's
// cipher suites, and ALPN h2, http/1.1 (TCP chains offer
// istio-peer-exchange first). With trust domain aliases, the peer's URI
// SAN must start with spiffe://DOMAIN/ of one of them, as Istio's
// ApplyToCommonTLSContext.
func inboundTLSContext(tcp bool, mesh *meshv1alpha1.MeshConfig) *tlsv3.DownstreamTlsContext {
	alpn := alpnHTTP
	if tcp {
		alpn = alpnDownstreamWithMxc
	}
	dvc := &tlsv3.CertificateValidationContext{}
	if len(mesh.GetTrustDomainAliases()) > 0 {
		for _, td := range trustDomains(mesh) {
			dvc.MatchSubjectAltNames = append(dvc.MatchSubjectAltNames, &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: spiffePrefix + td + "/"},
			})
		}
	}
	return &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				CipherSuites:              inboundCipherSuites,
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsConfig(workloadCertSecret)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         dvc,
					ValidationContextSdsSecretConfig: sdsConfig(rootCASecret),
				},
			},
		},
	}
}

// tlsTransportSocketOf packs a Downstream- or UpstreamTlsContext as the
// envoy.transport_sockets.tls transport socket.
func tlsTransportSocketOf(ctx proto.Message) (*corev3.TransportSocket, error) {
	a, err := packAny(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: transportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

// rawBufferTransportSocket is Istio's tlsMode-disabled socket.
func rawBufferTransportSocket() (*corev3.TransportSocket, error) {
	a, err := packAny(&rawbufferv3.RawBuffer{})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: rawBufferTransportSock, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

// clusterTLSEnv is what the outbound clusters' TLS depends on besides the
// cluster itself.
type clusterTLSEnv struct {
	pc *model.PushContext
	// autoMTLS is MeshConfig.enableAutoMtls (default true) and a CA that
	// gives proxies their certificates.
	autoMTLS     bool
	trustDomains []string
}

func newClusterTLSEnv(pc *model.PushContext, mesh *meshv1alpha1.MeshConfig, o Options) clusterTLSEnv {
	auto := !o.WithoutCA && (mesh.GetEnableAutoMtls() == nil || mesh.GetEnableAutoMtls().GetValue())
	return clusterTLSEnv{pc: pc, autoMTLS: auto, trustDomains: trustDomains(mesh)}
}

// applyClusterTLS sets c's transport socket as Istio's
// buildAutoMtlsSettings and applyUpstreamTLSSettings do for outbound
// cluster oc:
//
//   - the DestinationRule's tls (merged for the port and subset) wins:
//     DISABLE is plaintext, SIMPLE and MUTUAL originate TLS with the
//     files it names (upstreamFileTLS), ISTIO_MUTUAL originates mTLS with
//     the workload's certificate, its sni (else outboundCluster.sni) and
//     its subjectAltNames (else the service's SPIFFE IDs), to every
//     endpoint;
//   - without one, auto mTLS: when it is on, the cluster is not
//     ORIGINAL_DST, the service is in the mesh and its namespace's
//     PeerAuthentication mode is not DISABLE,
//     transport_socket_matches "tlsMode-istio" (ISTIO_MUTUAL, to endpoints
//     whose metadata says tlsMode: istio) then "tlsMode-disabled"
//     (plaintext, to the others).
func applyClusterTLS(c *clusterv3.Cluster, oc outboundCluster, env clusterTLSEnv) error {
	tls := oc.policy.GetTls()
	h2 := isHTTP2Cluster(c)
	if tls != nil {
		var ctx *tlsv3.UpstreamTlsContext
		switch tls.GetMode() {
		case networking.ClientTLSSettings_DISABLE:
			return nil
		case networking.ClientTLSSettings_ISTIO_MUTUAL:
			sans := tls.GetSubjectAltNames()
			if sans == nil {
				sans = serviceSPIFFEIDs(oc.service, env.trustDomains)
			}
			ctx = istioMutualTLSContext(cmp.Or(tls.GetSni(), oc.sni()), sans, h2)
		case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
			ctx = upstreamFileTLSContext(tls, oc.service.Hostname, h2)
			addALPNOverrideMetadata(c)
		default:
			return fmt.Errorf("cluster %q: tls mode %s: not supported", c.GetName(), tls.GetMode())
		}
		ts, err := tlsTransportSocketOf(ctx)
		if err != nil {
			return fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		c.TransportSocket = ts
		return nil
	}
	// An ORIGINAL_DST cluster (DestinationRule loadBalancer PASSTHROUGH)
	// has no endpoint metadata to match: Istio leaves it out.
	if !env.autoMTLS || c.GetType() == clusterv3.Cluster_ORIGINAL_DST || oc.service.Location == networking.ServiceEntry_MESH_EXTERNAL ||
		env.pc.NamespaceMutualTLSMode(oc.service.Namespace) == model.MTLSDisable {
		return nil
	}
	ts, err := tlsTransportSocketOf(istioMutualTLSContext(oc.sni(), serviceSPIFFEIDs(oc.service, env.trustDomains), h2))
	if err != nil {
		return fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	raw, err := rawBufferTransportSocket()
	if err != nil {
		return fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{
			Name: tlsModeMatchIstio,
			Match: &structpb.Struct{Fields: map[string]*structpb.Value{
				tlsModeMetadataKey: structpb.NewStringValue(tlsModeIstio),
			}},
			TransportSocket: ts,
		},
		{Name: tlsModeMatchDisabled, Match: &structpb.Struct{}, TransportSocket: raw},
	}
	return nil
}

// istioMutualTLSContext is Istio's ISTIO_MUTUAL UpstreamTlsContext: TLS
// 1.2 to 1.3, the certificate "default", the peer verified against
// "ROOTCA" and, when sans is not empty, its SAN equal to one of sans;
// sni; ALPN istio-peer-exchange, istio (and h2 for an HTTP/2 cluster).
func istioMutualTLSContext(sni string, sans []string, h2 bool) *tlsv3.UpstreamTlsContext {
	alpn := alpnInMeshWithMxc
	if h2 {
		alpn = alpnInMeshH2WithMxc
	}
	return &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      upstreamTLSParams(),
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsConfig(workloadCertSecret)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: exactMatchers(sans)},
					ValidationContextSdsSecretConfig: sdsConfig(rootCASecret),
				},
			},
		},
	}
}

// upstreamTLSParams is Istio's defaultUpstreamCommonTLSContext's: TLS 1.2
// to 1.3 (Envoy's client default stops at 1.2).
func upstreamTLSParams() *tlsv3.TlsParameters {
	return &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}
}

// upstreamFileTLSContext is Istio's constructUpstreamTLS for SIMPLE and
// MUTUAL with files or credentialName, for a cluster to host: the client certificate
// (MUTUAL) as the file secret "file-cert:CERT~KEY"; unless
// insecureSkipVerify, the server verified against "file-root:CA"
// (caCertificates, else the operating system's bundle, "file-root:system",
// as Istio's VERIFY_CERTIFICATE_AT_CLIENT) and, when given, its SAN equal
// to one of subjectAltNames; sni as given; h2 ALPN for an HTTP/2 cluster.
// Where Istio sets auto_sni and auto_san_validation (sni unset: the SNI
// and the SAN checked are the request's Host), Loom's proxy has neither:
// the SNI is host, and without subjectAltNames the server's certificate
// must have the DNS SAN host, which is what Envoy checks for requests
// whose Host is the service's name. A wildcard host gets neither. With
// credentialName, the certificate is the Secret's "kubernetes://NAME" and
// the trust bundle "kubernetes://NAME-cacert", which loomd serves over ADS
// from the Secrets of the proxy's namespace (credentialSecrets).
func upstreamFileTLSContext(tls *networking.ClientTLSSettings, host string, h2 bool) *tlsv3.UpstreamTlsContext {
	ctx := &tlsv3.UpstreamTlsContext{
		Sni:              tls.GetSni(),
		CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: upstreamTLSParams()},
	}
	wildcard := strings.HasPrefix(host, "*")
	if ctx.Sni == "" && !wildcard {
		ctx.Sni = host
	}
	cert := fileCertPrefix + tls.GetClientCertificate() + "~" + tls.GetPrivateKey()
	root := fileRootPrefix + cmp.Or(tls.GetCaCertificates(), systemRootsName)
	if name := tls.GetCredentialName(); name != "" {
		// Istio's SDS names for a Secret of the proxy's namespace:
		// its certificate and key, and its ca.crt/cacert (or the Secret
		// NAME-cacert) as the trust bundle.
		cert, root = CredentialSecretName(name), CredentialCASecretName(name)
	}
	if tls.GetMode() == networking.ClientTLSSettings_MUTUAL {
		ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsConfig(cert)}
	}
	if !tls.GetInsecureSkipVerify().GetValue() {
		dvc := &tlsv3.CertificateValidationContext{MatchSubjectAltNames: exactMatchers(tls.GetSubjectAltNames())}
		if len(tls.GetSubjectAltNames()) == 0 && tls.GetSni() == "" && !wildcard {
			dvc.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_DNS,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: host}},
			}}
		}
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         dvc,
				ValidationContextSdsSecretConfig: sdsConfig(root),
			},
		}
	}
	if h2 {
		ctx.CommonTlsContext.AlpnProtocols = alpnH2Only
	}
	return ctx
}

// exactMatchers is Istio's StringToExactMatch.
func exactMatchers(ss []string) []*matcherv3.StringMatcher {
	var out []*matcherv3.StringMatcher
	for _, s := range ss {
		out = append(out, exactMatcher(s))
	}
	return out
}

// serviceSPIFFEIDs is Istio's service accounts of a service:
// spiffe://DOMAIN/ns/NS/sa/SA of every account of its instances
// (registry.Service.Accounts, computed once per push), for the trust
// domain and each alias, sorted.
func serviceSPIFFEIDs(svc *registry.Service, domains []string) []string {
	if len(svc.Accounts) == 0 {
		return nil
	}
	out := make([]string, 0, len(svc.Accounts)*len(domains))
	for _, a := range svc.Accounts {
		for _, td := range domains {
			out = append(out, spiffePrefix+td+"/ns/"+a.Namespace+"/sa/"+a.Name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// isHTTP2Cluster reports whether c speaks HTTP/2 upstream (explicit
// http2_protocol_options), as Istio's isHttp2Cluster.
func isHTTP2Cluster(c *clusterv3.Cluster) bool {
	a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if a == nil {
		return false
	}
	var o upstreamhttpv3.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil {
		return false
	}
	return o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// tlsModeMetadata is the endpoint metadata auto mTLS's
// transport_socket_matches read: envoy.transport_socket_match {tlsMode:
// istio}, set on an endpoint that is a sidecar (Istio's
// BuildLbEndpointMetadata).
func tlsModeMetadata() *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		transportSocketMatchKey: {Fields: map[string]*structpb.Value{tlsModeMetadataKey: structpb.NewStringValue(tlsModeIstio)}},
	}}
}

// chainOption is one of Istio's FilterChainMatchOptions: the chain's
// application protocols and transport protocol to match, whether it
// speaks HTTP (else TCP), and whether it terminates mTLS.
type chainOption struct {
	alpn      []string
	transport string
	http      bool
	tls       bool
}

// inboundChainOptions is Istio's getFilterChainMatchOptions: the chains of
// one inbound port of protocol proto under mode. STRICT has only TLS
// chains, so a plaintext connection matches none and is closed; DISABLE
// only plaintext ones; PERMISSIVE both, told apart by tls_inspector's
// transport protocol and the client's ALPN (istio, istio-peer-exchange
// from a sidecar). A sniffed port's HTTP chain over mTLS matches only the
// istio-http/* ALPNs of Istio's outbound ALPN filter (alpnFilter), which
// a sidecar's HTTP connection manager sends for the requests it routes;
// other mTLS (TCP proxies, MX) reaches such a port's TCP chain.
func inboundChainOptions(proto listenerProtocol, mode model.MTLSMode) []chainOption {
	raw, tls := rawBufferTransport, tlsTransport
	switch proto {
	case protocolHTTP:
		switch mode {
		case model.MTLSStrict:
			return []chainOption{{transport: tls, http: true, tls: true}}
		case model.MTLSPermissive:
			return []chainOption{{alpn: allIstioMtlsALPNs, transport: tls, http: true, tls: true}, {transport: raw, http: true}}
		}
		return []chainOption{{transport: raw, http: true}}
	case protocolAuto:
		switch mode {
		case model.MTLSStrict:
			return []chainOption{{alpn: mtlsHTTPALPNs, transport: tls, http: true, tls: true}, {transport: tls, tls: true}}
		case model.MTLSPermissive:
			return []chainOption{
				{alpn: mtlsHTTPALPNs, transport: tls, http: true, tls: true},
				{alpn: plaintextHTTPALPNs, transport: raw, http: true},
				{alpn: mtlsTCPWithMxcALPNs, transport: tls, tls: true},
				{transport: raw},
				{transport: tls},
			}
		}
		return []chainOption{{alpn: plaintextHTTPALPNs, transport: raw, http: true}, {transport: raw}}
	}
	switch mode {
	case model.MTLSStrict:
		return []chainOption{{transport: tls, tls: true}}
	case model.MTLSPermissive:
		return []chainOption{{alpn: allIstioMtlsALPNs, transport: tls, tls: true}, {transport: raw}, {transport: tls}}
	}
	return []chainOption{{transport: raw}}
}

// setInboundTLS puts inboundTLSContext on chain fc when opt terminates
// mTLS.
func setInboundTLS(fc *listenerv3.FilterChain, opt chainOption, mesh *meshv1alpha1.MeshConfig) error {
	if !opt.tls {
		return nil
	}
	ts, err := tlsTransportSocketOf(inboundTLSContext(!opt.http, mesh))
	if err != nil {
		return fmt.Errorf("filter chain %q: %w", fc.GetName(), err)
	}
	fc.TransportSocket = ts
	return nil
}

// addALPNOverrideMetadata sets c's filter_metadata istio.alpn_override
// "false", as Istio's AddALPNOverrideToMetadata for SIMPLE and MUTUAL
// TLS: the istio.alpn filter leaves the ALPN of such TLS alone.
func addALPNOverrideMetadata(c *clusterv3.Cluster) {
	if c.Metadata == nil {
		c.Metadata = &corev3.Metadata{}
	}
	if c.Metadata.FilterMetadata == nil {
		c.Metadata.FilterMetadata = map[string]*structpb.Struct{}
	}
	md := c.Metadata.FilterMetadata["istio"]
	if md == nil {
		md = &structpb.Struct{}
		c.Metadata.FilterMetadata["istio"] = md
	}
	if md.Fields == nil {
		md.Fields = map[string]*structpb.Value{}
	}
	md.Fields["alpn_override"] = structpb.NewStringValue("false")
}

// alpnFilterName is Istio's ALPN HTTP filter (xdsfilters.AlpnFilterName).
const alpnFilterName = "istio.alpn"

// alpnFilter is Istio's xdsfilters.Alpn: an ISTIO_MUTUAL connection the
// router opens for a request offers istio-http/1.0, istio-http/1.1 or
// istio-h2 by the request's upstream protocol instead of the cluster's
// ALPN, so that the peer sidecar's inbound listener picks the HTTP chain
// of a port of unknown protocol (mtlsHTTPALPNs). Clusters of
// DestinationRule SIMPLE or MUTUAL TLS opt out with filter_metadata
// istio.alpn_override "false".
func alpnFilter() (*hcmv3.HttpFilter, error) {
	f, err := packedALPNFilter()
	if err != nil {
		return nil, err
	}
	return proto.Clone(f).(*hcmv3.HttpFilter), nil
}

// packedALPNFilter packs alpnFilter's constant config once for every HTTP
// connection manager; alpnFilter hands out clones, so no caller can change
// the shared one.
var packedALPNFilter = sync.OnceValues(func() (*hcmv3.HttpFilter, error) {
	cfg, err := packAny(&alpnpb.FilterConfig{AlpnOverride: []*alpnpb.FilterConfig_AlpnOverride{
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP10, AlpnOverride: []string{"istio-http/1.0"}},
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP11, AlpnOverride: []string{"istio-http/1.1"}},
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP2, AlpnOverride: []string{"istio-h2"}},
	}})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: alpnFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
})

// upstreamProxyProtocolSocket is the transport socket that writes a PROXY
// protocol header before the socket it wraps.
const upstreamProxyProtocolSocket = "envoy.transport_sockets.upstream_proxy_protocol"

// applyUpstreamProxyProtocol wraps c's transport sockets for
// DestinationRule trafficPolicy.proxyProtocol pp (nil: none), as Istio's
// applyUpstreamProxyProtocol: a cluster without one gets an
// upstream_proxy_protocol socket around raw_buffer; otherwise its
// transport_socket and each transport_socket_matches entry (auto mTLS's
// TLS and plaintext alike) are wrapped, so that the header goes first on
// every connection, before any TLS. The version is pp's (V1, V2).
func applyUpstreamProxyProtocol(c *clusterv3.Cluster, pp *networking.TrafficPolicy_ProxyProtocol) error {
	if pp == nil {
		return nil
	}
	wrap := func(inner *corev3.TransportSocket) (*corev3.TransportSocket, error) {
		if inner == nil {
			raw, err := rawBufferTransportSocket()
			if err != nil {
				return nil, err
			}
			inner = raw
		}
		a, err := packAny(&proxyprotocolv3.ProxyProtocolUpstreamTransport{
			Config:          &corev3.ProxyProtocolConfig{Version: corev3.ProxyProtocolConfig_Version(pp.GetVersion())},
			TransportSocket: inner,
		})
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		return &corev3.TransportSocket{Name: upstreamProxyProtocolSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
	}
	if c.TransportSocket != nil || len(c.TransportSocketMatches) == 0 {
		ts, err := wrap(c.TransportSocket)
		if err != nil {
			return err
		}
		c.TransportSocket = ts
	}
	for _, m := range c.TransportSocketMatches {
		ts, err := wrap(m.TransportSocket)
		if err != nil {
			return err
		}
		m.TransportSocket = ts
	}
	return nil
}
