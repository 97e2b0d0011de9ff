package config

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/atomicfile"
	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// ErrDefinedInFile is wrapped by the error Apply and Delete return when a
// resource is defined in a user file of the watched directory (not one
// loomd wrote for loomctl): the user must edit that file. loomd's API maps
// it to 409 Conflict.
var ErrDefinedInFile = errors.New("resource is defined in a user file")

// ErrNotFound is wrapped by the error Delete returns for a resource the
// store does not hold. loomd's API maps it to 404 Not Found.
var ErrNotFound = errors.New("resource not found")

// ApplyDir is the subdirectory of StoreOptions.Dir where the Store keeps the
// resources applied through its API, one file per resource named
// "<namespace>.<kind>.<name>.yaml" (kind in lower case).
const ApplyDir = "loomctl"

// The actions a Result reports, as kubectl prints them.
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
	ActionDeleted    = "deleted"
)

// Result is what Apply, Delete or Validate did (or would do) to one
// resource.
type Result struct {
	Key    Key
	Action string // ActionCreated, ActionConfigured, ActionUnchanged or ActionDeleted
}

// StoreOptions configures a Store.
type StoreOptions struct {
	// Dir is the directory of *.yaml and *.yml files to serve, read
	// recursively (names starting with "." are skipped). Symlinks to
	// files are followed, so a Kubernetes ConfigMap volume works: its
	// updates swap the "..data" symlink, which Run watches. Required.
	Dir string
	// Validate checks a whole candidate set (package validation's
	// ValidateAll); nil accepts anything that decodes.
	Validate func([]*Resource) Errors
	// Logger receives reload results; nil means slog.Default().
	Logger *slog.Logger
	// Debounce is the quiet period after the last file event before the
	// directory is reread. Zero means 100ms.
	Debounce time.Duration
}

// Store holds the whole config of loomd: the resources of a watched
// directory plus those applied through the API, published as immutable
// Snapshots. A new Snapshot is published only when the whole set decodes
// and validates; otherwise the last good one keeps serving and Errors
// reports why. All methods are safe for concurrent use.
type Store struct {
	opts     StoreOptions
	log      *slog.Logger
	applyDir string

	snap atomic.Pointer[Snapshot]
	errs atomic.Pointer[Errors]

	// mu serialises everything that publishes a snapshot or writes the
	// directory: Load and the watcher's reloads, Apply and Delete. It
	// guards version and the publishing of snap and errs (they are read
	// without it, being atomic). It is held on purpose across the
	// directory read (and the validation and file writes of Apply and
	// Delete): a reload that read the directory before an Apply wrote its
	// files must not publish after that Apply, or the applied resources
	// would vanish until the next event. Holding it means local disk I/O
	// only; no RPC, network call or blocking channel send happens under it
	// (subscribers are told with non-blocking sends), so Snapshot, Errors
	// and Loaded never wait for it.
	mu      sync.Mutex
	version uint64

	// loaded is set once Load has returned, whatever it found.
	loaded atomic.Bool

	// subMu guards subs.
	subMu sync.Mutex
	subs  []chan struct{}
}

// NewStore returns a Store serving an empty Snapshot until Load succeeds.
// It does no I/O.
func NewStore(opts StoreOptions) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("config store: Dir is required")
	}
	opts.Dir = filepath.Clean(opts.Dir)
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{
		opts:     opts,
		log:      log.With("component", "config-store", "dir", opts.Dir),
		applyDir: filepath.Join(opts.Dir, ApplyDir),
	}
	s.snap.Store(NewSnapshot(0, nil))
	return s, nil
}

// Snapshot returns the current snapshot; never nil. It does not block.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// Errors returns the errors of the last read of the directory, nil when it
// was clean. It does not block.
func (s *Store) Errors() Errors {
	if p := s.errs.Load(); p != nil {
		return *p
	}
	return nil
}

// Subscribe returns a channel (buffer 1) that receives a value after each
// new snapshot; sends never block, so a slow reader sees only that
// something changed since it last looked (latest wins).
func (s *Store) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.subMu.Lock()
	s.subs = append(s.subs, ch)
	s.subMu.Unlock()
	return ch
}

// Load reads the directory synchronously, and publishes it if it is valid.
// Call it once before Run. It returns the decode and validation errors
// (also reported by Errors) or an error reading the directory; the Store
// then keeps serving its previous (at first, empty) snapshot.
func (s *Store) Load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.loaded.Store(true)
	return s.reloadLocked()
}

// Loaded reports whether Load has read the directory once, whatever it
// found: the serving snapshot (empty while the directory is invalid) and
// Errors then reflect the directory. It does not block.
func (s *Store) Loaded() bool { return s.loaded.Load() }

// reloadLocked rereads Dir and publishes it if valid and different. s.mu
// must be held.
func (s *Store) reloadLocked() error {
	rs, errs, err := s.readDir()
	if err != nil {
		e := Errors{{Source: Source{File: s.opts.Dir}, Msg: err.Error()}}
		s.errs.Store(&e)
		return fmt.Errorf("read config dir: %w", err)
	}
	if len(errs) == 0 {
		errs = s.validate(rs)
	}
	if len(errs) > 0 {
		s.errs.Store(&errs)
		return errs
	}
	s.errs.Store(nil)
	s.publishLocked(rs)
	return nil
}

func (s *Store) validate(rs []*Resource) Errors {
	if s.opts.Validate == nil {
		return nil
	}
	return s.opts.Validate(rs)
}

// publishLocked makes rs the current snapshot unless it equals it. s.mu must
// be held.
func (s *Store) publishLocked(rs []*Resource) bool {
	if sameResources(s.snap.Load(), rs) {
		return false
	}
	s.version++
	s.snap.Store(NewSnapshot(s.version, rs))
	s.subMu.Lock()
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	s.subMu.Unlock()
	s.log.Info("config published", "version", s.version, "resources", len(rs))
	return true
}

// readDir decodes every YAML file under Dir, in path order.
func (s *Store) readDir() ([]*Resource, Errors, error) {
	var files []string
	err := filepath.WalkDir(s.opts.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != s.opts.Dir && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if path != s.opts.Dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() && isYAML(path) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(files)
	var rs []*Resource
	var errs Errors
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, &Error{Source: Source{File: f}, Msg: err.Error()})
			continue
		}
		r, e := Decode(f, data)
		rs = append(rs, r...)
		errs = append(errs, e...)
	}
	return rs, errs, nil
}

func isYAML(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	return ext == ".yaml" || ext == ".yml"
}

// sameResources reports whether rs holds exactly the resources of snap.
func sameResources(snap *Snapshot, rs []*Resource) bool {
	if snap.Len() != len(rs) {
		return false
	}
	for _, r := range rs {
		if !sameResource(snap.Get(r.Key()), r) {
			return false
		}
	}
	return true
}

func sameResource(a, b *Resource) bool {
	return a != nil && b != nil && a.Source == b.Source && sameContent(a, b)
}

// sameContent compares what a user wrote, not where.
func sameContent(a, b *Resource) bool {
	return a.Key() == b.Key() && a.APIVersion == b.APIVersion &&
		equalMaps(a.Labels, b.Labels) && equalMaps(a.Annotations, b.Annotations) &&
		proto.Equal(a.Spec, b.Spec)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Run watches Dir recursively (new subdirectories too) and, after each
// quiet period of Debounce following a change to a YAML file, rereads the
// whole directory and publishes it if it is valid. A change is applied
// within 1s. It blocks until ctx is done and then returns nil; it returns
// an error if the watch cannot be set up.
func (s *Store) Run(ctx context.Context) error {
	return s.watch(ctx)
}

// reloadAndLog rereads Dir; the watcher calls it.
func (s *Store) reloadAndLog() {
	s.mu.Lock()
	err := s.reloadLocked()
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("config rejected, serving the last good snapshot", "version", s.Snapshot().Version, "err", err)
	}
}

// Apply decodes data (multi-document YAML; source names it in errors),
// validates the current config merged with it, and only if all is valid
// writes each new or changed resource atomically to
// Dir/loomctl/<namespace>.<kind>.<name>.yaml and publishes the new
// snapshot before returning. Nothing is ever half-applied.
//
// Errors: Errors (invalid input or merged set; HTTP 400), or an error
// wrapping ErrDefinedInFile (a resource is defined in a user file; 409), or
// an I/O error.
func (s *Store) Apply(source string, data []byte) ([]Result, error) {
	return s.apply(source, data, true)
}

// Validate reports what Apply would do with data, and its errors, without
// changing anything.
func (s *Store) Validate(source string, data []byte) ([]Result, error) {
	return s.apply(source, data, false)
}

func (s *Store) apply(source string, data []byte, commit bool) ([]Result, error) {
	rs, err := decodeRequest(source, data)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	var conflicts Errors
	for _, r := range rs {
		if old := cur.Get(r.Key()); old != nil && !s.isApplied(old) {
			conflicts = append(conflicts, s.conflict(r, old))
		}
	}
	if len(conflicts) > 0 {
		return nil, &storeError{kind: ErrDefinedInFile, errs: conflicts}
	}
	// Each applied resource is stored as the file it will be written to,
	// so the watcher's reread of that file is a no-op.
	stored := make([]*Resource, len(rs))
	files := make([][]byte, len(rs))
	for i, r := range rs {
		b, err := encodeResource(r)
		if err != nil {
			return nil, &Error{Source: r.Source, Key: r.Key(), Msg: fmt.Sprintf("encode: %v", err)}
		}
		got, errs := Decode(s.applyPath(r.Key()), b)
		if len(errs) > 0 || len(got) != 1 || !sameContent(got[0], r) {
			return nil, &Error{Source: r.Source, Key: r.Key(), Msg: fmt.Sprintf("resource does not survive a round trip to YAML: %v", errs)}
		}
		stored[i], files[i] = got[0], b
	}
	merged := replace(cur.All(), stored)
	// Report errors against the request's source and lines, not the file
	// they would be written to.
	checked := replace(cur.All(), rs)
	if errs := s.validate(checked); len(errs) > 0 {
		return nil, errs
	}
	results := make([]Result, len(rs))
	var writes []fileWrite
	for i, r := range rs {
		results[i] = Result{Key: r.Key(), Action: ActionCreated}
		if old := cur.Get(r.Key()); old != nil {
			results[i].Action = ActionConfigured
			if sameContent(old, r) {
				results[i].Action = ActionUnchanged
				continue
			}
		}
		writes = append(writes, fileWrite{path: s.applyPath(r.Key()), data: files[i]})
	}
	if !commit || len(writes) == 0 {
		return results, nil
	}
	if err := os.MkdirAll(s.applyDir, 0o755); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	if err := writeAll(writes); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	s.publishLocked(merged)
	return results, nil
}

// Delete removes the resources named by the documents of data (their specs
// must still decode, as with kubectl delete -f) if the rest of the config
// stays valid, deletes their files under Dir/loomctl and publishes the new
// snapshot before returning.
//
// Errors: Errors (invalid input, or the remaining set would be invalid;
// 400), an error wrapping ErrDefinedInFile (409) or ErrNotFound (404), or
// an I/O error.
func (s *Store) Delete(source string, data []byte) ([]Result, error) {
	rs, err := decodeRequest(source, data)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	var conflicts, missing Errors
	gone := map[Key]bool{}
	for _, r := range rs {
		old := cur.Get(r.Key())
		switch {
		case old == nil:
			missing = append(missing, &Error{Source: r.Source, Key: r.Key(), Msg: "not found"})
		case !s.isApplied(old):
			conflicts = append(conflicts, s.conflict(r, old))
		}
		gone[r.Key()] = true
	}
	if len(conflicts) > 0 {
		return nil, &storeError{kind: ErrDefinedInFile, errs: conflicts}
	}
	if len(missing) > 0 {
		return nil, &storeError{kind: ErrNotFound, errs: missing}
	}
	var rest []*Resource
	for _, r := range cur.All() {
		if !gone[r.Key()] {
			rest = append(rest, r)
		}
	}
	if errs := s.validate(rest); len(errs) > 0 {
		return nil, errs
	}
	results := make([]Result, len(rs))
	var writes []fileWrite
	for i, r := range rs {
		results[i] = Result{Key: r.Key(), Action: ActionDeleted}
		writes = append(writes, fileWrite{path: s.applyPath(r.Key()), remove: true})
	}
	if err := writeAll(writes); err != nil {
		return nil, fmt.Errorf("delete: %w", err)
	}
	s.publishLocked(rest)
	return results, nil
}

func decodeRequest(source string, data []byte) ([]*Resource, error) {
	rs, errs := Decode(source, data)
	if len(errs) > 0 {
		return nil, errs
	}
	if len(rs) == 0 {
		return nil, Errors{{Source: Source{File: source}, Msg: "no resources found"}}
	}
	seen := map[Key]*Resource{}
	for _, r := range rs {
		if first, ok := seen[r.Key()]; ok {
			errs = append(errs, &Error{Source: r.Source, Key: r.Key(), Field: "metadata.name", Msg: "Duplicate value: also defined in " + first.Source.String()})
		}
		seen[r.Key()] = r
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return rs, nil
}

func (s *Store) conflict(r, old *Resource) *Error {
	return &Error{Source: r.Source, Key: r.Key(), Msg: fmt.Sprintf("defined in %s; edit that file", old.Source.File)}
}

// isApplied reports whether r was read from a file the Store wrote.
func (s *Store) isApplied(r *Resource) bool {
	return strings.HasPrefix(r.Source.File, s.applyDir+string(filepath.Separator))
}

func (s *Store) applyPath(k Key) string {
	return filepath.Join(s.applyDir, fmt.Sprintf("%s.%s.%s.yaml", k.Namespace, strings.ToLower(string(k.Kind)), k.Name))
}

// replace returns base with the resources of over replacing those with the
// same key, and the others of over appended.
func replace(base, over []*Resource) []*Resource {
	idx := map[Key]int{}
	out := make([]*Resource, 0, len(base)+len(over))
	for _, r := range base {
		idx[r.Key()] = len(out)
		out = append(out, r)
	}
	for _, r := range over {
		if i, ok := idx[r.Key()]; ok {
			out[i] = r
			continue
		}
		idx[r.Key()] = len(out)
		out = append(out, r)
	}
	return out
}

// encodeResource renders r as a YAML document Decode reads back to the same
// resource.
func encodeResource(r *Resource) ([]byte, error) {
	js, err := protojson.Marshal(r.Spec)
	if err != nil {
		return nil, err
	}
	var spec map[string]any
	if err := json.Unmarshal(js, &spec); err != nil {
		return nil, err
	}
	md := map[string]any{"name": r.Name, "namespace": r.Namespace}
	if len(r.Labels) > 0 {
		md["labels"] = r.Labels
	}
	if len(r.Annotations) > 0 {
		md["annotations"] = r.Annotations
	}
	doc := []any{"apiVersion", r.APIVersion, "kind", string(r.Kind), "metadata", md, "spec", spec}
	if sec, ok := r.Spec.(*loomv1alpha1.KubernetesSecret); ok {
		// Kubernetes' shape: no spec; data base64, as kubectl writes it.
		data := map[string]string{}
		for k, v := range sec.GetData() {
			data[k] = base64.StdEncoding.EncodeToString(v)
		}
		doc = []any{"apiVersion", r.APIVersion, "kind", string(r.Kind), "metadata", md}
		if sec.GetType() != "" {
			doc = append(doc, "type", sec.GetType())
		}
		doc = append(doc, "data", data)
		if sec.GetImmutable() {
			doc = append(doc, "immutable", true)
		}
	}
	if svc, ok := r.Spec.(*loomv1alpha1.KubernetesService); ok {
		// Kubernetes' field names and targetPort's int-or-string shape.
		doc[len(doc)-1] = serviceToKube(svc)
	}
	n := &yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i < len(doc); i += 2 {
		var k, v yaml.Node
		if err := k.Encode(doc[i]); err != nil {
			return nil, err
		}
		if err := v.Encode(doc[i+1]); err != nil {
			return nil, err
		}
		n.Content = append(n.Content, &k, &v)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// fileWrite is one change writeAll makes: write data to path, or remove it.
type fileWrite struct {
	path   string
	data   []byte
	remove bool
}

// writeAll makes every change or none: each write goes to a temporary file
// renamed over the target, and on a failure the changes already made are
// undone.
func writeAll(ws []fileWrite) error {
	type undo struct {
		path  string
		old   []byte
		exist bool
	}
	var done []undo
	rollback := func() {
		for i := len(done) - 1; i >= 0; i-- {
			u := done[i]
			if u.exist {
				_ = writeAtomic(u.path, u.old)
			} else {
				_ = os.Remove(u.path)
			}
		}
	}
	for _, w := range ws {
		old, err := os.ReadFile(w.path)
		exist := err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			rollback()
			return err
		}
		if w.remove {
			err = os.Remove(w.path)
			if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		} else {
			err = writeAtomic(w.path, w.data)
		}
		if err != nil {
			rollback()
			return err
		}
		done = append(done, undo{path: w.path, old: old, exist: exist})
	}
	return nil
}

// writeAtomic replaces path with data, mode 0600, whole or not at all.
func writeAtomic(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }

// storeError is a list of resource errors of one kind (ErrDefinedInFile or
// ErrNotFound): errors.Is matches the kind, errors.As finds the Errors, and
// its text is one "FILE:LINE: KIND NS/NAME: MSG" line per resource.
type storeError struct {
	kind error
	errs Errors
}

func (e *storeError) Error() string   { return e.errs.Error() }
func (e *storeError) Unwrap() []error { return []error{e.kind, e.errs} }
