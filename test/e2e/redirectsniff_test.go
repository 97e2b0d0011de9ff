//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// sniffYAML is two Kubernetes Services, as kubectl would take them, whose
// one port each is unnamed, so of unknown protocol (Istio's sniffed
// "auto"): pg (cluster IP 240.240.0.96, port 5432) carries raw TCP, web
// (240.240.0.97, port 8080) HTTP; one workload in REDIRECT mode serves
// both. A VirtualService aborts web's requests carrying x-fault: abort.
const sniffYAML = `apiVersion: v1
kind: Service
metadata: {name: pg, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 240.240.0.96
  selector: {app: sniff}
  ports:
  - port: 5432
    targetPort: 5432
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 240.240.0.97
  selector: {app: sniff}
  ports:
  - port: 8080
    targetPort: 8080
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: sniff-v1
  namespace: default
  annotations:
    sidecar.istio.io/interceptionMode: REDIRECT
spec:
  address: 10.78.0.51
  labels: {app: sniff, version: v1, security.istio.io/tlsMode: istio}
  serviceAccount: sniff
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  http:
  - match:
    - headers:
        x-fault: {exact: abort}
    fault:
      abort:
        httpStatus: 418
        percentage: {value: 100}
    route:
    - destination: {host: web.default.svc.cluster.local}
  - route:
    - destination: {host: web.default.svc.cluster.local}
`

// startupMessage opens as a Postgres client's SSLRequest does (length 8,
// code 80877103): binary, client first, nothing like an HTTP request line.
const startupMessage = "\x00\x00\x00\x08\x04\xd2\x16\x2f"

// TestRedirectUnknownProtocol: ports of unknown protocol (Kubernetes
// Services with unnamed ports) are sniffed by a transparent client
// sidecar, as Istio does: a client-first raw TCP protocol reaches the
// server through both sidecars (it met an HTTP connection manager
// before), and HTTP on such a port still gets HTTP routing (the
// VirtualService's header-matched fault) and, over mTLS offering Istio's
// istio-http/1.1 (istio.alpn), the server sidecar's HTTP chain: its
// access log records the request's method, path and code, and an
// AuthorizationPolicy allowing by path applies there.
func TestRedirectUnknownProtocol(t *testing.T) {
	requireRoot(t)
	m := startRedirectDemo(t)

	srvNS := joinNetns(t, "sniff", 51, true)
	clientNS := joinNetns(t, "sniff-client", 52, true)
	go serveEcho(listenIn(t, srvNS, "10.78.0.51:5432"))
	web := listenIn(t, srvNS, "10.78.0.51:8080")
	webProtos := new(http.Protocols)
	webProtos.SetHTTP1(true)
	webProtos.SetUnencryptedHTTP2(true)
	webSrv := &http.Server{Protocols: webProtos, ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/proto" {
				fmt.Fprintf(w, "web %s", r.Proto)
				return
			}
			fmt.Fprintf(w, "web %s", r.Host)
		})}
	go func() { _ = webSrv.Serve(web) }()
	t.Cleanup(func() { webSrv.Close() })

	f := filepath.Join(t.TempDir(), "sniff.yaml")
	if err := os.WriteFile(f, []byte(sniffYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	applyAt(t, redirectLoomd, f, "virtualservice.networking.istio.io/web ")
	srvProxy := startSidecar(t, m, srvNS, "sniff-v1", "10.78.0.51", "app=sniff,version=v1", "sniff")
	clientProxy := startSidecar(t, m, clientNS, "sniff-client", "10.78.0.52", "app=sniff-client", "sniff-client")

	getPath := func(path string, fault bool) (int, string, error) {
		c, err := dialIn(t, clientNS, "240.240.0.97:8080")
		if err != nil {
			return 0, "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		req := "GET " + path + " HTTP/1.1\r\nHost: web.default.svc.cluster.local:8080\r\nConnection: close\r\n"
		if fault {
			req += "x-fault: abort\r\n"
		}
		if _, err := io.WriteString(c, req+"\r\n"); err != nil {
			return 0, "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	t.Run("raw TCP, client first, through both sidecars", func(t *testing.T) {
		const vip = "240.240.0.96:5432"
		msg := startupMessage + "user=loom"
		if !poll(30*time.Second, func() bool { got, err := echoOnce(t, clientNS, vip, msg); return err == nil && got == msg }) {
			got, err := echoOnce(t, clientNS, vip, msg)
			t.Fatalf("raw TCP through the cluster IP: %q, %v", got, err)
		}
		for i := range 10 {
			msg := fmt.Sprintf("%s#%d", startupMessage, i)
			if got, err := echoOnce(t, clientNS, vip, msg); err != nil || got != msg {
				t.Fatalf("raw TCP %d: %q, %v", i, got, err)
			}
		}
		pollUntil(t, "the client sidecar's outbound log line", func() bool {
			return clientProxy.logHas("outbound|5432||pg.default.svc.cluster.local", vip)
		})
		pollUntil(t, "the server sidecar's inbound log line", func() bool {
			return srvProxy.logHas("inbound|5432||", "10.78.0.52:")
		})
	})

	t.Run("HTTP on a port of unknown protocol is routed", func(t *testing.T) {
		get := func(fault bool) (int, string, error) { return getPath("/", fault) }
		if !poll(30*time.Second, func() bool { code, _, err := get(false); return err == nil && code == http.StatusOK }) {
			code, body, err := get(false)
			t.Fatalf("GET web:8080 = %d %q, %v; want 200", code, body, err)
		}
		if code, body, err := get(false); err != nil || code != http.StatusOK || !strings.HasPrefix(body, "web ") {
			t.Fatalf("GET web:8080 = %d %q, %v; want 200 from the app", code, body, err)
		}
		for i := range 5 {
			if code, body, err := get(true); err != nil || code != http.StatusTeapot {
				t.Fatalf("GET %d with x-fault: abort = %d %q, %v; want the fault's 418", i, code, body, err)
			}
		}
		// The client sidecar's mTLS offered istio-http/1.1, so the
		// server sidecar took the request on its HTTP chain (its TCP
		// chain would log "- - -" and no code).
		if code, body, err := getPath("/over-mtls-alpn", false); err != nil || code != http.StatusOK {
			t.Fatalf("GET /over-mtls-alpn = %d %q, %v; want 200", code, body, err)
		}
		pollUntil(t, "the server sidecar's inbound HTTP log line", func() bool {
			return srvProxy.logHas(`"GET /over-mtls-alpn HTTP/1.1" 200`, "inbound|8080||")
		})
	})

	// An h2c request on such a port goes on over HTTP/2, as in Istio: the
	// client sidecar's cluster follows the downstream's protocol and, by
	// istio.alpn, offers istio-h2, which the server sidecar's HTTP chain
	// matches and serves as HTTP/2 though ALPN negotiated nothing; its
	// inbound cluster follows too, so the app sees HTTP/2.
	t.Run("h2c on a port of unknown protocol is HTTP/2 to the app", func(t *testing.T) {
		c, err := dialIn(t, clientNS, "240.240.0.97:8080")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(c)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		req, _ := http.NewRequest("GET", "http://web.default.svc.cluster.local:8080/proto", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("h2c GET /proto: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "web HTTP/2.0" {
			t.Fatalf("h2c GET /proto = %d %q; want 200 \"web HTTP/2.0\" (HTTP/2 on every hop)", resp.StatusCode, b)
		}
		pollUntil(t, "the server sidecar's inbound HTTP/2 log line", func() bool {
			return srvProxy.logHas(`"GET /proto HTTP/2" 200`, "inbound|8080||")
		})
	})

	// On the TCP chain an ALLOW rule with paths matches nothing, so it
	// would refuse every connection; on the HTTP chain it allows by path.
	t.Run("an HTTP AuthorizationPolicy applies on the server sidecar", func(t *testing.T) {
		applyYAML(t, "sniff-authz", sniffAuthzYAML, "authorizationpolicy.security.istio.io/web-paths ")
		if !poll(30*time.Second, func() bool {
			code, _, err := getPath("/private", false)
			return err == nil && code == http.StatusForbidden
		}) {
			code, body, err := getPath("/private", false)
			t.Fatalf("GET /private = %d %q, %v; want the server sidecar's 403", code, body, err)
		}
		for i := range 5 {
			if code, body, err := getPath(fmt.Sprintf("/public/%d", i), false); err != nil || code != http.StatusOK || !strings.HasPrefix(body, "web ") {
				t.Fatalf("GET /public/%d = %d %q, %v; want 200 from the app", i, code, body, err)
			}
		}
	})
}

// sniffAuthzYAML allows the sniff workload's requests whose path starts
// with /public: HTTP-only fields.
const sniffAuthzYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-paths, namespace: default}
spec:
  selector: {matchLabels: {app: sniff}}
  action: ALLOW
  rules:
  - to:
    - operation: {paths: ["/public*"]}
`
