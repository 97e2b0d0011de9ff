package secret

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Prefixes of the secret names Istio's agent serves from files:
// "file-cert:CERT~KEY" (a certificate chain and its key) and
// "file-root:ROOT" (a trust bundle), CERT, KEY and ROOT being paths.
const (
	FileCertPrefix = "file-cert:"
	FileRootPrefix = "file-root:"
)

// DefaultFilePollInterval is how often Files looks at its files for a
// change.
const DefaultFilePollInterval = 5 * time.Second

// ParseFileName splits a file secret name: "file-cert:CERT~KEY" gives cert
// and key, "file-root:ROOT" gives root. ok is false for any other name, or
// when a path is empty.
func ParseFileName(name string) (cert, key, root string, ok bool) {
	if rest, found := strings.CutPrefix(name, FileCertPrefix); found {
		cert, key, found = strings.Cut(rest, "~")
		if !found || cert == "" || key == "" {
			return "", "", "", false
		}
		return cert, key, "", true
	}
	if rest, found := strings.CutPrefix(name, FileRootPrefix); found {
		return "", "", rest, rest != ""
	}
	return "", "", "", false
}

// Files keeps the file secrets the config names in a Store: it reads each
// when it is first named, and reads it again when one of its files
// changes (size or modification time, checked every poll interval; a
// Kubernetes secret volume's symlink swap counts), so that the next
// handshake uses the new certificate. A file that cannot be read or
// parsed leaves the stored version, if any, in place and is retried at the
// next poll. Its methods are safe for concurrent use.
type Files struct {
	store    *Store
	interval time.Duration
	log      *slog.Logger

	// mu guards watched. File I/O happens under it only in Watch's and
	// poll's reads, which are small local files.
	mu      sync.Mutex
	watched map[string]*fileState
}

type fileState struct {
	stamps []fileStamp // per path, in ParseFileName order
	loaded bool
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// NewFiles makes a Files that writes to store. interval <= 0 means
// DefaultFilePollInterval; logger nil discards.
func NewFiles(store *Store, interval time.Duration, logger *slog.Logger) *Files {
	if interval <= 0 {
		interval = DefaultFilePollInterval
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Files{store: store, interval: interval, log: logger.With("component", "secret-files"), watched: map[string]*fileState{}}
}

// Watch makes names (file secret names; others are ignored) the set kept
// up to date. Names new to the set are read at once; names that left it
// are deleted from the Store. It returns the read errors of the new
// names, joined; those names are retried at each poll.
func (f *Files) Watch(names []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := map[string]bool{}
	var errs []error
	for _, n := range names {
		if _, _, _, ok := ParseFileName(n); !ok {
			continue
		}
		want[n] = true
		if _, ok := f.watched[n]; ok {
			continue
		}
		st := &fileState{}
		f.watched[n] = st
		if err := f.loadLocked(n, st); err != nil {
			errs = append(errs, err)
		}
	}
	for n := range f.watched {
		if !want[n] {
			delete(f.watched, n)
			f.store.Delete(n)
		}
	}
	return errors.Join(errs...)
}

// Run polls the watched files every interval until ctx ends; it returns
// nil.
func (f *Files) Run(ctx context.Context) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f.Poll()
		}
	}
}

// Poll reads again every watched secret whose files changed or that has
// not loaded yet.
func (f *Files) Poll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range slices.Sorted(maps.Keys(f.watched)) {
		st := f.watched[n]
		stamps, err := stat(n)
		if err == nil && st.loaded && slices.Equal(stamps, st.stamps) {
			continue
		}
		if err := f.loadLocked(n, st); err != nil {
			f.log.Warn("file secret not updated", "secret", n, "error", err)
		}
	}
}

func paths(name string) []string {
	cert, key, root, _ := ParseFileName(name)
	if root == SystemRoots {
		return []string{systemRootsPath()}
	}
	if root != "" {
		return []string{root}
	}
	return []string{cert, key}
}

// SystemRoots is the ROOT of "file-root:system", Istio's name for the
// operating system's trust bundle (a DestinationRule SIMPLE or MUTUAL
// without caCertificates).
const SystemRoots = "system"

// systemRootFiles are where Linux distributions keep their trust bundle,
// in the order Istio's agent looks (security.GetOSRootFilePath).
var systemRootFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Arch
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // OpenSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine, macOS
}

// systemRootsPath is the first of systemRootFiles that exists, else the
// first (whose read then fails with its name).
func systemRootsPath() string {
	for _, p := range systemRootFiles {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return systemRootFiles[0]
}

func stat(name string) ([]fileStamp, error) {
	var out []fileStamp
	for _, p := range paths(name) {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out = append(out, fileStamp{size: fi.Size(), mod: fi.ModTime()})
	}
	return out, nil
}

// loadLocked reads and parses the files of name and stores the secret.
func (f *Files) loadLocked(name string, st *fileState) error {
	stamps, err := stat(name)
	if err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	ps := paths(name)
	var data [][]byte
	for _, p := range ps {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("secret %q: %w", name, err)
		}
		data = append(data, b)
	}
	var sec *Secret
	if len(ps) == 1 {
		sec, err = ParseRoots(name, data[0])
	} else {
		sec, err = ParseCertificate(name, data[0], data[1])
	}
	if err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	sec.Source = SourceFile
	sec.Version = stamps[0].mod.UTC().Format(time.RFC3339Nano)
	f.store.Set(sec)
	st.stamps, st.loaded = stamps, true
	f.log.Debug("file secret loaded", "secret", name)
	return nil
}
