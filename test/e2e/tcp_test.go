package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil/promtest"
)

// tcpEchoPort is tcp-echo's port in Istio's samples.
const tcpEchoPort = 9000

// startTCPEcho serves Istio's tcp-echo app on addr: each line read is
// answered with prefix, a space and the line. Stopped at cleanup.
func startTCPEcho(t *testing.T, addr, prefix string) {
	t.Helper()
	serveConns(t, addr, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if _, err := fmt.Fprintf(c, "%s %s\n", prefix, sc.Text()); err != nil {
				return
			}
		}
	})
}

// serveConns accepts connections on addr until cleanup and runs handle on
// each in its own goroutine, with a 30 s deadline, closing it after;
// cleanup closes the listener and waits for every handler.
func serveConns(t *testing.T, addr string, handle func(c net.Conn)) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// tcpEchoSamples is Istio's samples/tcp-echo, whose task files the TCP
// traffic shifting scenario applies unchanged.
const tcpEchoSamples = "../../../shared/istio-samples/tcp-echo"

// TestTCPTrafficShifting follows Istio's TCP traffic shifting task with
// its files unchanged: tcp-echo-all-v1.yaml (a Gateway with a TCP server
// on 31400, the tcp-echo DestinationRule and a VirtualService bound to the
// gateway) sends every connection to the ingress gateway's 31400 to
// tcp-echo v1 ("one ..."); tcp-echo-20-v2.yaml then sends 80 % to v1 and
// 20 % to v2 ("two ..."), over 1000 connections within ±5 %. The rules
// name only the gateway, so the mesh keeps reaching both versions, and
// the client's sidecar names each from the endpoints' metadata. Last, the
// DestinationRule with consistentHash useSourceIp keeps each client IP on
// one version through the client's sidecar.
func TestTCPTrafficShifting(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	allV1, err := os.ReadFile(filepath.Join(tcpEchoSamples, "tcp-echo-all-v1.yaml"))
	if err != nil {
		t.Fatalf("Istio's tcp-echo samples are missing (%v): shared/istio-samples must be beside the module", err)
	}
	v2at20, err := os.ReadFile(filepath.Join(tcpEchoSamples, "tcp-echo-20-v2.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "127.61.0"
	const gwOctet = 2
	ws := []appWorkload{
		{Name: "tcp-echo-v1", App: "tcp-echo", Version: "v1", Octet: 11, Protocol: "TCP", Port: tcpEchoPort},
		{Name: "tcp-echo-v2", App: "tcp-echo", Version: "v2", Octet: 12, Protocol: "TCP", Port: tcpEchoPort},
		{Name: "istio-ingressgateway", App: "istio-ingressgateway", Octet: gwOctet, Gateway: true},
	}
	// The apps listen before their sidecars start: a sidecar leaves out
	// the TCP listener of a port its own app serves.
	startTCPEcho(t, fmt.Sprintf("%s.%d:%d", prefix, ws[0].Octet, tcpEchoPort), "one")
	startTCPEcho(t, fmt.Sprintf("%s.%d:%d", prefix, ws[1].Octet, tcpEchoPort), "two")
	m := startAppMesh(t, prefix, ws, "")
	gw := fmt.Sprintf("%s:31400", m.ip(gwOctet))
	sidecar := fmt.Sprintf("%s:%d", m.ip(clientOctet), tcpEchoPort)

	// The task's first step: all of it to v1. m.apply would wait for a
	// push to every proxy, but the tcp-echo sidecars have no listener
	// these rules change: poll the answers.
	applyTCP(t, m, string(allV1))
	if !poll(20*time.Second, func() bool {
		for range 10 {
			if got, err := tcpEchoOnce(gw, "x"); err != nil || got != "one x" {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("not all of 10 connections to the gateway's %s answered by v1 within 20 s of tcp-echo-all-v1.yaml\n%s", gw, m.tails())
	}
	for i := range 20 {
		got, err := tcpEchoOnce(gw, fmt.Sprintf("all-v1 %d", i))
		if err != nil || got != fmt.Sprintf("one all-v1 %d", i) {
			t.Fatalf("with all traffic to v1, connection %d: %q, %v", i, got, err)
		}
	}

	// The VirtualService names only the gateway: the client's sidecar
	// still balances over both versions.
	const meshN = 40
	mesh := map[string]int{}
	for i := range meshN {
		line := fmt.Sprintf("mesh %d", i)
		got, err := tcpEchoOnce(sidecar, line)
		if err != nil {
			t.Fatalf("mesh connection %d through the client sidecar's %s: %v\n%s", i, sidecar, err, m.tails())
		}
		v, rest, _ := strings.Cut(got, " ")
		if rest != line {
			t.Fatalf("mesh connection %d: answer %q does not echo %q", i, got, line)
		}
		mesh[v]++
	}
	if mesh["one"] == 0 || mesh["two"] == 0 || mesh["one"]+mesh["two"] != meshN {
		t.Errorf("%d mesh connections with the gateway's all-v1 rule: %v, want both versions (the rule is not the mesh's)", meshN, mesh)
	}

	// The 80/20 rule: it is live once v2 answers (all-v1 never lets it).
	applyTCP(t, m, string(v2at20))
	if !poll(10*time.Second, func() bool { got, err := tcpEchoOnce(gw, "x"); return err == nil && got == "two x" }) {
		t.Fatalf("v2 never answered through the gateway within 10 s of tcp-echo-20-v2.yaml\n%s", m.tails())
	}
	const n = 1000
	counts := map[string]int{}
	for i := range n {
		line := fmt.Sprintf("hello %d", i)
		got, err := tcpEchoOnce(gw, line)
		if err != nil {
			t.Fatalf("connection %d: %v\n%s", i, err, m.tails())
		}
		v, rest, _ := strings.Cut(got, " ")
		if rest != line {
			t.Fatalf("connection %d: answer %q does not echo %q", i, got, line)
		}
		counts[v]++
	}
	if counts["one"]+counts["two"] != n {
		t.Fatalf("answers: %v, want only one and two", counts)
	}
	share := float64(counts["two"]) / n
	if math.Abs(share-0.20) > 0.05 {
		t.Errorf("v2 answered %d of %d connections (%.1f %%), want 20 ±5 %%", counts["two"], n, 100*share)
	}
	t.Logf("1000 connections through the gateway: v1 %d, v2 %d; %d through the mesh: %v", counts["one"], counts["two"], meshN, mesh)

	// The gateway, too, reports each connection it proxied as a source,
	// naming the version it reached.
	for _, v := range []struct {
		workload string
		atLeast  int
	}{{"tcp-echo-v1", counts["one"]}, {"tcp-echo-v2", counts["two"]}} {
		waitClosedAtLeast(t, fmt.Sprintf("http://%s:15090/stats/prometheus", m.ip(gwOctet)), map[string]string{"reporter": "source",
			"source_workload": "istio-ingressgateway", "destination_workload": v.workload, "destination_canonical_service": "tcp-echo"}, v.atLeast)
	}

	// The client's sidecar connects to the apps directly (explicit mode:
	// no sidecar, no metadata exchange on the way), so it names each
	// version's workload from the endpoints' Istio telemetry metadata.
	for _, v := range []struct {
		workload string
		atLeast  int
	}{{"tcp-echo-v1", mesh["one"]}, {"tcp-echo-v2", mesh["two"]}} {
		waitClosedAtLeast(t, fmt.Sprintf("http://%s:15090/stats/prometheus", m.ip(clientOctet)), map[string]string{"reporter": "source",
			"source_workload": "client", "destination_workload": v.workload, "destination_canonical_service": "tcp-echo",
			"destination_workload_namespace": "default", "destination_app": "unknown"}, v.atLeast)
	}

	// Plain TCP on both sides of the client's sidecar (explicit mode: to
	// the apps directly) is spliced: the bytes never pass through the
	// proxy's read(2)s, which its /proc/PID/io rchar counts (splice(2)
	// does not). A copy through a user-space buffer would add the 8 MiB.
	spliceCheck(t, m.pid("client-proxy"), sidecar)

	// consistentHash useSourceIp on the tcp-echo DestinationRule (Istio
	// docs: for TCP connections too): the client sidecar's tcp_proxy
	// hashes each client's IP, so every connection from one IP reaches one
	// version, and clients of several IPs (bound as 127.61.0.200-215)
	// reach both.
	var dr string
	for _, doc := range strings.Split(string(allV1), "\n---\n") {
		if strings.Contains(doc, "kind: DestinationRule\n") {
			dr = doc
		}
	}
	hashed := strings.Replace(dr, "  host: tcp-echo\n", `  host: tcp-echo
  trafficPolicy:
    loadBalancer:
      consistentHash:
        useSourceIp: true
`, 1)
	if dr == "" || hashed == dr {
		t.Fatalf("tcp-echo-all-v1.yaml has no DestinationRule for host tcp-echo:\n%s", allV1)
	}
	m.applyFor(hashed, "client")
	byIP := map[string]int{}
	for i := range 16 {
		src := fmt.Sprintf("%s.%d", prefix, 200+i)
		first := ""
		for j := range 5 {
			line := fmt.Sprintf("from %s %d", src, j)
			got, err := tcpEchoFrom(src, sidecar, line)
			if err != nil {
				t.Fatalf("connection from %s through the client sidecar: %v\n%s", src, err, m.tails())
			}
			v, _, _ := strings.Cut(got, " ")
			if first == "" {
				first = v
			} else if v != first {
				t.Fatalf("with useSourceIp, connections from %s reached %s and then %s: want one version", src, first, v)
			}
		}
		byIP[first]++
	}
	if byIP["one"] == 0 || byIP["two"] == 0 {
		t.Errorf("with useSourceIp, clients of 16 IPs reached %v: want both versions", byIP)
	}
	t.Logf("useSourceIp: 5 connections from each of 16 IPs, each IP on one version; IPs per version %v", byIP)
}

// spliceCheck sends 4 MiB of 1 KiB lines through the proxy process pid
// at addr to a tcp-echo app and reads the 4 MiB echoed back, and checks
// the proxy read(2) less than 1 MiB meanwhile (/proc/PID/io rchar): the
// TCP proxy's copies spliced.
func spliceCheck(t *testing.T, pid int, addr string) {
	t.Helper()
	rchar := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			t.Skipf("no /proc/PID/io to read the proxy's I/O from: %v", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "rchar: "); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatalf("/proc/%d/io has no rchar:\n%s", pid, b)
		return 0
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	const lines = 4096
	line := strings.Repeat("x", 1023) + "\n"
	before := rchar()
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		for range lines {
			if _, err := w.WriteString(line); err != nil {
				return
			}
		}
		_ = w.Flush()
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	n, err := io.Copy(io.Discard, c)
	if want := int64(lines * (len("one ") + len(line))); err != nil || n != want {
		t.Fatalf("echoed %d bytes (%v), want %d", n, err, want)
	}
	if d := rchar() - before; d > 1<<20 {
		t.Errorf("the proxy read(2) %d bytes while 4 MiB went each way through it: its TCP copies do not splice", d)
	}
}

// waitClosedAtLeast waits up to 10 s for the proxy whose metrics are at
// url to count at least n TCP connections closed with labels.
func waitClosedAtLeast(t *testing.T, url string, labels map[string]string, n int) {
	t.Helper()
	var got float64
	if !poll(10*time.Second, func() bool {
		fams, err := promtest.Scrape(url)
		if err != nil {
			return false
		}
		got, _ = fams.Value("istio_tcp_connections_closed_total", labels)
		return got >= float64(n)
	}) {
		t.Errorf("%s counted %v connections with %v, want at least %d", url, got, labels, n)
		dumpSeries(t, url, "istio_tcp_connections_closed_total")
	}
}

// applyTCP applies yaml through loomd's config API.
func applyTCP(t *testing.T, m *appMesh, yaml string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.loomd.Apply(ctx, "e2e", []byte(yaml)); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// tcpEchoOnce opens a connection to addr, sends line, half-closes, and
// returns the one line answered (without its newline).
func tcpEchoOnce(addr, line string) (string, error) { return tcpEchoFrom("", addr, line) }

// tcpEchoFrom is tcpEchoOnce from the local IP src ("" for any).
func tcpEchoFrom(src, addr, line string) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	got, ok := strings.CutSuffix(string(b), "\n")
	if !ok || strings.Contains(got, "\n") {
		return "", fmt.Errorf("answer %q: want one line", b)
	}
	return got, nil
}
