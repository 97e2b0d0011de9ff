package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// tcpAuthzEchoYAML is the task's tcp-echo: a service declaring ports 9000
// and 9001 (tcp and tcp-other) of a workload that also listens on 9002,
// which only the inbound passthrough filter chain serves.
const tcpAuthzEchoYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: tcp-echo-authz
  namespace: default
spec:
  hosts:
  - tcp-echo-authz.default.svc.cluster.local
  addresses:
  - 240.240.0.91
  location: MESH_INTERNAL
  ports:
  - number: 9000
    name: tcp
    protocol: TCP
  - number: 9001
    name: tcp-other
    protocol: TCP
  resolution: STATIC
  workloadSelector:
    labels:
      app: tcp-echo-authz
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: tcp-echo-authz
  namespace: default
  annotations:
    sidecar.istio.io/interceptionMode: REDIRECT
spec:
  address: 10.78.0.31
  labels:
    app: tcp-echo-authz
    version: v1
`

// tcpPolicy is the task's tcp-policy with its rules (and action) as the
// task's successive steps write them.
func tcpPolicy(action, to string) string {
	return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: tcp-policy
  namespace: default
spec:
  selector:
    matchLabels:
      app: tcp-echo-authz
  action: ` + action + `
  rules:
  - to:
    - operation:
` + to
}

// TestAuthorizationTCP follows Istio's "Authorization for TCP traffic"
// task in transparent mode: a client workload with a sidecar connects to
// tcp-echo on its service ports 9000 and 9001 (through the VIP) and on
// 9002 (the workload's address: a port of no service, handled by the
// inbound passthrough chain), as each step of the task applies tcp-policy:
//
//  1. no policy: all three ports answer;
//  2. ALLOW ports 9000 and 9001: 9002 is refused, since the policy also
//     applies to the passthrough chain;
//  3. ALLOW methods GET on port 9000: an HTTP-only field makes an ALLOW
//     rule match no TCP connection, so 9000 and 9001 are refused;
//  4. DENY methods GET on port 9000: a DENY rule drops the HTTP-only
//     field and matches all of port 9000, which is refused while 9001,
//     with no ALLOW policy left, answers.
//
// A refused connection is closed by the server's sidecar before the app
// sees a byte.
func TestAuthorizationTCP(t *testing.T) {
	requireRoot(t)
	m := startRedirectDemo(t)

	echoNS := joinNetns(t, "tcpauthz-echo", 31, true)
	clientNS := joinNetns(t, "tcpauthz-client", 32, true)
	for _, port := range []int{9000, 9001, 9002} {
		go serveEcho(listenIn(t, echoNS, fmt.Sprintf("10.78.0.31:%d", port)))
	}
	apply := func(yaml, wantLine string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		applyAt(t, redirectLoomd, f, wantLine)
	}
	apply(tcpAuthzEchoYAML, "serviceentry.networking.istio.io/tcp-echo-authz ")
	startSidecar(t, m, echoNS, "tcp-echo-authz", "10.78.0.31", "app=tcp-echo-authz,version=v1", "tcp-echo-authz")
	startSidecar(t, m, clientNS, "tcpauthz-client", "10.78.0.32", "app=tcpauthz-client", "tcpauthz-client")

	addrs := map[int]string{9000: "240.240.0.91:9000", 9001: "240.240.0.91:9001", 9002: "10.78.0.31:9002"}
	open := func(port int) bool {
		msg := fmt.Sprintf("port %d\n", port) // echo "port N" | nc, as the task
		got, err := echoOnce(t, clientNS, addrs[port], msg)
		return err == nil && got == msg
	}
	// expect waits until every port is open or refused as want says (the
	// policy reaches the sidecar within seconds), then checks that it
	// holds for ten more connections per port.
	expect := func(step string, want map[int]bool) {
		t.Helper()
		if !poll(30*time.Second, func() bool {
			for port, w := range want {
				if open(port) != w {
					return false
				}
			}
			return true
		}) {
			got := map[int]bool{}
			for port := range want {
				got[port] = open(port)
			}
			t.Fatalf("%s: ports open %v, want %v", step, got, want)
		}
		for range 10 {
			for port, w := range want {
				if open(port) != w {
					t.Fatalf("%s: port %d open=%v once, then %v", step, port, w, !w)
				}
			}
		}
	}

	expect("no policy", map[int]bool{9000: true, 9001: true, 9002: true})
	apply(tcpPolicy("ALLOW", `        ports: ["9000", "9001"]
`), "authorizationpolicy.security.istio.io/tcp-policy ")
	expect("ALLOW ports 9000 and 9001", map[int]bool{9000: true, 9001: true, 9002: false})
	apply(tcpPolicy("ALLOW", `        methods: ["GET"]
        ports: ["9000"]
`), "authorizationpolicy.security.istio.io/tcp-policy ")
	expect("ALLOW methods GET on port 9000", map[int]bool{9000: false, 9001: false, 9002: false})
	apply(tcpPolicy("DENY", `        methods: ["GET"]
        ports: ["9000"]
`), "authorizationpolicy.security.istio.io/tcp-policy ")
	expect("DENY methods GET on port 9000", map[int]bool{9000: false, 9001: true, 9002: true})
}
