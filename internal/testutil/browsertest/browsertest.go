// Package browsertest starts headless Chromium (Debian's chromium package)
// for tests driven by chromedp, and saves their screenshots as artifacts.
// It imports neither plane.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// RequireEnv, when set to 1 (make test sets it), turns a missing browser
// or front-end bundle into a failure instead of a skip.
const RequireEnv = "LOOM_REQUIRE_BROWSER"

// ArtifactsEnv names a directory for screenshots; default the module's
// test/e2e/artifacts (git-ignored).
const ArtifactsEnv = "LOOM_ARTIFACTS"

// SkipOrFail skips t with why, or fails it when RequireEnv is set.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1: a browser test must run)", why, RequireEnv)
	}
	t.Skip(why)
}

// chromiumPath finds the browser: Debian's chromium, or another Chromium
// or Chrome in PATH.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// New starts a headless Chromium with the flags known to work on these
// machines (no sandbox as root, no GPU, no QUIC, no first-run or
// background networking, no component updates, no sync) and a fresh
// profile, and returns a chromedp context for one tab. The browser is
// stopped when the test ends. Without a browser the test is skipped (see
// SkipOrFail).
func New(t testing.TB) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		SkipOrFail(t, "no Chromium in PATH: install Debian's chromium package (make test does)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser; it must not carry a timeout.
	start := time.Now()
	if _, err := chromedp.Run(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	t.Logf("headless %s started in %v", path, time.Since(start).Round(time.Millisecond))
	return ctx
}

// ArtifactsDir is where screenshots go: $LOOM_ARTIFACTS, else
// test/e2e/artifacts under the module root (found from the working
// directory). It is created.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		root, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(root)
			if parent == root {
				t.Fatal("no go.mod above the working directory")
			}
			root = parent
		}
		dir = filepath.Join(root, "test", "e2e", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Screenshot saves a PNG of the whole page as ArtifactsDir/name and logs
// its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(ArtifactsDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot saved: %s (%d bytes)", p, len(png))
	return p
}
