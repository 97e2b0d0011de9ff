package validation

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

func TestKubernetesService(t *testing.T) {
	const head = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
	tests := []struct {
		name string
		in   string
		want []string // substrings, one per error, in order
	}{
		{name: "valid", in: head + "spec:\n  selector: {app: web}\n  ports:\n  - {name: tcp-web, port: 80, targetPort: http, appProtocol: http}\n  - {name: grpc, port: 81, targetPort: 9081, appProtocol: kubernetes.io/h2c}\n  - {name: dns, port: 53, protocol: UDP}\n  - {name: dns-tcp, port: 53, protocol: TCP}\n"},
		{name: "unknown appProtocol is no error", in: head + "spec:\n  ports:\n  - {port: 80, appProtocol: example.com/custom}\n"},
		{name: "headless needs no ports", in: head + "spec:\n  clusterIP: None\n"},
		{
			name: "port out of range",
			in:   head + "spec:\n  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 70000}\n",
			want: []string{"Service shop/web: spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive"},
		},
		{
			name: "duplicate port and protocol",
			in:   head + "spec:\n  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80, protocol: TCP}\n",
			want: []string{"spec.ports[1]: Duplicate value: {port: 80, protocol: TCP}"},
		},
		{
			name: "names required and unique with several ports",
			in:   head + "spec:\n  ports:\n  - {name: a, port: 80}\n  - {port: 81}\n  - {name: a, port: 82}\n",
			want: []string{"spec.ports[1].name: Required value", `spec.ports[2].name: Duplicate value: "a"`},
		},
		{
			name: "bad protocol and targetPort",
			in:   head + "spec:\n  ports:\n  - {port: 80, protocol: HTTP, targetPort: my--port}\n",
			want: []string{`spec.ports[0].protocol: Unsupported value: "HTTP"`, `spec.ports[0].targetPort: Invalid value: "my--port"`},
		},
		{
			name: "no ports",
			in:   head + "spec: {selector: {app: web}}\n",
			want: []string{"spec.ports: Required value"},
		},
		{
			name: "ExternalName is not served",
			in:   head + "spec: {type: ExternalName, externalName: db.example.com}\n",
			want: []string{"spec.type: " + Unsupported},
		},
		{
			name: "bad clusterIP and type",
			in:   head + "spec:\n  type: Internal\n  clusterIP: 10.0.0.300\n  ports: [{port: 80}]\n",
			want: []string{`spec.type: Unsupported value: "Internal"`, `spec.clusterIP: Invalid value: "10.0.0.300"`},
		},
		{
			name: "exportTo annotation",
			in:   "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations: {networking.istio.io/exportTo: \"., team\"}\nspec: {ports: [{port: 80}]}\n",
		},
		{
			name: "bad exportTo annotation",
			in:   "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations: {networking.istio.io/exportTo: \"., Team, shop\"}\nspec: {ports: [{port: 80}]}\n",
			want: []string{
				`metadata.annotations[networking.istio.io/exportTo][1]: Invalid value: "Team"`,
				`metadata.annotations[networking.istio.io/exportTo][2]: Duplicate value: "shop"`,
			},
		},
		{
			name: "name is a DNS-1035 label",
			in:   "apiVersion: v1\nkind: Service\nmetadata: {name: 9web}\nspec: {ports: [{port: 80}]}\n",
			want: []string{`metadata.name: Invalid value: "9web": a DNS-1035 label`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, errs := config.Decode("svc.yaml", []byte(tt.in))
			if err := errs.Err(); err != nil {
				t.Fatal(err)
			}
			got := Validate(rs[0])
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].Error(), w) {
					t.Errorf("error %d = %q, want it to contain %q", i, got[i].Error(), w)
				}
			}
		})
	}
}

// TestKubernetesServiceSamples: Istio's samples' Services are valid.
func TestKubernetesServiceSamples(t *testing.T) {
	for _, f := range []string{"analyzers/service-port-name.yaml", "bookinfo/platform/kube/bookinfo.yaml"} {
		data, err := os.ReadFile(filepath.Join("../../../../shared/istio-samples", f))
		if err != nil {
			t.Fatal(err)
		}
		rs, _ := config.Decode(f, data) // bookinfo's Deployments are not Loom's
		for _, r := range rs {
			if errs := Validate(r); len(errs) > 0 {
				t.Errorf("%s: %v", f, errs)
			}
		}
	}
}

// TestServiceEntryResolution checks Istio's ServiceEntry rules that tie the
// hosts to the resolution: DNS without endpoints resolves the hosts, so
// they must be FQDNs (no wildcard), and several hosts need ports that tell
// them apart (HTTP's authority, TLS's SNI) unless resolution is NONE.
func TestServiceEntryResolution(t *testing.T) {
	const head = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s, namespace: default}\nspec:\n"
	tests := []struct {
		name, spec string
		want       []string
	}{
		{"DNS of FQDNs", "  hosts: [a.example.com, b.example.com]\n  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n", nil},
		{"DNS wildcard without endpoints", "  hosts: [\"*.example.com\"]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DNS\n", []string{
			`spec.hosts[0]: Invalid value: "*.example.com": hosts must be FQDN if no endpoints are provided for resolution mode DNS`}},
		{"DNS_ROUND_ROBIN wildcard without endpoints", "  hosts: [\"*.example.com\"]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS_ROUND_ROBIN\n", []string{
			`spec.hosts[0]: Invalid value: "*.example.com": hosts must be FQDN if no endpoints are provided for resolution mode DNS_ROUND_ROBIN`}},
		{"DNS wildcard with endpoints", "  hosts: [\"*.example.com\"]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  endpoints: [{address: proxy.example.com}]\n", nil},
		{"NONE wildcard", "  hosts: [\"*.example.com\"]\n  ports: [{number: 80, name: tcp, protocol: TCP}]\n  resolution: NONE\n", nil},
		{"several hosts on TCP", "  hosts: [a.example.com, b.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}, {number: 3306, name: tcp, protocol: TCP}]\n  resolution: DNS\n", []string{
			`spec.ports[1].protocol: Invalid value: "TCP": multiple hosts provided with non-HTTP, non-TLS ports`}},
		{"several hosts, protocol unset, STATIC", "  hosts: [a.example.com, b.example.com]\n  ports: [{number: 80, name: p}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n", []string{
			`spec.ports[0].protocol: Invalid value: "": multiple hosts provided with non-HTTP, non-TLS ports`}},
		{"several hosts on TCP, NONE", "  hosts: [a.example.com, b.example.com]\n  ports: [{number: 3306, name: tcp, protocol: TCP}]\n  resolution: NONE\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, head+tt.spec)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}
