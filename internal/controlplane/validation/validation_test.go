package validation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

const samples = "../../../../shared/istio-samples"

func readSample(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(samples, rel))
	if err != nil {
		t.Fatalf("istio samples missing (%v): /work/shared must be beside the project", err)
	}
	return data
}

// TestIstioValidationCRDs runs Istio's own valid/invalid documents for the
// kinds Loom reads: every valid one must be accepted, every invalid one
// rejected with an error carrying the field path (or the text) of Istio's
// expected error.
func TestIstioValidationCRDs(t *testing.T) {
	type row struct{ file, name, want, got string }
	var disagree, gist []row
	total := 0
	for _, kind := range []string{"destinationrule", "serviceentry", "workloadentry"} {
		for _, suffix := range []string{"valid", "invalid"} {
			file := fmt.Sprintf("%s-%s.yaml", kind, suffix)
			data := readSample(t, "validation-crds/"+file)
			dec := yaml.NewDecoder(bytes.NewReader(data))
			for i := 0; ; i++ {
				var doc map[string]any
				err := dec.Decode(&doc)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("%s doc %d: %v", file, i, err)
				}
				if doc == nil {
					continue
				}
				total++
				wantErr, _ := doc["_err"].(string)
				delete(doc, "_err")
				if (suffix == "invalid") != (wantErr != "") {
					t.Fatalf("%s doc %d: _err = %q in a %s file", file, i, wantErr, suffix)
				}
				md, _ := doc["metadata"].(map[string]any)
				name := fmt.Sprint(md["name"])
				var got config.Errors
				r, err := config.DecodeObject(config.Source{File: file}, doc)
				if err != nil {
					var e *config.Error
					if !errors.As(err, &e) {
						t.Fatalf("%s %s: decode error %v is not a *config.Error", file, name, err)
					}
					got = config.Errors{e}
				} else {
					got = ValidateAll([]*config.Resource{r})
				}
				gotText := got.Error()
				if wantErr == "" {
					if len(got) > 0 {
						disagree = append(disagree, row{file, name, "accept", gotText})
					}
					continue
				}
				path, _, _ := strings.Cut(wantErr, ": ")
				switch {
				case len(got) == 0:
					disagree = append(disagree, row{file, name, wantErr, "accepted"})
				case !strings.Contains(gotText, path):
					disagree = append(disagree, row{file, name, wantErr, gotText})
				case !strings.Contains(gotText, wantErr):
					gist = append(gist, row{file, name, wantErr, gotText})
				}
			}
		}
	}
	if total < 20 {
		t.Fatalf("read only %d documents", total)
	}
	for _, r := range gist {
		t.Logf("path matches, wording differs: %s %s: Istio %q, Loom %q", r.file, r.name, r.want, r.got)
	}
	if len(disagree) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d of %d documents disagree with Istio:\n%-28s | %-28s | %-60s | %s\n", len(disagree), total, "FILE", "NAME", "ISTIO", "LOOM")
		for _, r := range disagree {
			fmt.Fprintf(&b, "%-28s | %-28s | %-60s | %s\n", r.file, r.name, r.want, strings.ReplaceAll(r.got, "\n", " / "))
		}
		t.Error(b.String())
	}
}

func decodeAll(t *testing.T, file string, data []byte) []*config.Resource {
	t.Helper()
	rs, errs := config.Decode(file, data)
	if len(errs) > 0 {
		t.Fatalf("decode %s: %v", file, errs)
	}
	return rs
}

// TestBookinfoValid checks that every bookinfo networking sample is valid,
// with destination-rule-all.yaml providing the subsets.
func TestBookinfoValid(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(samples, "bookinfo/networking/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bookinfo samples (%v): /work/shared must be beside the project", err)
	}
	drAll := decodeAll(t, "destination-rule-all.yaml", readSample(t, "bookinfo/networking/destination-rule-all.yaml"))
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rs := decodeAll(t, filepath.Base(f), data)
			defined := map[config.Key]bool{}
			for _, r := range rs {
				defined[r.Key()] = true
			}
			for _, r := range drAll {
				if !defined[r.Key()] {
					rs = append(rs, r)
				}
			}
			if errs := ValidateAll(rs); len(errs) > 0 {
				t.Fatalf("want valid, got:\n%v", errs)
			}
		})
	}
}

const drReviews = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`

func TestValidateAllInvalid(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{
			name: "bad regex",
			files: map[string]string{"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        regex: "/api/(v1"
    route:
    - destination: {host: reviews}
`},
			want: []string{`vs.yaml:1: VirtualService default/reviews: spec.http[0].match[0].uri.regex: Invalid value: "/api/(v1": not an RE2 regular expression: missing closing ): ` + "`/api/(v1`"},
		},
		{
			name: "header regex",
			files: map[string]string{"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {regex: "(?<=x)y"}
    route:
    - destination: {host: reviews}
`},
			want: []string{`vs.yaml:1: VirtualService prod/reviews: spec.http[0].match[0].headers[end-user].regex: Invalid value: "(?<=x)y": not an RE2 regular expression: invalid named capture: ` + "`(?<=x)y`"},
		},
		{
			name: "weights 60+30",
			files: map[string]string{"dr.yaml": drReviews, "vs.yaml": `# comment
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 60
    - destination: {host: reviews, subset: v2}
      weight: 30
`},
			want: []string{"vs.yaml:2: VirtualService default/reviews: spec.http[0].route: Invalid value: total destination weight 90 != 100"},
		},
		{
			name: "weight out of range",
			files: map[string]string{"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: 150
    - destination: {host: ratings}
      weight: -50
`},
			want: []string{
				"vs.yaml:1: VirtualService default/reviews: spec.http[0].route[0].weight: Invalid value: 150: must be between 0 and 100",
				"vs.yaml:1: VirtualService default/reviews: spec.http[0].route[1].weight: Invalid value: -50: must be between 0 and 100",
			},
		},
		{
			name: "undefined subset",
			files: map[string]string{"dr.yaml": drReviews, "vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
`},
			want: []string{`vs.yaml:1: VirtualService default/reviews: spec.http[0].route[1].destination.subset: Invalid value: "v3": no DestinationRule for host "reviews.default.svc.cluster.local" defines subset "v3"`},
		},
		{
			name: "subset with no DestinationRule in that namespace",
			files: map[string]string{"dr.yaml": drReviews, "vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
`},
			want: []string{`vs.yaml:1: VirtualService prod/reviews: spec.http[0].route[0].destination.subset: Invalid value: "v1": no DestinationRule for host "reviews.prod.svc.cluster.local" (subset "v1" is undefined)`},
		},
		{
			name: "missing hosts and route",
			files: map[string]string{"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  http:
  - timeout: 0s
`},
			want: []string{
				"vs.yaml:1: VirtualService default/reviews: spec.hosts: Required value: a VirtualService must have at least one host",
				"vs.yaml:1: VirtualService default/reviews: spec.http[0]: Required value: an HTTP route must have one of route, redirect, directResponse or delegate",
				"vs.yaml:1: VirtualService default/reviews: spec.http[0].timeout: Invalid value: 0s: duration must be positive",
			},
		},
		{
			name: "missing destination host, empty uri match",
			files: map[string]string{"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  gateways: [bad_gw]
  http:
  - match:
    - uri: {}
    route:
    - destination: {subset: v1}
    retries: {attempts: 3, perTryTimeout: -1s}
`},
			want: []string{
				`vs.yaml:1: VirtualService default/reviews: spec.gateways[0]: Invalid value: "bad_gw": must be "mesh", NAME or NAMESPACE/NAME with DNS-1123 labels`,
				"vs.yaml:1: VirtualService default/reviews: spec.http[0].match[0].uri: Invalid value: must set exactly one of exact, prefix or regex",
				"vs.yaml:1: VirtualService default/reviews: spec.http[0].route[0].destination.host: Required value: destination.host is required",
				"vs.yaml:1: VirtualService default/reviews: spec.http[0].retries.perTryTimeout: Invalid value: -1s: duration must be positive",
			},
		},
		{
			name: "unknown field",
			files: map[string]string{"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      wieght: 100
`},
			want: []string{"vs.yaml:1: VirtualService default/reviews: spec.http[0].route[0].wieght: unknown field"},
		},
		{
			name:  "duplicate key across files",
			files: map[string]string{"a.yaml": drReviews, "b.yaml": "---\n" + drReviews},
			want:  []string{"b.yaml:2: DestinationRule default/reviews: metadata.name: Duplicate value: DestinationRule default/reviews is also defined in a.yaml:1"},
		},
		{
			name: "destination rule",
			files: map[string]string{"dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: -1}
    outlierDetection: {maxEjectionPercent: 101}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
  - name: V_2
`},
			want: []string{
				"dr.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.connectionPool.tcp.maxConnections: Invalid value: -1: must not be negative",
				"dr.yaml:1: DestinationRule default/reviews: spec.trafficPolicy.outlierDetection.maxEjectionPercent: Invalid value: 101: must be between 0 and 100",
				`dr.yaml:1: DestinationRule default/reviews: spec.subsets[1].name: Duplicate value: "v1"`,
				`dr.yaml:1: DestinationRule default/reviews: spec.subsets[2].name: Invalid value: "V_2": subset name must be a DNS-1123 label`,
			},
		},
		{
			name: "gateway",
			files: map[string]string{"gw.yaml": `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 70000, name: http, protocol: SMTP}
    hosts: ["*"]
  - port: {number: 8080, protocol: HTTP}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["bad ns/foo.com"]
`},
			want: []string{
				`gw.yaml:1: Gateway default/gw: spec.servers[0].port.protocol: Unsupported value: "SMTP": supported protocols are ` + protocolList,
				"gw.yaml:1: Gateway default/gw: spec.servers[0].port.number: Invalid value: 70000: port must be between 1-65535",
				"gw.yaml:1: Gateway default/gw: spec.servers[1].port.name: Required value: port name must be set",
				"gw.yaml:1: Gateway default/gw: spec.servers[1].hosts: Required value: server config must contain at least one host",
				`gw.yaml:1: Gateway default/gw: spec.servers[2].hosts[0]: Invalid value: "bad ns/foo.com": namespace must be '*', '.' or a DNS-1123 label`,
				"gw.yaml:1: Gateway default/gw: spec.servers[2].tls: Required value: server must have TLS settings for HTTPS/TLS protocols",
			},
		},
		{
			name:  "gateway without servers",
			files: map[string]string{"gw.yaml": "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n"},
			want:  []string{"gw.yaml:1: Gateway default/gw: spec.servers: Required value: gateway must have at least one server"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rs []*config.Resource
			var got []string
			for _, f := range []string{"a.yaml", "b.yaml", "dr.yaml", "gw.yaml", "vs.yaml"} {
				data, ok := tt.files[f]
				if !ok {
					continue
				}
				r, errs := config.Decode(f, []byte(data))
				rs = append(rs, r...)
				for _, e := range errs {
					got = append(got, e.Error())
				}
			}
			for _, e := range ValidateAll(rs) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResolveHost(t *testing.T) {
	tests := []struct{ host, ns, want string }{
		{"reviews", "default", "reviews.default.svc.cluster.local"},
		{"reviews.prod.svc.cluster.local", "default", "reviews.prod.svc.cluster.local"},
		{"*", "default", "*"},
		{"www.googleapis.com", "default", "www.googleapis.com"},
	}
	for _, tt := range tests {
		if got := ResolveHost(tt.host, tt.ns); got != tt.want {
			t.Errorf("ResolveHost(%q, %q) = %q, want %q", tt.host, tt.ns, got, tt.want)
		}
	}
}
