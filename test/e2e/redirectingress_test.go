//go:build linux

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// movedYAML is service "moved" (VIP 240.240.0.91; HTTP 9080, TCP 9081 and
// HTTP 9090) on one transparent-mode workload at 10.78.0.51.
const movedYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: moved
  namespace: default
spec:
  hosts:
  - moved.default.svc.cluster.local
  addresses:
  - 240.240.0.91
  location: MESH_INTERNAL
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9081, name: tcp-pod, protocol: TCP}
  - {number: 9090, name: http-admin, protocol: HTTP}
  resolution: STATIC
  workloadSelector:
    labels:
      app: moved
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: moved-v1
  namespace: default
  annotations:
    sidecar.istio.io/interceptionMode: REDIRECT
spec:
  address: 10.78.0.51
  labels:
    app: moved
    version: v1
    security.istio.io/tlsMode: istio
  serviceAccount: moved
`

// movedSidecarYAML declares moved's inbound ports: service port 9080 to
// an app on the pod's loopback, 9081 to an app on the pod's IP (0.0.0.0:
// Istio's INSTANCE_IP, dialled from 127.0.0.6), and 9082, no service's,
// not captured (captureMode NONE) to an app on the loopback. Service port
// 9090 is not listed.
const movedSidecarYAML = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: moved
  namespace: default
spec:
  workloadSelector:
    labels:
      app: moved
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9081, protocol: TCP, name: tcp-pod}
    defaultEndpoint: 0.0.0.0:8081
  - port: {number: 9082, protocol: HTTP, name: http-none}
    defaultEndpoint: 127.0.0.1:8082
    captureMode: NONE
`

const movedStrictYAML = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: moved-strict
  namespace: default
spec:
  selector:
    matchLabels:
      app: moved
  mtls:
    mode: STRICT
`

// servePeer answers each line read on a connection accepted on ln with
// "LINE from=IP", IP the connection's peer address as the app sees it.
func servePeer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			peer, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				if _, err := fmt.Fprintf(c, "%s from=%s\n", sc.Text(), peer); err != nil {
					return
				}
			}
		}()
	}
}

// peerOnce sends msg as a line on a new connection from ns to addr and
// returns the line servePeer answered.
func peerOnce(t *testing.T, ns, addr, msg string) (string, error) {
	t.Helper()
	c, err := dialIn(t, ns, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// applyYAML applies doc to the redirect demo's loomd, checking that
// loomctl printed a line starting with wantLine.
func applyYAML(t *testing.T, name, doc, wantLine string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	applyAt(t, redirectLoomd, f, wantLine)
}

// serveHTTPIn serves, on addr inside ns, "NAME xfcc=XFCC" for every
// request (XFCC the request's X-Forwarded-Client-Cert).
func serveHTTPIn(t *testing.T, ns, addr, name string) {
	t.Helper()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s xfcc=%s", name, r.Header.Get("X-Forwarded-Client-Cert"))
	})}
	ln := listenIn(t, ns, addr)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
}

// getIn sends GET path with Host host on a new connection from ns to addr,
// as an app there would (through its sidecar when ns redirects), and
// returns the status and body.
func getIn(t *testing.T, ns, addr, host, path string) (int, string, error) {
	t.Helper()
	c, err := dialIn(t, ns, addr)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
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

// TestRedirectSidecarIngress runs, beside the Bookinfo demo, workload
// moved (service ports 9080, 9081, 9090) and a client, each with a
// transparent-mode sidecar, and a plain client without one; then a
// Sidecar gives moved the ingress listeners of movedSidecarYAML:
//
//   - 9080 to 127.0.0.1:8080: the client's sidecar reaches the app on
//     moved's loopback over mTLS (the app sees the client's SPIFFE ID),
//     and so does the plain client (redirected into moved's sidecar);
//   - 9081 to 0.0.0.0:8081: the app on moved's pod IP answers, and sees
//     moved's sidecar dial it from 127.0.0.6, as Istio binds an inbound
//     cluster to the pod IP (with a proxy of uid 1337 iptables would
//     otherwise send the connection back to 15006);
//   - 9090, a service port the Sidecar does not list, is no longer served
//     inbound: moved's sidecar, which logged the plain client's request on
//     inbound|9090|| before, now passes it through
//     (InboundPassthroughCluster), as Istio, on its HTTP chain for the
//     client's sidecar too (its mTLS offers istio-http/1.1);
//   - 9082, captureMode NONE, gets a listener bound to 10.78.0.51:9082: a
//     process in moved's namespace (which iptables does not redirect)
//     reaches the app through it, while nothing is bound on 9080;
//   - under STRICT the plain client is refused on the ingress ports and
//     the client's sidecar still gets through.
//
// The sidecars are stopped by PID (startIn), the namespaces, with their
// iptables rules, deleted (joinNetns), and the demo checks that none is
// left (startRedirectDemo).
func TestRedirectSidecarIngress(t *testing.T) {
	requireRoot(t)
	m := startRedirectDemo(t)

	movedNS := joinNetns(t, "ingr-moved", 51, true)
	clientNS := joinNetns(t, "ingr-client", 52, true)
	plainNS := joinNetns(t, "ingr-plain", 53, false)

	serveHTTPIn(t, movedNS, "127.0.0.1:8080", "loopback")
	go servePeer(listenIn(t, movedNS, "10.78.0.51:8081"))
	serveHTTPIn(t, movedNS, "127.0.0.1:8082", "none")
	serveHTTPIn(t, movedNS, "10.78.0.51:9090", "admin")

	applyYAML(t, "moved", movedYAML, "serviceentry.networking.istio.io/moved ")
	movedProxy := startSidecar(t, m, movedNS, "moved-v1", "10.78.0.51", "app=moved,version=v1", "moved")
	startSidecar(t, m, clientNS, "client", "10.78.0.52", "app=client", "client")

	const host9080 = "moved.default.svc.cluster.local:9080"
	// The plain client's requests to 9090: its sidecar-less plaintext
	// takes moved's HTTP chains, whose log lines name the path.
	t.Run("before the Sidecar: service port 9090 is served inbound", func(t *testing.T) {
		// Until the sidecar has moved's service, requests pass through
		// (InboundPassthroughCluster): ask again until one is served by
		// the service's inbound cluster.
		if !poll(30*time.Second, func() bool {
			code, body, err := getIn(t, plainNS, "10.78.0.51:9090", "10.78.0.51:9090", "/before-sidecar")
			return err == nil && code == http.StatusOK && body == "admin xfcc=" && movedProxy.logHas("/before-sidecar", "inbound|9090||")
		}) {
			code, body, err := getIn(t, plainNS, "10.78.0.51:9090", "10.78.0.51:9090", "/before-sidecar")
			t.Fatalf("plain GET 10.78.0.51:9090 = %d %q, %v; want 200 from the admin app, logged by moved's sidecar on inbound|9090||", code, body, err)
		}
	})

	applyYAML(t, "moved-sidecar", movedSidecarYAML, "sidecar.networking.istio.io/moved ")

	const clientID = "spiffe://cluster.local/ns/default/sa/client"
	t.Run("9080 to 127.0.0.1:8080: the app on moved's loopback, over mTLS", func(t *testing.T) {
		ok := func(code int, body string, err error) bool {
			return err == nil && code == http.StatusOK && strings.HasPrefix(body, "loopback xfcc=") && strings.Contains(body, clientID)
		}
		// Before the Sidecar nothing listens on 10.78.0.51:9080.
		if !poll(15*time.Second, func() bool { return ok(getIn(t, clientNS, "240.240.0.91:9080", host9080, "/")) }) {
			code, body, err := getIn(t, clientNS, "240.240.0.91:9080", host9080, "/")
			t.Fatalf("GET moved:9080 through the client's sidecar = %d %q, %v; want 200 from the app on 127.0.0.1:8080 with %s", code, body, err, clientID)
		}
		for i := range 10 {
			if code, body, err := getIn(t, clientNS, "240.240.0.91:9080", host9080, fmt.Sprintf("/moved-%d", i)); !ok(code, body, err) {
				t.Fatalf("GET %d moved:9080 = %d %q, %v", i, code, body, err)
			}
		}
		pollUntil(t, "moved's inbound|9080|| log line", func() bool { return movedProxy.logHas("/moved-9", "inbound|9080||") })
	})

	t.Run("9080: a client without sidecar is redirected to the same app", func(t *testing.T) {
		if code, body, err := getIn(t, plainNS, "10.78.0.51:9080", "10.78.0.51:9080", "/plain"); err != nil || code != http.StatusOK || body != "loopback xfcc=" {
			t.Fatalf("plain GET 10.78.0.51:9080 = %d %q, %v; want 200 %q", code, body, err, "loopback xfcc=")
		}
	})

	t.Run("9081 to 0.0.0.0:8081: the app on moved's pod IP, dialled from 127.0.0.6", func(t *testing.T) {
		for i := range 10 {
			msg := fmt.Sprintf("pod-ip %d", i)
			if got, err := peerOnce(t, clientNS, "240.240.0.91:9081", msg); err != nil || got != msg+" from=127.0.0.6" {
				t.Fatalf("line %d through moved:9081 = %q, %v; want %q from the app on 10.78.0.51:8081", i, got, err, msg+" from=127.0.0.6")
			}
		}
		pollUntil(t, "moved's inbound|9081|| log line", func() bool { return movedProxy.logHas("inbound|9081||", "10.78.0.52:") })
	})

	t.Run("9090, not listed: passed through, not served inbound", func(t *testing.T) {
		code, body, err := getIn(t, plainNS, "10.78.0.51:9090", "10.78.0.51:9090", "/after-sidecar")
		if err != nil || code != http.StatusOK || body != "admin xfcc=" {
			t.Fatalf("plain GET 10.78.0.51:9090 = %d %q, %v; want 200 from the admin app through the passthrough chain", code, body, err)
		}
		pollUntil(t, "moved's InboundPassthroughCluster log line", func() bool {
			return movedProxy.logHas("/after-sidecar", "InboundPassthroughCluster")
		})
		if movedProxy.logHas("/after-sidecar", "inbound|9090||") {
			t.Error("moved's sidecar still serves the unlisted service port 9090 on inbound|9090||")
		}
		// From the client's sidecar, over mTLS offering istio-http/1.1
		// (istio.alpn), the request takes the passthrough's HTTP chain
		// (virtualInbound-catchall-http) too, which logs its path.
		code, body, err = getIn(t, clientNS, "240.240.0.91:9090", "moved.default.svc.cluster.local:9090", "/after-sidecar-mesh")
		if err != nil || code != http.StatusOK || !strings.HasPrefix(body, "admin xfcc=") {
			t.Fatalf("GET moved:9090 through the client's sidecar = %d %q, %v; want 200 from the admin app", code, body, err)
		}
		pollUntil(t, "moved's InboundPassthroughCluster HTTP log line for the mesh client", func() bool {
			return movedProxy.logHas("/after-sidecar-mesh", "InboundPassthroughCluster")
		})
	})

	t.Run("9082 captureMode NONE: a listener bound to the pod IP", func(t *testing.T) {
		// A process in moved's namespace is not redirected: only a
		// listener bound to 10.78.0.51:9082 can answer it.
		if !poll(10*time.Second, func() bool {
			code, body, err := getIn(t, movedNS, "10.78.0.51:9082", "10.78.0.51:9082", "/local")
			return err == nil && code == http.StatusOK && body == "none xfcc="
		}) {
			code, body, err := getIn(t, movedNS, "10.78.0.51:9082", "10.78.0.51:9082", "/local")
			t.Fatalf("GET 10.78.0.51:9082 from moved's namespace = %d %q, %v; want 200 from the app on 127.0.0.1:8082 through the bound listener", code, body, err)
		}
		// A captured port binds nothing.
		if _, _, err := getIn(t, movedNS, "10.78.0.51:9080", "10.78.0.51:9080", "/local"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("GET 10.78.0.51:9080 from moved's namespace: %v; want connection refused (9080 is captured, not bound)", err)
		}
		// From outside, iptables still redirects; the passthrough chain
		// reaches the bound listener.
		if code, body, err := getIn(t, plainNS, "10.78.0.51:9082", "10.78.0.51:9082", "/outside"); err != nil || code != http.StatusOK || body != "none xfcc=" {
			t.Errorf("plain GET 10.78.0.51:9082 = %d %q, %v; want 200 %q", code, body, err, "none xfcc=")
		}
	})

	t.Run("STRICT applies to the ingress ports: the plain client is refused, the mesh client is not", func(t *testing.T) {
		applyYAML(t, "moved-strict", movedStrictYAML, "peerauthentication.security.istio.io/moved-strict ")
		if !poll(15*time.Second, func() bool {
			_, _, err := getIn(t, plainNS, "10.78.0.51:9080", "10.78.0.51:9080", "/plain")
			return err != nil
		}) {
			t.Fatal("STRICT: the client without sidecar still gets an answer on 9080")
		}
		if got, err := peerOnce(t, plainNS, "10.78.0.51:9081", "plain"); err == nil {
			t.Errorf("STRICT: the client without sidecar still gets an answer on 9081: %q", got)
		}
		for i := range 10 {
			msg := fmt.Sprintf("strict %d", i)
			if got, err := peerOnce(t, clientNS, "240.240.0.91:9081", msg); err != nil || got != msg+" from=127.0.0.6" {
				t.Fatalf("STRICT: line %d through moved:9081 = %q, %v", i, got, err)
			}
		}
		if code, body, err := getIn(t, clientNS, "240.240.0.91:9080", host9080, "/strict"); err != nil || code != http.StatusOK || !strings.Contains(body, clientID) {
			t.Errorf("STRICT: GET moved:9080 through the client's sidecar = %d %q, %v", code, body, err)
		}
	})
}
