package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
)

// Secrets resolves secret names; *secret.Store implements it.
type Secrets interface {
	Get(name string) *secret.Secret
}

var _ Secrets = (*secret.Store)(nil)

// ErrSecretUnavailable is wrapped by a handshake or dial error when a
// secret a TLS context names is not (yet) in the store.
var ErrSecretUnavailable = errors.New("secret not available")

// ServerConfig returns the tls.Config that terminates TLS with d: each
// handshake resolves d's certificates and trust bundle in secrets, so the
// returned value may be kept for the life of a filter chain. The
// handshake fails when a certificate or the trust bundle is not in
// secrets, when d requires SNI and the client sent none, or when the
// client's certificate does not verify. The returned Config is safe for
// concurrent use.
func ServerConfig(d *config.DownstreamTLS, secrets Secrets) *tls.Config {
	base := &tls.Config{MinVersion: d.MinVersion, MaxVersion: d.MaxVersion}
	base.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		if d.RequireSNI && chi.ServerName == "" {
			return nil, errors.New("tls: client sent no server name (require_sni)")
		}
		certs, err := certificates(d.Certificates, secrets)
		if err != nil {
			return nil, err
		}
		if r, ok := chi.Conn.(LocalCertificateRecorder); ok {
			// A resumed session presents none and GetCertificate is not
			// called: the connection is still under the proxy's own
			// certificate, as Envoy's uriSanLocalCertificate reads it.
			r.SetLocalCertificate(certs[0].Leaf)
		}
		cfg := &tls.Config{
			GetCertificate:         presentCertificate(certs),
			NextProtos:             serverALPN(d.ALPN, chi.SupportedProtos),
			MinVersion:             d.MinVersion,
			MaxVersion:             d.MaxVersion,
			CipherSuites:           d.CipherSuites,
			CurvePreferences:       d.Curves,
			SessionTicketsDisabled: d.DisableSessionTickets,
		}
		if v := d.Validation; v != nil {
			roots, err := trustBundle(v, secrets)
			if err != nil {
				return nil, err
			}
			cfg.ClientAuth = tls.RequestClientCert
			if d.RequireClientCertificate {
				cfg.ClientAuth = tls.RequireAnyClientCert
			}
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return nil // RequireAnyClientCert refused it already
				}
				return VerifyPeer(cs.PeerCertificates, roots, v.SANs)
			}
		}
		return cfg, nil
	}
	return base
}

// LocalCertificateRecorder is implemented by a connection that records the
// certificate the server presented on it (the listener's accepted
// connections: XFCC's By is its URI SANs). ServerConfig calls it from the
// handshake when the net.Conn given to tls.Server implements it.
type LocalCertificateRecorder interface {
	SetLocalCertificate(*x509.Certificate)
}

// presentCertificate picks the first of certs the client supports (its
// signature schemes, curves and SNI-independent checks, as crypto/tls's
// own choice), else the first, and tells the connection.
func presentCertificate(certs []tls.Certificate) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(chi *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c := &certs[0]
		for i := range certs {
			if chi.SupportsCertificate(&certs[i]) == nil {
				c = &certs[i]
				break
			}
		}
		if r, ok := chi.Conn.(LocalCertificateRecorder); ok {
			r.SetLocalCertificate(c.Leaf)
		}
		return c, nil
	}
}

// serverALPN returns the server's ALPN list for a client offering
// offered: the configured one when the two share a protocol, else none, so
// that the handshake goes on without ALPN as BoringSSL's does (Go's
// server would refuse it: Istio's clients offer "istio-peer-exchange"
// and "istio" to servers that list "h2" and "http/1.1").
func serverALPN(configured, offered []string) []string {
	for _, p := range offered {
		if slices.Contains(configured, p) {
			return configured
		}
	}
	return nil
}

// ClientConfig returns the tls.Config of one upstream connection with u,
// with the client certificate and trust bundle u names as secrets holds
// them now. sessions keeps resumable sessions; nil (or
// u.MaxSessionKeys 0) resumes none. It fails, wrapping
// ErrSecretUnavailable, when a named secret is missing.
func ClientConfig(u *config.UpstreamTLS, secrets Secrets, sessions tls.ClientSessionCache) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName: u.SNI,
		// Envoy checks no host name: the chain and the SAN matchers are
		// verified in VerifyConnection against the roots resolved now.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		NextProtos:         u.ALPN,
		MinVersion:         u.MinVersion,
		MaxVersion:         u.MaxVersion,
		CipherSuites:       u.CipherSuites,
		CurvePreferences:   u.Curves,
	}
	if u.MaxSessionKeys > 0 {
		cfg.ClientSessionCache = sessions
	}
	if u.AllowRenegotiation {
		cfg.Renegotiation = tls.RenegotiateFreelyAsClient
	}
	if len(u.Certificates) > 0 {
		certs, err := certificates(u.Certificates, secrets)
		if err != nil {
			return nil, err
		}
		cert := &certs[0]
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	if v := u.Validation; v != nil {
		roots, err := trustBundle(v, secrets)
		if err != nil {
			return nil, err
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: server sent no certificate")
			}
			return VerifyPeer(cs.PeerCertificates, roots, v.SANs)
		}
	}
	return cfg, nil
}

// certificates resolves a context's certificates, in order.
func certificates(srcs []config.CertSource, secrets Secrets) ([]tls.Certificate, error) {
	out := make([]tls.Certificate, 0, len(srcs))
	for _, cs := range srcs {
		sec := cs.Inline
		if cs.Ref != nil {
			sec = secrets.Get(cs.Ref.Name)
		}
		if sec == nil || sec.Certificate == nil {
			return nil, fmt.Errorf("tls certificate %q: %w", cs.Ref.Name, ErrSecretUnavailable)
		}
		out = append(out, *sec.Certificate)
	}
	return out, nil
}

// trustBundle resolves a validation context's roots.
func trustBundle(v *config.ValidationContext, secrets Secrets) (*x509.CertPool, error) {
	sec := v.Roots
	if v.Ref != nil {
		sec = secrets.Get(v.Ref.Name)
	}
	if sec == nil || sec.Roots == nil {
		name := ""
		if v.Ref != nil {
			name = v.Ref.Name
		}
		return nil, fmt.Errorf("trusted ca %q: %w", name, ErrSecretUnavailable)
	}
	return sec.Roots, nil
}

// VerifyPeer verifies a peer's chain (leaf first) against roots, with any
// extended key usage and no host name, then, when sans is not empty, that
// one of the leaf's subject alternative names matches one matcher.
func VerifyPeer(chain []*x509.Certificate, roots *x509.CertPool, sans []config.SANMatcher) error {
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("certificate verify failed: %w", err)
	}
	if len(sans) > 0 && !MatchSANs(leaf, sans) {
		return fmt.Errorf("certificate verify failed: no subject alternative name of %s matches", describeSANs(leaf))
	}
	return nil
}

// MatchSANs reports whether a subject alternative name of cert matches one
// of sans, as Envoy's default certificate validator: a DNS SAN and an
// exact matcher compare with one-label wildcard matching ("*.example.com"
// in the certificate matches "api.example.com"); the other kinds compare
// the SAN's text (URI, e-mail, IP address) with the matcher.
func MatchSANs(cert *x509.Certificate, sans []config.SANMatcher) bool {
	for i := range sans {
		m := &sans[i]
		t := m.Type
		if t == config.SANAny || t == config.SANDNS {
			for _, d := range cert.DNSNames {
				if exact, ok := m.Matcher.Exact(); ok && dnsNameMatch(exact, d) || !ok && m.Matcher.Match(d) {
					return true
				}
			}
		}
		if t == config.SANAny || t == config.SANURI {
			for _, u := range cert.URIs {
				if m.Matcher.Match(u.String()) {
					return true
				}
			}
		}
		if t == config.SANAny || t == config.SANEmail {
			for _, e := range cert.EmailAddresses {
				if m.Matcher.Match(e) {
					return true
				}
			}
		}
		if t == config.SANAny || t == config.SANIP {
			for _, ip := range cert.IPAddresses {
				if m.Matcher.Match(ip.String()) {
					return true
				}
			}
		}
	}
	return false
}

// dnsNameMatch is Envoy's: name equals pattern (case-insensitively), or
// pattern is "*.suffix" and name is one label followed by ".suffix".
func dnsNameMatch(name, pattern string) bool {
	name, pattern = strings.ToLower(name), strings.ToLower(pattern)
	if name == pattern {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok || !strings.HasPrefix(suffix, ".") || len(name) <= len(suffix) || !strings.HasSuffix(name, suffix) {
		return false
	}
	return !strings.Contains(name[:len(name)-len(suffix)], ".")
}

func describeSANs(c *x509.Certificate) string {
	var parts []string
	parts = append(parts, c.DNSNames...)
	for _, u := range c.URIs {
		parts = append(parts, u.String())
	}
	parts = append(parts, c.EmailAddresses...)
	for _, ip := range c.IPAddresses {
		parts = append(parts, ip.String())
	}
	if len(parts) == 0 {
		return "the certificate (it has none)"
	}
	return "[" + strings.Join(parts, " ") + "]"
}
