package secret

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil"
)

func TestParseFileName(t *testing.T) {
	tests := []struct {
		name            string
		cert, key, root string
		ok              bool
	}{
		{"file-cert:/etc/certs/cert-chain.pem~/etc/certs/key.pem", "/etc/certs/cert-chain.pem", "/etc/certs/key.pem", "", true},
		{"file-root:/etc/certs/root-cert.pem", "", "", "/etc/certs/root-cert.pem", true},
		{"file-cert:/only-cert.pem", "", "", "", false},
		{"file-root:", "", "", "", false},
		{"default", "", "", "", false},
	}
	for _, tt := range tests {
		cert, key, root, ok := ParseFileName(tt.name)
		if cert != tt.cert || key != tt.key || root != tt.root || ok != tt.ok {
			t.Errorf("ParseFileName(%q) = %q, %q, %q, %v", tt.name, cert, key, root, ok)
		}
	}
}

// TestFiles: file secrets are read when named, read again when their
// files change, kept when a change does not parse, and dropped when no
// longer named. The Istio sample workload certificate parses as is.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, rootPath := filepath.Join(dir, "cert-chain.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "root-cert.pem")
	ca := testutil.NewCA(t, "root")
	first := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/a"}})
	write := func(p string, b []byte, mod time.Time) {
		t.Helper()
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	write(certPath, first.CertPEM, t0)
	write(keyPath, first.KeyPEM, t0)
	write(rootPath, ca.PEM, t0)

	store := NewStore()
	f := NewFiles(store, time.Hour, nil)
	certName, rootName := FileCertPrefix+certPath+"~"+keyPath, FileRootPrefix+rootPath
	missing := FileRootPrefix + filepath.Join(dir, "absent.pem")
	if err := f.Watch([]string{certName, rootName, missing, "default"}); err == nil {
		t.Error("Watch of a missing file reported no error")
	}
	got := store.Get(certName)
	if got == nil || got.Certificate.Leaf.SerialNumber.Cmp(first.Cert.SerialNumber) != 0 || got.Source != SourceFile {
		t.Fatalf("certificate secret = %+v", got)
	}
	if r := store.Get(rootName); r == nil || r.Roots == nil {
		t.Fatalf("root secret = %+v", r)
	}
	if store.Get("default") != nil {
		t.Error("a non-file name was loaded")
	}

	// Rotation on disk: the next poll reads it.
	second := ca.Issue(t, testutil.LeafOptions{URIs: []string{"spiffe://cluster.local/ns/default/sa/a"}})
	write(certPath, second.CertPEM, t0.Add(time.Minute))
	write(keyPath, second.KeyPEM, t0.Add(time.Minute))
	f.Poll()
	if got := store.Get(certName); got.Certificate.Leaf.SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatal("the rotated files were not read")
	}
	// A half-written rotation (key of another certificate) keeps the last good one.
	write(keyPath, first.KeyPEM, t0.Add(2*time.Minute))
	f.Poll()
	if got := store.Get(certName); got.Certificate.Leaf.SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatal("a key that does not match replaced the certificate")
	}
	// The missing file appears: the next poll loads it.
	write(filepath.Join(dir, "absent.pem"), ca.PEM, t0)
	f.Poll()
	if store.Get(missing) == nil {
		t.Error("a file that appeared was not loaded")
	}
	// No longer named: dropped.
	if err := f.Watch([]string{rootName}); err != nil {
		t.Fatal(err)
	}
	if store.Get(certName) != nil || store.Get(missing) != nil || store.Get(rootName) == nil {
		t.Error("Watch did not drop the names that left")
	}

	// Istio's sample certificates parse unchanged.
	samples := "/work/shared/istio-samples/certs"
	if _, err := os.Stat(samples); err == nil {
		name := FileCertPrefix + samples + "/workload-foo-cert.pem~" + samples + "/workload-foo-key.pem"
		if err := f.Watch([]string{name}); err != nil {
			t.Fatalf("Istio sample workload certificate: %v", err)
		}
		if u := store.Get(name).Certificate.Leaf.URIs; len(u) == 0 || u[0].String() != "spiffe://trust-domain-foo/ns/foo/sa/foo" {
			t.Errorf("sample certificate URIs = %v", u)
		}
	}
}

// TestFilesSystemRoots: "file-root:system" is the operating system's
// trust bundle, as Istio's agent resolves it.
func TestFilesSystemRoots(t *testing.T) {
	p := systemRootsPath()
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no system trust bundle on this machine (%v)", err)
	}
	st := NewStore()
	f := NewFiles(st, 0, nil)
	if err := f.Watch([]string{FileRootPrefix + SystemRoots}); err != nil {
		t.Fatal(err)
	}
	if sec := st.Get(FileRootPrefix + SystemRoots); sec == nil || sec.Source != SourceFile {
		t.Fatalf("system roots not loaded from %s: %+v", p, sec)
	}
}
