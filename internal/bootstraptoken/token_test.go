package bootstraptoken

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMintWritesTokenAndRegistry(t *testing.T) {
	dir := t.TempDir()
	reg, file := filepath.Join(dir, "data", "tokens"), filepath.Join(dir, "reviews-v1.token")
	b := Binding{Namespace: "default", ServiceAccount: "bookinfo-reviews", Workload: "reviews-v1"}
	if err := Mint(reg, file, b); err != nil {
		t.Fatal(err)
	}
	tok, err := ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, Prefix) || len(tok) != len(Prefix)+43 {
		t.Errorf("token %d characters, want %s and 43 base64url characters (256 bits)", len(tok), Prefix)
	}
	for path, want := range map[string]os.FileMode{file: 0o600, reg: 0o700, filepath.Join(reg, "default.reviews-v1.json"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (err %v), want %#o", path, fi.Mode().Perm(), err, want)
		}
	}
	entries, bad, err := LoadRegistry(reg)
	if err != nil || len(bad) != 0 || len(entries) != 1 {
		t.Fatalf("LoadRegistry = %v, %v, %v", entries, bad, err)
	}
	sum := Hash(tok)
	if e := entries[0]; e.Binding != b || e.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("entry %+v does not bind the token's hash to %+v", e, b)
	}
	data, _ := os.ReadFile(filepath.Join(reg, "default.reviews-v1.json"))
	if strings.Contains(string(data), tok) {
		t.Error("the registry holds the token itself")
	}

	// Minting again replaces the token.
	if err := Mint(reg, file, b); err != nil {
		t.Fatal(err)
	}
	tok2, _ := ReadFile(file)
	entries, _, _ = LoadRegistry(reg)
	sum2 := Hash(tok2)
	if tok2 == tok || len(entries) != 1 || entries[0].SHA256 != hex.EncodeToString(sum2[:]) {
		t.Error("minting again did not replace the token")
	}
}

func TestMintRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, b := range map[string]Binding{
		"no workload":      {Namespace: "default", ServiceAccount: "sa"},
		"no sa":            {Namespace: "default", Workload: "w"},
		"path in workload": {Namespace: "default", ServiceAccount: "sa", Workload: "../w"},
	} {
		if err := Mint(dir, filepath.Join(dir, "t"), b); err == nil {
			t.Errorf("%s: Mint accepted", name)
		}
	}
}

func TestLoadRegistrySkipsBadEntries(t *testing.T) {
	dir := t.TempDir()
	if err := Mint(dir, filepath.Join(t.TempDir(), "t"), Binding{Namespace: "ns", ServiceAccount: "sa", Workload: "w"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, "short.json"), []byte(`{"namespace":"a","serviceAccount":"b","sha256":"abcd"}`), 0o600)
	os.WriteFile(filepath.Join(dir, "nons.json"), []byte(`{"serviceAccount":"b","sha256":"`+strings.Repeat("ab", 32)+`"}`), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not an entry"), 0o600)
	entries, bad, err := LoadRegistry(dir)
	if err != nil || len(entries) != 1 || len(bad) != 3 {
		t.Fatalf("LoadRegistry: %d entries, bad %v, err %v", len(entries), bad, err)
	}
	for _, e := range bad {
		if !strings.Contains(e.Error(), dir) {
			t.Errorf("error %q does not name the file", e)
		}
	}
	if entries, _, err := LoadRegistry(filepath.Join(dir, "missing")); err != nil || len(entries) != 0 {
		t.Errorf("missing registry: %v %v", entries, err)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := ReadFile(empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty file: %v", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := ReadFile(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
}
