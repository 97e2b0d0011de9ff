package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ServingDNSName is the name loomd's TLS port answers to, Istio's
// istiod service name: agents verify it whatever address they dial.
const ServingDNSName = "istiod.istio-system.svc"

// ServerTLS returns the TLS config of loomd's 15012 port: a serving
// certificate issued by this CA for dnsNames and ips (a new ECDSA P-256 key
// each time, kept in memory only), and client certificates verified against
// the CA's roots when a client presents one (tls.VerifyClientCertIfGiven:
// a client without one is served, as on the plaintext port). ALPN is h2, as
// gRPC requires.
//
// The serving certificate lives Options.WorkloadCertTTL and is replaced at
// the first handshake past half its life, or after Reload changed the
// signing material; handshakes never wait for signing except that one.
// The returned config is safe for concurrent use.
func (c *CA) ServerTLS(dnsNames []string, ips []net.IP) *tls.Config {
	s := &servingCerts{ca: c, dnsNames: dnsNames, ips: ips}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cur, err := s.get()
			if err != nil {
				return nil, err
			}
			return cur.cfg, nil
		},
	}
}

// servingCerts issues and caches loomd's serving certificate.
type servingCerts struct {
	ca       *CA
	dnsNames []string
	ips      []net.IP

	cur atomic.Pointer[servingCert]
	// mu serialises renewals.
	mu sync.Mutex
}

// servingCert is one serving certificate and the handshake config built
// on it. Immutable.
type servingCert struct {
	bundle  *signingBundle
	renewAt time.Time
	cfg     *tls.Config
}

// get returns a serving certificate issued by the current bundle and not
// past half its life, issuing one when needed.
func (s *servingCerts) get() (*servingCert, error) {
	if cur := s.cur.Load(); cur != nil && cur.bundle == s.ca.bundle.Load() && time.Now().Before(cur.renewAt) {
		return cur, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.ca.bundle.Load()
	if cur := s.cur.Load(); cur != nil && cur.bundle == b && time.Now().Before(cur.renewAt) {
		return cur, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		DNSNames:              s.dnsNames,
		IPAddresses:           s.ips,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	leaf, chain, err := s.ca.issue(b, tmpl, key.Public(), s.ca.opts.WorkloadCertTTL)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: leaf}
	// The leaf and what follows it, without the roots: a client has them.
	for _, p := range chain[:len(chain)-len(b.roots)] {
		block, _ := pem.Decode([]byte(p))
		tc.Certificate = append(tc.Certificate, block.Bytes)
	}
	next := &servingCert{
		bundle:  b,
		renewAt: leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2),
		cfg: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2"},
			Certificates: []tls.Certificate{tc},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    b.rootPool,
		},
	}
	s.cur.Store(next)
	s.ca.log.Debug("serving certificate issued", "dns", s.dnsNames, "ips", s.ips,
		"serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter.UTC())
	return next, nil
}
