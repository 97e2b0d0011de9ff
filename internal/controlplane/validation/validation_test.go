package validation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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
	for _, kind := range []string{"destinationrule", "serviceentry", "workloadentry", "telemetry"} {
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

// bookinfoUnsupported are the bookinfo networking samples that use a
// field this version does not serve, with the errors they must give; every
// other sample must be valid. Since fault injection is served, there are
// none.
var bookinfoUnsupported = map[string][]string{}

// bookinfoValid are the bookinfo networking samples that must be valid.
var bookinfoValid = []string{
	"bookinfo-gateway.yaml",
	"certmanager-gateway.yaml",
	"destination-rule-all-mtls.yaml",
	"destination-rule-all.yaml",
	"destination-rule-reviews.yaml",
	"egress-rule-google-apis.yaml",
	"fault-injection-details-v1.yaml",
	"virtual-service-all-v1.yaml",
	"virtual-service-details-v2.yaml",
	"virtual-service-ratings-db.yaml",
	"virtual-service-ratings-mysql-vm.yaml",
	"virtual-service-ratings-mysql.yaml",
	"virtual-service-ratings-test-abort.yaml",
	"virtual-service-ratings-test-delay.yaml",
	"virtual-service-reviews-50-v3.yaml",
	"virtual-service-reviews-80-20.yaml",
	"virtual-service-reviews-90-10.yaml",
	"virtual-service-reviews-jason-v2-v3.yaml",
	"virtual-service-reviews-test-v2.yaml",
	"virtual-service-reviews-v2-v3.yaml",
	"virtual-service-reviews-v3.yaml",
}

// TestBookinfoSamples checks every bookinfo networking sample, with
// destination-rule-all.yaml providing the subsets: those listed in
// bookinfoValid must be valid, those in bookinfoUnsupported must give
// exactly their "not supported" errors, and no sample may be in neither.
func TestBookinfoSamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(samples, "bookinfo/networking/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bookinfo samples (%v): /work/shared must be beside the project", err)
	}
	drAll := decodeAll(t, "destination-rule-all.yaml", readSample(t, "bookinfo/networking/destination-rule-all.yaml"))
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			want, unsupported := bookinfoUnsupported[name]
			if !unsupported && !slices.Contains(bookinfoValid, name) {
				t.Fatalf("sample %s is in neither bookinfoValid nor bookinfoUnsupported", name)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rs := decodeAll(t, name, data)
			defined := map[config.Key]bool{}
			for _, r := range rs {
				defined[r.Key()] = true
			}
			for _, r := range drAll {
				if !defined[r.Key()] {
					rs = append(rs, r)
				}
			}
			var got []string
			for _, e := range ValidateAll(rs) {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
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
			name: "all weights 0",
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
      weight: 0
    - destination: {host: reviews, subset: v2}
`},
			want: []string{"vs.yaml:2: VirtualService default/reviews: spec.http[0].route: Invalid value: total destination weight = 0"},
		},
		{
			name: "weight out of range",
			files: map[string]string{"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  tcp:
  - route:
    - destination: {host: reviews}
      weight: 150
    - destination: {host: ratings}
      weight: -50
  tls:
  - match: [{sniHosts: [reviews]}]
    route:
    - destination: {host: reviews}
      weight: 2147483647
    - destination: {host: ratings}
      weight: 2147483647
    - destination: {host: details}
      weight: 2147483647
`},
			want: []string{
				"vs.yaml:1: VirtualService default/reviews: spec.tcp[0].route[1].weight: Invalid value: -50: must not be negative",
				"vs.yaml:1: VirtualService default/reviews: spec.tls[0].route: Invalid value: total destination weight 6442450941: must be at most 4294967295",
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
			name: "no hosts (a delegate) and missing route",
			files: map[string]string{"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  http:
  - timeout: 0s
`},
			want: []string{
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
			// The cluster of an HTTP2 (or GRPC) port speaks HTTP/2, and so
			// does one upgraded by h2UpgradePolicy: the tunnel would be an
			// HTTP/2 CONNECT. A TCP port's tunnel is fine.
			name: "tunnel over HTTP/2",
			files: map[string]string{"a.yaml": `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: h2-proxy}
spec:
  hosts: [h2-proxy.example]
  ports: [{number: 3128, name: grpc-proxy}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-proxy}
spec:
  hosts: [tcp-proxy.example]
  ports: [{number: 3128, name: proxy, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: inherit-proxy}
spec:
  hosts: [inherit-proxy.example]
  ports: [{number: 3128, name: proxy, protocol: TCP}]
  resolution: DNS
`, "dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: h2}
spec:
  host: h2-proxy.example
  trafficPolicy:
    tunnel: {targetHost: db.example, targetPort: 5432}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp}
spec:
  host: tcp-proxy.example
  trafficPolicy:
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE}
  subsets:
  - name: plain
    labels: {v: "1"}
    trafficPolicy:
      tunnel: {targetHost: db.example, targetPort: 5432}
      connectionPool:
        http: {h2UpgradePolicy: DO_NOT_UPGRADE}
  - name: upgraded
    labels: {v: "2"}
    trafficPolicy:
      tunnel: {protocol: POST, targetHost: db.example, targetPort: 5432}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inherit}
spec:
  host: inherit-proxy.example
  trafficPolicy:
    tunnel: {targetHost: db.example, targetPort: 5432}
  subsets:
  - name: plain
    labels: {v: "1"}
    trafficPolicy:
      connectionPool:
        tcp: {maxConnections: 10}
  - name: upgraded
    labels: {v: "2"}
    trafficPolicy:
      connectionPool:
        http: {h2UpgradePolicy: UPGRADE}
`},
			want: []string{
				`dr.yaml:1: DestinationRule default/h2: spec.trafficPolicy.tunnel: Unsupported value: "CONNECT": ` + Unsupported + ` over HTTP/2, and every cluster the rule reaches speaks it (host "h2-proxy.example" port 3128 is GRPC (ServiceEntry default/h2-proxy)): loom-proxy tunnels over HTTP/1.1 only; declare the proxy's port TCP or HTTP, without h2UpgradePolicy UPGRADE`,
				`dr.yaml:9: DestinationRule default/tcp: spec.subsets[1].trafficPolicy.tunnel: Unsupported value: "POST": ` + Unsupported + ` over HTTP/2, and every cluster the rule reaches speaks it (host "tcp-proxy.example" port 3128 has connectionPool.http.h2UpgradePolicy UPGRADE): loom-proxy tunnels over HTTP/1.1 only; declare the proxy's port TCP or HTTP, without h2UpgradePolicy UPGRADE`,
				`dr.yaml:29: DestinationRule default/inherit: spec.subsets[1].trafficPolicy: Unsupported value: "CONNECT" (the subset inherits spec.trafficPolicy.tunnel): ` + Unsupported + ` over HTTP/2, and every cluster the rule reaches speaks it (host "inherit-proxy.example" port 3128 has connectionPool.http.h2UpgradePolicy UPGRADE): loom-proxy tunnels over HTTP/1.1 only; declare the proxy's port TCP or HTTP, without h2UpgradePolicy UPGRADE`,
			},
		},
		{
			// Istio tunnels over the cluster of the port the TCP route
			// picks, its pool merged with portLevelSettings: a rule is
			// refused only when every port it reaches is HTTP/2.
			name: "tunnel over HTTP/2 per port",
			files: map[string]string{"a.yaml": `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mixed}
spec:
  hosts: [mixed.example]
  ports: [{number: 3128, name: tcp-proxy, protocol: TCP}, {number: 8080, name: grpc, protocol: GRPC}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a-grpc}
spec:
  hosts: [a.proxies.example]
  ports: [{number: 3128, name: grpc, protocol: GRPC}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b-tcp}
spec:
  hosts: [b.proxies.example]
  ports: [{number: 3128, name: tcp, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: plain}
spec:
  hosts: [plain.example]
  ports: [{number: 3128, name: tcp, protocol: TCP}]
  resolution: DNS
`, "dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mixed}
spec:
  host: mixed.example
  trafficPolicy:
    tunnel: {targetHost: db.example, targetPort: 5432}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wildcard}
spec:
  host: "*.proxies.example"
  trafficPolicy:
    tunnel: {targetHost: db.example, targetPort: 5432}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: plain-port-downgrade}
spec:
  host: plain.example
  trafficPolicy:
    tunnel: {targetHost: db.example, targetPort: 5432}
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE}
    portLevelSettings:
    - port: {number: 3128}
      connectionPool:
        tcp: {maxConnections: 10}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: plain-port-upgrade, namespace: other}
spec:
  host: plain.example
  trafficPolicy:
    tunnel: {targetHost: db.example, targetPort: 5432}
    portLevelSettings:
    - port: {number: 3128}
      connectionPool:
        http: {h2UpgradePolicy: UPGRADE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: kube}
spec:
  host: kube-proxy.default.svc.cluster.local
  trafficPolicy:
    tunnel: {targetHost: db.example, targetPort: 5432}
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: kube-port-downgrade}
spec:
  host: kube-proxy2.default.svc.cluster.local
  trafficPolicy:
    tunnel: {targetHost: db.example, targetPort: 5432}
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE}
    portLevelSettings:
    - port: {number: 3128}
      connectionPool:
        http: {h2UpgradePolicy: DO_NOT_UPGRADE}
`},
			want: []string{
				`dr.yaml:31: DestinationRule other/plain-port-upgrade: spec.trafficPolicy.tunnel: Unsupported value: "CONNECT": ` + Unsupported + ` over HTTP/2, and every cluster the rule reaches speaks it (host "plain.example" port 3128 has connectionPool.http.h2UpgradePolicy UPGRADE): loom-proxy tunnels over HTTP/1.1 only; declare the proxy's port TCP or HTTP, without h2UpgradePolicy UPGRADE`,
				`dr.yaml:43: DestinationRule default/kube: spec.trafficPolicy.tunnel: Unsupported value: "CONNECT": ` + Unsupported + ` over HTTP/2, and every cluster the rule reaches speaks it (connectionPool.http.h2UpgradePolicy is UPGRADE): loom-proxy tunnels over HTTP/1.1 only; declare the proxy's port TCP or HTTP, without h2UpgradePolicy UPGRADE`,
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

const vsHead = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
`

// TestUnsupported checks that fields the translator does not serve, and
// that would change what happens to a request, are refused with their
// path, and that those it ignores harmlessly are not.
func TestUnsupported(t *testing.T) {
	const route = "    route: [{destination: {host: reviews}}]\n"
	tests := []struct {
		name string
		doc  string
		want []string // fields refused as Unsupported
	}{
		{"redirect", vsHead + "  http:\n  - redirect: {uri: /x}\n", nil},
		{"directResponse", vsHead + "  http:\n  - directResponse: {status: 503}\n", nil},
		{"delegate", vsHead + "  http:\n  - delegate: {name: other}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other}\nspec:\n  http:\n  - route: [{destination: {host: reviews}}]\n", nil},
		{"rewrite", vsHead + "  http:\n  - rewrite: {uri: /v2}\n" + route, nil},
		{"fault", vsHead + "  http:\n  - fault: {abort: {httpStatus: 500, percentage: {value: 10}}, delay: {fixedDelay: 2s, percent: 5}}\n" + route, nil},
		{"fault grpc", vsHead + "  http:\n  - fault: {abort: {grpcStatus: UNAVAILABLE}}\n" + route, nil},
		{"fault http2Error", vsHead + "  http:\n  - fault: {abort: {http2Error: CANCEL}}\n" + route, []string{"spec.http[0].fault.abort.http2Error"}},
		{"fault exponentialDelay", vsHead + "  http:\n  - fault: {delay: {exponentialDelay: 1s}}\n" + route, []string{"spec.http[0].fault.delay.exponentialDelay"}},
		{"mirror", vsHead + "  http:\n  - mirror: {host: ratings}\n    mirrorPercentage: {value: 5}\n" + route, nil},
		{"mirror_percent", vsHead + "  http:\n  - mirror: {host: ratings}\n    mirror_percent: 5\n" + route, nil},
		{"mirrors", vsHead + "  http:\n  - mirrors: [{destination: {host: ratings}}]\n" + route, nil},
		{"corsPolicy", vsHead + "  http:\n  - corsPolicy: {allowMethods: [GET]}\n" + route, nil},
		{"headers", vsHead + "  http:\n  - headers: {request: {set: {x-a: b}}}\n" + route, nil},
		{"destination headers", vsHead + "  http:\n  - route: [{destination: {host: reviews}, headers: {response: {remove: [x-a]}}}]\n", nil},
		{"tcp", vsHead + "  tcp:\n  - match: [{port: 9000, sourceLabels: {app: client}, destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: reviews}, weight: 80}, {destination: {host: ratings}, weight: 20}]\n", nil},
		{"tls", vsHead + "  tls:\n  - match: [{sniHosts: [reviews]}]\n    route: [{destination: {host: reviews}}]\n", nil},
		{"gateway https", `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cert}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 8080, name: grpc, protocol: GRPC}
    hosts: ["*"]
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9443, name: mtls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, caCrl: /crl.pem}
`, []string{"spec.servers[5].tls.caCrl"}},
		{"served match fields", vsHead + `  http:
  - match:
    - uri: {prefix: /a}
      scheme: {exact: https}
      method: {exact: GET}
      authority: {prefix: api}
      headers: {end-user: {exact: jason}}
      withoutHeaders: {x-debug: {}}
      queryParams: {v: {regex: "[0-9]+"}}
      sourceLabels: {app: productpage}
      sourceNamespace: default
      ignoreUriCase: true
    timeout: 2s
    retries: {attempts: 2, retryOn: "5xx,503,retriable-4xx", retryRemoteLocalities: true}
` + route, nil},
		{"destination rule traffic policy", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}, tls: {mode: ISTIO_MUTUAL}}
`, nil},
		{"destination rule tls: files, credentialName, sni, SANs and insecureSkipVerify are served; caCrl is not", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, sni: r.example, subjectAltNames: [r.example], caCrl: /crl.pem}
    portLevelSettings: [{port: {number: 9080}, tls: {mode: SIMPLE, insecureSkipVerify: true}}]
  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: SIMPLE, credentialName: reviews-cert}}}]
`, []string{"spec.trafficPolicy.tls.caCrl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, errs := config.Decode("in.yaml", []byte(tt.doc))
			if err := errs.Err(); err != nil {
				t.Fatalf("decode: %v", err)
			}
			var got []string
			for _, e := range ValidateAll(rs) {
				if e.Msg != Unsupported {
					t.Errorf("unexpected error: %v", e)
					continue
				}
				got = append(got, e.Field)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("unsupported fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryOn(t *testing.T) {
	tests := []struct {
		on   string
		want []string
	}{
		{"5xx,gateway-error,reset,connect-failure,retriable-4xx,refused-stream,retriable-status-codes", nil},
		{"unavailable, cancelled, deadline-exceeded, internal, resource-exhausted", nil},
		{"100,503,599", nil},
		{"", nil},
		{"5xx,envoy-ratelimited,retriable-headers", nil},
		// Istio's supportedRetryOnPolicies has both; the proxy serves the
		// first and has no HTTP/3 for the second.
		{"reset-before-request", nil},
		{"5xx,http3-post-connect-failure", []string{`spec.http[0].retries.retryOn: Unsupported value: "http3-post-connect-failure": ` + Unsupported + ` (loom-proxy speaks no HTTP/3 upstream, so no request fails over from it)`}},
		{"5xx,envoy-limited", []string{`spec.http[0].retries.retryOn: Unsupported value: "envoy-limited": supported values: ` + supportedRetryOnList}},
		{"600,99,-503", []string{
			`spec.http[0].retries.retryOn: Unsupported value: "600": supported values: ` + supportedRetryOnList,
			`spec.http[0].retries.retryOn: Unsupported value: "99": supported values: ` + supportedRetryOnList,
			`spec.http[0].retries.retryOn: Unsupported value: "-503": supported values: ` + supportedRetryOnList,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.on, func(t *testing.T) {
			doc := vsHead + "  http:\n  - route: [{destination: {host: reviews}}]\n    retries: {attempts: 1, retryOn: \"" + tt.on + "\"}\n"
			got := fieldErrors(t, doc)
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

// TestFault checks HTTPRoute.fault as Istio's validateHTTPFaultInjection
// does, plus the abort type Loom requires.
func TestFault(t *testing.T) {
	const f = "spec.http[0].fault"
	tests := []struct {
		name  string
		fault string
		want  []string
	}{
		{"abort http", "{abort: {httpStatus: 500, percentage: {value: 100}}}", nil},
		{"abort http bounds", "{abort: {httpStatus: 599, percentage: {value: 0}}}", nil},
		{"abort grpc name", "{abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0.1}}}", nil},
		{"abort grpc code", `{abort: {grpcStatus: "14"}}`, nil},
		{"delay fixed", "{delay: {fixedDelay: 7s, percentage: {value: 100}}}", nil},
		{"delay fixed, deprecated percent", "{delay: {fixedDelay: 0.010s, percent: 50}}", nil},
		{"both", "{delay: {fixedDelay: 1s}, abort: {httpStatus: 503}}", nil},
		{"empty", "{}", []string{f + ": Invalid value: fault must have an abort and/or a delay"}},
		{"abort without type", "{abort: {percentage: {value: 50}}}", []string{f + ".abort: Required value: an abort must have httpStatus or grpcStatus"}},
		{"abort http 199", "{abort: {httpStatus: 199}}", []string{f + ".abort.httpStatus: Invalid value: 199: must be between 200 and 599"}},
		{"abort http 600", "{abort: {httpStatus: 600}}", []string{f + ".abort.httpStatus: Invalid value: 600: must be between 200 and 599"}},
		{"abort grpc unknown", "{abort: {grpcStatus: Unavailable}}",
			[]string{f + `.abort.grpcStatus: Invalid value: "Unavailable": must be a gRPC status name, as "UNAVAILABLE", or code 0-16`}},
		{"abort grpc 17", `{abort: {grpcStatus: "17"}}`,
			[]string{f + `.abort.grpcStatus: Invalid value: "17": must be a gRPC status name, as "UNAVAILABLE", or code 0-16`}},
		{"abort grpc empty", `{abort: {grpcStatus: ""}}`,
			[]string{f + `.abort.grpcStatus: Invalid value: "": must be a gRPC status name, as "UNAVAILABLE", or code 0-16`}},
		{"abort http2", "{abort: {http2Error: CANCEL}}", []string{f + ".abort.http2Error: " + Unsupported}},
		{"abort percentage over", "{abort: {httpStatus: 500, percentage: {value: 100.5}}}",
			[]string{f + ".abort.percentage.value: Invalid value: 100.5: percentage must be between 0 and 100"}},
		{"abort percentage negative", "{abort: {httpStatus: 500, percentage: {value: -1}}}",
			[]string{f + ".abort.percentage.value: Invalid value: -1: percentage must be between 0 and 100"}},
		{"abort percentage too small", "{abort: {httpStatus: 500, percentage: {value: 0.00001}}}",
			[]string{f + ".abort.percentage.value: Invalid value: 1e-05: percentage is neither 0.0, nor in range [0.0001, 100.0]"}},
		{"delay percentage smallest", "{delay: {fixedDelay: 1s, percentage: {value: 0.0001}}}", nil},
		{"delay without type", "{delay: {percentage: {value: 50}}}", []string{f + ".delay.fixedDelay: Required value"}},
		{"delay zero", "{delay: {fixedDelay: 0s}}", []string{f + ".delay.fixedDelay: Invalid value: 0s: duration must be positive"}},
		{"delay negative", "{delay: {fixedDelay: -1s}}", []string{f + ".delay.fixedDelay: Invalid value: -1s: duration must be positive"}},
		{"delay sub-millisecond", "{delay: {fixedDelay: 1.0005s}}", []string{f + ".delay.fixedDelay: Invalid value: 1.0005s: only durations to ms precision are supported"}},
		{"delay percentage over", "{delay: {fixedDelay: 1s, percentage: {value: 101}}}",
			[]string{f + ".delay.percentage.value: Invalid value: 101: percentage must be between 0 and 100"}},
		{"delay percent over", "{delay: {fixedDelay: 1s, percent: 101}}", []string{f + ".delay.percent: Invalid value: 101: must be between 0 and 100"}},
		{"delay percent negative", "{delay: {fixedDelay: 1s, percent: -1}}", []string{f + ".delay.percent: Invalid value: -1: must be between 0 and 100"}},
		{"delay exponential", "{delay: {exponentialDelay: 1s}}", []string{f + ".delay.exponentialDelay: " + Unsupported}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := vsHead + "  http:\n  - route: [{destination: {host: reviews}}]\n    fault: " + tt.fault + "\n"
			got := fieldErrors(t, doc)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGRPCStatusCode(t *testing.T) {
	tests := []struct {
		in     string
		want   uint32
		wantOK bool
	}{
		{"OK", 0, true}, {"CANCELLED", 1, true}, {"UNAVAILABLE", 14, true}, {"UNAUTHENTICATED", 16, true},
		{"0", 0, true}, {"14", 14, true}, {"16", 16, true},
		{"17", 0, false}, {"-1", 0, false}, {"014", 0, false}, {"+14", 0, false}, {"", 0, false},
		{"unavailable", 0, false}, {"CANCELED", 0, false},
	}
	for _, tt := range tests {
		got, ok := GRPCStatusCode(tt.in)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("GRPCStatusCode(%q) = %d, %t; want %d, %t", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

// fieldErrors decodes one YAML document and returns ValidateAll's errors as
// "FIELD: MSG" lines.
func fieldErrors(t *testing.T, doc string) []string {
	t.Helper()
	rs, errs := config.Decode("in.yaml", []byte(doc))
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	var got []string
	for _, e := range ValidateAll(rs) {
		got = append(got, e.Field+": "+e.Msg)
	}
	return got
}
