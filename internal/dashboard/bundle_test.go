package dashboard

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestFreshCloneWithoutBundle: a fresh clone has only dist/'s README.md
// and .gitignore, not the bundle, and the package still builds, vets and
// serves its "not built" page with the bundle's files hidden (a go
// -overlay that deletes them, as a clone without `make ui` lacks them).
func TestFreshCloneWithoutBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package again")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	if git, err := exec.LookPath("git"); err == nil {
		out, err := exec.Command(git, "ls-files", "web/dist").Output()
		if err == nil && len(out) > 0 {
			files := strings.Fields(string(out))
			if !slices.Equal(files, []string{"web/dist/.gitignore", "web/dist/README.md"}) {
				t.Errorf("git tracks %v in web/dist; want only its .gitignore and README.md (the bundle is built, not committed)", files)
			}
		}
	}
	if !BundleBuilt() {
		t.Skip("the bundle is not built here: TestIndex already checks the not-built page")
	}
	entries, err := os.ReadDir("web/dist")
	if err != nil {
		t.Fatal(err)
	}
	replace := map[string]string{}
	for _, e := range entries {
		if n := e.Name(); n != "README.md" && n != ".gitignore" {
			abs, err := filepath.Abs(filepath.Join("web/dist", n))
			if err != nil {
				t.Fatal(err)
			}
			replace[abs] = "" // deleted
		}
	}
	b, _ := json.Marshal(map[string]any{"Replace": replace})
	overlay := filepath.Join(t.TempDir(), "overlay.json")
	if err := os.WriteFile(overlay, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"vet", "-overlay", overlay, "."},
		{"test", "-overlay", overlay, "-count=1", "-run", "^TestIndex$", "-v", "."},
	} {
		cmd := exec.Command(goTool, args...)
		cmd.Env = append(os.Environ(), "LOOM_REQUIRE_BROWSER=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s without the bundle: %v\n%s", strings.Join(args, " "), err, out)
		}
		if args[0] == "test" && (!strings.Contains(string(out), "--- PASS: TestIndex") || !strings.Contains(string(out), "bundle built: false")) {
			t.Fatalf("go test without the bundle did not pass TestIndex with the bundle hidden:\n%s", out)
		}
	}
}
