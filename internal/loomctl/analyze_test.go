package loomctl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAnalyzeCommand(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "svc.yaml")
	const in = `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: web, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: tcp-api, port: 80, appProtocol: http}]
`
	if err := os.WriteFile(f, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := AnalyzeCommand([]string{f}, &out); err != nil {
		t.Fatalf("AnalyzeCommand: %v (an Info message is no failure)", err)
	}
	want := "Info [IST0118] (Service default/web " + f + ":1) Port name web (port: 80, targetPort: 8080) doesn't follow the naming convention of Istio port.\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}

	// A resource that does not validate is reported, and fails the command.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{name: http, port: 70000}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := AnalyzeCommand([]string{bad}, &out); !errors.Is(err, ErrReported) {
		t.Fatalf("AnalyzeCommand(bad) = %v, want ErrReported", err)
	}
	if !strings.Contains(out.String(), "spec.ports[0].port: Invalid value: 70000") {
		t.Errorf("output %q does not name the bad port", out.String())
	}

	out.Reset()
	if err := AnalyzeCommand([]string{filepath.Join("../../../shared/istio-samples", "analyzers/service-port-name.yaml")}, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "✔ No validation issues found when analyzing 3 resources.\n" {
		t.Errorf("Istio's sample: %q", got)
	}
}

// TestAnalyzeCommandCrossFile checks analyze reports the problems validate
// finds across files (here the same Service defined in two), fails on
// them, and leaves the offending definition out of the analysis.
func TestAnalyzeCommandCrossFile(t *testing.T) {
	dir := t.TempDir()
	const svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{name: http-web, port: 80}]\n"
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	for _, f := range []string{a, b} {
		if err := os.WriteFile(f, []byte(svc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var validated bytes.Buffer
	if err := ValidateCommand([]string{a, b}, &validated); !errors.Is(err, ErrReported) {
		t.Fatalf("ValidateCommand = %v, want ErrReported", err)
	}
	var out bytes.Buffer
	if err := AnalyzeCommand([]string{a, b}, &out); !errors.Is(err, ErrReported) {
		t.Fatalf("AnalyzeCommand = %v, want ErrReported; output:\n%s", err, out.String())
	}
	if out.String() != validated.String() {
		t.Errorf("analyze printed:\n%s\nwant what validate prints:\n%s", out.String(), validated.String())
	}
	if !strings.Contains(out.String(), "Duplicate value: ") {
		t.Errorf("output %q does not report the duplicate", out.String())
	}
}
