package bootstraptoken

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/loom-mesh/loom/internal/atomicfile"
)

// Prefix starts every token, so that secret scanners and people can tell one
// when they see it.
const Prefix = "loom-bt-"

// RegistryDir is where loomd keeps the registry: DATA_DIR/tokens, for
// loomd's --data-dir.
func RegistryDir(dataDir string) string { return filepath.Join(dataDir, "tokens") }

// Binding is what a token stands for: the Kubernetes-style identity of the
// workload that holds it (its SPIFFE ID is
// spiffe://TRUST_DOMAIN/ns/Namespace/sa/ServiceAccount).
type Binding struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	// Workload names the holder, for messages only ("reviews-v1"); it is
	// not part of the identity.
	Workload string `json:"workload,omitempty"`
}

// Entry is one registry file: a binding and its token's SHA-256.
type Entry struct {
	Binding
	// SHA256 is the hex SHA-256 of the token string.
	SHA256 string `json:"sha256"`
	// File is the registry file the entry was read from (set by
	// LoadRegistry, not stored).
	File string `json:"-"`
}

// Hash returns the SHA-256 of token, as the registry stores it (raw bytes).
func Hash(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// Generate returns a new token: Prefix and 32 random bytes in base64url
// without padding (51 characters in all).
func Generate() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return Prefix + base64.RawURLEncoding.EncodeToString(b)
}

// nameRE is what a registry entry name may be: no path separators, no
// leading dot.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)

// Mint creates a token for b, writes it to tokenFile (mode 0600, replacing
// any file there) and registers it in registryDir as NAME.json, where NAME
// is "NAMESPACE.WORKLOAD" (b.Workload is required). registryDir is created
// with mode 0700 when missing. Minting again for the same workload
// replaces its entry, which revokes the old token. The token is written
// before it is registered, so a failure never leaves a registered token
// that no file holds. Errors name the file; they never contain the token.
func Mint(registryDir, tokenFile string, b Binding) error {
	if b.Namespace == "" || b.ServiceAccount == "" || b.Workload == "" {
		return errors.New("bootstrap token: namespace, service account and workload are required")
	}
	name := b.Namespace + "." + b.Workload
	if !nameRE.MatchString(name) {
		return fmt.Errorf("bootstrap token: %q: namespace and workload must be letters, digits, '.', '_' or '-'", name)
	}
	tok := Generate()
	h := Hash(tok)
	if err := atomicfile.Write(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("write token file %s: %w", tokenFile, err)
	}
	if err := os.MkdirAll(registryDir, 0o700); err != nil {
		return fmt.Errorf("token registry %s: %w", registryDir, err)
	}
	data, err := json.Marshal(Entry{Binding: b, SHA256: hex.EncodeToString(h[:])})
	if err != nil {
		return err
	}
	path := filepath.Join(registryDir, name+".json")
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write token registry entry %s: %w", path, err)
	}
	return nil
}

// ReadFile reads the token in path: the file's content without surrounding
// white space. An empty file is an error. Errors name the file and never
// contain its content.
func ReadFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err) // *PathError names the file
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

// LoadRegistry reads every *.json entry of dir, in name order. A missing
// dir is an empty registry. A file that does not decode, or lacks a field,
// is skipped and reported in bad (as an error naming the file); the others
// still load. err is set only when dir cannot be read.
func LoadRegistry(dir string) (entries []Entry, bad []error, err error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("token registry: %w", err)
	}
	for _, de := range des {
		if de.IsDir() || !strings.HasSuffix(de.Name(), ".json") || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, de.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			bad = append(bad, fmt.Errorf("token registry entry: %w", err))
			continue
		}
		var e Entry
		if err := json.Unmarshal(data, &e); err != nil {
			bad = append(bad, fmt.Errorf("token registry entry %s: %w", path, err))
			continue
		}
		if sum, err := hex.DecodeString(e.SHA256); err != nil || len(sum) != sha256.Size {
			bad = append(bad, fmt.Errorf("token registry entry %s: sha256: must be 64 hex digits", path))
			continue
		}
		if e.Namespace == "" || e.ServiceAccount == "" {
			bad = append(bad, fmt.Errorf("token registry entry %s: namespace and serviceAccount are required", path))
			continue
		}
		e.File = path
		entries = append(entries, e)
	}
	return entries, bad, nil
}
