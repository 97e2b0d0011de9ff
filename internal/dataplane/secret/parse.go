package secret

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseCertificate makes the Secret name from a PEM certificate chain
// (leaf first) and its PEM private key, as Envoy's TlsCertificate
// certificate_chain and private_key. It fails when either does not parse,
// or the key does not match the leaf.
func ParseCertificate(name string, chainPEM, keyPEM []byte) (*Secret, error) {
	cert, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate chain and private key: %w", err)
	}
	// X509KeyPair fills Leaf since Go 1.23; parse it if not.
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate chain: %w", err)
		}
	}
	return &Secret{Name: name, Certificate: &cert, CertificatePEM: certsOnly(chainPEM)}, nil
}

// ParseRoots makes the Secret name from a PEM trust bundle, as Envoy's
// CertificateValidationContext trusted_ca. It fails when the bundle holds
// no certificate or a block that does not parse.
func ParseRoots(name string, bundlePEM []byte) (*Secret, error) {
	pool := x509.NewCertPool()
	n := 0
	rest := bundlePEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trusted_ca: certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("trusted_ca: no PEM certificate")
	}
	return &Secret{Name: name, Roots: pool, RootsPEM: certsOnly(bundlePEM)}, nil
}

// certsOnly returns the CERTIFICATE blocks of b, re-encoded: whatever
// else the input held (a key in a combined file) is never kept.
func certsOnly(b []byte) []byte {
	var out []byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: blk.Bytes})...)
		}
	}
}
