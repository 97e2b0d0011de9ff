package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults of Options, as Istio's (DEFAULT_WORKLOAD_CERT_TTL,
// MAX_WORKLOAD_CERT_TTL, CITADEL_SELF_SIGNED_CA_CERT_TTL).
const (
	DefaultTrustDomain        = "cluster.local"
	DefaultWorkloadCertTTL    = 24 * time.Hour
	DefaultMaxWorkloadCertTTL = 90 * 24 * time.Hour
	// SelfSignedRootTTL is the validity of the root the CA creates.
	SelfSignedRootTTL = 10 * 365 * 24 * time.Hour
)

// Errors of Sign and ParseCSR, mapped to gRPC codes by Server.
var (
	// ErrInvalidCSR: the CSR does not parse, its signature is wrong, or its
	// key is of a kind or size the CA refuses (codes.InvalidArgument).
	ErrInvalidCSR = errors.New("invalid CSR")
	// ErrInvalidTTL: a requested lifetime above the maximum
	// (codes.InvalidArgument).
	ErrInvalidTTL = errors.New("invalid TTL")
)

// Options configure a CA.
type Options struct {
	// DataDir holds the CA's state (mode 0700): the self-signed root
	// (ca-key.pem 0600, ca-cert.pem), the trust bundle published for proxies
	// (root-cert.pem, 0644) and the bootstrap-token registry (tokens/).
	// Created when missing; a directory that group or others may access is
	// refused. Required.
	DataDir string
	// PluginDir, when set, is a plug-in CA laid out as Istio's cacerts
	// secret: ca-cert.pem and ca-key.pem (the signing certificate and its
	// key), cert-chain.pem (the chain from ca-cert.pem up, served after the
	// leaf) and root-cert.pem (the trust bundle, one root or more). Empty
	// means the self-signed root in DataDir.
	PluginDir string
	// TrustDomain is the SPIFFE trust domain of the identities issued.
	// Default DefaultTrustDomain.
	TrustDomain string
	// WorkloadCertTTL is the lifetime of a certificate whose request names
	// none (validity_duration 0). Default DefaultWorkloadCertTTL.
	WorkloadCertTTL time.Duration
	// MaxWorkloadCertTTL is the longest lifetime a request may ask for; a
	// longer one is refused with ErrInvalidTTL. Default
	// DefaultMaxWorkloadCertTTL, raised to WorkloadCertTTL if below it.
	MaxWorkloadCertTTL time.Duration
	// Logger receives the CA's logs. Nil discards them.
	Logger *slog.Logger
}

// CA signs workload certificates. Create it with New. Its methods are safe
// for concurrent use; Sign takes no lock.
type CA struct {
	opts Options
	td   spiffeid.TrustDomain
	log  *slog.Logger

	// bundle is the signing material in use; Reload replaces it.
	bundle atomic.Pointer[signingBundle]

	// Counters and expiries behind Stats.
	csrs          atomic.Uint64
	issued        atomic.Uint64
	authnFailures atomic.Uint64
	csrErrors     atomic.Uint64
	signErrors    atomic.Uint64
	lastIssuedExp atomic.Int64 // Unix seconds; 0 before the first
}

// signingBundle is one version of the signing material. Immutable.
type signingBundle struct {
	cert *x509.Certificate
	key  crypto.Signer
	// chain is what follows the leaf before the roots: cert-chain.pem of a
	// plug-in CA (ca-cert.pem first), empty for the self-signed root.
	chain []*x509.Certificate
	roots []*x509.Certificate
	// rootPool holds roots, for verifying client certificates.
	rootPool *x509.CertPool
	// tail is chain then roots, PEM, one certificate per element: the end
	// of every CreateCertificate response.
	tail []string
	// rootsPEM is roots, concatenated PEM.
	rootsPEM []byte
	// notAfter is the earliest expiry of cert and chain: no leaf outlives
	// it.
	notAfter time.Time
	// source names the files the bundle came from, for messages.
	source string
}

// New loads or creates the CA's signing material and publishes the trust
// bundle as DataDir/root-cert.pem.
//
// With PluginDir it reads the four cacerts files and checks that the key
// matches ca-cert.pem, that ca-cert.pem is a CA certificate valid now, and
// that it chains to root-cert.pem through cert-chain.pem; each error names
// the file. Without it, it reads DataDir's ca-key.pem and ca-cert.pem, or,
// when neither exists, creates a self-signed ECDSA P-256 root valid for
// SelfSignedRootTTL. It never replaces an existing root: a key file that is
// present but unreadable, corrupt, not 0600, or without its certificate
// (and the converse) is an error naming the file, because a new root would
// break the trust of every workload that holds the old one.
func New(opts Options) (*CA, error) {
	if opts.DataDir == "" {
		return nil, errors.New("ca: a data directory is required")
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", opts.TrustDomain, err)
	}
	if opts.WorkloadCertTTL == 0 {
		opts.WorkloadCertTTL = DefaultWorkloadCertTTL
	}
	if opts.WorkloadCertTTL < time.Second {
		return nil, fmt.Errorf("ca: workload certificate TTL %v: must be at least 1s", opts.WorkloadCertTTL)
	}
	if opts.MaxWorkloadCertTTL == 0 {
		opts.MaxWorkloadCertTTL = DefaultMaxWorkloadCertTTL
	}
	opts.MaxWorkloadCertTTL = max(opts.MaxWorkloadCertTTL, opts.WorkloadCertTTL)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CA{opts: opts, td: td, log: log.With("component", "ca")}
	if err := ensurePrivateDir(opts.DataDir, "data directory"); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	b, err := c.load()
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if err := c.publish(b); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	c.bundle.Store(b)
	c.log.Info("CA ready", "source", b.source, "trust_domain", td.Name(), "signer", b.cert.Subject.String(),
		"signer_expires", b.cert.NotAfter.UTC(), "roots", len(b.roots))
	return c, nil
}

// load reads the signing material: the plug-in directory, or the data
// directory's self-signed root (created when absent).
func (c *CA) load() (*signingBundle, error) {
	if c.opts.PluginDir != "" {
		return loadPlugin(c.opts.PluginDir, time.Now())
	}
	return loadOrCreateSelfSigned(c.opts.DataDir, c.td, time.Now(), c.log)
}

// Reload re-reads a plug-in CA's files and, when they pass New's checks,
// signs with them from the next request on and republishes root-cert.pem;
// otherwise it returns the error and the CA keeps its current material.
// This is how a new root is added to (or an old one removed from) the trust
// bundle without a restart (loomd calls it on SIGHUP). With a self-signed
// root it does nothing.
func (c *CA) Reload() error {
	if c.opts.PluginDir == "" {
		return nil
	}
	b, err := c.load()
	if err != nil {
		return fmt.Errorf("ca reload: %w", err)
	}
	if err := c.publish(b); err != nil {
		return fmt.Errorf("ca reload: %w", err)
	}
	c.bundle.Store(b)
	c.log.Info("CA reloaded", "source", b.source, "signer", b.cert.Subject.String(),
		"signer_expires", b.cert.NotAfter.UTC(), "roots", len(b.roots))
	return nil
}

// TrustDomain is the CA's SPIFFE trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// RootsPEM is the current trust bundle, concatenated PEM. Callers must not
// modify it.
func (c *CA) RootsPEM() []byte { return c.bundle.Load().rootsPEM }

// RootCertFile is the path of the published trust bundle,
// DataDir/root-cert.pem: what proxies pass as --root-cert.
func (c *CA) RootCertFile() string { return rootCertPath(c.opts.DataDir) }

// TokenDir is the bootstrap-token registry, DataDir/tokens.
func (c *CA) TokenDir() string { return tokenDirPath(c.opts.DataDir) }

// Certificate is an issued certificate.
type Certificate struct {
	Leaf *x509.Certificate
	// Chain is the leaf, the intermediates and the roots, PEM, one
	// certificate per element, each ending in a newline (Istio's
	// IstioCertificateResponse.cert_chain).
	Chain []string
}

// ParseCSR decodes a PEM "CERTIFICATE REQUEST", checks its signature, and
// accepts only ECDSA P-256/P-384 keys, RSA keys of 2048 bits or more, and
// Ed25519 keys. Errors wrap ErrInvalidCSR.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrInvalidCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	return csr, nil
}

// Sign issues a workload certificate for id with csr's public key. Only
// the key is taken from csr: the certificate's one name is id, as a URI
// SAN (the subject is empty, so the SAN extension is critical, RFC 5280
// 4.2.1.6); key usage digitalSignature and keyEncipherment, extended key
// usage serverAuth and clientAuth, as Istio's workload certificates.
//
// ttl 0 (or less) means Options.WorkloadCertTTL; above
// MaxWorkloadCertTTL it is refused with ErrInvalidTTL. The certificate is
// valid from now to now+ttl, cut to the signing certificate's (and its
// chain's) expiry. id must be in the CA's trust domain. Sign counts
// issuances for Stats.
func (c *CA) Sign(csr *x509.CertificateRequest, id spiffeid.ID, ttl time.Duration) (*Certificate, error) {
	if ttl > c.opts.MaxWorkloadCertTTL {
		c.signErrors.Add(1)
		return nil, fmt.Errorf("%w: requested TTL %s is greater than the max allowed TTL %s", ErrInvalidTTL, ttl, c.opts.MaxWorkloadCertTTL)
	}
	if ttl <= 0 {
		ttl = c.opts.WorkloadCertTTL
	}
	if !id.MemberOf(c.td) {
		c.signErrors.Add(1)
		return nil, fmt.Errorf("identity %s: not in trust domain %s", id, c.td)
	}
	b := c.bundle.Load()
	tmpl := &x509.Certificate{
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	leaf, chain, err := c.issue(b, tmpl, csr.PublicKey, ttl)
	if err != nil {
		c.signErrors.Add(1)
		return nil, err
	}
	c.issued.Add(1)
	c.lastIssuedExp.Store(leaf.NotAfter.Unix())
	return &Certificate{Leaf: leaf, Chain: chain}, nil
}

// issue fills tmpl's serial and validity (now to now+ttl, cut to b's
// expiry), signs it with b for pub, and returns it with the response chain.
func (c *CA) issue(b *signingBundle, tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, []string, error) {
	now := time.Now()
	tmpl.NotBefore = now
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(b.notAfter) {
		tmpl.NotAfter = b.notAfter
	}
	if !tmpl.NotAfter.After(now) {
		return nil, nil, fmt.Errorf("signing certificate from %s expired at %s", b.source, b.notAfter.UTC())
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.cert, pub, b.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	chain := make([]string, 0, 1+len(b.tail))
	chain = append(chain, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	chain = append(chain, b.tail...)
	return leaf, chain, nil
}

// newSerial returns a random positive 128-bit serial number (RFC 5280
// allows up to 20 octets; CA/B forum asks for 64 random bits at least).
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// Stats are the CA's counters and expiries, named after the Istio metrics
// they stand for, so that a Prometheus collector can export them as Istio
// does. Counters only grow.
type Stats struct {
	// CSRs counts CreateCertificate requests (citadel_server_csr_count).
	CSRs uint64
	// Issued counts workload certificates signed
	// (citadel_server_success_cert_issuance_count).
	Issued uint64
	// AuthnFailures counts requests refused as unauthenticated
	// (citadel_server_authentication_failure_count).
	AuthnFailures uint64
	// CSRErrors counts CSRs that did not parse or were refused for their
	// content (citadel_server_csr_parsing_err_count).
	CSRErrors uint64
	// SignErrors counts signing failures, TTL refusals included
	// (citadel_server_csr_sign_err_count).
	SignErrors uint64
	// RootNotAfter is the earliest expiry of the trust bundle's roots
	// (citadel_server_root_cert_expiry_timestamp).
	RootNotAfter time.Time
	// SignerNotAfter is the expiry of the signing certificate and its
	// chain (citadel_server_cert_chain_expiry_timestamp).
	SignerNotAfter time.Time
	// LastIssuedNotAfter is the expiry of the last workload certificate
	// issued; zero before the first.
	LastIssuedNotAfter time.Time
}

// Stats returns the current counters and expiries. It takes no lock.
func (c *CA) Stats() Stats {
	b := c.bundle.Load()
	s := Stats{
		CSRs: c.csrs.Load(), Issued: c.issued.Load(), AuthnFailures: c.authnFailures.Load(),
		CSRErrors: c.csrErrors.Load(), SignErrors: c.signErrors.Load(),
		SignerNotAfter: b.notAfter,
	}
	for _, r := range b.roots {
		if s.RootNotAfter.IsZero() || r.NotAfter.Before(s.RootNotAfter) {
			s.RootNotAfter = r.NotAfter
		}
	}
	if u := c.lastIssuedExp.Load(); u != 0 {
		s.LastIssuedNotAfter = time.Unix(u, 0)
	}
	return s
}
