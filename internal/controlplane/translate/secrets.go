package translate

import (
	"cmp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// credentialSecrets returns the SDS secrets over ADS that r's listeners
// and clusters name ("kubernetes://NAME", see CredentialSecretName), built
// from the Secrets of the proxy's namespace, as Istio's SDS generator
// serves a gateway only the Secrets of its own namespace:
//
//   - a certificate "kubernetes://NAME" is NAME's certificate chain and
//     private key;
//   - a trust bundle "kubernetes://NAME-cacert" is NAME's ca.crt (or
//     cacert), else the bundle of a Secret named NAME-cacert; a trust
//     bundle "kubernetes://NAME" (caCertCredentialName) is NAME's.
//
// A name whose Secret is missing or lacks that part is left out: the
// proxy's handshakes on it fail until it exists. The list is sorted by
// name. The secrets hold private keys: they are sent to the proxy and
// nowhere else.
func credentialSecrets(pc *model.PushContext, p *model.Proxy, r *Resources) []*tlsv3.Secret {
	certs, cas := map[string]bool{}, map[string]bool{}
	note := func(ts *corev3.TransportSocket) {
		if ts == nil || ts.GetName() != transportSocketTLS {
			return
		}
		var common *tlsv3.CommonTlsContext
		var dc tlsv3.DownstreamTlsContext
		var uc tlsv3.UpstreamTlsContext
		switch {
		case ts.GetTypedConfig().MessageIs(&dc) && ts.GetTypedConfig().UnmarshalTo(&dc) == nil:
			common = dc.GetCommonTlsContext()
		case ts.GetTypedConfig().MessageIs(&uc) && ts.GetTypedConfig().UnmarshalTo(&uc) == nil:
			common = uc.GetCommonTlsContext()
		default:
			return
		}
		for _, sc := range common.GetTlsCertificateSdsSecretConfigs() {
			if strings.HasPrefix(sc.GetName(), CredentialPrefix) && sc.GetSdsConfig().GetAds() != nil {
				certs[sc.GetName()] = true
			}
		}
		vc := common.GetValidationContextSdsSecretConfig()
		if vc == nil {
			vc = common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig()
		}
		if strings.HasPrefix(vc.GetName(), CredentialPrefix) && vc.GetSdsConfig().GetAds() != nil {
			cas[vc.GetName()] = true
		}
	}
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			note(fc.GetTransportSocket())
		}
		note(l.GetDefaultFilterChain().GetTransportSocket())
	}
	for _, c := range r.Clusters {
		note(c.GetTransportSocket())
		for _, m := range c.GetTransportSocketMatches() {
			note(m.GetTransportSocket())
		}
	}
	var out []*tlsv3.Secret
	for name := range certs {
		c := pc.Credential(p.Namespace, strings.TrimPrefix(name, CredentialPrefix))
		if c == nil || len(c.CertChain) == 0 {
			continue
		}
		out = append(out, &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.CertChain}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.Key}},
		}}})
	}
	for name := range cas {
		if certs[name] {
			continue // one name, one secret: the certificate wins
		}
		secret := strings.TrimPrefix(name, CredentialPrefix)
		var bundle []byte
		if base, ok := strings.CutSuffix(secret, CACertSuffix); ok {
			if c := pc.Credential(p.Namespace, base); c != nil {
				bundle = c.CACert
			}
		}
		if len(bundle) == 0 {
			if c := pc.Credential(p.Namespace, secret); c != nil {
				bundle = c.CACert
			}
		}
		if len(bundle) == 0 {
			continue
		}
		out = append(out, &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: bundle}},
		}}})
	}
	slices.SortFunc(out, func(a, b *tlsv3.Secret) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}
