package translate

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// Names of the secrets a TLS context refers to, as Istio's SDS names them
// (pilot/pkg/model/credentials, security/pkg/nodeagent/cache).
const (
	// CredentialPrefix starts the SDS name of a Kubernetes Secret named
	// by credentialName: "kubernetes://NAME". loomd serves these over ADS
	// to the proxies of the Secret's namespace.
	CredentialPrefix = "kubernetes://"
	// CACertSuffix ends the name of the trust bundle of a credential:
	// "kubernetes://NAME-cacert", from the Secret's ca.crt (or cacert), or
	// from a Secret named NAME-cacert.
	CACertSuffix = "-cacert"
	// fileCertPrefix and fileRootPrefix name certificates the proxy reads
	// from files (Istio's agent form): "file-cert:CERT~KEY", "file-root:CA".
	fileCertPrefix = "file-cert:"
	fileRootPrefix = "file-root:"
	// workloadCertSecret and rootCASecret are the proxy's own identity and
	// the mesh trust bundle, from its agent.
	workloadCertSecret = "default"
	rootCASecret       = "ROOTCA"
	// sdsGRPCCluster is the cluster Istio's agent serves SDS on; the proxy
	// serves its names in-process.
	sdsGRPCCluster = "sds-grpc"
	// transportSocketTLS is Envoy's TLS transport socket.
	transportSocketTLS = "envoy.transport_sockets.tls"
)

// CredentialSecretName is the SDS name of credentialName's certificate.
func CredentialSecretName(credentialName string) string { return CredentialPrefix + credentialName }

// CredentialCASecretName is the SDS name of credentialName's trust bundle.
func CredentialCASecretName(credentialName string) string {
	return CredentialPrefix + credentialName + CACertSuffix
}

// sdsConfig refers to the secret name: over ADS from loomd for a
// credential, else from the proxy's own SDS (sds-grpc: its agent's
// certificates and files), as Istio's ConstructSdsSecretConfig.
func sdsConfig(name string) *tlsv3.SdsSecretConfig {
	if strings.HasPrefix(name, CredentialPrefix) {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsConfigSource()}
	}
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:                   corev3.ApiConfigSource_GRPC,
			TransportApiVersion:       corev3.ApiVersion_V3,
			SetNodeOnFirstMessageOnly: true,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: sdsGRPCCluster},
			}}},
		}},
		InitialFetchTimeout: durationpb.New(0),
		ResourceApiVersion:  corev3.ApiVersion_V3,
	}}
}

// ALPN of an HTTPS server (Istio's ALPNHttp): HTTP/2 first.
var alpnHTTP = []string{"h2", "http/1.1"}

// gatewayTransportSocket is the TLS transport socket of a terminating
// gateway server, as Istio's buildGatewayListenerTLSContext:
//
//   - certificate: credentialName's "kubernetes://NAME" over ADS, else
//     "file-cert:serverCertificate~privateKey" (ISTIO_MUTUAL: the proxy's
//     own "default");
//   - MUTUAL and OPTIONAL_MUTUAL: a combined validation context whose
//     bundle is "kubernetes://NAME-cacert" (caCertCredentialName's when
//     set), else "file-root:caCertificates", with subjectAltNames as exact
//     SAN matchers; MUTUAL (and ISTIO_MUTUAL, against "ROOTCA") requires
//     the client's certificate;
//   - ALPN h2, http/1.1 on HTTPS servers (alpnProtocols overrides);
//   - TLS 1.2 minimum unless minProtocolVersion says otherwise, with
//     maxProtocolVersion, cipherSuites and ecdhCurves.
//
// It fails only when a typed config cannot be packed.
func gatewayTransportSocket(gs gatewayServer) (*corev3.TransportSocket, error) {
	ts, err := serverTransportSocket(gs.server.GetTls(), gs.kind == serverHTTPS)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", gs.routeName(), err)
	}
	return ts, nil
}

// serverTransportSocket is the downstream TLS transport socket of
// ServerTLSSettings t, as gatewayTransportSocket describes it (Istio's
// BuildListenerTLSContext), with ALPN h2, http/1.1 when alpnH2 (or t's
// alpnProtocols). Gateways and Sidecar ingress listeners share it. It
// fails only when a typed config cannot be packed.
func serverTransportSocket(t *networking.ServerTLSSettings, alpnH2 bool) (*corev3.TransportSocket, error) {
	common := &tlsv3.CommonTlsContext{TlsParams: tlsParams(t)}
	if alpnH2 {
		common.AlpnProtocols = alpnHTTP
	}
	if len(t.GetAlpnProtocols()) > 0 {
		common.AlpnProtocols = t.GetAlpnProtocols()
	}
	var cert, ca string
	switch {
	case t.GetMode() == networking.ServerTLSSettings_ISTIO_MUTUAL:
		cert, ca = workloadCertSecret, rootCASecret
	case t.GetCredentialName() != "":
		cert = CredentialSecretName(t.GetCredentialName())
		ca = CredentialCASecretName(t.GetCredentialName())
		if t.GetCaCertCredentialName() != "" {
			ca = CredentialSecretName(t.GetCaCertCredentialName())
		}
	default:
		cert = fileCertPrefix + t.GetServerCertificate() + "~" + t.GetPrivateKey()
		if t.GetCaCertificates() != "" {
			ca = fileRootPrefix + t.GetCaCertificates()
		}
	}
	common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsConfig(cert)}
	dc := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	switch t.GetMode() {
	case networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL, networking.ServerTLSSettings_ISTIO_MUTUAL:
		sans := exactMatchers(t.GetSubjectAltNames())
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				//nolint:staticcheck // match_subject_alt_names is what Istio writes; the proxy reads both forms.
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: sdsConfig(ca),
			},
		}
		if t.GetMode() != networking.ServerTLSSettings_OPTIONAL_MUTUAL {
			dc.RequireClientCertificate = wrapperspb.Bool(true)
		}
	}
	return tlsTransportSocketOf(dc)
}

// tlsParams are a server's protocol versions, cipher suites and curves;
// the minimum is TLS 1.2 unless set, as Istio's gateways.
func tlsParams(t *networking.ServerTLSSettings) *tlsv3.TlsParameters {
	p := &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsVersion(t.GetMinProtocolVersion()),
		TlsMaximumProtocolVersion: tlsVersion(t.GetMaxProtocolVersion()),
		CipherSuites:              t.GetCipherSuites(),
		EcdhCurves:                t.GetEcdhCurves(),
	}
	if p.TlsMinimumProtocolVersion == tlsv3.TlsParameters_TLS_AUTO {
		p.TlsMinimumProtocolVersion = tlsv3.TlsParameters_TLSv1_2
	}
	return p
}

func tlsVersion(v networking.ServerTLSSettings_TLSProtocol) tlsv3.TlsParameters_TlsProtocol {
	switch v {
	case networking.ServerTLSSettings_TLSV1_0:
		return tlsv3.TlsParameters_TLSv1_0
	case networking.ServerTLSSettings_TLSV1_1:
		return tlsv3.TlsParameters_TLSv1_1
	case networking.ServerTLSSettings_TLSV1_2:
		return tlsv3.TlsParameters_TLSv1_2
	case networking.ServerTLSSettings_TLSV1_3:
		return tlsv3.TlsParameters_TLSv1_3
	}
	return tlsv3.TlsParameters_TLS_AUTO
}
