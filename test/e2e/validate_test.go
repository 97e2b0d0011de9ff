package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// crdCorpus is Istio's schema-validation corpus (pkg/config/validation/
// testdata/crds): documents that must be accepted, and documents carrying
// the error Istio expects in an `_err` key.
const crdCorpus = "../../../shared/istio-samples/validation-crds"

// TestLoomctlValidateAgreesWithIstio runs the real loomctl binary on every
// DestinationRule, ServiceEntry, WorkloadEntry, AuthorizationPolicy,
// PeerAuthentication, RequestAuthentication and Telemetry document of Istio's corpus,
// one file per document with `_err` stripped: a valid document must exit
// 0, an invalid one must exit 1 naming the field Istio names.
func TestLoomctlValidateAgreesWithIstio(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(crdCorpus, "expected.json"))
	if err != nil {
		t.Fatalf("Istio's validation corpus is missing (%v): check out shared/istio-samples beside the module", err)
	}
	var expected struct {
		Cases []struct {
			File   string `json:"file"`
			Doc    int    `json:"doc"`
			Kind   string `json:"kind"`
			Name   string `json:"name"`
			Expect string `json:"expect"`
			Error  string `json:"error"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &expected); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{"DestinationRule": true, "ServiceEntry": true, "WorkloadEntry": true,
		"AuthorizationPolicy": true, "PeerAuthentication": true, "RequestAuthentication": true, "Telemetry": true}
	docs := map[string][]*yaml.Node{}
	dir := t.TempDir()
	checked := 0
	for _, c := range expected.Cases {
		if !kinds[c.Kind] {
			continue
		}
		if docs[c.File] == nil {
			docs[c.File] = readDocs(t, filepath.Join(crdCorpus, c.File))
		}
		if c.Doc >= len(docs[c.File]) {
			t.Fatalf("%s has no document %d", c.File, c.Doc)
		}
		doc := stripKey(docs[c.File][c.Doc], "_err")
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		if err := enc.Encode(doc); err != nil {
			t.Fatal(err)
		}
		enc.Close()
		f := filepath.Join(dir, strings.TrimSuffix(c.File, ".yaml")+"-"+string(rune('a'+c.Doc))+".yaml")
		if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := loomctl(t, "validate", "--offline", "-f", f)
		checked++
		switch c.Expect {
		case "accept":
			if code != 0 {
				t.Errorf("%s doc %d (%s %s): Istio accepts it, loomctl validate exit %d:\n%s%s", c.File, c.Doc, c.Kind, c.Name, code, stdout, stderr)
			}
		case "reject":
			if code != 1 {
				t.Errorf("%s doc %d (%s %s): Istio rejects it (%q), loomctl validate exit %d:\n%s%s", c.File, c.Doc, c.Kind, c.Name, c.Error, code, stdout, stderr)
				continue
			}
			// Istio's text is "FIELD.PATH: Reason", Kubernetes' schema
			// text "FIELD.PATH in body should ..." (the path may be cut
			// to its tail, as "audiences[0]"), or a sentence; ours must
			// name the same field, or say the same sentence.
			want := c.Error
			if path, _, ok := strings.Cut(c.Error, ": "); ok && strings.HasPrefix(path, "spec") {
				want = path
			} else if path, _, ok := strings.Cut(c.Error, " in body "); ok && !strings.Contains(path, " ") {
				want = path
			}
			if !strings.Contains(stdout, want) {
				t.Errorf("%s doc %d (%s %s): Istio says %q; loomctl names neither its field nor its words:\n%s", c.File, c.Doc, c.Kind, c.Name, c.Error, stdout)
			}
		default:
			t.Fatalf("unknown expectation %q", c.Expect)
		}
	}
	t.Logf("%d documents checked with the loomctl binary", checked)
	if checked < 20 {
		t.Fatalf("only %d documents checked: the corpus changed under this test", checked)
	}
}

func readDocs(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, &n)
	}
}

// stripKey returns doc without the top-level mapping key.
func stripKey(doc *yaml.Node, key string) *yaml.Node {
	m := doc
	if m.Kind == yaml.DocumentNode && len(m.Content) == 1 {
		m = m.Content[0]
	}
	if m.Kind != yaml.MappingNode {
		return doc
	}
	kept := make([]*yaml.Node, 0, len(m.Content))
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			continue
		}
		kept = append(kept, m.Content[i], m.Content[i+1])
	}
	m.Content = kept
	return doc
}
