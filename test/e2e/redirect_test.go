//go:build linux

package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loom-mesh/loom/internal/local"
	"github.com/loom-mesh/loom/internal/testutil/promtest"
)

// Transparent interception end to end: `loomctl demo --interception
// redirect` in network namespaces loomt-* on 10.78.0.0/24 (the demo's own
// default is loom-* on 10.77.0.0/24, so a running demo is left alone),
// plus namespaces the test adds to its bridge.
const (
	redirectPrefix = "loomt"
	redirectSubnet = "10.78.0.0/24"
	redirectLoomd  = "10.78.0.1:15014"
	redirectXDS    = "10.78.0.1:15010"
	redirectCA     = "10.78.0.1:15012"
)

// requireRoot skips t, saying why, when the test cannot create network
// namespaces and iptables rules.
func requireRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if os.Geteuid() != 0 {
		t.Skip("e2e: SKIPPED: transparent interception needs root (network namespaces, veths, iptables); run the tests as root")
	}
}

// redirectNetnsGone fails t when a namespace or link of the test's prefix
// is left.
func redirectNetnsGone(t *testing.T) {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	links, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	for _, l := range strings.Split(string(out)+string(links), "\n") {
		if strings.Contains(l, redirectPrefix+"-") || strings.Contains(l, " "+redirectPrefix+"h") {
			t.Errorf("left after the demo stopped: %s", l)
		}
	}
}

// startRedirectDemo runs the Bookinfo demo in transparent mode and checks,
// when the test ends, that it removed every namespace, veth and the
// bridge.
func startRedirectDemo(t *testing.T) *mesh {
	t.Helper()
	t.Cleanup(func() { redirectNetnsGone(t) }) // runs after the demo's stop
	return startDemoArgs(t, "--interception", "redirect", "--netns-prefix", redirectPrefix, "--netns-subnet", redirectSubnet)
}

// TestRedirectBookinfo (a): the product page through the ingress gateway,
// with the apps unchanged and no HTTP_PROXY, reviews balanced round robin
// over v1, v2 and v3; Istio's virtual-service-all-v1.yaml, unchanged,
// sends everything to v1.
func TestRedirectBookinfo(t *testing.T) {
	requireRoot(t)
	m := startRedirectDemo(t)
	anon := newClient(t)

	t.Run("round robin over v1 v2 v3", func(t *testing.T) {
		counts := countVersions(t, anon, m.pageURL, 300)
		for _, v := range []string{"v1", "v2", "v3"} {
			if counts[v] < 80 || counts[v] > 120 {
				t.Errorf("300 requests were served by %v, want about 100 each of v1, v2, v3", counts)
				break
			}
		}
	})
	t.Run("all v1", func(t *testing.T) {
		applyAt(t, redirectLoomd, sample("destination-rule-all.yaml"), "destinationrule.networking.istio.io/reviews ")
		applyAt(t, redirectLoomd, sample("virtual-service-all-v1.yaml"), "virtualservice.networking.istio.io/reviews ")
		pollUntil(t, "10 requests in a row served by reviews-v1", func() bool { return allServedBy(t, anon, m.pageURL, 10, "v1") })
		if counts := countVersions(t, anon, m.pageURL, 100); counts["v1"] != 100 {
			t.Errorf("100 requests with all traffic on v1 were served by %v", counts)
		}
	})
}

// netnsFd opens the network namespace name (ip netns keeps it at
// /var/run/netns/NAME).
func netnsFd(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(filepath.Join("/var/run/netns", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// inNetns runs f on an OS thread switched into network namespace ns: a
// socket f creates belongs to ns for its whole life, whichever thread
// uses it later. The thread is switched back before it is unlocked: a
// thread that exits would fire the parent-death signal of every child
// process forked from it (the demo's included).
func inNetns(t *testing.T, ns string, f func() error) error {
	t.Helper()
	target := netnsFd(t, ns)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the goroutine's exit ends the thread.
			errc <- fmt.Errorf("setns back from %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// listenIn listens on addr inside ns.
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := inNetns(t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialIn connects to addr from inside ns, as an app there would.
func dialIn(t *testing.T, ns, addr string) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := inNetns(t, ns, func() (err error) { c, err = net.DialTimeout("tcp", addr, 3*time.Second); return err })
	return c, err
}

// joinNetns adds namespace loomt-NAME at .octet to the demo's bridge (with
// a sidecar's iptables rules when redirect) and removes it in t.Cleanup.
func joinNetns(t *testing.T, name string, octet int, redirect bool) string {
	t.Helper()
	leave, err := local.LeaveCommands(redirectPrefix, redirectSubnet, name, octet)
	if err != nil {
		t.Fatal(err)
	}
	runAll := func(cmds []local.Command, check bool) {
		for _, c := range cmds {
			cmd := exec.Command(c.Args[0], c.Args[1:]...)
			cmd.Stdin = strings.NewReader(c.Stdin)
			if out, err := cmd.CombinedOutput(); err != nil && check {
				t.Fatalf("%s: %v: %s", strings.Join(c.Args, " "), err, out)
			}
		}
	}
	runAll(leave, false) // a leftover of an earlier run
	join, err := local.JoinCommands(redirectPrefix, redirectSubnet, name, octet, redirect)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runAll(leave, false) })
	runAll(join, true)
	return redirectPrefix + "-" + name
}

// proc is a process the test started.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startIn runs bin with args inside ns (ip netns exec), its output in a
// log file; it is stopped by PID (SIGTERM, then SIGKILL) in t.Cleanup.
func startIn(t *testing.T, ns, name, bin string, args ...string) *proc {
	t.Helper()
	log := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, filepath.Join(binDir, bin)}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			data, _ := os.ReadFile(log)
			t.Logf("%s log:\n%s", name, tailLines(string(data), 30))
		}
	})
	return p
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logHas reports whether p's log has a line containing every one of subs.
func (p *proc) logHas(subs ...string) bool { return fileHasLine(p.log, subs...) }

// startSidecar runs loom-proxy --interception redirect in ns for the
// workload name at ip.
func startSidecar(t *testing.T, m *mesh, ns, name, ip, labels, sa string) *proc {
	t.Helper()
	// Its certificate: a bootstrap token minted into the demo's CA, as
	// loomctl demo does for its own workloads; without one the sidecar
	// could neither originate nor take mTLS.
	dataDir := filepath.Join(demoStateDir(t, m), "loomd")
	token := mintToken(t, dataDir, "", sa, name)
	return startIn(t, ns, name+"-proxy", "loom-proxy", "sidecar", "--interception", "redirect", "--ip", ip, "--name", name,
		"--namespace", "default", "--labels", labels, "--service-account", sa, "--xds-addr", redirectXDS,
		"--ca-addr", redirectCA, "--token-file", token, "--root-cert", filepath.Join(dataDir, "root-cert.pem"))
}

// demoStateDir is the state directory loomctl demo printed ("state: DIR").
func demoStateDir(t *testing.T, m *mesh) string {
	t.Helper()
	for _, line := range strings.Split(m.out.String(), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "state:"); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("loomctl demo printed no state directory:\n%s", m.out.String())
	return ""
}

// serveEcho echoes every connection accepted on ln.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
	}
}

// echoOnce sends msg on a new connection from ns to addr and returns
// what came back.
func echoOnce(t *testing.T, ns, addr, msg string) (string, error) {
	t.Helper()
	c, err := dialIn(t, ns, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

// tcpEchoStrictYAML makes the echo workload take mTLS only.
const tcpEchoStrictYAML = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: tcp-echo-strict
  namespace: default
spec:
  selector:
    matchLabels:
      app: tcp-echo
  mtls:
    mode: STRICT
`

// tcpEchoYAML is a TCP service with a VIP, whose one workload is
// annotated as Istio's REDIRECT mode.
const tcpEchoYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: tcp-echo
  namespace: default
spec:
  hosts:
  - tcp-echo.default.svc.cluster.local
  addresses:
  - 240.240.0.90
  location: MESH_INTERNAL
  ports:
  - number: 9000
    name: tcp
    protocol: TCP
  resolution: STATIC
  workloadSelector:
    labels:
      app: tcp-echo
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: tcp-echo-v1
  namespace: default
  annotations:
    sidecar.istio.io/interceptionMode: REDIRECT
spec:
  address: 10.78.0.21
  labels:
    app: tcp-echo
    version: v1
    security.istio.io/tlsMode: istio
  serviceAccount: tcp-echo
`

// extRangeYAML registers the external server by address range
// (10.78.0.24/30, resolution NONE) on a TCP port: under REGISTRY_ONLY it
// admits the range, not every address on port 8000.
const extRangeYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ext-range
  namespace: default
spec:
  hosts: [ext-range.example]
  addresses: [10.78.0.24/30]
  ports: [{number: 8000, name: tcp, protocol: TCP}]
  resolution: NONE
  location: MESH_EXTERNAL
`

// registryOnlyYAML blocks traffic to unknown destinations for the client
// workload only (Istio's Sidecar outboundTrafficPolicy).
const registryOnlyYAML = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: client-registry-only
  namespace: default
spec:
  workloadSelector:
    labels:
      app: client
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
`

// TestRedirectTCPAndEgress runs, beside the Bookinfo demo, a TCP echo
// workload and a client workload (each in a namespace with a sidecar), an
// external server and a plain client (namespaces without sidecar):
//
//	(b) the client's connection to the service VIP goes through both
//	    sidecars; the server's sidecar logs it on inbound|9000||;
//	(c) the client reaches the external server through PassthroughCluster
//	    under ALLOW_ANY, and not under REGISTRY_ONLY;
//	(d) the plain client connecting to the echo workload's app port is
//	    redirected into its sidecar, which logs it;
//	(e) under a STRICT PeerAuthentication for the echo workload, the plain
//	    client's connection is closed while the client's sidecar still
//	    gets through (mTLS, the sidecars' certificates from the demo's CA);
//	(f) an egress listener of captureMode NONE for 9000 is a socket on the
//	    client's 127.0.0.1:9000 reaching the echo, and the VIP no longer is;
//	(g) with an HTTP service on 9000 too, the catch-all's NONE socket on
//	    127.0.0.1:9000 still echoes: the first service keeps the port.
func TestRedirectTCPAndEgress(t *testing.T) {
	requireRoot(t)
	m := startRedirectDemo(t)

	echoNS := joinNetns(t, "echo", 21, true)
	clientNS := joinNetns(t, "client", 22, true)
	plainNS := joinNetns(t, "plain", 23, false)
	extNS := joinNetns(t, "ext", 24, false)

	go serveEcho(listenIn(t, echoNS, "10.78.0.21:9000"))
	ext := listenIn(t, extNS, "10.78.0.24:8000")
	go func() {
		_ = http.Serve(ext, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "external") }))
	}()
	// Another server on the same port, outside extRangeYAML's range.
	outside := listenIn(t, plainNS, "10.78.0.23:8000")
	go func() {
		_ = http.Serve(outside, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "outside") }))
	}()

	f := filepath.Join(t.TempDir(), "tcp-echo.yaml")
	if err := os.WriteFile(f, []byte(tcpEchoYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	applyAt(t, redirectLoomd, f, "serviceentry.networking.istio.io/tcp-echo ")
	echoProxy := startSidecar(t, m, echoNS, "tcp-echo-v1", "10.78.0.21", "app=tcp-echo,version=v1", "tcp-echo")
	clientProxy := startSidecar(t, m, clientNS, "client", "10.78.0.22", "app=client", "client")

	t.Run("b: tcp through both sidecars", func(t *testing.T) {
		if !poll(30*time.Second, func() bool {
			got, err := echoOnce(t, clientNS, "240.240.0.90:9000", "ping")
			return err == nil && got == "ping"
		}) {
			got, err := echoOnce(t, clientNS, "240.240.0.90:9000", "ping")
			t.Fatalf("echo through the VIP: %q, %v", got, err)
		}
		for i := 0; i < 20; i++ {
			msg := fmt.Sprintf("hello %d", i)
			if got, err := echoOnce(t, clientNS, "240.240.0.90:9000", msg); err != nil || got != msg {
				t.Fatalf("echo %d: %q, %v", i, got, err)
			}
		}
		pollUntil(t, "the client sidecar's outbound log line", func() bool {
			return clientProxy.logHas("outbound|9000||tcp-echo.default.svc.cluster.local", "240.240.0.90:9000")
		})
		pollUntil(t, "the server sidecar's inbound log line from the client sidecar", func() bool {
			return echoProxy.logHas("inbound|9000||", "10.78.0.22:")
		})
	})

	t.Run("b2: both sidecars know each other's workload (TCP metadata exchange)", func(t *testing.T) {
		tcpExchangeMetrics(t, clientNS)
	})

	t.Run("d: a client without sidecar is redirected into the server's sidecar", func(t *testing.T) {
		if got, err := echoOnce(t, plainNS, "10.78.0.21:9000", "plain"); err != nil || got != "plain" {
			t.Fatalf("plain echo: %q, %v", got, err)
		}
		pollUntil(t, "the server sidecar's inbound log line from the plain client", func() bool {
			return echoProxy.logHas("inbound|9000||", "10.78.0.23:")
		})
	})

	t.Run("e: STRICT refuses the client without sidecar, the sidecar client still echoes over mTLS", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "strict.yaml")
		if err := os.WriteFile(f, []byte(tcpEchoStrictYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		applyAt(t, redirectLoomd, f, "peerauthentication.security.istio.io/tcp-echo-strict ")
		if !poll(15*time.Second, func() bool { _, err := echoOnce(t, plainNS, "10.78.0.21:9000", "plain"); return err != nil }) {
			t.Fatal("STRICT: the client without sidecar is still echoed")
		}
		for i := range 5 {
			if got, err := echoOnce(t, plainNS, "10.78.0.21:9000", "plain"); err == nil {
				t.Fatalf("STRICT: plain echo %d answered %q", i, got)
			}
		}
		for i := range 10 {
			msg := fmt.Sprintf("mtls %d", i)
			if got, err := echoOnce(t, clientNS, "240.240.0.90:9000", msg); err != nil || got != msg {
				t.Fatalf("STRICT: echo %d through both sidecars: %q, %v", i, got, err)
			}
		}
	})

	getFrom := func(addr string) (string, error) {
		c, err := dialIn(t, clientNS, addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n"); err != nil {
			return "", err
		}
		b, err := io.ReadAll(c)
		return string(b), err
	}
	get := func() (string, error) { return getFrom("10.78.0.24:8000") }
	t.Run("c: ALLOW_ANY passes through", func(t *testing.T) {
		body, err := get()
		if err != nil || !strings.HasSuffix(body, "external") {
			t.Fatalf("GET the external server: %q, %v", body, err)
		}
		pollUntil(t, "the client sidecar's PassthroughCluster log line", func() bool {
			return clientProxy.logHas("PassthroughCluster", "10.78.0.24:8000")
		})
	})
	t.Run("c: REGISTRY_ONLY blocks", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "registry-only.yaml")
		if err := os.WriteFile(f, []byte(registryOnlyYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		applyAt(t, redirectLoomd, f, "sidecar.networking.istio.io/client-registry-only ")
		if !poll(15*time.Second, func() bool { body, _ := get(); return !strings.Contains(body, "external") }) {
			t.Fatal("the external server still answers under REGISTRY_ONLY")
		}
		pollUntil(t, "the client sidecar's BlackHoleCluster log line", func() bool {
			return clientProxy.logHas("BlackHoleCluster", "10.78.0.24:8000")
		})
		// The mesh service still works.
		if got, err := echoOnce(t, clientNS, "240.240.0.90:9000", "still"); err != nil || got != "still" {
			t.Errorf("echo under REGISTRY_ONLY: %q, %v", got, err)
		}
	})
	t.Run("c: under REGISTRY_ONLY a ServiceEntry's address range admits its range only", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "ext-range.yaml")
		if err := os.WriteFile(f, []byte(extRangeYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		applyAt(t, redirectLoomd, f, "serviceentry.networking.istio.io/ext-range ")
		if !poll(15*time.Second, func() bool { body, _ := get(); return strings.HasSuffix(body, "external") }) {
			body, err := get()
			t.Fatalf("GET 10.78.0.24:8000, in the range: %q, %v", body, err)
		}
		pollUntil(t, "the client sidecar's log line for the range's cluster", func() bool {
			return clientProxy.logHas("outbound|8000||ext-range.example", "10.78.0.24:8000")
		})
		for i := range 3 {
			if body, _ := getFrom("10.78.0.23:8000"); strings.Contains(body, "outside") {
				t.Fatalf("GET %d of 10.78.0.23:8000, outside the range, answered under REGISTRY_ONLY: %q", i, body)
			}
		}
		pollUntil(t, "the client sidecar's BlackHoleCluster log line for the address outside the range", func() bool {
			return clientProxy.logHas("BlackHoleCluster", "10.78.0.23:8000")
		})
	})
	t.Run("f: an egress listener of captureMode NONE is a socket on 127.0.0.1 that takes its port's services", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "capture-none.yaml")
		if err := os.WriteFile(f, []byte(captureNoneYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		applyAt(t, redirectLoomd, f, "sidecar.networking.istio.io/client-registry-only ")
		if !poll(15*time.Second, func() bool {
			got, err := echoOnce(t, clientNS, "127.0.0.1:9000", "none")
			return err == nil && got == "none"
		}) {
			got, err := echoOnce(t, clientNS, "127.0.0.1:9000", "none")
			t.Fatalf("echo through 127.0.0.1:9000, the client's bound egress listener: %q, %v", got, err)
		}
		pollUntil(t, "the client sidecar's log line for the bound listener", func() bool {
			return clientProxy.logHas("outbound|9000||tcp-echo.default.svc.cluster.local", "127.0.0.1:9000")
		})
		// The bound listener took the VIP's service: a connection to the
		// VIP is unknown traffic now, blocked under REGISTRY_ONLY.
		if got, err := echoOnce(t, clientNS, "240.240.0.90:9000", "vip"); err == nil && got == "vip" {
			t.Errorf("echo through the VIP still answered %q; the port's services belong to the bound listener", got)
		}
	})

	t.Run("g: an HTTP service on the bound TCP port leaves it to the first service", func(t *testing.T) {
		// web.example.com has HTTP on 9000 too. Under the catch-all's
		// captureMode NONE both share the client's 127.0.0.1:9000, and
		// tcp-echo, first in host order, keeps it (Istio's
		// mergeTCPFilterChains drops web's chain, which matches every
		// connection as the echo's does off the wildcard).
		f := filepath.Join(t.TempDir(), "mixed.yaml")
		if err := os.WriteFile(f, []byte(mixedPortYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		applyAt(t, redirectLoomd, f, "serviceentry.networking.istio.io/web-9000 ")
		pollUntil(t, "the catch-all's socket on the client's 127.0.0.1:9080 (the new Sidecar pushed)", func() bool {
			c, err := dialIn(t, clientNS, "127.0.0.1:9080")
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		for i := range 3 {
			msg := fmt.Sprintf("mixed %d", i)
			if got, err := echoOnce(t, clientNS, "127.0.0.1:9000", msg); err != nil || got != msg {
				t.Fatalf("echo through 127.0.0.1:9000 with an HTTP service on the port: %q, %v", got, err)
			}
		}
	})
}

// mixedPortYAML adds web.example.com, HTTP on tcp-echo's port 9000, and
// gives the client's catch-all egress listener captureMode NONE: every
// port's listener is a socket on 127.0.0.1 with all its services.
const mixedPortYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-9000, namespace: default}
spec:
  hosts: [web.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 9000, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.78.0.24}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: client-registry-only
  namespace: default
spec:
  workloadSelector:
    labels:
      app: client
  egress:
  - captureMode: NONE
    hosts: ["*/*"]
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
`

// captureNoneYAML replaces registryOnlyYAML: the client's egress listener
// for TCP port 9000, captureMode NONE without bind (Istio: 127.0.0.1),
// imports tcp-echo; the catch-all imports the rest.
const captureNoneYAML = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: client-registry-only
  namespace: default
spec:
  workloadSelector:
    labels:
      app: client
  egress:
  - port: {number: 9000, protocol: TCP, name: tcp}
    captureMode: NONE
    hosts: ["./tcp-echo.default.svc.cluster.local"]
  - hosts: ["*/*"]
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
`

// tcpExchangeMetrics checks Istio's TCP metrics of connections from the
// client sidecar (10.78.0.22) to tcp-echo-v1's (10.78.0.21) over mTLS:
// with Istio's TCP metadata exchange (ALPN istio-peer-exchange) each
// reporter names both ends' workloads; after a known number of
// connections each reporter's counters have grown by exactly that many,
// and its byte counters by exactly the stream's bytes (the exchange's
// frames are not the app's).
func tcpExchangeMetrics(t *testing.T, clientNS string) {
	edge := map[string]string{"source_workload": "client", "source_app": "client", "source_workload_namespace": "default",
		"source_principal":     "spiffe://cluster.local/ns/default/sa/client",
		"destination_workload": "tcp-echo-v1", "destination_app": "tcp-echo", "destination_version": "v1",
		"destination_workload_namespace": "default", "destination_principal": "spiffe://cluster.local/ns/default/sa/tcp-echo",
		"request_protocol": "tcp", "response_flags": "-"}
	reporters := []struct {
		url    string
		labels map[string]string
	}{
		{"http://10.78.0.22:15090/stats/prometheus", with(edge, map[string]string{"reporter": "source"})},
		{"http://10.78.0.21:15090/stats/prometheus", with(edge, map[string]string{"reporter": "destination", "connection_security_policy": "mutual_tls"})},
	}
	families := []string{"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
		"istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"}
	values := func() [][]float64 {
		var out [][]float64
		for _, r := range reporters {
			fams, err := promtest.Scrape(r.url)
			if err != nil {
				t.Fatal(err)
			}
			vs := make([]float64, len(families))
			for i, f := range families {
				vs[i], _ = fams.Value(f, r.labels)
			}
			out = append(out, vs)
		}
		return out
	}
	// Earlier connections are counted once closed (the server's side
	// may close after the client's): wait until the counts settle.
	var base [][]float64
	pollUntil(t, "the TCP counters to settle", func() bool {
		now := values()
		settled := base != nil && fmt.Sprint(now) == fmt.Sprint(base)
		for _, vs := range now {
			settled = settled && vs[0] > 0 && vs[0] == vs[1]
		}
		base = now
		return settled
	})
	const n = 5
	var bytes float64
	for i := range n {
		msg := fmt.Sprintf("counted %d", i)
		if got, err := echoOnce(t, clientNS, "240.240.0.90:9000", msg); err != nil || got != msg {
			t.Fatalf("echo %d: %q, %v", i, got, err)
		}
		bytes += float64(len(msg))
	}
	want := []float64{n, n, bytes, bytes}
	var got [][]float64
	if !poll(10*time.Second, func() bool {
		got = values()
		for i := range got {
			for j := range got[i] {
				got[i][j] -= base[i][j]
			}
		}
		return fmt.Sprint(got) == fmt.Sprint([][]float64{want, want})
	}) {
		for i, r := range reporters {
			t.Errorf("%s: %v with %v grew by %v after %d connections, want %v", r.url, families, r.labels, got[i], n, want)
			dumpSeries(t, r.url, families[0])
		}
	}
}
