package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
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
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "%s %s\n", prefix, sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// tcpEchoVirtualService is the task's tcp-echo-20-v2.yaml for the mesh
// rather than its ingress gateway: Loom serves no TCP gateway server yet,
// so hosts is the service and gateways is left out (the mesh); the match
// is on the service port the client's sidecar listens on instead of the
// gateway's 31400. The routes are the task's.
const tcpEchoVirtualService = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - tcp-echo
  tcp:
  - match:
    - port: 9000
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
      weight: 80
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v2
      weight: 20
`

// tcpEchoAllV1 is the VirtualService of the task's tcp-echo-all-v1.yaml,
// for the mesh as tcpEchoVirtualService is.
const tcpEchoAllV1 = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - tcp-echo
  tcp:
  - match:
    - port: 9000
    route:
    - destination:
        host: tcp-echo
        port:
          number: 9000
        subset: v1
`

// tcpEchoDestinationRule is the DestinationRule of the task's
// tcp-echo-all-v1.yaml, unchanged.
const tcpEchoDestinationRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: tcp-echo-destination
spec:
  host: tcp-echo
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`

// TestTCPTrafficShifting follows Istio's TCP traffic shifting task in
// explicit mode: the client app connects to its own sidecar's IP on port
// 9000, whose tcp_proxy sends every connection to tcp-echo v1 ("one ...")
// and then, with the task's 80/20 rule, 80 % to v1 and 20 % to v2
// ("two ..."), over 1000 connections within ±5 %.
func TestTCPTrafficShifting(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	const prefix = "127.61.0"
	ws := []appWorkload{
		{Name: "tcp-echo-v1", App: "tcp-echo", Version: "v1", Octet: 11, Protocol: "TCP", Port: tcpEchoPort},
		{Name: "tcp-echo-v2", App: "tcp-echo", Version: "v2", Octet: 12, Protocol: "TCP", Port: tcpEchoPort},
	}
	// The apps listen before their sidecars start: a sidecar leaves out
	// the TCP listener of a port its own app serves.
	startTCPEcho(t, fmt.Sprintf("%s.%d:%d", prefix, ws[0].Octet, tcpEchoPort), "one")
	startTCPEcho(t, fmt.Sprintf("%s.%d:%d", prefix, ws[1].Octet, tcpEchoPort), "two")
	m := startAppMesh(t, prefix, ws, tcpEchoDestinationRule)
	sidecar := fmt.Sprintf("%s:%d", m.ip(clientOctet), tcpEchoPort)

	// Without a VirtualService the service's cluster has both versions;
	// once the tcp listener is bound, every connection gets an answer.
	if !poll(20*time.Second, func() bool { _, err := tcpEchoOnce(sidecar, "hello"); return err == nil }) {
		t.Fatalf("no answer through the client sidecar's %s within 20 s\n%s", sidecar, m.tails())
	}

	// The task's first step (tcp-echo-all-v1.yaml): all of it to v1.
	// m.apply would wait for a push to every proxy, but the tcp-echo
	// sidecars have no listener this rule changes: poll the answers.
	applyTCP(t, m, tcpEchoAllV1)
	if !poll(10*time.Second, func() bool {
		for range 10 {
			if got, err := tcpEchoOnce(sidecar, "x"); err != nil || got != "one x" {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("not all of 10 connections answered by v1 within 10 s of the all-v1 rule\n%s", m.tails())
	}
	for i := range 20 {
		got, err := tcpEchoOnce(sidecar, fmt.Sprintf("all-v1 %d", i))
		if err != nil || got != fmt.Sprintf("one all-v1 %d", i) {
			t.Fatalf("with all traffic to v1, connection %d: %q, %v", i, got, err)
		}
	}

	// The 80/20 rule: it is live once v2 answers (all-v1 never lets it).
	applyTCP(t, m, tcpEchoVirtualService)
	if !poll(10*time.Second, func() bool { got, err := tcpEchoOnce(sidecar, "x"); return err == nil && got == "two x" }) {
		t.Fatalf("v2 never answered within 10 s of the 80/20 rule\n%s", m.tails())
	}
	const n = 1000
	counts := map[string]int{}
	for i := range n {
		line := fmt.Sprintf("hello %d", i)
		got, err := tcpEchoOnce(sidecar, line)
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
	t.Logf("1000 connections: v1 %d, v2 %d", counts["one"], counts["two"])

	// The client's sidecar connects to the apps directly (explicit mode:
	// no sidecar, no metadata exchange on the way), so it names each
	// version's workload from the endpoints' Istio telemetry metadata.
	for _, v := range []struct {
		workload string
		atLeast  int
	}{{"tcp-echo-v1", counts["one"]}, {"tcp-echo-v2", counts["two"]}} {
		labels := map[string]string{"reporter": "source", "source_workload": "client", "destination_workload": v.workload,
			"destination_canonical_service": "tcp-echo", "destination_workload_namespace": "default", "destination_app": "unknown"}
		url := fmt.Sprintf("http://%s:15090/stats/prometheus", m.ip(clientOctet))
		var got float64
		if !poll(10*time.Second, func() bool {
			fams, err := promtest.Scrape(url)
			if err != nil {
				return false
			}
			got, _ = fams.Value("istio_tcp_connections_closed_total", labels)
			return got >= float64(v.atLeast)
		}) {
			t.Errorf("%s counted %v connections with %v, want at least %d", url, got, labels, v.atLeast)
			dumpSeries(t, url, "istio_tcp_connections_closed_total")
		}
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
func tcpEchoOnce(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
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
