package registry

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

func snapshot(t *testing.T, yaml string) *config.Snapshot {
	t.Helper()
	rs, errs := config.Decode("test.yaml", []byte(yaml))
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return config.NewSnapshot(1, rs)
}

const mesh = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local, reviews.example.com]
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: grpc-api, targetPort: 19090}
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  resolution: DNS
  endpoints:
  - {address: 10.0.0.2, labels: {role: primary}, ports: {tcp: 15432}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec:
  address: 127.0.0.14
  labels: {app: reviews, version: v2}
  serviceAccount: bookinfo-reviews
  ports: {http: 19080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec:
  address: 127.0.0.13
  labels: {app: reviews, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-other, namespace: other}
spec:
  address: 127.0.0.99
  labels: {app: reviews}
`

// instanceView is an Instance without its labels, for compact wants.
type instanceView struct {
	Address     string
	ServicePort uint32
	TargetPort  uint32
	SA          string
	Workload    string
}

func TestServices(t *testing.T) {
	svcs := Services(snapshot(t, mesh))
	var hosts []string
	for _, s := range svcs {
		hosts = append(hosts, s.Namespace+"/"+s.Hostname)
	}
	if diff := cmp.Diff([]string{"data/db.data.svc.cluster.local", "default/reviews.default.svc.cluster.local", "default/reviews.example.com"}, hosts); diff != "" {
		t.Fatalf("services (-want +got):\n%s", diff)
	}

	reviews := svcs[1]
	wantPorts := []Port{
		{Number: 9080, Name: "http", Protocol: HTTP, TargetPort: 9080},
		{Number: 9090, Name: "grpc-api", Protocol: GRPC, TargetPort: 19090},
	}
	if diff := cmp.Diff(wantPorts, reviews.Ports); diff != "" {
		t.Errorf("reviews ports (-want +got):\n%s", diff)
	}
	view := func(s *Service) []instanceView {
		var out []instanceView
		for _, i := range s.Instances {
			out = append(out, instanceView{i.Address, i.ServicePort.Number, i.TargetPort, i.ServiceAccount, i.Workload.Name})
		}
		return out
	}
	// The WorkloadEntry of namespace other is not selected; reviews-v2's
	// ports map overrides the target port of "http" only.
	wantReviews := []instanceView{
		{"127.0.0.13", 9080, 9080, "", "reviews-v1"},
		{"127.0.0.13", 9090, 19090, "", "reviews-v1"},
		{"127.0.0.14", 9080, 19080, "bookinfo-reviews", "reviews-v2"},
		{"127.0.0.14", 9090, 19090, "bookinfo-reviews", "reviews-v2"},
	}
	if diff := cmp.Diff(wantReviews, view(reviews)); diff != "" {
		t.Errorf("reviews instances (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantReviews, view(svcs[2])); diff != "" {
		t.Errorf("second host of the same entry: instances (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]instanceView{{"10.0.0.2", 5432, 15432, "", ""}}, view(svcs[0])); diff != "" {
		t.Errorf("inline endpoint instances (-want +got):\n%s", diff)
	}
	if got := svcs[0].Resolution.String(); got != "DNS" {
		t.Errorf("db resolution = %s, want DNS kept", got)
	}
}

func TestWorkloads(t *testing.T) {
	var got []string
	for _, w := range Workloads(snapshot(t, mesh)) {
		got = append(got, w.Namespace+"/"+w.Name+"@"+w.Address)
	}
	want := []string{"default/reviews-v1@127.0.0.13", "default/reviews-v2@127.0.0.14", "other/reviews-other@127.0.0.99"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("workloads (-want +got):\n%s", diff)
	}
}

func TestParseProtocol(t *testing.T) {
	tests := []struct {
		name           string
		protocol, port string
		want           Protocol
	}{
		{"field wins over name", "HTTP", "grpc-api", HTTP},
		{"field case ignored", "http2", "", HTTP2},
		{"field GRPC", "GRPC", "", GRPC},
		{"field grpc-web", "GRPC-Web", "", GRPCWeb},
		{"field HTTP_PROXY", "HTTP_PROXY", "", HTTPProxy},
		{"field TCP", "tcp", "http", TCP},
		{"field Mongo", "MONGO", "", Mongo},
		{"field Redis", "redis", "", Redis},
		{"field MySQL", "MySQL", "", MySQL},
		{"field UDP", "UDP", "", UDP},
		{"field unknown kept", "Thrift", "", Protocol("THRIFT")},
		{"name http", "", "http", HTTP},
		{"name http-", "", "http-web", HTTP},
		{"name http2-", "", "http2-api", HTTP2},
		{"name grpc-", "", "grpc-api", GRPC},
		{"name grpc-web", "", "grpc-web", GRPCWeb},
		{"name grpc-web-", "", "grpc-web-ui", GRPCWeb},
		{"name GRPC-WEB case", "", "GRPC-Web-x", GRPCWeb},
		{"name grpc-webx: Istio checks the bare prefix", "", "grpc-webx", GRPCWeb},
		{"name tcp-", "", "tcp-db", TCP},
		{"name tls-", "", "tls-sni", TLS},
		{"name https-", "", "https-admin", HTTPS},
		{"name mongo-", "", "mongo-db", Mongo},
		{"name redis-", "", "redis-cache", Redis},
		{"name mysql-", "", "mysql-main", MySQL},
		{"name no protocol", "", "web", Unknown},
		{"name prefix must end at dash", "", "httpx-web", Unknown},
		{"empty", "", "", Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseProtocol(tt.protocol, tt.port); got != tt.want {
				t.Errorf("ParseProtocol(%q, %q) = %q, want %q", tt.protocol, tt.port, got, tt.want)
			}
		})
	}
}

func TestProtocolClasses(t *testing.T) {
	tests := []struct {
		p             Protocol
		http, isHTTP2 bool
	}{
		{HTTP, true, false},
		{HTTP2, true, true},
		{HTTPProxy, true, false},
		{GRPC, true, true},
		{GRPCWeb, true, true},
		{Unknown, true, false},
		{HTTPS, false, false},
		{TLS, false, false},
		{TCP, false, false},
		{Mongo, false, false},
	}
	for _, tt := range tests {
		if got := tt.p.IsHTTP(); got != tt.http {
			t.Errorf("%q.IsHTTP() = %v, want %v", tt.p, got, tt.http)
		}
		if got := tt.p.IsHTTP2(); got != tt.isHTTP2 {
			t.Errorf("%q.IsHTTP2() = %v, want %v", tt.p, got, tt.isHTTP2)
		}
	}
}

// TestInterceptionModeAndAddresses reads a WorkloadEntry's
// sidecar.istio.io/interceptionMode annotation into its instances, and a
// ServiceEntry's addresses into its service.
func TestInterceptionModeAndAddresses(t *testing.T) {
	svcs := Services(snapshot(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  addresses: [240.240.0.7]
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  resolution: STATIC
  workloadSelector: {labels: {app: echo}}
  endpoints:
  - {address: 10.0.0.9}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: echo-redirect
  namespace: default
  annotations: {sidecar.istio.io/interceptionMode: REDIRECT}
spec: {address: 10.77.0.21, labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-explicit, namespace: default}
spec: {address: 10.77.0.22, labels: {app: echo}}
`))
	if len(svcs) != 1 {
		t.Fatalf("got %d services, want 1", len(svcs))
	}
	if diff := cmp.Diff([]string{"240.240.0.7"}, svcs[0].Addresses); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	got := map[string]string{}
	for _, in := range svcs[0].Instances {
		got[in.Address] = in.InterceptionMode
	}
	want := map[string]string{"10.0.0.9": "", "10.77.0.21": InterceptionRedirect, "10.77.0.22": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("interception modes by address (-want +got):\n%s", diff)
	}
}

// TestServiceAccounts: a service's Accounts are its instances' distinct
// service accounts, an inline endpoint's in the service's namespace, a
// WorkloadEntry's in its own, sorted; an instance without one adds none.
func TestServiceAccounts(t *testing.T) {
	snap := snapshot(t, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local, ratings.example]
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9443, name: https, protocol: HTTPS}]
  resolution: STATIC
  workloadSelector: {labels: {app: ratings}}
  endpoints:
  - {address: 10.0.0.9, serviceAccount: legacy}
  - {address: 10.0.0.8}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: ratings}, serviceAccount: bookinfo-ratings}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v2, namespace: default}
spec: {address: 10.0.0.2, labels: {app: ratings}, serviceAccount: bookinfo-ratings}
`)
	want := []Account{{"default", "bookinfo-ratings"}, {"default", "legacy"}}
	svcs := Services(snap)
	if len(svcs) != 2 {
		t.Fatalf("%d services, want one per host", len(svcs))
	}
	for _, s := range svcs {
		if diff := cmp.Diff(want, s.Accounts); diff != "" {
			t.Errorf("%s accounts (-want +got):\n%s", s.Hostname, diff)
		}
	}
}

// TestKubernetesProtocol follows the cases of Istio's ConvertProtocol test
// (pkg/config/kube): appProtocol first, then the name's prefix, UDP from
// the port's protocol, TCP for unnamed well-known ports.
func TestKubernetesProtocol(t *testing.T) {
	tests := []struct {
		name                         string
		port                         uint32
		portName, proto, appProtocol string
		want                         Protocol
	}{
		{name: "unnamed", port: 9080, want: Unknown},
		{name: "http", port: 9080, portName: "http", want: HTTP},
		{name: "http with suffix", port: 9080, portName: "http-web", want: HTTP},
		{name: "upper case", port: 9080, portName: "HTTP-web", want: HTTP},
		{name: "http2", port: 9080, portName: "http2-api", want: HTTP2},
		{name: "grpc", port: 9080, portName: "grpc", want: GRPC},
		{name: "grpc-web before the dash rule", port: 9080, portName: "grpc-web", want: GRPCWeb},
		{name: "grpc-web with suffix", port: 9080, portName: "grpc-web-api", want: GRPCWeb},
		{name: "grpcweb is no prefix", port: 9080, portName: "grpcweb", want: Unknown},
		{name: "https", port: 443, portName: "https-x", want: HTTPS},
		{name: "tls", port: 443, portName: "tls", want: TLS},
		{name: "tcp", port: 9080, portName: "tcp-web", want: TCP},
		{name: "mongo", port: 9080, portName: "mongo-db", want: Mongo},
		{name: "redis", port: 9080, portName: "redis", want: Redis},
		{name: "mysql", port: 9080, portName: "mysql", want: MySQL},
		{name: "unknown prefix", port: 9080, portName: "web-http", want: Unknown},
		{name: "udp name on a TCP port", port: 9080, portName: "udp-x", proto: "TCP", want: UDP},
		{name: "UDP protocol wins over the name", port: 53, portName: "http-dns", proto: "UDP", want: UDP},
		{name: "UDP protocol wins over appProtocol", port: 9080, proto: "UDP", appProtocol: "http", want: UDP},
		{name: "SCTP goes through the name rules", port: 9080, portName: "http", proto: "SCTP", want: HTTP},
		{name: "explicit TCP protocol", port: 9080, portName: "http", proto: "TCP", want: HTTP},
		{name: "appProtocol over a tcp name", port: 9080, portName: "tcp-web", appProtocol: "http", want: HTTP},
		{name: "appProtocol over an http name", port: 9080, portName: "http", appProtocol: "tcp", want: TCP},
		{name: "appProtocol grpc", port: 9080, appProtocol: "grpc", want: GRPC},
		{name: "appProtocol grpc-web", port: 9080, appProtocol: "grpc-web", want: GRPCWeb},
		{name: "appProtocol HTTP2 upper case", port: 9080, appProtocol: "HTTP2", want: HTTP2},
		{name: "appProtocol h2c", port: 9080, portName: "tcp", appProtocol: "kubernetes.io/h2c", want: HTTP2},
		{name: "appProtocol ws", port: 9080, appProtocol: "kubernetes.io/ws", want: HTTP},
		{name: "appProtocol wss", port: 9080, appProtocol: "kubernetes.io/wss", want: HTTPS},
		{name: "unknown appProtocol replaces the name", port: 9080, portName: "http", appProtocol: "example.com/custom", want: Unknown},
		{name: "unnamed DNS port is TCP", port: 53, want: TCP},
		{name: "unnamed SMTP port is TCP", port: 25, want: TCP},
		{name: "unnamed MySQL port is TCP", port: 3306, want: TCP},
		{name: "unnamed MongoDB port is TCP", port: 27017, want: TCP},
		{name: "named well-known port keeps its name", port: 3306, portName: "http", want: HTTP},
		{name: "unknown appProtocol on a well-known port is TCP", port: 27017, appProtocol: "example.com/x", want: TCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KubernetesProtocol(tt.port, tt.portName, tt.proto, tt.appProtocol); got != tt.want {
				t.Errorf("KubernetesProtocol(%d, %q, %q, %q) = %q, want %q", tt.port, tt.portName, tt.proto, tt.appProtocol, got, tt.want)
			}
		})
	}
}
