package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/loom-mesh/loom/internal/dataplane/secret"
)

// verifyingTLS is the client config of connections to loomd: the server's
// certificate must be for ServerName and chain to a root of RootCertFile or
// of the current trust bundle (ROOTCA), checked at each handshake so that
// a new bundle applies without a restart. It presents no certificate.
func (a *Agent) verifyingTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: a.opts.ServerName,
		// Verification is VerifyConnection's, against roots that change.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection:   a.verifyServer,
	}
}

// XDSTLS is the xDS client's mTLS config for loomd's 15012: verifyingTLS,
// presenting the workload certificate ("default") read from the Store at
// each handshake. A handshake before the first certificate fails (see
// Ready).
func (a *Agent) XDSTLS() *tls.Config {
	cfg := a.verifyingTLS()
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		s := a.opts.Store.Get(secret.WorkloadCertificate)
		if s == nil || s.Certificate == nil {
			return nil, errors.New("no workload certificate yet")
		}
		return s.Certificate, nil
	}
	return cfg
}

// verifyServer checks loomd's certificate chain.
func (a *Agent) verifyServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server presented no certificate")
	}
	var roots *x509.CertPool
	if s := a.opts.Store.Get(secret.RootCA); s != nil && s.Roots != nil {
		roots = s.Roots.Clone()
	} else {
		roots = x509.NewCertPool()
	}
	for _, r := range a.fileRoots {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: a.opts.ServerName, Roots: roots,
		Intermediates: inter}); err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	return nil
}
