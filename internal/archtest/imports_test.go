package archtest

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/loom-mesh/loom"

// rule forbids packages under from depending (directly or not) on any
// package under one of the forbidden prefixes.
type rule struct {
	from      string
	forbidden []string
	why       string
}

var rules = []rule{
	{from: module + "/internal/controlplane", forbidden: []string{module + "/internal/dataplane"},
		why: "the planes share only xDS: controlplane must not import dataplane"},
	{from: module + "/internal/dataplane", forbidden: []string{module + "/internal/controlplane", "k8s.io/client-go"},
		why: "the planes share only xDS: dataplane must not import controlplane or client-go"},
	{from: module + "/internal/xdsapi", forbidden: []string{module + "/internal/", "k8s.io/", "istio.io/"},
		why: "xdsapi is the shared leaf: it imports only envoy protos and the standard library"},
	{from: module + "/internal/bootstraptoken", forbidden: []string{module + "/internal/controlplane", module + "/internal/dataplane", module + "/internal/loomctl",
		"k8s.io/", "istio.io/", "google.golang.org/", "golang.org/x/", "github.com/envoyproxy/", "github.com/spiffe/"},
		why: "bootstraptoken is a leaf both planes and loomctl share: it imports only the standard library and atomicfile"},
	{from: module + "/internal/atomicfile", forbidden: []string{module + "/", "k8s.io/", "istio.io/", "google.golang.org/", "github.com/"},
		why: "atomicfile is a leaf: it imports only the standard library"},
	{from: module + "/internal/httpserve", forbidden: []string{module + "/", "k8s.io/", "istio.io/", "google.golang.org/", "github.com/"},
		why: "httpserve is a leaf: it imports only the standard library"},
	{from: module + "/internal/metricnames", forbidden: []string{module + "/", "k8s.io/", "istio.io/", "google.golang.org/", "github.com/"},
		why: "metricnames is the one list of metric names both planes and the dashboards share: standard library only"},
	{from: module + "/internal/statsexpr", forbidden: []string{module + "/", "k8s.io/", "istio.io/", "google.golang.org/", "github.com/"},
		why: "statsexpr is the one parser of metric tag expressions both planes share: standard library only"},
	{from: module + "/internal/dashboard", forbidden: []string{module + "/internal/dataplane", "k8s.io/client-go"},
		why: "the dashboard is loomd's: it reads the control plane and the proxies' metrics endpoints, never proxy code"},
	{from: module + "/internal/controlplane/translate", forbidden: []string{module + "/internal/controlplane/xds", module + "/internal/controlplane/api", "k8s.io/client-go"},
		why: "translate reads only model"},
	{from: module + "/internal/controlplane/model", forbidden: []string{"k8s.io/client-go", "github.com/envoyproxy/"},
		why: "model holds no client-go and no xDS"},
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps=false", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"/...").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg, deps := fields[0], fields[1:]
		for _, r := range rules {
			if pkg != r.from && !strings.HasPrefix(pkg, r.from+"/") {
				continue
			}
			checked++
			for _, d := range deps {
				for _, f := range r.forbidden {
					if d == f || strings.HasPrefix(d, f) {
						t.Errorf("%s depends on %s: %s", pkg, d, r.why)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package was checked: the module layout changed under this test")
	}
}
