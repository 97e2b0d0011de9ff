package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds the binaries TestMain built; skipReason is set when they
// could not be built because there is no go tool.
var (
	binDir     string
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	goTool, err := exec.LookPath("go")
	if err != nil {
		skipReason = "e2e: SKIPPED: the go tool is not in PATH, so the binaries cannot be built"
		fmt.Fprintln(os.Stderr, skipReason)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "loom-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(goTool, "build", "-o", dir+string(filepath.Separator),
		"./cmd/loomd", "./cmd/loom-proxy", "./cmd/loomctl", "./samples/bookinfo/cmd/bookinfo")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building the binaries: %v\n%s", err, out)
		return 1
	}
	binDir = dir
	return m.Run()
}
