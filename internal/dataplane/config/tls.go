package config

import (
	"crypto/tls"
	"os"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbufv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/matcher"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
)

// Transport sockets and the in-process SDS cluster.
const (
	// TLSTransportSocketName is the transport socket of TLS termination
	// (DownstreamTlsContext) and origination (UpstreamTlsContext).
	TLSTransportSocketName = "envoy.transport_sockets.tls"
	// SDSClusterName is the cluster Istio's sds_config api_config_source
	// names: its secrets ("default", "ROOTCA", "file-cert:...",
	// "file-root:...") are served inside the proxy.
	SDSClusterName = "sds-grpc"

	downstreamTLSTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSTypeURL   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	rawBufferTypeURL     = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
)

// SecretSource says where a secret named by an SdsSecretConfig comes from.
type SecretSource int

// Secret sources.
const (
	// SecretLocal: sds_config is an api_config_source to the sds-grpc
	// cluster, served in-process: "default" and "ROOTCA" are the agent's,
	// "file-cert:" and "file-root:" names are read from files.
	SecretLocal SecretSource = iota + 1
	// SecretADS: sds_config is ads; the xDS client subscribes to the name
	// as a type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret.
	SecretADS
)

// SecretRef is an SdsSecretConfig: a secret resolved by name in the
// secret.Store at each handshake.
type SecretRef struct {
	Name   string
	Source SecretSource
}

// CertSource is one certificate of a TLS context: Inline is a
// tls_certificates entry (inline or read from its files at Build), Ref a
// tls_certificate_sds_secret_configs entry; exactly one is set.
type CertSource struct {
	Inline *secret.Secret
	Ref    *SecretRef
}

// SANType is SubjectAltNameMatcher.san_type; SANAny is the deprecated
// match_subject_alt_names, which Envoy applies to every SAN type.
type SANType int

// SAN types.
const (
	SANAny SANType = iota
	SANDNS
	SANURI
	SANEmail
	SANIP
)

// SANMatcher is one match_typed_subject_alt_names (or
// match_subject_alt_names) entry.
type SANMatcher struct {
	Type SANType
	// Matcher is the compiled StringMatcher (ignore_case folded in once,
	// when the generation is built).
	Matcher matcher.String
}

// ValidationContext is how the peer's certificate is verified: against
// trusted roots (Roots inline, or Ref resolved at each handshake), then,
// when SANs is not empty, at least one of its subject alternative names
// must match one matcher (Envoy's "any" semantics).
type ValidationContext struct {
	Roots *secret.Secret // inline trusted_ca; nil when Ref
	Ref   *SecretRef     // validation_context_sds_secret_config
	SANs  []SANMatcher
}

// CommonTLS is envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.
type CommonTLS struct {
	Certificates []CertSource
	// Validation is nil when the peer's certificate is not verified.
	Validation *ValidationContext
	// ALPN is alpn_protocols, in preference order; nil offers none.
	ALPN []string
	// MinVersion and MaxVersion are crypto/tls versions (tls_params).
	MinVersion, MaxVersion uint16
	// CipherSuites are the TLS 1.0-1.2 suites (tls_params.cipher_suites, or
	// Envoy's default list); TLS 1.3 suites are not configurable, in Envoy
	// as in Go.
	CipherSuites []uint16
	// Curves are tls_params.ecdh_curves, or Envoy's default: X25519,
	// P-256.
	Curves []tls.CurveID
}

// DownstreamTLS is a filter chain's DownstreamTlsContext.
type DownstreamTLS struct {
	CommonTLS
	// RequireClientCertificate refuses a client without a certificate
	// (Validation is then set). Without it a client certificate is asked
	// for, and verified when given, only when Validation is set.
	RequireClientCertificate bool
	// RequireSNI refuses a ClientHello without server name.
	RequireSNI bool
	// DisableSessionTickets is disable_stateless_session_resumption.
	DisableSessionTickets bool
}

// UpstreamTLS is a cluster's UpstreamTlsContext.
type UpstreamTLS struct {
	CommonTLS
	// SNI is the server name sent; "" sends none.
	SNI string
	// AllowRenegotiation lets the server renegotiate (TLS 1.2).
	AllowRenegotiation bool
	// MaxSessionKeys is how many sessions are kept for resumption per
	// transport (max_session_keys, default 1); 0 disables resumption.
	MaxSessionKeys int
}

// Envoy's default cipher suites, for both directions (non-FIPS builds).
var defaultCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// cipherSuites maps BoringSSL's names (Envoy's cipher_suites) to the
// suites crypto/tls implements. A name not here is refused.
var cipherSuites = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// Envoy's default ECDH curves (non-FIPS builds).
var defaultCurves = []tls.CurveID{tls.X25519, tls.CurveP256}

var curves = map[string]tls.CurveID{
	"X25519": tls.X25519, "P-256": tls.CurveP256, "P-384": tls.CurveP384, "P-521": tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// ---- building ----

// buildDownstreamTransportSocket reads a filter chain's transport_socket:
// nil or raw_buffer is plaintext (nil), a DownstreamTlsContext TLS.
func buildDownstreamTransportSocket(ts *corev3.TransportSocket) (*DownstreamTLS, error) {
	if ts == nil {
		return nil, nil
	}
	tc, err := transportSocketConfig(ts, downstreamTLSTypeURL)
	if err != nil || tc == nil {
		return nil, err
	}
	var dc tlsv3.DownstreamTlsContext
	if err := anyTo(tc, &dc); err != nil {
		return nil, ferr("typed_config", "%v", err)
	}
	d, err := buildDownstreamTLS(&dc)
	if err != nil {
		return nil, under("typed_config", err)
	}
	return d, nil
}

// transportSocketConfig checks a TransportSocket and returns its
// typed_config when it is of type want, nil for a raw_buffer socket.
func transportSocketConfig(ts *corev3.TransportSocket, want string) (*anypb.Any, error) {
	if err := onlyFields("", ts, "name", "typed_config"); err != nil {
		return nil, err
	}
	tc := ts.GetTypedConfig()
	switch tc.GetTypeUrl() {
	case want:
		return tc, nil
	case rawBufferTypeURL:
		var rb rawbufv3.RawBuffer
		if err := anyTo(tc, &rb); err != nil {
			return nil, ferr("typed_config", "%v", err)
		}
		return nil, nil
	case "":
		if ts.GetName() == "envoy.transport_sockets.raw_buffer" || ts.GetName() == "raw_buffer" {
			return nil, nil
		}
		return nil, ferr("typed_config", "must be set")
	}
	return nil, verr("typed_config.type_url", tc.GetTypeUrl(), "must be %s or %s", want, rawBufferTypeURL)
}

func buildDownstreamTLS(dc *tlsv3.DownstreamTlsContext) (*DownstreamTLS, error) {
	if err := onlyFields("", dc, "common_tls_context", "require_client_certificate", "require_sni",
		"disable_stateless_session_resumption"); err != nil {
		return nil, err
	}
	d := &DownstreamTLS{
		RequireClientCertificate: dc.GetRequireClientCertificate().GetValue(),
		RequireSNI:               dc.GetRequireSni().GetValue(),
		DisableSessionTickets:    dc.GetDisableStatelessSessionResumption(),
	}
	if err := buildCommonTLS(dc.GetCommonTlsContext(), &d.CommonTLS, false); err != nil {
		return nil, under("common_tls_context", err)
	}
	if len(d.Certificates) == 0 {
		return nil, ferr("common_tls_context", "must have tls_certificates or tls_certificate_sds_secret_configs")
	}
	if d.RequireClientCertificate && d.Validation == nil {
		return nil, verr("require_client_certificate", "true", "needs a validation context to verify the client certificate with")
	}
	return d, nil
}

func buildUpstreamTLS(uc *tlsv3.UpstreamTlsContext) (*UpstreamTLS, error) {
	if err := onlyFields("", uc, "common_tls_context", "sni", "allow_renegotiation", "max_session_keys"); err != nil {
		return nil, err
	}
	u := &UpstreamTLS{SNI: uc.GetSni(), AllowRenegotiation: uc.GetAllowRenegotiation(), MaxSessionKeys: 1}
	if strings.ContainsAny(u.SNI, " /:*") {
		return nil, verr("sni", u.SNI, "must be a host name")
	}
	if m := uc.GetMaxSessionKeys(); m != nil {
		u.MaxSessionKeys = int(m.GetValue())
	}
	if err := buildCommonTLS(uc.GetCommonTlsContext(), &u.CommonTLS, true); err != nil {
		return nil, under("common_tls_context", err)
	}
	if len(u.Certificates) > 1 {
		return nil, ferr("common_tls_context", "must have at most one client certificate")
	}
	return u, nil
}

func buildCommonTLS(cc *tlsv3.CommonTlsContext, c *CommonTLS, upstream bool) error {
	if err := onlyFields("", cc, "tls_params", "tls_certificates", "tls_certificate_sds_secret_configs",
		"alpn_protocols", "validation_context", "validation_context_sds_secret_config", "combined_validation_context"); err != nil {
		return err
	}
	if len(cc.GetTlsCertificates()) > 0 && len(cc.GetTlsCertificateSdsSecretConfigs()) > 0 {
		return ferr("tls_certificates", "must not be set with tls_certificate_sds_secret_configs")
	}
	for i, tc := range cc.GetTlsCertificates() {
		p := idx("tls_certificates", i)
		sec, err := buildInlineCertificate(tc)
		if err != nil {
			return under(p, err)
		}
		c.Certificates = append(c.Certificates, CertSource{Inline: sec})
	}
	for i, sc := range cc.GetTlsCertificateSdsSecretConfigs() {
		ref, err := buildSecretRef(sc, true)
		if err != nil {
			return under(idx("tls_certificate_sds_secret_configs", i), err)
		}
		c.Certificates = append(c.Certificates, CertSource{Ref: ref})
	}
	var err error
	switch v := cc.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc, err := buildValidationContext(v.ValidationContext)
		if err != nil {
			return under("validation_context", err)
		}
		if vc.Roots == nil {
			return ferr("validation_context.trusted_ca", "must be set")
		}
		c.Validation = vc
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		ref, err := buildSecretRef(v.ValidationContextSdsSecretConfig, false)
		if err != nil {
			return under("validation_context_sds_secret_config", err)
		}
		c.Validation = &ValidationContext{Ref: ref}
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		cv := v.CombinedValidationContext
		p := "combined_validation_context"
		if err := onlyFields(p, cv, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return err
		}
		vc, err := buildValidationContext(cv.GetDefaultValidationContext())
		if err != nil {
			return under(p+".default_validation_context", err)
		}
		// The dynamic context's trusted_ca overrides the default's
		// (Envoy merges them with MergeFrom).
		if vc.Ref, err = buildSecretRef(cv.GetValidationContextSdsSecretConfig(), false); err != nil {
			return under(p+".validation_context_sds_secret_config", err)
		}
		vc.Roots = nil
		c.Validation = vc
	default:
		return ferr("validation_context_type", "must be validation_context, validation_context_sds_secret_config or combined_validation_context")
	}
	for i, a := range cc.GetAlpnProtocols() {
		if a == "" || len(a) > 255 {
			return verr(idx("alpn_protocols", i), a, "must be 1 to 255 bytes")
		}
		c.ALPN = append(c.ALPN, a)
	}
	if err = buildTLSParams(cc.GetTlsParams(), c, upstream); err != nil {
		return under("tls_params", err)
	}
	return nil
}

func buildTLSParams(p *tlsv3.TlsParameters, c *CommonTLS, upstream bool) error {
	// Envoy's defaults: TLS 1.2 minimum; maximum TLS 1.2 for clients, 1.3
	// for servers.
	c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS13
	if upstream {
		c.MaxVersion = tls.VersionTLS12
	}
	c.CipherSuites = defaultCipherSuites
	c.Curves = defaultCurves
	if p == nil {
		return nil
	}
	if err := onlyFields("", p, "tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites", "ecdh_curves"); err != nil {
		return err
	}
	if v := p.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		c.MinVersion = tlsVersions[v]
	}
	if v := p.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		c.MaxVersion = tlsVersions[v]
	}
	if c.MinVersion == 0 || c.MaxVersion == 0 {
		return verr("tls_minimum_protocol_version", p.GetTlsMinimumProtocolVersion().String(), "must be TLS_AUTO or TLSv1_0 to TLSv1_3")
	}
	if c.MinVersion > c.MaxVersion {
		return verr("tls_minimum_protocol_version", p.GetTlsMinimumProtocolVersion().String(),
			"must not exceed tls_maximum_protocol_version (%s)", p.GetTlsMaximumProtocolVersion())
	}
	if len(p.GetCipherSuites()) > 0 {
		c.CipherSuites = nil
		for i, cs := range p.GetCipherSuites() {
			// "[A|B]" is an equal-preference group in BoringSSL; Go orders
			// suites itself, so a group is its members in order.
			for name := range strings.SplitSeq(strings.Trim(cs, "[]"), "|") {
				id, ok := cipherSuites[name]
				if !ok {
					return verr(idx("cipher_suites", i), cs, "cipher suite %q is not supported (crypto/tls implements ECDHE and RSA key exchange with AES-GCM, ChaCha20-Poly1305 and AES-CBC-SHA; TLS 1.3 suites are not configurable)", name)
				}
				c.CipherSuites = append(c.CipherSuites, id)
			}
		}
	}
	if len(p.GetEcdhCurves()) > 0 {
		c.Curves = nil
	}
	for i, name := range p.GetEcdhCurves() {
		id, ok := curves[name]
		if !ok {
			return verr(idx("ecdh_curves", i), name, "must be X25519, P-256, P-384, P-521 or X25519MLKEM768")
		}
		c.Curves = append(c.Curves, id)
	}
	return nil
}

// buildInlineCertificate reads a TlsCertificate: certificate_chain and
// private_key, inline or from a file read now.
func buildInlineCertificate(tc *tlsv3.TlsCertificate) (*secret.Secret, error) {
	if err := onlyFields("", tc, "certificate_chain", "private_key"); err != nil {
		return nil, err
	}
	chain, err := dataSource("certificate_chain", tc.GetCertificateChain())
	if err != nil {
		return nil, err
	}
	key, err := dataSource("private_key", tc.GetPrivateKey())
	if err != nil {
		return nil, err
	}
	sec, err := secret.ParseCertificate("", chain, key)
	if err != nil {
		return nil, ferr("", "%v", err)
	}
	return sec, nil
}

// dataSource reads an envoy DataSource: inline bytes or string, or a file
// read once at Build.
func dataSource(path string, ds *corev3.DataSource) ([]byte, error) {
	if ds == nil {
		return nil, ferr(path, "must be set")
	}
	if err := onlyFields(path, ds, "filename", "inline_bytes", "inline_string"); err != nil {
		return nil, err
	}
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, verr(path+".filename", s.Filename, "cannot be read: %v", err)
		}
		return b, nil
	}
	return nil, ferr(path, "must be filename, inline_bytes or inline_string")
}

func buildValidationContext(vc *tlsv3.CertificateValidationContext) (*ValidationContext, error) {
	out := &ValidationContext{}
	if vc == nil {
		return out, nil
	}
	if err := onlyFields("", vc, "trusted_ca", "match_typed_subject_alt_names", "match_subject_alt_names"); err != nil {
		return nil, err
	}
	if ca := vc.GetTrustedCa(); ca != nil {
		b, err := dataSource("trusted_ca", ca)
		if err != nil {
			return nil, err
		}
		if out.Roots, err = secret.ParseRoots("", b); err != nil {
			return nil, ferr("trusted_ca", "%v", err)
		}
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		p := idx("match_typed_subject_alt_names", i)
		if err := onlyFields(p, m, "san_type", "matcher"); err != nil {
			return nil, err
		}
		var t SANType
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			t = SANDNS
		case tlsv3.SubjectAltNameMatcher_URI:
			t = SANURI
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			t = SANEmail
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			t = SANIP
		default:
			return nil, verr(p+".san_type", m.GetSanType().String(), "must be DNS, URI, EMAIL or IP_ADDRESS")
		}
		sm, err := buildStringMatcher(p+".matcher", m.GetMatcher())
		if err != nil {
			return nil, err
		}
		out.SANs = append(out.SANs, SANMatcher{Type: t, Matcher: sm})
	}
	//nolint:staticcheck // match_subject_alt_names is deprecated; older Istio sends it.
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := buildStringMatcher(idx("match_subject_alt_names", i), m)
		if err != nil {
			return nil, err
		}
		out.SANs = append(out.SANs, SANMatcher{Type: SANAny, Matcher: sm})
	}
	return out, nil
}

// buildStringMatcher compiles the SAN matcher at path with matcher.String,
// the proxy's one StringMatcher.
func buildStringMatcher(path string, m *matcherv3.StringMatcher) (matcher.String, error) {
	if m == nil {
		return matcher.String{}, ferr(path, "must be set")
	}
	sm, err := matcher.NewString(m)
	if err != nil {
		return sm, ferr(path, "%v", err)
	}
	return sm, nil
}

// buildSecretRef reads an SdsSecretConfig. cert says whether it names a
// certificate (else a validation context), which restricts the in-process
// names.
func buildSecretRef(sc *tlsv3.SdsSecretConfig, cert bool) (*SecretRef, error) {
	if sc == nil {
		return nil, ferr("", "must be set")
	}
	if err := onlyFields("", sc, "name", "sds_config"); err != nil {
		return nil, err
	}
	ref := &SecretRef{Name: sc.GetName()}
	if ref.Name == "" {
		return nil, ferr("name", "must not be empty")
	}
	cs := sc.GetSdsConfig()
	if cs == nil {
		return nil, ferr("sds_config", "must be set (static secrets are not supported)")
	}
	if err := onlyFields("sds_config", cs, "ads", "api_config_source", "resource_api_version", "initial_fetch_timeout"); err != nil {
		return nil, err
	}
	if v := cs.GetResourceApiVersion(); v != corev3.ApiVersion_AUTO && v != corev3.ApiVersion_V3 {
		return nil, verr("sds_config.resource_api_version", v.String(), "must be V3")
	}
	if _, err := duration(cs.GetInitialFetchTimeout(), "sds_config.initial_fetch_timeout", 0); err != nil {
		return nil, err
	}
	switch {
	case cs.GetAds() != nil:
		ref.Source = SecretADS
		return ref, nil
	case cs.GetApiConfigSource() != nil:
		if err := checkSDSGRPC("sds_config.api_config_source", cs.GetApiConfigSource()); err != nil {
			return nil, err
		}
		ref.Source = SecretLocal
	default:
		return nil, ferr("sds_config", "must be ads or an api_config_source to the %s cluster", SDSClusterName)
	}
	_, _, root, isFile := secret.ParseFileName(ref.Name)
	switch {
	case cert && (ref.Name == secret.WorkloadCertificate || isFile && root == ""):
	case !cert && (ref.Name == secret.RootCA || isFile && root != ""):
	case cert:
		return nil, verr("name", ref.Name, "must be %q or %sCERT~KEY for the %s cluster", secret.WorkloadCertificate, secret.FileCertPrefix, SDSClusterName)
	default:
		return nil, verr("name", ref.Name, "must be %q or %sROOT for the %s cluster", secret.RootCA, secret.FileRootPrefix, SDSClusterName)
	}
	return ref, nil
}

// checkSDSGRPC accepts the api_config_source Istio writes for its agent:
// GRPC to the sds-grpc cluster.
func checkSDSGRPC(path string, a *corev3.ApiConfigSource) error {
	if err := onlyFields(path, a, "api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"); err != nil {
		return err
	}
	if a.GetApiType() != corev3.ApiConfigSource_GRPC {
		return verr(path+".api_type", a.GetApiType().String(), "must be GRPC")
	}
	if v := a.GetTransportApiVersion(); v != corev3.ApiVersion_AUTO && v != corev3.ApiVersion_V3 {
		return verr(path+".transport_api_version", v.String(), "must be V3")
	}
	gs := a.GetGrpcServices()
	if len(gs) != 1 {
		return verr(path+".grpc_services", strconv.Itoa(len(gs))+" services", "must have one envoy_grpc service to the %s cluster", SDSClusterName)
	}
	p := path + ".grpc_services[0]"
	if err := onlyFields(p, gs[0], "envoy_grpc"); err != nil {
		return err
	}
	eg := gs[0].GetEnvoyGrpc()
	if err := onlyFields(p+".envoy_grpc", eg, "cluster_name"); err != nil {
		return err
	}
	if eg.GetClusterName() != SDSClusterName {
		return verr(p+".envoy_grpc.cluster_name", eg.GetClusterName(), "must be %s (secrets served in-process)", SDSClusterName)
	}
	return nil
}

// SecretRefs returns every secret c's certificates and validation name.
func (c *CommonTLS) SecretRefs() []SecretRef {
	var out []SecretRef
	for _, cs := range c.Certificates {
		if cs.Ref != nil {
			out = append(out, *cs.Ref)
		}
	}
	if c.Validation != nil && c.Validation.Ref != nil {
		out = append(out, *c.Validation.Ref)
	}
	return out
}
