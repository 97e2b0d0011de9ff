package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testToken = "loom-bt-test-token-value-0123456789abcdefghijklmnop"
	testID    = "spiffe://cluster.local/ns/default/sa/reviews"
)

// authority is a root key and certificate.
type authority struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newAuthority(t *testing.T, cn string) authority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return authority{key: key, cert: cert}
}

func (a authority) sign(t *testing.T, tmpl *x509.Certificate, pub any) *x509.Certificate {
	t.Helper()
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = sn
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func pemOf(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// fakeCA is a test IstioCertificateService over TLS: it signs what it is
// asked for the SAN of the CSR, unless answer says otherwise.
type fakeCA struct {
	pb.UnimplementedIstioCertificateServiceServer
	t    *testing.T
	root authority
	addr string

	mu sync.Mutex
	// ttl of the certificates issued; answer, when set, replaces the
	// normal answer; extraRoots are sent after the root.
	ttl        time.Duration
	answer     func(csr *x509.CertificateRequest) (*pb.IstioCertificateResponse, error)
	extraRoots []*x509.Certificate
	calls      int
	tokens     []string
}

func startFakeCA(t *testing.T, root authority, servingRoot authority) *fakeCA {
	t.Helper()
	f := &fakeCA{t: t, root: root, ttl: time.Hour}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := servingRoot.sign(t, &x509.Certificate{DNSNames: []string{DefaultServerName}, NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, key.Public())
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	pb.RegisterIstioCertificateServiceServer(gs, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	f.addr = ln.Addr().String()
	return f
}

func (f *fakeCA) set(fn func(f *fakeCA)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeCA) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.tokens = append(f.tokens, strings.Join(md.Get("authorization"), ","))
	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block == nil {
		return nil, status.Error(codes.InvalidArgument, "no CSR")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if f.answer != nil {
		return f.answer(csr)
	}
	return f.issue(csr, csr.URIs, csr.PublicKey), nil
}

// issue signs a certificate for uris and pub; f.mu must be held.
func (f *fakeCA) issue(_ *x509.CertificateRequest, uris []*url.URL, pub any) *pb.IstioCertificateResponse {
	now := time.Now()
	leaf := f.root.sign(f.t, &x509.Certificate{URIs: uris, NotBefore: now, NotAfter: now.Add(f.ttl),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, pub)
	resp := &pb.IstioCertificateResponse{CertChain: []string{pemOf(leaf), pemOf(f.root.cert)}}
	for _, r := range f.extraRoots {
		resp.CertChain = append(resp.CertChain, pemOf(r))
	}
	return resp
}

// newTestAgent writes the token and root files and returns an agent of
// default/reviews for f, with its log buffer.
func newTestAgent(t *testing.T, f *fakeCA, trusted authority, mod func(*Options)) (*Agent, *secret.Store, *testutil.SyncBuffer) {
	t.Helper()
	dir := t.TempDir()
	tokenFile, rootFile := filepath.Join(dir, "token"), filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rootFile, []byte(pemOf(trusted.cert)), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	store := secret.NewStore()
	opts := Options{CAAddr: f.addr, TokenFile: tokenFile, RootCertFile: rootFile, Namespace: "default", ServiceAccount: "reviews",
		Store: store, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slogTo(logs)}
	if mod != nil {
		mod(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a, store, logs
}

// run runs a until the test ends.
func run(t *testing.T, a *Agent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// poll waits up to d for ok.
func poll(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

func TestObtainsCertificate(t *testing.T) {
	root := newAuthority(t, "root")
	f := startFakeCA(t, root, root)
	a, store, logs := newTestAgent(t, f, root, nil)
	run(t, a)
	select {
	case <-a.Ready():
	case <-time.After(30 * time.Second): // generous: CI machines may be loaded
		t.Fatalf("no certificate\n%s", logs)
	}
	def := store.Get(secret.WorkloadCertificate)
	if def == nil || def.Certificate == nil {
		t.Fatal("no default secret")
	}
	leaf := def.Certificate.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != testID {
		t.Errorf("leaf URIs %v", leaf.URIs)
	}
	if !def.Certificate.PrivateKey.(*ecdsa.PrivateKey).PublicKey.Equal(leaf.PublicKey) {
		t.Error("the stored key is not the leaf's")
	}
	if len(def.Certificate.Certificate) != 1 {
		t.Errorf("stored chain has %d certificates: want the leaf only (no root)", len(def.Certificate.Certificate))
	}
	rootCA := store.Get(secret.RootCA)
	if rootCA == nil || !strings.Contains(string(rootCA.RootsPEM), strings.TrimSpace(pemOf(root.cert))) {
		t.Fatal("ROOTCA is not the CA's root")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootCA.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("leaf does not verify against ROOTCA: %v", err)
	}
	st := a.Status()
	if st.Serial != leaf.SerialNumber.Text(16) || !st.NotAfter.Equal(leaf.NotAfter) || st.Rotations != 1 || st.Roots != 1 ||
		st.LastError != "" || st.SPIFFEID != testID {
		t.Errorf("status %+v", st)
	}
	// Rotation at half of the life, with a jitter of 1 %.
	half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	if d := st.NextAttempt.Sub(half); d < -40*time.Second || d > 40*time.Second {
		t.Errorf("next attempt %v, want about %v", st.NextAttempt, half)
	}
	f.set(func(f *fakeCA) {
		if len(f.tokens) != 1 || f.tokens[0] != "Bearer "+testToken {
			t.Errorf("authorization metadata %q", f.tokens)
		}
	})
	if strings.Contains(logs.String(), testToken) || strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Errorf("secret in the logs:\n%s", logs)
	}
}

// TestRotatesAndUpdatesTrustBundle: with 2 s certificates the agent rotates
// about every second; a root added at the CA arrives in ROOTCA at the next
// rotation, without a restart.
func TestRotatesAndUpdatesTrustBundle(t *testing.T) {
	root := newAuthority(t, "root")
	f := startFakeCA(t, root, root)
	f.set(func(f *fakeCA) { f.ttl = 2 * time.Second })
	a, store, logs := newTestAgent(t, f, root, nil)
	updates := store.Subscribe()
	run(t, a)
	serials := map[string]bool{}
	deadline := time.After(15 * time.Second)
	for len(serials) < 3 {
		select {
		case <-updates:
			if s := store.Get(secret.WorkloadCertificate); s != nil {
				serials[s.Certificate.Leaf.SerialNumber.String()] = true
			}
		case <-deadline:
			t.Fatalf("%d certificates in 15 s, want 3\n%s", len(serials), logs)
		}
	}
	newRoot := newAuthority(t, "new root")
	f.set(func(f *fakeCA) { f.extraRoots = []*x509.Certificate{newRoot.cert} })
	poll(t, 10*time.Second, "ROOTCA with the new root", func() bool {
		s := store.Get(secret.RootCA)
		return s != nil && strings.Count(string(s.RootsPEM), "BEGIN CERTIFICATE") == 2
	})
	if a.Status().Roots != 2 {
		t.Errorf("status roots %d", a.Status().Roots)
	}
}

// TestFailingRenewalWarnsBeforeExpiry: when the CA stops answering, the
// agent keeps its certificate, retries, warns in the last 10 % of its life
// and logs an error once it has expired.
func TestFailingRenewalWarnsBeforeExpiry(t *testing.T) {
	root := newAuthority(t, "root")
	f := startFakeCA(t, root, root)
	f.set(func(f *fakeCA) { f.ttl = 3 * time.Second })
	a, store, logs := newTestAgent(t, f, root, nil)
	run(t, a)
	<-a.Ready()
	first := store.Get(secret.WorkloadCertificate)
	f.set(func(f *fakeCA) {
		f.answer = func(*x509.CertificateRequest) (*pb.IstioCertificateResponse, error) {
			return nil, status.Error(codes.Unavailable, "CA down")
		}
	})
	poll(t, 15*time.Second, "a warning that the certificate is about to expire", func() bool {
		return strings.Contains(logs.String(), "level=WARN msg=\"certificate about to expire without a new one")
	})
	poll(t, 15*time.Second, "an error once it expired", func() bool {
		return strings.Contains(logs.String(), "level=ERROR msg=\"certificate expired and could not be renewed")
	})
	if store.Get(secret.WorkloadCertificate) != first {
		t.Error("a failed renewal replaced the certificate")
	}
	st := a.Status()
	if !strings.Contains(st.LastError, "CA down") || st.Rotations != 1 {
		t.Errorf("status %+v", st)
	}
	// It recovers when the CA does.
	f.set(func(f *fakeCA) { f.answer = nil })
	poll(t, 10*time.Second, "a new certificate", func() bool { return a.Status().Rotations >= 2 && a.Status().LastError == "" })
}

// TestRefusesBadAnswers: an answer the agent cannot trust is never stored.
func TestRefusesBadAnswers(t *testing.T) {
	root := newAuthority(t, "root")
	other := newAuthority(t, "other")
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name    string
		answer  func(f *fakeCA, csr *x509.CertificateRequest) *pb.IstioCertificateResponse
		wantErr string
	}{
		{"another identity", func(f *fakeCA, csr *x509.CertificateRequest) *pb.IstioCertificateResponse {
			u, _ := url.Parse("spiffe://cluster.local/ns/default/sa/ratings")
			return f.issue(csr, []*url.URL{u}, csr.PublicKey)
		}, "certificate for spiffe://cluster.local/ns/default/sa/ratings"},
		{"another key", func(f *fakeCA, csr *x509.CertificateRequest) *pb.IstioCertificateResponse {
			return f.issue(csr, csr.URIs, otherKey.Public())
		}, "not for the key of the CSR"},
		{"no root", func(f *fakeCA, csr *x509.CertificateRequest) *pb.IstioCertificateResponse {
			r := f.issue(csr, csr.URIs, csr.PublicKey)
			r.CertChain = r.CertChain[:1]
			return r
		}, "no root"},
		{"signed by another CA than the root sent", func(f *fakeCA, csr *x509.CertificateRequest) *pb.IstioCertificateResponse {
			r := f.issue(csr, csr.URIs, csr.PublicKey)
			r.CertChain[1] = pemOf(other.cert)
			return r
		}, "could not verify leaf certificate"},
		{"not PEM", func(*fakeCA, *x509.CertificateRequest) *pb.IstioCertificateResponse {
			return &pb.IstioCertificateResponse{CertChain: []string{"hello"}}
		}, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFakeCA(t, root, root)
			f.set(func(f *fakeCA) {
				f.answer = func(csr *x509.CertificateRequest) (*pb.IstioCertificateResponse, error) {
					return tt.answer(f, csr), nil
				}
			})
			a, store, logs := newTestAgent(t, f, root, nil)
			run(t, a)
			// Wait for this answer's error: under load an earlier attempt
			// may fail otherwise (a timeout) first.
			poll(t, 30*time.Second, "the error "+tt.wantErr, func() bool { return strings.Contains(a.Status().LastError, tt.wantErr) })
			if err := a.Status().LastError; !strings.Contains(err, tt.wantErr) {
				t.Errorf("error %q, want %q", err, tt.wantErr)
			}
			if store.Get(secret.WorkloadCertificate) != nil || store.Get(secret.RootCA) != nil {
				t.Error("a refused answer was stored")
			}
			if !strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("failure not logged at warn:\n%s", logs)
			}
		})
	}
}

// TestVerifiesTheCA: a CA whose certificate does not chain to the root
// file is not sent the token.
func TestVerifiesTheCA(t *testing.T) {
	root := newAuthority(t, "root")
	impostor := newAuthority(t, "impostor")
	f := startFakeCA(t, root, impostor)
	a, store, _ := newTestAgent(t, f, root, nil)
	run(t, a)
	poll(t, 10*time.Second, "an error", func() bool { return a.Status().LastError != "" })
	if !strings.Contains(a.Status().LastError, "server certificate") {
		t.Errorf("error %q", a.Status().LastError)
	}
	f.set(func(f *fakeCA) {
		if f.calls != 0 {
			t.Errorf("the impostor got %d requests", f.calls)
		}
	})
	if store.Get(secret.WorkloadCertificate) != nil {
		t.Error("stored a certificate")
	}
}

func TestTokenFileErrors(t *testing.T) {
	root := newAuthority(t, "root")
	f := startFakeCA(t, root, root)
	a, _, _ := newTestAgent(t, f, root, func(o *Options) { o.TokenFile = filepath.Join(t.TempDir(), "missing") })
	run(t, a)
	poll(t, 10*time.Second, "an error", func() bool { return a.Status().LastError != "" })
	if err := a.Status().LastError; !strings.Contains(err, "missing") {
		t.Errorf("error %q does not name the token file", err)
	}
}

func TestNewChecksOptions(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	os.WriteFile(root, []byte("not a certificate"), 0o644)
	base := Options{CAAddr: "127.0.0.1:1", TokenFile: "t", RootCertFile: root, Namespace: "ns", ServiceAccount: "sa", Store: secret.NewStore()}
	for name, mod := range map[string]func(*Options){
		"no CA":              func(o *Options) { o.CAAddr = "" },
		"no token file":      func(o *Options) { o.TokenFile = "" },
		"no store":           func(o *Options) { o.Store = nil },
		"bad root file":      func(*Options) {},
		"missing root file":  func(o *Options) { o.RootCertFile = filepath.Join(dir, "none") },
		"no service account": func(o *Options) { o.ServiceAccount = "" },
		"bad trust domain":   func(o *Options) { o.TrustDomain = "Not A Domain" },
	} {
		o := base
		mod(&o)
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted", name)
		}
	}
}

func TestSplitChain(t *testing.T) {
	root := newAuthority(t, "root")
	root2 := newAuthority(t, "root 2")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	inter := root.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "intermediate"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, interKey.Public())
	interCA := authority{key: interKey, cert: inter}
	leaf := interCA.sign(t, &x509.Certificate{NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, key.Public())
	l, i, r, r2 := pemOf(leaf), pemOf(inter), pemOf(root.cert), pemOf(root2.cert)
	tests := []struct {
		name              string
		in                []string
		wantChain, wantRs int
		wantErr           bool
	}{
		{"one per element", []string{l, i, r}, 2, 1, false},
		{"concatenated", []string{l, i + r}, 2, 1, false},
		{"root also in the chain", []string{l, i, r, r}, 2, 1, false},
		{"two roots", []string{l, i, r, r2}, 2, 2, false},
		{"empty", nil, 0, 0, true},
		{"leaf only", []string{l}, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, roots, err := splitChain(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if len(chain) != tt.wantChain || len(roots) != tt.wantRs {
				t.Errorf("chain %d roots %d, want %d and %d", len(chain), len(roots), tt.wantChain, tt.wantRs)
			}
			if len(chain) > 0 && !chain[0].Equal(leaf) {
				t.Error("chain does not start with the leaf")
			}
		})
	}
}
