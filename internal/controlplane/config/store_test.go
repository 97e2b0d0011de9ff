package config_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
)

const drYAML = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`

func vsYAML(subset string) string {
	return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: ` + subset + `}
`
}

const gwYAML = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
`

func newStore(t *testing.T, dir string) *config.Store {
	t.Helper()
	s, err := config.NewStore(config.StoreOptions{
		Dir:      dir,
		Validate: validation.ValidateAll,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Debounce: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run starts s.Run and stops it when the test ends.
func run(t *testing.T, s *config.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// eventually polls cond until it holds or a second has passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 1s: %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an event
	}
}

func subset(s *config.Store) string {
	r := s.Snapshot().Get(config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "reviews"})
	if r == nil {
		return ""
	}
	return r.Spec.(*networking.VirtualService).Http[0].Route[0].Destination.Subset
}

func TestStoreLoad(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "dr.yaml"), drYAML)
	write(t, filepath.Join(dir, "sub", "vs.yml"), vsYAML("v1"))
	write(t, filepath.Join(dir, "notes.txt"), "not config")
	write(t, filepath.Join(dir, ".hidden", "x.yaml"), "garbage: [")
	s := newStore(t, dir)
	if got := s.Snapshot(); got == nil || got.Len() != 0 {
		t.Fatalf("before Load: %v", got)
	}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	if snap.Version != 1 || snap.Len() != 2 || subset(s) != "v1" || s.Errors() != nil {
		t.Fatalf("snapshot v%d len %d subset %q errors %v", snap.Version, snap.Len(), subset(s), s.Errors())
	}
	vs := snap.Get(config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "reviews"})
	if want := (config.Source{File: filepath.Join(dir, "sub", "vs.yml"), Line: 1}); vs.Source != want {
		t.Errorf("source = %v, want %v", vs.Source, want)
	}
	// Rereading an unchanged directory publishes nothing.
	if err := s.Load(); err != nil || s.Snapshot() != snap {
		t.Fatalf("reload of unchanged dir: err %v, new snapshot %v", err, s.Snapshot().Version)
	}
}

func TestStoreLoadInvalid(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "vs.yaml"), vsYAML("v9"))
	s := newStore(t, dir)
	err := s.Load()
	var errs config.Errors
	if !errors.As(err, &errs) || len(errs) != 1 {
		t.Fatalf("Load = %v, want one config error", err)
	}
	want := filepath.Join(dir, "vs.yaml") + `:1: VirtualService default/reviews: spec.http[0].route[0].destination.subset: Invalid value: "v9": no DestinationRule for host "reviews.default.svc.cluster.local" (subset "v9" is undefined)`
	if diff := cmp.Diff(want, errs.Error()); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	if s.Snapshot().Len() != 0 || s.Errors().Error() != want {
		t.Errorf("snapshot len %d, Errors %v", s.Snapshot().Len(), s.Errors())
	}
	if _, err := config.NewStore(config.StoreOptions{}); err == nil {
		t.Error("NewStore without Dir succeeded")
	}
	missing := newStore(t, filepath.Join(dir, "missing"))
	if err := missing.Load(); err == nil {
		t.Error("Load of a missing dir succeeded")
	}
}

func TestStoreWatch(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "dr.yaml"), drYAML)
	write(t, filepath.Join(dir, "vs.yaml"), vsYAML("v1"))
	s := newStore(t, dir)
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	sub := s.Subscribe()
	run(t, s)

	write(t, filepath.Join(dir, "vs.yaml"), vsYAML("v2"))
	eventually(t, "edit applied", func() bool { return subset(s) == "v2" })
	select {
	case <-sub:
	default:
		t.Error("no notification after a new snapshot")
	}

	// A file in a directory created after Run started.
	write(t, filepath.Join(dir, "new", "deeper", "gw.yaml"), gwYAML)
	gwKey := config.Key{Kind: config.KindGateway, Namespace: "default", Name: "bookinfo-gateway"}
	eventually(t, "new subdirectory read", func() bool { return s.Snapshot().Get(gwKey) != nil })

	// An invalid edit keeps the last good snapshot and says why.
	good := s.Snapshot()
	write(t, filepath.Join(dir, "vs.yaml"), strings.Replace(vsYAML("v1"), "hosts: [reviews]", "hosts: [re..views]", 1))
	eventually(t, "error recorded", func() bool { return s.Errors() != nil })
	want := filepath.Join(dir, "vs.yaml") + ":1: VirtualService default/reviews: spec.hosts[0]: Invalid value: \"re..views\": domain name label \"\" is not a DNS-1123 label"
	if got := s.Errors().Error(); got != want {
		t.Errorf("Errors() = %q, want %q", got, want)
	}
	if s.Snapshot() != good {
		t.Error("an invalid edit replaced the snapshot")
	}

	// Fixing it recovers.
	write(t, filepath.Join(dir, "vs.yaml"), vsYAML("v1"))
	eventually(t, "recovered", func() bool { return s.Errors() == nil && subset(s) == "v1" })
	if v := s.Snapshot().Version; v <= good.Version {
		t.Errorf("version %d after recovery, was %d", v, good.Version)
	}

	// Removing a file removes its resources.
	if err := os.RemoveAll(filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "removal applied", func() bool { return s.Snapshot().Get(gwKey) == nil })
}

func TestStoreApplyDelete(t *testing.T) {
	dir := t.TempDir()
	drFile := filepath.Join(dir, "dr.yaml")
	write(t, drFile, drYAML)
	s := newStore(t, dir)
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	vsKey := config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "reviews"}
	gwKey := config.Key{Kind: config.KindGateway, Namespace: "default", Name: "bookinfo-gateway"}
	applied := filepath.Join(dir, "loomctl", "default.virtualservice.reviews.yaml")

	// Validate changes nothing.
	res, err := s.Validate("req.yaml", []byte(vsYAML("v1")))
	if err != nil || len(res) != 1 || res[0].Action != config.ActionCreated || s.Snapshot().Get(vsKey) != nil {
		t.Fatalf("Validate = %v, %v", res, err)
	}

	res, err = s.Apply("req.yaml", []byte(vsYAML("v1")+"---\n"+gwYAML))
	if err != nil {
		t.Fatal(err)
	}
	want := []config.Result{{Key: vsKey, Action: config.ActionCreated}, {Key: gwKey, Action: config.ActionCreated}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if subset(s) != "v1" || s.Snapshot().Get(gwKey) == nil {
		t.Fatal("Apply did not publish before returning")
	}
	if _, err := os.Stat(applied); err != nil {
		t.Fatalf("applied file: %v", err)
	}
	// The watcher's (or any) reread of the written files is a no-op.
	v := s.Snapshot().Version
	if err := s.Load(); err != nil || s.Snapshot().Version != v {
		t.Fatalf("reread after Apply: err %v, version %d -> %d", err, v, s.Snapshot().Version)
	}

	res, err = s.Apply("req.yaml", []byte(vsYAML("v1")))
	if err != nil || res[0].Action != config.ActionUnchanged || s.Snapshot().Version != v {
		t.Fatalf("re-apply = %v, %v, version %d", res, err, s.Snapshot().Version)
	}
	res, err = s.Apply("req.yaml", []byte(vsYAML("v2")))
	if err != nil || res[0].Action != config.ActionConfigured || subset(s) != "v2" {
		t.Fatalf("apply change = %v, %v, subset %q", res, err, subset(s))
	}

	// Invalid: 400-style Errors, nothing written or published.
	before := s.Snapshot()
	_, err = s.Apply("bad.yaml", []byte(gwYAML+"---\n"+vsYAML("v7")))
	var errs config.Errors
	if !errors.As(err, &errs) || errors.Is(err, config.ErrDefinedInFile) {
		t.Fatalf("invalid apply = %v", err)
	}
	wantErr := `bad.yaml:11: VirtualService default/reviews: spec.http[0].route[0].destination.subset: Invalid value: "v7": no DestinationRule for host "reviews.default.svc.cluster.local" defines subset "v7"`
	if err.Error() != wantErr {
		t.Errorf("invalid apply error\n got %q\nwant %q", err, wantErr)
	}
	if s.Snapshot() != before || subset(s) != "v2" {
		t.Error("an invalid apply changed the snapshot")
	}

	// 409: the DestinationRule is defined in a user file.
	_, err = s.Apply("req.yaml", []byte(drYAML))
	if !errors.Is(err, config.ErrDefinedInFile) {
		t.Fatalf("apply over a user file = %v", err)
	}
	if want := "req.yaml:1: DestinationRule default/reviews: defined in " + drFile + "; edit that file"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if _, err = s.Delete("req.yaml", []byte(drYAML)); !errors.Is(err, config.ErrDefinedInFile) {
		t.Fatalf("delete of a user file's resource = %v", err)
	}

	// 404.
	_, err = s.Delete("req.yaml", []byte(strings.Replace(gwYAML, "bookinfo-gateway", "other", 1)))
	if !errors.Is(err, config.ErrNotFound) || !strings.Contains(err.Error(), "req.yaml:1: Gateway default/other: not found") {
		t.Fatalf("delete of unknown = %v", err)
	}

	res, err = s.Delete("req.yaml", []byte(vsYAML("v2")))
	if err != nil || len(res) != 1 || res[0] != (config.Result{Key: vsKey, Action: config.ActionDeleted}) {
		t.Fatalf("Delete = %v, %v", res, err)
	}
	if s.Snapshot().Get(vsKey) != nil {
		t.Error("Delete did not publish")
	}
	if _, err := os.Stat(applied); !os.IsNotExist(err) {
		t.Errorf("applied file still there: %v", err)
	}
	if _, err := s.Delete("req.yaml", []byte(vsYAML("v2"))); !errors.Is(err, config.ErrNotFound) {
		t.Errorf("second Delete = %v", err)
	}
	// The watcher agrees with what Apply/Delete published.
	v = s.Snapshot().Version
	if err := s.Load(); err != nil || s.Snapshot().Version != v {
		t.Fatalf("reread after Delete: err %v, version %d -> %d", err, v, s.Snapshot().Version)
	}
}

func TestStoreDeleteKeepsSetValid(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "vs.yaml"), vsYAML("v1"))
	s := newStore(t, dir)
	if err := s.Load(); err == nil {
		t.Fatal("VirtualService with no DestinationRule loaded")
	}
	if _, err := s.Apply("dr.yaml", []byte(drYAML)); err != nil {
		t.Fatal(err) // the current (empty) snapshot plus the DR is valid
	}
	if err := s.Load(); err != nil {
		t.Fatalf("with the applied DR the dir is valid: %v", err)
	}
	// Deleting the DR would leave the VirtualService's subset undefined.
	_, err := s.Delete("dr.yaml", []byte(drYAML))
	var errs config.Errors
	if !errors.As(err, &errs) || !strings.Contains(err.Error(), `spec.http[0].route[0].destination.subset`) {
		t.Fatalf("Delete = %v, want a validation error", err)
	}
	if s.Snapshot().Len() != 2 {
		t.Errorf("snapshot has %d resources, want 2", s.Snapshot().Len())
	}
}

// configMapDir lays out files as a Kubernetes ConfigMap volume does: the
// data in a "..<timestamp>" directory, a "..data" symlink to it, and each
// file a symlink through "..data". It returns the timestamp directory.
func configMapDir(t *testing.T, dir, stamp string, files map[string]string) string {
	t.Helper()
	data := filepath.Join(dir, stamp)
	for name, content := range files {
		write(t, filepath.Join(data, name), content)
	}
	return data
}

// swapConfigMap does what the kubelet does on a ConfigMap update: a new
// timestamp directory, a "..data_tmp" symlink to it renamed over
// "..data", then the old directory removed.
func swapConfigMap(t *testing.T, dir, oldStamp, newStamp string, files map[string]string) {
	t.Helper()
	configMapDir(t, dir, newStamp, files)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(newStamp, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, oldStamp)); err != nil {
		t.Fatal(err)
	}
}

func TestStoreWatchConfigMapVolume(t *testing.T) {
	dir := t.TempDir()
	configMapDir(t, dir, "..2026_11_22_00_00_00.1", map[string]string{"dr.yaml": drYAML, "vs.yaml": vsYAML("v1")})
	if err := os.Symlink("..2026_11_22_00_00_00.1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"dr.yaml", "vs.yaml"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	s := newStore(t, dir)
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	if got := s.Snapshot().Len(); got != 2 || subset(s) != "v1" {
		t.Fatalf("after Load: %d resources, subset %q; want 2 and v1 (read once, through the symlinks)", got, subset(s))
	}
	run(t, s)

	// An event on a plain file first: once it is applied, the watcher's
	// initial reread is behind us, so only the swap's events can make the
	// next change seen.
	write(t, filepath.Join(dir, "gw.yaml"), gwYAML)
	gwKey := config.Key{Kind: config.KindGateway, Namespace: "default", Name: "bookinfo-gateway"}
	eventually(t, "plain file read", func() bool { return s.Snapshot().Get(gwKey) != nil })

	swapConfigMap(t, dir, "..2026_11_22_00_00_00.1", "..2026_11_22_00_01_00.2",
		map[string]string{"dr.yaml": drYAML, "vs.yaml": vsYAML("v2")})
	eventually(t, "ConfigMap update applied", func() bool { return subset(s) == "v2" })
	if got := s.Snapshot().Len(); got != 3 || s.Errors() != nil {
		t.Fatalf("after the swap: %d resources, errors %v; want 3 (the data dirs are not read twice)", got, s.Errors())
	}
}

func TestStoreLoaded(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "vs.yaml"), vsYAML("v9")) // invalid: no DestinationRule
	s := newStore(t, dir)
	if s.Loaded() {
		t.Fatal("Loaded before Load")
	}
	if err := s.Load(); err == nil {
		t.Fatal("Load of an invalid dir succeeded")
	}
	if !s.Loaded() {
		t.Fatal("not Loaded after a Load that found errors")
	}
}
