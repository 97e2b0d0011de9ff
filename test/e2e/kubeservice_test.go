package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// kubeServiceYAML is a Kubernetes Service, as kubectl would take it,
// whose port names say TCP and whose appProtocols say otherwise, and a
// VirtualService that aborts requests carrying x-fault: abort.
const kubeServiceYAML = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  type: ClusterIP
  sessionAffinity: None
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  selector: {app: web}
  ports:
  - name: tcp-web
    port: 9080
    targetPort: 9080
    protocol: TCP
    appProtocol: http
  - name: tcp-grpc
    port: 9081
    targetPort: 9081
    appProtocol: kubernetes.io/h2c
status:
  loadBalancer: {}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - match:
    - port: 9080
      headers:
        x-fault: {exact: abort}
    fault:
      abort:
        httpStatus: 418
        percentage: {value: 100}
    route:
    - destination: {host: web, port: {number: 9080}}
  - route:
    - destination: {host: web}
`

// TestKubernetesServiceAppProtocol serves a Kubernetes Service read from
// the config dir, its endpoint the WorkloadEntry its selector picks. Port
// 9080 is named tcp-web but has appProtocol http: it is HTTP, so the
// VirtualService's header-matched fault abort applies (a TCP port has no
// routes to match headers on). Port 9081 is named tcp-grpc with
// appProtocol kubernetes.io/h2c: it is HTTP2, so a gRPC call reaches the
// h2c app through both sidecars. Were appProtocol ignored, both ports
// would be TCP and neither check could pass through the explicit-mode
// client sidecar, which routes HTTP by host.
func TestKubernetesServiceAppProtocol(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, &grpcApp{next: make(chan struct{}, 1)})
	serveApp(t, "127.55.0.10:9081", gs.Serve, gs.Stop)
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web %s", r.Proto)
	})
	m := startAppMesh(t, "127.55.0", []appWorkload{
		{Name: "web-v1", App: "web", Version: "v1", Octet: 10, Handler: web, NoServiceEntry: true},
	}, kubeServiceYAML)

	t.Run("appProtocol http: HTTP routing applies", func(t *testing.T) {
		c := m.client(5 * time.Second)
		get := func(fault bool) (int, string) {
			req, err := http.NewRequest(http.MethodGet, "http://web.default.svc.cluster.local:9080/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if fault {
				req.Header.Set("x-fault", "abort")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("GET through the sidecars: %v\n%s", err, m.tails())
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		if code, body := get(false); code != http.StatusOK || body != "web HTTP/1.1" {
			t.Fatalf("GET web:9080 = %d %q, want 200 \"web HTTP/1.1\"\n%s", code, body, m.tails())
		}
		for i := range 5 {
			if code, body := get(true); code != http.StatusTeapot {
				t.Fatalf("GET %d with x-fault: abort = %d %q, want the fault's 418", i, code, body)
			}
		}
	})

	t.Run("appProtocol kubernetes.io/h2c: gRPC through the sidecars", func(t *testing.T) {
		cc, err := grpc.NewClient("passthrough:///"+m.ip(clientOctet)+":15001",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority("web.default.svc.cluster.local:9081"))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}})
		if err != nil {
			t.Fatalf("UnaryCall to web:9081: %v\n%s", err, m.tails())
		}
		if got := string(resp.GetPayload().GetBody()); got != "re:hi" {
			t.Errorf("UnaryCall = %q, want re:hi", got)
		}
	})
}
