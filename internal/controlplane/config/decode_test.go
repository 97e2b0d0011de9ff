package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
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
		{
			name: "sidecar in every networking version",
			in: `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: prod}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
---
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: ratings}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
---
apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata: {name: strict}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`,
			check: func(t *testing.T, rs []*Resource) {
				if len(rs) != 3 {
					t.Fatalf("got %d resources", len(rs))
				}
				sc0 := rs[0].Spec.(*networking.Sidecar)
				if rs[0].Kind != KindSidecar || rs[0].Namespace != "prod" || sc0.Egress[0].Hosts[1] != "istio-system/*" {
					t.Fatalf("sidecar 0 = %v, %+v", sc0, rs[0])
				}
				sc1 := rs[1].Spec.(*networking.Sidecar)
				if sc1.WorkloadSelector.Labels["app"] != "ratings" || sc1.Ingress[0].DefaultEndpoint != "127.0.0.1:8080" || sc1.Ingress[0].Port.Number != 9080 {
					t.Fatalf("sidecar 1 = %v", sc1)
				}
				if m := rs[2].Spec.(*networking.Sidecar).OutboundTrafficPolicy.Mode; m != networking.OutboundTrafficPolicy_REGISTRY_ONLY {
					t.Fatalf("sidecar 2 mode = %v", m)
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
		{name: "bad enum", in: "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r}\nspec:\n  hosts: [a]\n  resolution: SOMETIMES\n",
			wantErr: `spec.resolution: Unsupported value: "SOMETIMES": supported values: "NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"`},
		{
			name: "security kinds in both versions",
			in: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo, annotations: {istio.io/dry-run: "true"}}
spec:
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/a/sa/b]}}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: STRICT}
  portLevelMtls:
    "8080": {mode: DISABLE}
`,
			check: func(t *testing.T, rs []*Resource) {
				if len(rs) != 2 {
					t.Fatalf("got %d resources", len(rs))
				}
				ap := rs[0].Spec.(*security.AuthorizationPolicy)
				if rs[0].Kind != KindAuthorizationPolicy || ap.Action != security.AuthorizationPolicy_DENY ||
					ap.Rules[0].From[0].Source.Principals[0] != "cluster.local/ns/a/sa/b" || rs[0].Annotations["istio.io/dry-run"] != "true" {
					t.Fatalf("policy = %v, %+v", ap, rs[0])
				}
				pa := rs[1].Spec.(*security.PeerAuthentication)
				if rs[1].Kind != KindPeerAuthentication || pa.Mtls.Mode != security.PeerAuthentication_MutualTLS_STRICT ||
					pa.PortLevelMtls[8080].Mode != security.PeerAuthentication_MutualTLS_DISABLE {
					t.Fatalf("peer authentication = %v", pa)
				}
			},
		},
		{name: "security kind in a networking version", in: "apiVersion: security.istio.io/v1alpha3\nkind: PeerAuthentication\nmetadata: {name: r}\n",
			wantErr: "security.istio.io/{v1,v1beta1}"},
		{name: "bad nested enum", in: "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: r}\nspec:\n  mtls: {mode: BLAH}\n",
			wantErr: `spec.mtls.mode: Unsupported value: "BLAH": supported values: "UNSET", "DISABLE", "PERMISSIVE", "STRICT"`},
		{name: "bad enum in a map", in: "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: r}\nspec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls: {\"80\": {mode: SOMETIMES}}\n",
			wantErr: `spec.portLevelMtls[80].mode: Unsupported value: "SOMETIMES"`},
		{name: "non-numeric map key", in: "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: r}\nspec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls: {acd: {mode: STRICT}}\n",
			wantErr: `spec.portLevelMtls[acd]: Invalid value: "acd": type conversion error from string to uint32`},
		{name: "empty port level map", in: "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: r}\nspec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls: {}\n",
			wantErr: `spec.portLevelMtls: Invalid value: {}: port level mTLS, if defined, must have at least one element`},
		{name: "bad enum in a list", in: "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: r}\nspec:\n  egress: [{hosts: [\"./*\"], captureMode: SOMETIMES}]\n",
			wantErr: `spec.egress[0].captureMode: Unsupported value: "SOMETIMES"`},
		{
			name:    "null list item",
			in:      "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra}\nspec:\n  jwtRules:\n  -\n",
			wantErr: `f.yaml:1: RequestAuthentication default/ra: spec.jwtRules[0]: Invalid value: "null": must be of type object`,
		},
		{
			name:    "unknown enum value",
			in:      "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata: {name: ra}\nspec:\n  jwtRules: [{issuer: i, presence: MANDATORY}]\n",
			wantErr: `spec.jwtRules[0].presence: Unsupported value: "MANDATORY": supported values: "OPTIONAL", "REQUIRED"`,
		},
		{
			name:    "not a duration",
			in:      "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra}\nspec:\n  jwtRules: [{issuer: i, timeout: apple}]\n",
			wantErr: `spec.jwtRules[0].timeout: Invalid value: "apple": must be a valid duration greater than 1ms`,
		},
		{
			name:    "security kinds are not served as v1alpha3",
			in:      "apiVersion: security.istio.io/v1alpha3\nkind: RequestAuthentication\nmetadata: {name: ra}\n",
			wantErr: `apiVersion: "security.istio.io/v1alpha3": RequestAuthentication is served as security.istio.io/{v1,v1beta1}`,
		},
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

// TestDecodeGoStyleDurations: Istio's tasks write durations as Go does
// ("3m" in the circuit-breaking task); they decode to the same value as
// protojson's seconds form.
func TestDecodeGoStyleDurations(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"3m", 3 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"8ms", 8 * time.Millisecond},
		{"1.5s", 1500 * time.Millisecond},
		{"10s", 10 * time.Second},
		{"0.008s", 8 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			doc := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: h\n  trafficPolicy:\n    outlierDetection:\n      baseEjectionTime: " + tc.in + "\n"
			rs, errs := Decode("d.yaml", []byte(doc))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			got := rs[0].Spec.(*networking.DestinationRule).GetTrafficPolicy().GetOutlierDetection().GetBaseEjectionTime().AsDuration()
			if got != tc.want {
				t.Errorf("baseEjectionTime %s = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	doc := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: h\n  trafficPolicy:\n    outlierDetection:\n      baseEjectionTime: 3 minutes\n"
	if _, errs := Decode("d.yaml", []byte(doc)); len(errs) == 0 {
		t.Error("baseEjectionTime \"3 minutes\" decoded without error")
	}
}

// TestProtoErrorText: protojson's prefix goes whichever space it uses
// (it alternates ASCII and no-break spaces on purpose).
func TestProtoErrorText(t *testing.T) {
	for _, in := range []string{
		`proto: (line 1:125): unknown field "bogus"`,
		"proto:\u00a0(line 1:125): unknown field \"bogus\"",
		`proto: unknown field "bogus"`,
		"proto:\u00a0unknown field \"bogus\"",
	} {
		if got := ProtoErrorText(errors.New(in)); got != `unknown field "bogus"` {
			t.Errorf("ProtoErrorText(%q) = %q", in, got)
		}
	}
}
