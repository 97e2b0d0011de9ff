package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	pb "istio.io/api/security/v1alpha1"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
)

// Defaults of Options.
const (
	// DefaultServerName is the name the CA's certificate must carry,
	// Istio's istiod service: what Istio's agent verifies.
	DefaultServerName  = "istiod.istio-system.svc"
	DefaultTrustDomain = "cluster.local"
	// DefaultGraceRatio and DefaultJitter are Istio's
	// SECRET_GRACE_PERIOD_RATIO and SECRET_GRACE_PERIOD_RATIO_JITTER.
	DefaultGraceRatio = 0.5
	DefaultJitter     = 0.01
	DefaultMinBackoff = 200 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// requestTimeout bounds one CreateCertificate call.
	requestTimeout = 10 * time.Second
	// warnRatio is the last part of a certificate's life in which a failed
	// renewal is logged as a warning that it is about to lapse.
	warnRatio = 0.1
)

// Options configure an Agent.
type Options struct {
	// CAAddr is the CA's TLS address, "127.0.0.1:15012". Required.
	CAAddr string
	// ServerName is the name the CA's certificate is verified for.
	// Default DefaultServerName.
	ServerName string
	// TokenFile holds the workload's bootstrap token; it is read at each
	// request, so a replaced file applies to the next one. Required.
	TokenFile string
	// RootCertFile holds the PEM roots trusted for CAAddr before the first
	// certificate (loomd's DATA_DIR/root-cert.pem). The trust bundle
	// received since (ROOTCA) is trusted too. Required.
	RootCertFile string
	// TrustDomain of the identity requested. Default DefaultTrustDomain.
	TrustDomain string
	// Namespace and ServiceAccount make the identity requested,
	// spiffe://TrustDomain/ns/Namespace/sa/ServiceAccount. Required.
	Namespace, ServiceAccount string
	// Store receives "default" and "ROOTCA". Required.
	Store *secret.Store
	// RequestedTTL is the validity_duration asked for; 0 lets the CA
	// choose (its default TTL).
	RequestedTTL time.Duration
	// GraceRatio is the part of a certificate's life after which it is
	// renewed, 0-1. Default DefaultGraceRatio.
	GraceRatio float64
	// Jitter is the largest random change of GraceRatio, either way.
	// Default DefaultJitter; negative means none.
	Jitter float64
	// MinBackoff and MaxBackoff bound the wait before retrying a failed
	// request; it doubles after each failure, and never exceeds a quarter
	// of what is left of the current certificate's life (MinBackoff at
	// least). Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives the agent's logs. Nil discards them.
	Logger *slog.Logger
}

// Agent obtains and rotates the workload certificate. Create it with New,
// drive it with Run; Status, Ready and the TLS configs are safe for
// concurrent use.
type Agent struct {
	opts      Options
	id        spiffeid.ID
	log       *slog.Logger
	fileRoots []*x509.Certificate
	ready     chan struct{}
	readyOnce sync.Once

	// mu guards status.
	mu     sync.Mutex
	status Status
}

// Status is the agent's state, for the proxy's admin page. It holds no key
// and no token.
type Status struct {
	// SPIFFEID is the identity requested.
	SPIFFEID string `json:"spiffe_id"`
	CAAddr   string `json:"ca_addr"`
	// Serial (hex), NotBefore and NotAfter describe the current
	// certificate; empty before the first.
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	// Roots is the number of roots in the trust bundle (ROOTCA).
	Roots int `json:"roots"`
	// Rotations counts the certificates obtained, the first included;
	// LastRotation is when the last was stored.
	Rotations    uint64    `json:"rotations"`
	LastRotation time.Time `json:"last_rotation,omitzero"`
	// NextAttempt is when the next request is due.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// LastError is the last failure, cleared by the next success.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
}

// New checks opts, reads RootCertFile and returns an Agent. It does not
// connect.
func New(opts Options) (*Agent, error) {
	switch {
	case opts.CAAddr == "":
		return nil, errors.New("agent: CA address is required")
	case opts.TokenFile == "":
		return nil, errors.New("agent: token file is required")
	case opts.RootCertFile == "":
		return nil, errors.New("agent: root certificate file is required")
	case opts.Store == nil:
		return nil, errors.New("agent: Store is required")
	}
	if opts.ServerName == "" {
		opts.ServerName = DefaultServerName
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
	}
	if opts.GraceRatio <= 0 || opts.GraceRatio >= 1 {
		opts.GraceRatio = DefaultGraceRatio
	}
	if opts.Jitter == 0 {
		opts.Jitter = DefaultJitter
	}
	opts.Jitter = min(max(opts.Jitter, 0), opts.GraceRatio/2)
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("agent: trust domain %q: %w", opts.TrustDomain, err)
	}
	if opts.Namespace == "" || opts.ServiceAccount == "" {
		return nil, fmt.Errorf("agent: namespace %q and service account %q are both required", opts.Namespace, opts.ServiceAccount)
	}
	id, err := spiffeid.FromSegments(td, "ns", opts.Namespace, "sa", opts.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("agent: identity of ns %q sa %q: %w", opts.Namespace, opts.ServiceAccount, err)
	}
	b, err := x509bundle.Load(td, opts.RootCertFile)
	if err != nil {
		return nil, fmt.Errorf("agent: root certificate file %s: %w", opts.RootCertFile, err)
	}
	if len(b.X509Authorities()) == 0 {
		return nil, fmt.Errorf("agent: root certificate file %s: no certificate", opts.RootCertFile)
	}
	l := opts.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	a := &Agent{opts: opts, id: id, fileRoots: b.X509Authorities(), ready: make(chan struct{}),
		log: l.With("component", "agent", "identity", id.String())}
	a.status = Status{SPIFFEID: id.String(), CAAddr: opts.CAAddr}
	return a, nil
}

// Ready is closed once the first certificate is stored.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Status returns the agent's current state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// Run requests a certificate at once, then before each rotation time,
// until ctx is done; then it returns nil. Failures are retried with
// backoff and never end Run. It returns an error only when the gRPC client
// cannot be created. Run must be called once.
func (a *Agent) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(a.opts.CAAddr, grpc.WithTransportCredentials(credentials.NewTLS(a.verifyingTLS())))
	if err != nil {
		return fmt.Errorf("agent: CA client %s: %w", a.opts.CAAddr, err)
	}
	defer conn.Close()
	client := pb.NewIstioCertificateServiceClient(conn)
	backoff := a.opts.MinBackoff
	for {
		var wait time.Duration
		next, err := a.renew(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			wait = a.failed(err, backoff)
			backoff = min(backoff*2, a.opts.MaxBackoff)
		} else {
			backoff = a.opts.MinBackoff
			wait = time.Until(next)
		}
		a.mu.Lock()
		a.status.NextAttempt = time.Now().Add(wait)
		a.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// failed records err and returns the wait before the next attempt: backoff
// with ±10 % jitter, at most a quarter of what is left of the current
// certificate (MinBackoff at least). It logs at Warn, saying so when the
// certificate is in its last 10 %, and at Error once it has expired.
func (a *Agent) failed(err error, backoff time.Duration) time.Duration {
	now := time.Now()
	a.mu.Lock()
	a.status.LastError, a.status.LastErrorTime = err.Error(), now
	nb, na := a.status.NotBefore, a.status.NotAfter
	a.mu.Unlock()
	wait := time.Duration(float64(backoff) * (0.9 + 0.2*mrand.Float64()))
	left := na.Sub(now)
	switch {
	case na.IsZero():
		a.log.Warn("certificate request failed; retrying", "err", err, "retry_in", wait)
	case left <= 0:
		a.log.Error("certificate expired and could not be renewed; retrying", "err", err, "expired", na.UTC(), "retry_in", wait)
	case left <= time.Duration(float64(na.Sub(nb))*warnRatio):
		wait = min(wait, max(left/4, a.opts.MinBackoff))
		a.log.Warn("certificate about to expire without a new one; retrying", "err", err, "expires_in", left.Round(time.Millisecond), "retry_in", wait)
	default:
		wait = min(wait, max(left/4, a.opts.MinBackoff))
		a.log.Warn("certificate renewal failed; retrying", "err", err, "expires_in", left.Round(time.Second), "retry_in", wait)
	}
	return wait
}

// renew gets a new certificate, stores it, and returns its rotation time.
func (a *Agent) renew(ctx context.Context, client pb.IstioCertificateServiceClient) (time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return time.Time{}, fmt.Errorf("generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{a.id.URL()}}, key)
	if err != nil {
		return time.Time{}, fmt.Errorf("create CSR: %w", err)
	}
	tok, err := bootstraptoken.ReadFile(a.opts.TokenFile)
	if err != nil {
		return time.Time{}, err
	}
	rctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), requestTimeout)
	defer cancel()
	resp, err := client.CreateCertificate(rctx, &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		ValidityDuration: int64(a.opts.RequestedTTL / time.Second),
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("CreateCertificate at %s: %w", a.opts.CAAddr, err)
	}
	chain, roots, err := splitChain(resp.GetCertChain())
	if err != nil {
		return time.Time{}, fmt.Errorf("CreateCertificate response: %w", err)
	}
	leaf := chain[0]
	got, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(a.id.TrustDomain(), roots))
	if err != nil {
		return time.Time{}, fmt.Errorf("CreateCertificate response: %w", err)
	}
	if got != a.id {
		return time.Time{}, fmt.Errorf("CreateCertificate response: certificate for %s, want %s", got, a.id)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return time.Time{}, errors.New("CreateCertificate response: the certificate is not for the key of the CSR")
	}

	pool := x509.NewCertPool()
	var rootsPEM bytes.Buffer
	for _, r := range roots {
		pool.AddCert(r)
		rootsPEM.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw}))
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	// The new roots first: a peer may already present a certificate from a
	// root that the old bundle lacks.
	a.opts.Store.Set(&secret.Secret{Name: secret.RootCA, Roots: pool, RootsPEM: rootsPEM.Bytes(), Source: secret.SourceAgent})
	a.opts.Store.Set(&secret.Secret{Name: secret.WorkloadCertificate, Certificate: tc, Source: secret.SourceAgent})

	now := time.Now()
	ratio := a.opts.GraceRatio + a.opts.Jitter*(2*mrand.Float64()-1)
	next := leaf.NotBefore.Add(time.Duration(float64(leaf.NotAfter.Sub(leaf.NotBefore)) * ratio))
	a.mu.Lock()
	a.status.Serial = leaf.SerialNumber.Text(16)
	a.status.NotBefore, a.status.NotAfter = leaf.NotBefore, leaf.NotAfter
	a.status.Roots = len(roots)
	a.status.Rotations++
	a.status.LastRotation = now
	a.status.LastError, a.status.LastErrorTime = "", time.Time{}
	// Set here too, before Ready, so a status read after Ready is whole.
	a.status.NextAttempt = next
	first := a.status.Rotations == 1
	a.mu.Unlock()
	a.readyOnce.Do(func() { close(a.ready) })
	msg := "certificate rotated"
	if first {
		msg = "certificate obtained"
	}
	a.log.Info(msg, "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter.UTC(), "roots", len(roots),
		"next_rotation", next.UTC())
	return next, nil
}

// splitChain parses a CreateCertificate response: the leaf first, then
// intermediates and roots. An element may hold one PEM certificate (Istio's
// current CA) or several concatenated (older CAs). The roots are the
// self-signed CA certificates; the others after the leaf are
// intermediates. Duplicates (a root that is also in cert-chain.pem) are
// dropped.
func splitChain(elems []string) (chain, roots []*x509.Certificate, err error) {
	seen := map[string]bool{}
	for i, e := range elems {
		rest := []byte(e)
		n := 0
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			n++
			if block.Type != "CERTIFICATE" {
				return nil, nil, fmt.Errorf("cert_chain[%d]: PEM block %q: want CERTIFICATE", i, block.Type)
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("cert_chain[%d]: %w", i, err)
			}
			if seen[string(c.Raw)] {
				continue
			}
			seen[string(c.Raw)] = true
			switch {
			case len(chain) == 0:
				chain = append(chain, c)
			case isSelfSigned(c):
				roots = append(roots, c)
			default:
				chain = append(chain, c)
			}
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("cert_chain[%d]: no PEM certificate", i)
		}
	}
	if len(chain) == 0 {
		return nil, nil, errors.New("cert_chain is empty")
	}
	if len(roots) == 0 {
		return nil, nil, errors.New("cert_chain has no root (self-signed CA certificate) after the leaf")
	}
	return chain, roots, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.IsCA && bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
