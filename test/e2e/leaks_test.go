package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/loom-mesh/loom/internal/bootstraptoken"
)

// secretShapes are what no output of a mesh process may ever hold
// (issue 4, "nothing leaks"): a PEM private key, a bootstrap token, a
// JWT (compact JWS: base64url JSON header and payload). The shapes, not
// the values, so that every e2e run checks every secret any process held,
// including certificates' keys the test never sees.
var secretShapes = []struct {
	what string
	re   *regexp.Regexp
}{
	{"a PEM private key", regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----`)},
	{"a bootstrap token", regexp.MustCompile(regexp.QuoteMeta(bootstraptoken.Prefix) + `[A-Za-z0-9_-]{16,}`)},
	{"a JWT", regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.`)},
}

// checkNoSecrets fails t for every output (name -> text) that holds a
// secret's shape, naming the output and line but never printing the
// secret.
func checkNoSecrets(t *testing.T, outputs map[string]string) {
	t.Helper()
	for name, out := range outputs {
		for i, line := range strings.Split(out, "\n") {
			for _, s := range secretShapes {
				if loc := s.re.FindStringIndex(line); loc != nil {
					t.Errorf("%s:%d holds %s (at column %d)", name, i+1, s.what, loc[0]+1)
				}
			}
		}
	}
}

// logFiles reads every file under dirs (process logs) into an outputs
// map, keyed by the file's base name.
func logFiles(t *testing.T, paths ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[filepath.Base(path)] = string(b)
			return nil
		})
		if err != nil {
			t.Errorf("the leak check cannot read %s: %v", p, err)
		}
	}
	return out
}

// TestSecretShapes: the shapes find what they are for and pass what
// the outputs legitimately hold (certificates, SPIFFE IDs, token file
// paths).
func TestSecretShapes(t *testing.T) {
	leak := func(s string) bool {
		for _, sh := range secretShapes {
			if sh.re.MatchString(s) {
				return true
			}
		}
		return false
	}
	for _, s := range []string{
		"-----BEGIN EC PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----",
		"token=" + bootstraptoken.Generate(),
		"authorization: Bearer " + readShared(t, "jwt/demo.jwt"),
	} {
		if !leak(s) {
			t.Errorf("%.40q... is not recognized as a secret", s)
		}
	}
	for _, s := range []string{
		"-----BEGIN CERTIFICATE-----", "spiffe://cluster.local/ns/default/sa/reviews",
		"--token-file /tmp/state/workloads/reviews-v2.token", `"local_jwks":{"inline_string":"{\"keys\":[{\"kty\":\"RSA\"`,
	} {
		if leak(s) {
			t.Errorf("%q is taken for a secret", s)
		}
	}
}
