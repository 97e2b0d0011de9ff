package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

const samples = "../../../../shared/istio-samples"

func TestDecodeBookinfoSamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(samples, "bookinfo/networking/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found (%v): shared/ must be beside the project", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rs, errs := Decode(f, data)
		if len(errs) > 0 {
			t.Errorf("%s: %v", f, errs)
		}
		if len(rs) == 0 {
			t.Errorf("%s: no resources", f)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, rs []*Resource)
	}{
		{
			name: "multi-document, versions",
			in: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
---
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: prod}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
`,
			check: func(t *testing.T, rs []*Resource) {
				if len(rs) != 2 {
					t.Fatalf("got %d resources", len(rs))
				}
				vs := rs[0].Spec.(*networking.VirtualService)
				if vs.Http[0].Route[0].Destination.Subset != "v1" || rs[0].Namespace != "default" || rs[0].Source.Line != 1 {
					t.Fatalf("vs = %v, %+v", vs, rs[0])
				}
				if rs[1].Namespace != "prod" || rs[1].Source.Line != 11 {
					t.Fatalf("dr = %+v", rs[1])
				}
			},
		},
		{name: "unknown field path", in: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - rout: []\n",
			wantErr: "f.yaml:1: VirtualService default/r: spec.http[0].rout: unknown field"},
		{name: "unknown kind", in: "apiVersion: networking.istio.io/v1\nkind: Mystery\nmetadata: {name: r}\n", wantErr: `unknown kind "Mystery"`},
		{name: "bad version", in: "apiVersion: networking.istio.io/v9\nkind: Gateway\nmetadata: {name: r}\n", wantErr: "apiVersion"},
		{name: "malformed", in: "apiVersion: [\n", wantErr: "f.yaml: malformed YAML"},
		{name: "no name", in: "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {}\n", wantErr: "metadata.name: required"},
		{name: "wrong type", in: "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: r\n", wantErr: "spec.hosts: must be a list"},
		{name: "bad enum", in: "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r}\nspec:\n  hosts: [a]\n  resolution: SOMETIMES\n", wantErr: "SOMETIMES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, errs := Decode("f.yaml", []byte(tt.in))
			if tt.wantErr != "" {
				if len(errs) == 0 || !strings.Contains(errs.Error(), tt.wantErr) {
					t.Fatalf("errs = %v, want %q", errs, tt.wantErr)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			tt.check(t, rs)
		})
	}
}
