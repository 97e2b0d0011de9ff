package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
)

// TestDecodeServiceSamples reads real Kubernetes Service YAML unchanged:
// clusterIP-free bookinfo Services, and the analyzer sample's
// sessionAffinity, type, nodePort and appProtocol.
func TestDecodeServiceSamples(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(samples, "analyzers/service-port-name.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rs, errs := Decode("service-port-name.yaml", data)
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 {
		t.Fatalf("got %d resources, want 3", len(rs))
	}
	gw := rs[2]
	if gw.Key() != (Key{KindService, "istio-ingress", "gateway-istio"}) || gw.Annotations["test"] != "test" || gw.Labels["gateway.istio.io/managed"] == "" {
		t.Fatalf("resource = %+v", gw)
	}
	want := &loomv1alpha1.KubernetesService{
		Type:     "LoadBalancer",
		Selector: map[string]string{"gateway.networking.k8s.io/gateway-name": "gateway"},
		Ports: []*loomv1alpha1.KubernetesServicePort{
			{Name: "status-port", Protocol: "TCP", AppProtocol: "tcp", Port: 15021, TargetPort: 15021, NodePort: 32481},
			{Name: "default", Protocol: "TCP", AppProtocol: "http", Port: 80, TargetPort: 80, NodePort: 30686},
		},
	}
	if d := cmp.Diff(want, gw.Spec, protocmp.Transform()); d != "" {
		t.Fatalf("spec (-want +got):\n%s", d)
	}

	// bookinfo.yaml: the Services decode; ServiceAccount and Deployment
	// are kinds Loom does not read, and say so.
	data, err = os.ReadFile(filepath.Join(samples, "bookinfo/platform/kube/bookinfo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rs, errs = Decode("bookinfo.yaml", data)
	var services int
	for _, r := range rs {
		if r.Kind != KindService {
			t.Errorf("decoded %s", r.Key())
			continue
		}
		services++
	}
	if services != 4 {
		t.Errorf("got %d Services, want 4", services)
	}
	for _, e := range errs {
		if e.Field != "kind" || (e.Key.Kind != "ServiceAccount" && e.Key.Kind != "Deployment") {
			t.Errorf("unexpected error: %v", e)
		}
	}
}

func TestDecodeService(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *loomv1alpha1.KubernetesService
		wantErr string
	}{
		{
			name: "every Kubernetes field, status too",
			in: `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  creationTimestamp: null
  uid: 6f1c
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  internalTrafficPolicy: Cluster
  sessionAffinity: None
  type: ClusterIP
  selector: {app: web}
  ports:
  - {name: tcp-web, port: 80, targetPort: http, appProtocol: http}
  - {name: h2c, port: 81, targetPort: 9081, protocol: TCP, appProtocol: kubernetes.io/h2c}
  - {name: dns, port: 53, protocol: UDP}
status:
  loadBalancer: {}
`,
			want: &loomv1alpha1.KubernetesService{
				Type: "ClusterIP", ClusterIp: "10.96.0.10", Selector: map[string]string{"app": "web"},
				Ports: []*loomv1alpha1.KubernetesServicePort{
					{Name: "tcp-web", AppProtocol: "http", Port: 80, TargetPortName: "http"},
					{Name: "h2c", Protocol: "TCP", AppProtocol: "kubernetes.io/h2c", Port: 81, TargetPort: 9081},
					{Name: "dns", Protocol: "UDP", Port: 53},
				},
			},
		},
		{
			name:    "unknown field named by path",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 80, nmae: http}\n",
			wantErr: "test.yaml:1: Service default/web: spec.ports[0].nmae: unknown field",
		},
		{
			name:    "unknown top-level field",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspecs: {}\n",
			wantErr: "test.yaml:1: Service default/web: specs: unknown field",
		},
		{
			name:    "wrong type",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 80}\n  - {port: eighty}\n",
			wantErr: "test.yaml:1: Service default/web: spec.ports[1].port: must be an integer, not string",
		},
		{
			name:    "a fraction is no port",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 80.5}\n",
			wantErr: "test.yaml:1: Service default/web: spec.ports[0].port: must be an integer, not number 80.5",
		},
		{
			name:    "wrong type in a string list",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ipFamilies: [IPv4, 6]\n  ports: [{port: 80}]\n",
			wantErr: "test.yaml:1: Service default/web: spec.ipFamilies[1]: must be a string, not number",
		},
		{
			name:    "a selector value that is no string",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web, version: 2}\n  ports: [{port: 80}]\n",
			wantErr: "test.yaml:1: Service default/web: spec.selector[version]: must be a string, not number",
		},
		{
			name:    "targetPort neither number nor name",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}, {port: 81, targetPort: true}]\n",
			wantErr: "test.yaml:1: Service default/web: spec.ports[1].targetPort: must be a port number or name, not bool",
		},
		{
			name:    "ports not a list",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: {port: 80}\n",
			wantErr: "test.yaml:1: Service default/web: spec.ports: must be a list, not object",
		},
		{
			name:    "wrong apiVersion",
			in:      "apiVersion: core/v1\nkind: Service\nmetadata: {name: web}\n",
			wantErr: `test.yaml:1: Service default/web: apiVersion: "core/v1": Service is served as v1`,
		},
		{
			name:    "no name",
			in:      "apiVersion: v1\nkind: Service\nmetadata: {}\nspec: {}\n",
			wantErr: "metadata.name: required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, errs := Decode("test.yaml", []byte(tt.in))
			if tt.wantErr != "" {
				if len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.wantErr) {
					t.Fatalf("errs = %v, want %q", errs, tt.wantErr)
				}
				return
			}
			if err := errs.Err(); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, rs[0].Spec, protocmp.Transform()); d != "" {
				t.Fatalf("spec (-want +got):\n%s", d)
			}
			// What the store writes for loomctl apply reads back the same.
			doc, err := encodeResource(rs[0])
			if err != nil {
				t.Fatal(err)
			}
			back, errs := Decode("again.yaml", doc)
			if err := errs.Err(); err != nil {
				t.Fatalf("%v\n%s", err, doc)
			}
			if d := cmp.Diff(tt.want, back[0].Spec, protocmp.Transform()); d != "" {
				t.Fatalf("round trip (-want +got):\n%s\n%s", d, doc)
			}
		})
	}
}
