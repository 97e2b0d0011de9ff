package registry

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

const kubeMesh = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  type: ClusterIP
  sessionAffinity: None
  selector: {app: web}
  ports:
  - {name: tcp-web, port: 80, targetPort: 8080, appProtocol: http}
  - {name: grpc, port: 81, targetPort: grpc-port, appProtocol: kubernetes.io/h2c}
  - {name: metrics, port: 9090}
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: shop}
spec:
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: shop}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: tcp, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-se, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  ports: [{number: 80, name: tcp, protocol: TCP}]
  resolution: STATIC
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-a, namespace: shop}
spec:
  address: 10.0.0.1
  labels: {app: web, version: a}
  serviceAccount: web
  locality: us-east/zone1
  ports: {grpc-port: 9091, metrics: 19090}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-b, namespace: shop}
spec:
  address: 10.0.0.2
  labels: {app: web, version: b}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-elsewhere, namespace: other}
spec:
  address: 10.0.0.3
  labels: {app: web}
`

func TestKubeServices(t *testing.T) {
	svcs := Services(snapshot(t, kubeMesh))
	byHost := map[string]*Service{}
	var hosts []string
	for _, s := range svcs {
		hosts = append(hosts, s.Hostname)
		byHost[s.Hostname] = s
	}
	// The Service wins over the ServiceEntry of the same host.
	want := []string{"manual.shop.svc.cluster.local", "web-headless.shop.svc.cluster.local", "web.shop.svc.cluster.local"}
	if d := cmp.Diff(want, hosts); d != "" {
		t.Fatalf("hosts (-want +got):\n%s", d)
	}
	web := byHost["web.shop.svc.cluster.local"]
	if web.Source.Kind != "Service" || web.Namespace != "shop" || web.Resolution.String() != "STATIC" || web.Location.String() != "MESH_INTERNAL" {
		t.Errorf("web = %+v", web)
	}
	if d := cmp.Diff([]string{"10.96.0.20"}, web.Addresses); d != "" {
		t.Errorf("addresses (-want +got):\n%s", d)
	}
	wantPorts := []Port{
		{Number: 80, Name: "tcp-web", Protocol: HTTP, TargetPort: 8080},
		{Number: 81, Name: "grpc", Protocol: HTTP2, TargetPort: 81},
		{Number: 9090, Name: "metrics", Protocol: Unknown, TargetPort: 9090},
	}
	if d := cmp.Diff(wantPorts, web.Ports); d != "" {
		t.Errorf("ports (-want +got):\n%s", d)
	}
	var got []instanceView
	for _, i := range web.Instances {
		got = append(got, instanceView{i.Address, i.ServicePort.Number, i.TargetPort, i.ServiceAccount, i.Workload.Name})
	}
	// The named targetPort resolves through each entry's ports; web-b has
	// no grpc-port and is no endpoint of port 81. A numbered targetPort
	// is overridden by the entry's port of the service port's name
	// (metrics). The entry of namespace other is not selected.
	wantInstances := []instanceView{
		{"10.0.0.1", 80, 8080, "web", "web-a"},
		{"10.0.0.1", 81, 9091, "web", "web-a"},
		{"10.0.0.1", 9090, 19090, "web", "web-a"},
		{"10.0.0.2", 80, 8080, "", "web-b"},
		{"10.0.0.2", 9090, 9090, "", "web-b"},
	}
	if d := cmp.Diff(wantInstances, got); d != "" {
		t.Errorf("instances (-want +got):\n%s", d)
	}
	if web.Instances[0].Locality != "us-east/zone1" || web.Instances[0].Labels["version"] != "a" {
		t.Errorf("instance 0 = %+v", web.Instances[0])
	}
	if d := cmp.Diff([]Account{{"shop", "web"}}, web.Accounts); d != "" {
		t.Errorf("accounts (-want +got):\n%s", d)
	}

	if m := byHost["manual.shop.svc.cluster.local"]; len(m.Instances) != 0 || m.Addresses != nil {
		t.Errorf("a Service with no selector: %+v", m)
	}
	if h := byHost["web-headless.shop.svc.cluster.local"]; h.Resolution.String() != "NONE" || len(h.Instances) != 2 {
		t.Errorf("headless = %+v", h)
	}
}
