package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// SecretTypeTLS is Kubernetes' TLS Secret type.
const SecretTypeTLS = "kubernetes.io/tls"

// The keys of a credential Secret, as Istio reads them
// (pilot/pkg/credentials/kube): the TLS form and Istio's generic form.
const (
	TLSCertKey     = "tls.crt"
	TLSKeyKey      = "tls.key"
	TLSCACertKey   = "ca.crt"
	GenericCertKey = "cert"
	GenericKeyKey  = "key"
	GenericCAKey   = "cacert"
)

// Credential is the TLS material of a Secret: a certificate chain and its
// private key (both PEM, or both nil) and a trust bundle (PEM, or nil).
// Its bytes are secret: never log or print them.
type Credential struct {
	CertChain []byte
	Key       []byte
	CACert    []byte
}

// IsCredential reports whether a Secret is meant as a TLS credential: of
// type kubernetes.io/tls, or holding one of the keys Istio reads.
func IsCredential(s *loomv1alpha1.KubernetesSecret) bool {
	if s.GetType() == SecretTypeTLS {
		return true
	}
	for _, k := range []string{TLSCertKey, TLSKeyKey, TLSCACertKey, GenericCertKey, GenericKeyKey, GenericCAKey} {
		if _, ok := s.GetData()[k]; ok {
			return true
		}
	}
	return false
}

// CredentialError is a problem with one key of a credential Secret; its
// text names the key and never the value.
type CredentialError struct {
	Field string // "data[tls.key]"
	Msg   string
}

func (e *CredentialError) Error() string { return e.Field + ": " + e.Msg }

// ParseCredential reads a credential Secret as Istio does: tls.crt and
// tls.key (with ca.crt) when tls.crt or tls.key is present or the type is
// kubernetes.io/tls, else cert and key (with cacert). A certificate
// without its key (or the reverse) is an error; a Secret with only a
// trust bundle (Istio's NAME-cacert Secret) is valid. The chain must parse
// and match the key; the bundle must hold at least one certificate.
// Errors are *CredentialError.
func ParseCredential(s *loomv1alpha1.KubernetesSecret) (*Credential, error) {
	d := s.GetData()
	certK, keyK, caK := GenericCertKey, GenericKeyKey, GenericCAKey
	_, hasTLSCert := d[TLSCertKey]
	_, hasTLSKey := d[TLSKeyKey]
	_, hasTLSCA := d[TLSCACertKey]
	if s.GetType() == SecretTypeTLS || hasTLSCert || hasTLSKey || hasTLSCA && d[GenericCAKey] == nil {
		certK, keyK, caK = TLSCertKey, TLSKeyKey, TLSCACertKey
	}
	c := &Credential{CertChain: d[certK], Key: d[keyK], CACert: d[caK]}
	switch {
	case s.GetType() == SecretTypeTLS && (len(c.CertChain) == 0 || len(c.Key) == 0):
		missing := certK
		if len(c.CertChain) > 0 {
			missing = keyK
		}
		return nil, &CredentialError{"data[" + missing + "]", "Required value: a kubernetes.io/tls Secret needs tls.crt and tls.key"}
	case len(c.CertChain) > 0 && len(c.Key) == 0:
		return nil, &CredentialError{"data[" + keyK + "]", "Required value: the private key of data[" + certK + "]"}
	case len(c.Key) > 0 && len(c.CertChain) == 0:
		return nil, &CredentialError{"data[" + certK + "]", "Required value: the certificate of data[" + keyK + "]"}
	case len(c.CertChain) == 0 && len(c.CACert) == 0:
		return nil, &CredentialError{"data", fmt.Sprintf("Required value: a credential needs %s and %s, or %s", certK, keyK, caK)}
	}
	if len(c.CertChain) > 0 {
		if err := checkChain(c.CertChain); err != nil {
			return nil, &CredentialError{"data[" + certK + "]", err.Error()}
		}
		if _, err := tls.X509KeyPair(c.CertChain, c.Key); err != nil {
			// X509KeyPair's errors are fixed texts, never the material.
			return nil, &CredentialError{"data[" + keyK + "]", "Invalid value (not shown): " + err.Error()}
		}
	}
	if len(c.CACert) > 0 {
		if err := checkChain(c.CACert); err != nil {
			return nil, &CredentialError{"data[" + caK + "]", err.Error()}
		}
	}
	return c, nil
}

// checkChain checks that b is one or more PEM certificates that parse.
func checkChain(b []byte) error {
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("Invalid value (not shown): a PEM block of type %q where certificates were expected", blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("Invalid value (not shown): certificate %d: %v", n, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("Invalid value (not shown): no PEM certificate")
	}
	return nil
}
