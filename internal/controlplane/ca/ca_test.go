package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// samples is Istio's plug-in CA sample directory (unchanged): ca-cert.pem,
// ca-key.pem, root-cert.pem and cert-chain.pem, plus alternates.
const samples = "../../../../shared/istio-samples/certs"

func newTestCA(t testing.TB, opts Options) *CA {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(t.TempDir(), "data")
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// csrPEM makes a CSR for key with the given URI SANs.
func csrPEM(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func parseChain(t *testing.T, chain []string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for i, p := range chain {
		block, rest := pem.Decode([]byte(p))
		if block == nil || strings.TrimSpace(string(rest)) != "" {
			t.Fatalf("chain[%d]: want exactly one PEM certificate, got %q", i, p)
		}
		if !strings.HasSuffix(p, "\n") {
			t.Errorf("chain[%d] does not end in a newline", i)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// verifySVID checks leaf against roots through intermediates and returns
// its one URI SAN.
func verifySVID(t *testing.T, certs []*x509.Certificate, roots []*x509.Certificate) string {
	t.Helper()
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rp.AddCert(r)
	}
	for _, c := range certs[1:] {
		ip.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	if len(certs[0].URIs) != 1 {
		t.Fatalf("leaf URIs = %v, want one", certs[0].URIs)
	}
	return certs[0].URIs[0].String()
}

// writeCA writes a root and an intermediate (valid until notAfter) as a
// plug-in directory, and returns it.
func writeCA(t *testing.T, notAfter time.Time) string {
	t.Helper()
	now := time.Now()
	rootKey, interKey := ecKey(t), ecKey(t)
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootT, rootT, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "test intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	interDER, err := x509.CreateCertificate(rand.Reader, interT, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(interKey)
	dir := t.TempDir()
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})
	files := map[string][]byte{
		caCertFile:    certPEM,
		certChainFile: certPEM,
		caKeyFile:     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		rootCertFile:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSign(t *testing.T) {
	soon := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	reviews := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/bookinfo-reviews")
	tests := []struct {
		name      string
		opts      Options
		ttl       time.Duration
		id        spiffeid.ID
		wantTTL   time.Duration // 0: check wantUntil
		wantUntil time.Time
		wantChain int // certificates in the response
		wantErr   error
	}{
		{name: "self-signed, default TTL", id: reviews, wantTTL: DefaultWorkloadCertTTL, wantChain: 2},
		{name: "self-signed, requested TTL", ttl: time.Hour, id: reviews, wantTTL: time.Hour, wantChain: 2},
		{name: "configured default TTL", opts: Options{WorkloadCertTTL: 3 * time.Second}, id: reviews, wantTTL: 3 * time.Second, wantChain: 2},
		{name: "TTL above the max is refused", opts: Options{MaxWorkloadCertTTL: 48 * time.Hour}, ttl: 49 * time.Hour, id: reviews, wantErr: ErrInvalidTTL},
		{name: "plug-in Istio sample: leaf, ca-cert, root", opts: Options{PluginDir: samples}, id: reviews, wantTTL: DefaultWorkloadCertTTL, wantChain: 3},
		{name: "capped by the signing certificate's expiry", opts: Options{PluginDir: "SOON"}, ttl: 24 * time.Hour, id: reviews, wantUntil: soon, wantChain: 3},
		{name: "other trust domain", id: spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/x"), wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.PluginDir == "SOON" {
				tt.opts.PluginDir = writeCA(t, soon)
			}
			c := newTestCA(t, tt.opts)
			if c.TrustDomain() != td {
				t.Fatalf("trust domain %v", c.TrustDomain())
			}
			key := ecKey(t)
			csr, err := ParseCSR(csrPEM(t, key, tt.id.String()))
			if err != nil {
				t.Fatal(err)
			}
			before := time.Now().Truncate(time.Second)
			got, err := c.Sign(csr, tt.id, tt.ttl)
			if tt.wantErr != nil {
				if err == nil || tt.wantErr != errAny && !errors.Is(err, tt.wantErr) {
					t.Fatalf("Sign err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			certs := parseChain(t, got.Chain)
			if len(certs) != tt.wantChain {
				t.Fatalf("chain has %d certificates, want %d", len(certs), tt.wantChain)
			}
			leaf := certs[0]
			if !leaf.Equal(got.Leaf) {
				t.Fatal("Leaf is not the chain's first certificate")
			}
			// Roots last: the CA's trust bundle.
			roots := parseChain(t, splitPEM(c.RootsPEM()))
			if !certs[len(certs)-1].Equal(roots[len(roots)-1]) {
				t.Error("the chain does not end with the root")
			}
			if san := verifySVID(t, certs, roots); san != tt.id.String() {
				t.Errorf("URI SAN %q, want %q", san, tt.id)
			}
			if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
				t.Error("leaf key is not the CSR's")
			}
			if leaf.IsCA || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || len(leaf.Subject.Names) != 0 {
				t.Errorf("leaf has more than its SPIFFE ID: CA=%v dns=%v ip=%v subject=%q", leaf.IsCA, leaf.DNSNames, leaf.IPAddresses, leaf.Subject)
			}
			if !sanCritical(leaf) {
				t.Error("the SAN extension of a leaf with an empty subject must be critical")
			}
			if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, leaf.ExtKeyUsage); diff != "" {
				t.Errorf("ext key usage (-want +got):\n%s", diff)
			}
			if leaf.NotBefore.Before(before) || leaf.NotBefore.After(time.Now()) {
				t.Errorf("NotBefore %v not the time of signing", leaf.NotBefore)
			}
			if tt.wantTTL != 0 {
				if d := leaf.NotAfter.Sub(leaf.NotBefore); d < tt.wantTTL-time.Second || d > tt.wantTTL+time.Second {
					t.Errorf("lifetime %v, want %v", d, tt.wantTTL)
				}
			} else if !leaf.NotAfter.Equal(tt.wantUntil) {
				t.Errorf("NotAfter %v, want the signer's %v", leaf.NotAfter, tt.wantUntil)
			}
		})
	}
}

var errAny = errors.New("any error")

func sanCritical(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			return e.Critical
		}
	}
	return false
}

func splitPEM(b []byte) []string {
	var out []string
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out
		}
		out = append(out, string(pem.EncodeToMemory(block)))
	}
}

func TestParseCSRRefuses(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := csrPEM(t, ecKey(t))
	// The last byte is the signature's: flipping it breaks the signature only.
	block, _ := pem.Decode(good)
	block.Bytes[len(block.Bytes)-1] ^= 0xff
	bad := pem.EncodeToMemory(block)
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not PEM", []byte("hello")},
		{"a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}})},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}})},
		{"corrupted", bad},
		{"RSA 1024", csrPEM(t, small)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCSR(tt.in); !errors.Is(err, ErrInvalidCSR) {
				t.Fatalf("ParseCSR err = %v, want ErrInvalidCSR", err)
			}
		})
	}
	if _, err := ParseCSR(good); err != nil {
		t.Fatalf("good CSR: %v", err)
	}
}

// copyDir makes a plug-in directory from Istio's sample files: each want
// name is copied from the sample file given.
func copyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		b, err := os.ReadFile(filepath.Join(samples, src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPluginCA(t *testing.T) {
	std := map[string]string{caCertFile: "ca-cert.pem", caKeyFile: "ca-key.pem", rootCertFile: "root-cert.pem", certChainFile: "cert-chain.pem"}
	with := func(name, src string) map[string]string {
		m := map[string]string{}
		for k, v := range std {
			m[k] = v
		}
		if src == "" {
			delete(m, name)
		} else {
			m[name] = src
		}
		return m
	}
	tests := []struct {
		name      string
		files     map[string]string
		wantRoots int
		wantErr   []string // substrings of the error
	}{
		{name: "Istio sample", files: std, wantRoots: 1},
		{name: "alternate set, root inside cert-chain", wantRoots: 1, files: map[string]string{caCertFile: "ca-cert-alt.pem",
			caKeyFile: "ca-key-alt.pem", rootCertFile: "root-cert-alt.pem", certChainFile: "cert-chain-alt.pem"}},
		{name: "combined roots", files: with(rootCertFile, "root-cert-combined.pem"), wantRoots: 2},
		{name: "cert-chain without ca-cert: ca-cert is served first", files: with(certChainFile, "root-cert.pem"), wantRoots: 1},
		{name: "key of another certificate", files: with(caKeyFile, "ca-key-alt.pem"),
			wantErr: []string{"ca-key.pem does not match the certificate in", "ca-cert.pem"}},
		{name: "wrong root", files: with(rootCertFile, "root-cert-alt.pem"),
			wantErr: []string{"ca-cert.pem does not chain to a root of", "root-cert.pem"}},
		{name: "a leaf as CA certificate", files: with(caCertFile, "leaf-workload-foo-cert.pem"),
			wantErr: []string{"ca-key.pem does not match"}},
		{name: "missing chain", files: with(certChainFile, ""), wantErr: []string{"cert-chain.pem", "no such file"}},
		{name: "missing key", files: with(caKeyFile, ""), wantErr: []string{"ca-key.pem", "no such file"}},
		{name: "key file holds a certificate", files: with(caKeyFile, "ca-cert.pem"),
			wantErr: []string{"ca-key.pem", `"CERTIFICATE"`}},
		{name: "root file holds a key", files: with(rootCertFile, "ca-key.pem"),
			wantErr: []string{"root-cert.pem", "want CERTIFICATE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, tt.files)
			c, err := New(Options{DataDir: filepath.Join(t.TempDir(), "d"), PluginDir: dir})
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatal("New accepted a bad plug-in directory")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), "MII") {
					t.Errorf("error holds key material: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(splitPEM(c.RootsPEM())); got != tt.wantRoots {
				t.Errorf("%d roots, want %d", got, tt.wantRoots)
			}
			pub, err := os.ReadFile(c.RootCertFile())
			if err != nil || string(pub) != string(c.RootsPEM()) {
				t.Errorf("root-cert.pem is not the trust bundle (err %v)", err)
			}
			id := spiffeid.RequireFromString("spiffe://cluster.local/ns/foo/sa/foo")
			csr, _ := ParseCSR(csrPEM(t, ecKey(t)))
			got, err := c.Sign(csr, id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if san := verifySVID(t, parseChain(t, got.Chain), parseChain(t, splitPEM(c.RootsPEM()))); san != id.String() {
				t.Errorf("SAN %q", san)
			}
		})
	}
}

// TestPluginSampleWorkloadCertVerifies checks that the roots loaded from
// Istio's samples verify Istio's own sample workload certificate.
func TestPluginSampleWorkloadCertVerifies(t *testing.T) {
	c := newTestCA(t, Options{PluginDir: samples})
	certs, err := readCerts(filepath.Join(samples, "workload-foo-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := parseChain(t, splitPEM(c.RootsPEM()))
	if san := verifySVID(t, certs, roots); san != "spiffe://trust-domain-foo/ns/foo/sa/foo" {
		t.Errorf("SAN %q", san)
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestSelfSignedRootFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	c := newTestCA(t, Options{DataDir: dir})
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("data dir mode %#o, want 0700", m)
	}
	if m := mode(t, filepath.Join(dir, caKeyFile)); m != 0o600 {
		t.Errorf("key mode %#o, want 0600", m)
	}
	if m := mode(t, filepath.Join(dir, caCertFile)); m != 0o600 {
		t.Errorf("cert mode %#o, want 0600", m)
	}
	root := parseChain(t, splitPEM(c.RootsPEM()))[0]
	if !root.IsCA || root.Subject.Organization[0] != "cluster.local" || root.NotAfter.Before(time.Now().Add(9*365*24*time.Hour)) {
		t.Errorf("root: CA=%v subject=%v until %v", root.IsCA, root.Subject, root.NotAfter)
	}
	if _, ok := root.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("root key %T, want ECDSA", root.PublicKey)
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, caKeyFile))

	// A restart keeps the root.
	again := newTestCA(t, Options{DataDir: dir})
	if string(again.RootsPEM()) != string(c.RootsPEM()) {
		t.Fatal("a second New made a new root")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, caKeyFile)); string(b) != string(keyPEM) {
		t.Fatal("the key file changed")
	}
}

func TestSelfSignedRootIsNeverRegenerated(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(t *testing.T, dir string)
		wantErr []string
	}{
		{"corrupt key", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, caKeyFile), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0o600)
		}, []string{"ca-key.pem: private key does not parse", "does not create a new root"}},
		{"key not PEM", func(t *testing.T, dir string) { write(t, filepath.Join(dir, caKeyFile), "garbage", 0o600) },
			[]string{"ca-key.pem: no PEM private key"}},
		{"unreadable key", func(t *testing.T, dir string) {
			if os.Geteuid() == 0 {
				// root reads any file: make it a directory instead.
				os.Remove(filepath.Join(dir, caKeyFile))
				os.Mkdir(filepath.Join(dir, caKeyFile), 0o700)
				return
			}
			os.Chmod(filepath.Join(dir, caKeyFile), 0o000)
		}, []string{"ca-key.pem"}},
		{"key without cert", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, caCertFile)) },
			[]string{"ca-key.pem exists without", "ca-cert.pem"}},
		{"cert without key", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, caKeyFile)) },
			[]string{"ca-cert.pem exists without", "ca-key.pem"}},
		{"key readable by others", func(t *testing.T, dir string) { os.Chmod(filepath.Join(dir, caKeyFile), 0o644) },
			[]string{"ca-key.pem has mode 0644"}},
		{"data dir open to others", func(t *testing.T, dir string) { os.Chmod(dir, 0o755) },
			[]string{"data directory", "has mode 0755"}},
		{"cert of another key", func(t *testing.T, dir string) {
			other := filepath.Join(t.TempDir(), "other")
			newTestCA(t, Options{DataDir: other})
			b, _ := os.ReadFile(filepath.Join(other, caCertFile))
			write(t, filepath.Join(dir, caCertFile), string(b), 0o600)
		}, []string{"ca-key.pem does not match the certificate in"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			newTestCA(t, Options{DataDir: dir})
			tt.break_(t, dir)
			before := snapshot(t, dir)
			_, err := New(Options{DataDir: dir})
			if err == nil {
				t.Fatal("New accepted a broken root")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if diff := cmp.Diff(before, snapshot(t, dir)); diff != "" {
				t.Errorf("New changed the data directory (-before +after):\n%s", diff)
			}
		})
	}
}

func write(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// snapshot maps the names of dir's CA files to their content (or "-").
func snapshot(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	for _, n := range []string{caKeyFile, caCertFile} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			out[n] = "-"
			continue
		}
		out[n] = string(b)
	}
	return out
}

func TestReload(t *testing.T) {
	dir := copyDir(t, map[string]string{caCertFile: "ca-cert.pem", caKeyFile: "ca-key.pem", rootCertFile: "root-cert.pem", certChainFile: "cert-chain.pem"})
	c := newTestCA(t, Options{PluginDir: dir})
	if n := len(splitPEM(c.RootsPEM())); n != 1 {
		t.Fatalf("%d roots", n)
	}
	// A new root alongside the old.
	combined, _ := os.ReadFile(filepath.Join(samples, "root-cert-combined.pem"))
	write(t, filepath.Join(dir, rootCertFile), string(combined), 0o600)
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := len(splitPEM(c.RootsPEM())); n != 2 {
		t.Fatalf("%d roots after reload, want 2", n)
	}
	pub, _ := os.ReadFile(c.RootCertFile())
	if string(pub) != string(c.RootsPEM()) {
		t.Error("root-cert.pem not republished")
	}
	// A broken file: the CA keeps its material.
	write(t, filepath.Join(dir, caKeyFile), "garbage", 0o600)
	if err := c.Reload(); err == nil || !strings.Contains(err.Error(), "ca-key.pem") {
		t.Fatalf("Reload of a broken key: %v", err)
	}
	if n := len(splitPEM(c.RootsPEM())); n != 2 {
		t.Fatalf("a failed reload changed the bundle")
	}
	csr, _ := ParseCSR(csrPEM(t, ecKey(t)))
	if _, err := c.Sign(csr, spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b"), 0); err != nil {
		t.Fatalf("Sign after a failed reload: %v", err)
	}
}

func TestStats(t *testing.T) {
	c := newTestCA(t, Options{PluginDir: samples})
	s := c.Stats()
	if s.Issued != 0 || !s.LastIssuedNotAfter.IsZero() || s.RootNotAfter.IsZero() || s.SignerNotAfter.IsZero() {
		t.Fatalf("fresh stats %+v", s)
	}
	csr, _ := ParseCSR(csrPEM(t, ecKey(t)))
	got, err := c.Sign(csr, spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(csr, spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b"), 1000*24*time.Hour); err == nil {
		t.Fatal("TTL above max accepted")
	}
	s = c.Stats()
	if s.Issued != 1 || s.SignErrors != 1 || !s.LastIssuedNotAfter.Equal(got.Leaf.NotAfter) {
		t.Errorf("stats %+v, want 1 issued expiring %v and 1 sign error", s, got.Leaf.NotAfter)
	}
	if s.RootNotAfter.Year() != 2117 {
		t.Errorf("root expiry %v: the sample root expires in 2117", s.RootNotAfter)
	}
}

func TestCheckNodeIdentity(t *testing.T) {
	cert := func(uris ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, u := range uris {
			p, _ := url.Parse(u)
			c.URIs = append(c.URIs, p)
		}
		return c
	}
	tests := []struct {
		name   string
		cert   *x509.Certificate
		ns, sa string
		ok     bool
	}{
		{"match", cert("spiffe://cluster.local/ns/default/sa/reviews"), "default", "reviews", true},
		{"other trust domain, as Istio", cert("spiffe://other.td/ns/default/sa/reviews"), "default", "reviews", true},
		{"node without service account", cert("spiffe://cluster.local/ns/default/sa/reviews"), "default", "", true},
		{"wrong namespace", cert("spiffe://cluster.local/ns/prod/sa/reviews"), "default", "reviews", false},
		{"wrong service account", cert("spiffe://cluster.local/ns/default/sa/ratings"), "default", "reviews", false},
		{"not a workload ID", cert("spiffe://cluster.local/foo"), "default", "reviews", false},
		{"no URI", cert(), "default", "reviews", false},
		{"two URIs", cert("spiffe://cluster.local/ns/default/sa/reviews", "spiffe://cluster.local/ns/x/sa/y"), "default", "reviews", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckNodeIdentity(tt.cert, tt.ns, tt.sa)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckNodeIdentity = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestWorkloadID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	id, err := WorkloadID(td, "default", "bookinfo-reviews")
	if err != nil || id.String() != "spiffe://cluster.local/ns/default/sa/bookinfo-reviews" {
		t.Fatalf("WorkloadID = %v, %v", id, err)
	}
	ns, sa, err := ParseWorkloadID(id)
	if err != nil || ns != "default" || sa != "bookinfo-reviews" {
		t.Fatalf("ParseWorkloadID = %q %q %v", ns, sa, err)
	}
	for _, bad := range [][2]string{{"", "x"}, {"x", ""}, {"a/b", "x"}, {"x", "a b"}} {
		if _, err := WorkloadID(td, bad[0], bad[1]); err == nil {
			t.Errorf("WorkloadID(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
