package e2e

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestEgress: an HTTP server outside the registry (127.54.0.200:8081) is
// reachable through the client's sidecar under ALLOW_ANY (PassthroughCluster,
// the destination taken from the authority), refused with 502 under
// REGISTRY_ONLY (block_all), and reachable again by its ServiceEntry host
// (a MESH_EXTERNAL DNS entry: a STRICT_DNS cluster) once one is applied.
func TestEgress(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	const external = "127.54.0.200:8081"
	ln, err := net.Listen("tcp", external)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "external saw "+r.Host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	m := startAppMesh(t, "127.54.0", nil, "")
	c := m.client(5 * time.Second)
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", url, err, m.tails())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := get("http://" + external + "/"); code != http.StatusOK || body != "external saw "+external {
		t.Fatalf("ALLOW_ANY: GET %s = %d %q, want 200 from the external server\n%s", external, code, body, m.tails())
	}

	m.setMeshConfig("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n")
	if code, body := get("http://" + external + "/"); code != http.StatusBadGateway {
		t.Fatalf("REGISTRY_ONLY: GET %s = %d %q, want 502", external, code, body)
	}

	m.apply(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: default
spec:
  hosts: [external.test]
  location: MESH_EXTERNAL
  ports: [{number: 8081, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints:
  - address: 127.54.0.200
`)
	if code, body := get("http://external.test:8081/"); code != http.StatusOK || body != "external saw external.test:8081" {
		t.Fatalf("ServiceEntry: GET external.test:8081 = %d %q, want 200 from the external server\n%s", code, body, m.tails())
	}
	// The IP itself is still outside the registry.
	if code, _ := get("http://" + external + "/"); code != http.StatusBadGateway {
		t.Fatalf("REGISTRY_ONLY with the ServiceEntry: GET %s = %d, want 502", external, code)
	}

	// A Sidecar's egressProxy takes what ALLOW_ANY would pass through: the
	// request for the unknown IP arrives at the egress process, its Host
	// unchanged; a known host is still routed to its service.
	const egressAddr = "127.54.0.202:3128"
	eln, err := net.Listen("tcp", egressAddr)
	if err != nil {
		t.Fatal(err)
	}
	esrv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "egress saw "+r.Host)
	})}
	go esrv.Serve(eln)
	t.Cleanup(func() { esrv.Close() })
	m.apply(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: egress
  namespace: default
spec:
  hosts: [egress.test]
  location: MESH_EXTERNAL
  ports: [{number: 3128, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - address: 127.54.0.202
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: client
  namespace: default
spec:
  workloadSelector: {labels: {app: client}}
  egress:
  - hosts: ["./*"]
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.test, port: {number: 3128}}
`)
	if code, body := get("http://" + external + "/"); code != http.StatusOK || body != "egress saw "+external {
		t.Fatalf("egressProxy: GET %s = %d %q, want 200 from the egress process\n%s", external, code, body, m.tails())
	}
	if code, body := get("http://external.test:8081/"); code != http.StatusOK || body != "external saw external.test:8081" {
		t.Fatalf("egressProxy: GET external.test:8081 = %d %q, want 200 from the external server\n%s", code, body, m.tails())
	}
}
