package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, tc := range []struct {
		data string
		mode os.FileMode
	}{{"one", 0o600}, {"two", 0o644}} {
		if err := Write(p, []byte(tc.data), tc.mode); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(b) != tc.data || fi.Mode().Perm() != tc.mode {
			t.Errorf("after Write(%q, %#o): %q %v %v", tc.data, tc.mode, b, fi.Mode().Perm(), err)
		}
	}
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
	des, _ := os.ReadDir(dir)
	if len(des) != 1 {
		t.Errorf("temporary files left: %v", des)
	}
}
