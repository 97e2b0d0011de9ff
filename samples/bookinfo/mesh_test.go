package bookinfo_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/samples/bookinfo"
)

var update = flag.Bool("update", false, "rewrite mesh/workloads.yaml from WorkloadEntriesYAML")

func TestWorkloadEntriesYAMLMatchesCommittedFile(t *testing.T) {
	got := bookinfo.WorkloadEntriesYAML("127.0.0.")
	if *update {
		if err := os.WriteFile("mesh/workloads.yaml", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := bookinfo.MeshFS.ReadFile("mesh/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile("mesh/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, onDisk) && !*update {
		t.Fatal("embedded mesh/workloads.yaml differs from the file on disk")
	}
	if !bytes.Equal(got, onDisk) {
		t.Errorf("WorkloadEntriesYAML(\"127.0.0.\") differs from mesh/workloads.yaml (-want +got):\n%s", cmp.Diff(string(onDisk), string(got)))
	}
}

func TestWorkloadEntriesYAMLOtherSubnet(t *testing.T) {
	got := string(bookinfo.WorkloadEntriesYAML("127.42.0."))
	if strings.Contains(got, "127.0.0.") {
		t.Errorf("output still names the default subnet:\n%s", got)
	}
	for _, w := range bookinfo.Workloads {
		if want := "address: " + w.Address("127.42.0.") + "\n"; !strings.Contains(got, want) {
			t.Errorf("missing %q", want)
		}
	}
}

// resource is one decoded document of a mesh file.
type resource struct {
	Kind, Name, Namespace string
	Spec                  proto.Message
}

// decodeMesh decodes a multi-document file into istio.io/api specs,
// rejecting unknown fields as Istio's schema does.
func decodeMesh(t *testing.T, file string, data []byte) []resource {
	t.Helper()
	var out []resource
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc struct {
			APIVersion string         `yaml:"apiVersion"`
			Kind       string         `yaml:"kind"`
			Metadata   map[string]any `yaml:"metadata"`
			Spec       map[string]any `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if doc.APIVersion != "networking.istio.io/v1" {
			t.Errorf("%s: apiVersion %q", file, doc.APIVersion)
		}
		var spec proto.Message
		switch doc.Kind {
		case "ServiceEntry":
			spec = &networking.ServiceEntry{}
		case "WorkloadEntry":
			spec = &networking.WorkloadEntry{}
		default:
			t.Fatalf("%s: unexpected kind %q", file, doc.Kind)
		}
		js, err := json.Marshal(doc.Spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := protojson.Unmarshal(js, spec); err != nil {
			t.Fatalf("%s: %s spec: %v", file, doc.Kind, err)
		}
		name, _ := doc.Metadata["name"].(string)
		ns, _ := doc.Metadata["namespace"].(string)
		out = append(out, resource{doc.Kind, name, ns, spec})
	}
}

// TestMeshDecodes reads the committed mesh config into Istio's API types and
// checks it says what common.md agreed: a STATIC MESH_INTERNAL ServiceEntry
// per service selecting app=<svc>, and a WorkloadEntry per workload.
func TestMeshDecodes(t *testing.T) {
	var all []resource
	for _, f := range []string{"mesh/services.yaml", "mesh/workloads.yaml"} {
		data, err := bookinfo.MeshFS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, decodeMesh(t, f, data)...)
	}

	type se struct {
		Name, Host, Location, Resolution, Selector string
		Ports                                      []string
	}
	type we struct {
		Name, Address, SA string
		Labels            map[string]string
	}
	var gotSE []se
	var gotWE []we
	for _, r := range all {
		if r.Namespace != "default" {
			t.Errorf("%s %s: namespace %q, want default", r.Kind, r.Name, r.Namespace)
		}
		switch spec := r.Spec.(type) {
		case *networking.ServiceEntry:
			var ports []string
			for _, p := range spec.GetPorts() {
				ports = append(ports, p.GetName()+"/"+p.GetProtocol()+"/"+itoa(int(p.GetNumber())))
			}
			gotSE = append(gotSE, se{r.Name, strings.Join(spec.GetHosts(), ","), spec.GetLocation().String(),
				spec.GetResolution().String(), spec.GetWorkloadSelector().GetLabels()["app"], ports})
		case *networking.WorkloadEntry:
			gotWE = append(gotWE, we{r.Name, spec.GetAddress(), spec.GetServiceAccount(), spec.GetLabels()})
		default:
			t.Errorf("unexpected %s %s", r.Kind, r.Name)
		}
	}
	var wantSE []se
	for _, s := range bookinfo.Services {
		wantSE = append(wantSE, se{s, s + ".default.svc.cluster.local", "MESH_INTERNAL", "STATIC", s, []string{"http/HTTP/9080"}})
	}
	wantWE := []we{
		{"productpage-v1", "127.0.0.11", "bookinfo-productpage", map[string]string{"app": "productpage", "version": "v1", "security.istio.io/tlsMode": "istio"}},
		{"details-v1", "127.0.0.12", "bookinfo-details", map[string]string{"app": "details", "version": "v1", "security.istio.io/tlsMode": "istio"}},
		{"reviews-v1", "127.0.0.13", "bookinfo-reviews", map[string]string{"app": "reviews", "version": "v1", "security.istio.io/tlsMode": "istio"}},
		{"reviews-v2", "127.0.0.14", "bookinfo-reviews", map[string]string{"app": "reviews", "version": "v2", "security.istio.io/tlsMode": "istio"}},
		{"reviews-v3", "127.0.0.15", "bookinfo-reviews", map[string]string{"app": "reviews", "version": "v3", "security.istio.io/tlsMode": "istio"}},
		{"ratings-v1", "127.0.0.16", "bookinfo-ratings", map[string]string{"app": "ratings", "version": "v1", "security.istio.io/tlsMode": "istio"}},
	}
	if d := cmp.Diff(wantSE, gotSE); d != "" {
		t.Errorf("ServiceEntries (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantWE, gotWE); d != "" {
		t.Errorf("WorkloadEntries (-want +got):\n%s", d)
	}
	for i, w := range bookinfo.Workloads {
		if i < len(gotWE) {
			if d := cmp.Diff(gotWE[i].Labels, w.Labels()); d != "" {
				t.Errorf("%s Labels() (-yaml +got):\n%s", w.Name, d)
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
