//go:build linux

package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil"
)

// tlsRouteYAML is a TLS service with a VIP whose two workloads (no
// sidecar: their apps terminate TLS themselves) are the subsets a and b,
// and Istio's tls routes for the mesh: SNI b.tls.example to b,
// split.tls.example 50/50.
const tlsRouteYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: tls-svc
  namespace: default
spec:
  hosts:
  - tls-svc.default.svc.cluster.local
  addresses:
  - 240.240.0.95
  location: MESH_INTERNAL
  ports:
  - number: 8443
    name: tls
    protocol: TLS
  resolution: STATIC
  workloadSelector:
    labels:
      app: tls-svc
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: tls-svc-a
  namespace: default
spec:
  address: 10.78.0.41
  labels:
    app: tls-svc
    version: a
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: tls-svc-b
  namespace: default
spec:
  address: 10.78.0.42
  labels:
    app: tls-svc
    version: b
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: tls-svc
  namespace: default
spec:
  host: tls-svc.default.svc.cluster.local
  subsets:
  - name: a
    labels:
      version: a
  - name: b
    labels:
      version: b
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tls-svc
  namespace: default
spec:
  hosts:
  - tls-svc.default.svc.cluster.local
  tls:
  - match:
    - sniHosts:
      - b.tls.example
    route:
    - destination:
        host: tls-svc.default.svc.cluster.local
        subset: b
  - match:
    - sniHosts:
      - split.tls.example
    route:
    - destination:
        host: tls-svc.default.svc.cluster.local
        subset: a
      weight: 50
    - destination:
        host: tls-svc.default.svc.cluster.local
        subset: b
      weight: 50
`

// tlsLineIn dials addr over TLS from inside ns with sni, trusting roots,
// and returns the line the server sent.
func tlsLineIn(t *testing.T, ns, addr, sni string, roots *x509.CertPool) (string, error) {
	t.Helper()
	raw, err := dialIn(t, ns, addr)
	if err != nil {
		return "", err
	}
	c := tls.Client(raw, &tls.Config{ServerName: sni, RootCAs: roots})
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// TestRedirectTLSRoutes: VirtualService tls routes on a transparent
// sidecar. The client app, unchanged, opens TLS to the service's VIP;
// iptables sends it to its sidecar, which reads the SNI (without
// terminating TLS) and routes it: b.tls.example always to workload b,
// split.tls.example 50/50 (±10 over 200 connections), the service's own
// name to either. The client sees the chosen backend's own certificate.
func TestRedirectTLSRoutes(t *testing.T) {
	requireRoot(t)
	m := startRedirectDemo(t)

	aNS := joinNetns(t, "tlsr-a", 41, false)
	bNS := joinNetns(t, "tlsr-b", 42, false)
	clientNS := joinNetns(t, "tlsr-client", 43, true)
	ca := testutil.NewCA(t, "tls backends CA")
	names := []string{"b.tls.example", "split.tls.example", "tls-svc.default.svc.cluster.local"}
	for _, w := range []struct{ ns, addr, name string }{{aNS, "10.78.0.41:8443", "A"}, {bNS, "10.78.0.42:8443", "B"}} {
		ln := tls.NewListener(listenIn(t, w.ns, w.addr), &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, testutil.LeafOptions{DNS: names}).TLS}})
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					_, _ = io.WriteString(c, w.name+"\n")
				}()
			}
		}()
	}

	f := filepath.Join(t.TempDir(), "tls-svc.yaml")
	if err := os.WriteFile(f, []byte(tlsRouteYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	applyAt(t, redirectLoomd, f, "virtualservice.networking.istio.io/tls-svc ")
	clientProxy := startSidecar(t, m, clientNS, "tlsr-client", "10.78.0.43", "app=tlsr-client", "tlsr-client")

	const vip = "240.240.0.95:8443"
	if !poll(30*time.Second, func() bool {
		got, err := tlsLineIn(t, clientNS, vip, "b.tls.example", ca.Pool)
		return err == nil && got == "B"
	}) {
		got, err := tlsLineIn(t, clientNS, vip, "b.tls.example", ca.Pool)
		t.Fatalf("TLS to the VIP with SNI b.tls.example: %q, %v; want B", got, err)
	}
	for i := range 20 {
		if got, err := tlsLineIn(t, clientNS, vip, "b.tls.example", ca.Pool); err != nil || got != "B" {
			t.Fatalf("SNI b.tls.example, connection %d: %q, %v; want B", i, got, err)
		}
	}
	pollUntil(t, "the client sidecar's log line for subset b", func() bool {
		return clientProxy.logHas("outbound|8443|b|tls-svc.default.svc.cluster.local", vip, "b.tls.example")
	})

	count := map[string]int{}
	const n = 200
	for i := range n {
		got, err := tlsLineIn(t, clientNS, vip, "split.tls.example", ca.Pool)
		if err != nil {
			t.Fatalf("SNI split.tls.example, connection %d: %v", i, err)
		}
		count[got]++
	}
	if count["A"]+count["B"] != n || count["A"] < 90 || count["A"] > 110 {
		t.Errorf("SNI split.tls.example over %d connections: %v; want A and B 50/50 ±10", n, count)
	}
	t.Logf("split.tls.example over %d connections: %v", n, count)

	seen := map[string]bool{}
	for range 20 {
		got, err := tlsLineIn(t, clientNS, vip, "tls-svc.default.svc.cluster.local", ca.Pool)
		if err != nil {
			t.Fatalf("SNI tls-svc.default.svc.cluster.local: %v", err)
		}
		seen[got] = true
	}
	if !seen["A"] || !seen["B"] {
		t.Errorf("the service's own name over 20 connections reached %v; want both workloads", seen)
	}
}
