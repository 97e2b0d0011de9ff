package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	loomapi "github.com/loom-mesh/loom/internal/loomctl"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// mtlsMesh is an appMesh whose loomd runs its CA: every proxy gets its
// certificate from a bootstrap token minted by `loomctl token create`.
type mtlsMesh struct {
	*appMesh
	dataDir  string
	rootCert string
}

// startMTLSMesh starts loomd with its CA (certificates of ttl) and a
// sidecar per workload, each with its token (service account = app), and
// waits until every proxy is SYNCED and holds its certificate.
func startMTLSMesh(t *testing.T, prefix string, ws []appWorkload, ttl string) *mtlsMesh {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	m := &mtlsMesh{appMesh: &appMesh{t: t, prefix: prefix, configDir: t.TempDir(), logsDir: t.TempDir()}}
	t.Cleanup(m.stop)
	m.dataDir = filepath.Join(t.TempDir(), "loomd-data")
	m.rootCert = filepath.Join(m.dataDir, "root-cert.pem")
	if err := os.WriteFile(filepath.Join(m.configDir, "mesh.yaml"), []byte(meshYAML(prefix, ws)), 0o644); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, w := range ws {
		tokens[w.Name] = mintToken(t, m.dataDir, "", w.App, w.Name)
	}
	for _, w := range ws {
		if w.Handler == nil {
			continue
		}
		ln, err := net.Listen("tcp", m.ip(w.Octet)+":9080")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: w.Handler, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	xds, secure := m.ip(1)+":15010", m.ip(1)+":15012"
	m.start("loomd", "loomd", "--config-dir", m.configDir, "--xds-addr", xds, "--monitoring-addr", m.ip(1)+":15014",
		"--dashboard-addr", m.ip(1)+":20001", "--data-dir", m.dataDir, "--secure-xds-addr", secure, "--workload-cert-ttl", ttl)
	m.loomd = loomapi.NewClient(m.ip(1)+":15014", &http.Client{Timeout: 2 * time.Second})
	if !poll(20*time.Second, func() bool { _, err := os.Stat(m.rootCert); return err == nil }) {
		t.Fatalf("loomd wrote no %s\n%s", m.rootCert, m.tails())
	}
	var want []string
	for _, w := range ws {
		m.start(w.Name+"-proxy", "loom-proxy", "sidecar", "--ip", m.ip(w.Octet), "--name", w.Name, "--namespace", "default",
			"--labels", "app="+w.App+",version="+w.Version, "--service-account", w.App, "--xds-addr", xds,
			"--ca-addr", secure, "--token-file", tokens[w.Name], "--root-cert", m.rootCert)
		want = append(want, xdsapi.NodeID{Type: xdsapi.Sidecar, IP: m.ip(w.Octet), Name: w.Name, Namespace: "default", Domain: "default.svc.cluster.local"}.String())
	}
	if !poll(30*time.Second, func() bool { return m.synced(want) }) {
		t.Fatalf("the mesh's proxies are not all SYNCED after 30 s\n%s", m.tails())
	}
	for _, w := range ws {
		id := "spiffe://cluster.local/ns/default/sa/" + w.App
		var page certsPage
		if !poll(20*time.Second, func() bool {
			return getJSON("http://"+m.ip(w.Octet)+":15000/certs", &page) == nil && certURI(page) == id
		}) {
			t.Fatalf("%s has no certificate for %s\n%s", w.Name, id, m.tails())
		}
	}
	return m
}

// xfccApp answers every request with the x-forwarded-client-cert header
// its sidecar set (empty for a plaintext caller).
var xfccApp = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"xfcc": r.Header.Get("X-Forwarded-Client-Cert")})
})

// xfccOf returns the XFCC an app saw for a GET of u through c.
func xfccOf(c *http.Client, u, host string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s %q", u, resp.Status, b)
	}
	var v struct{ XFCC string }
	if err := json.Unmarshal(b, &v); err != nil {
		return "", fmt.Errorf("%s: %w: %q", u, err, b)
	}
	return v.XFCC, nil
}

// TestMutualTLSModes runs loomd with its CA, httpbin (an app that echoes
// the XFCC its sidecar gives it) and a client sidecar, and checks Istio's
// PeerAuthentication modes over real sockets:
//   - PERMISSIVE (no policy): the mesh client's requests reach the app
//     over mTLS (XFCC names the client's SPIFFE ID), and a plaintext client
//     outside the mesh is served too;
//   - the sidecar's certificate, seen by a Go crypto/tls client, chains to
//     loomd's root and names spiffe://cluster.local/ns/default/sa/httpbin;
//   - STRICT (namespace): the plaintext client's connection is closed
//     while the mesh client still succeeds;
//   - DISABLE (namespace): the client stops originating mTLS (no XFCC)
//     and plaintext is served again.
func TestMutualTLSModes(t *testing.T) {
	m := startMTLSMesh(t, "127.173.0", []appWorkload{
		{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: xfccApp},
		{Name: "client", App: "client", Version: "v1", Octet: clientOctet},
	}, "1h")
	const svc = "http://httpbin.default.svc.cluster.local:9080/"
	mesh := m.client(5 * time.Second)
	// A plaintext client outside the mesh calls httpbin's sidecar directly.
	direct := "http://" + m.ip(11) + ":15006/"
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	const host = "httpbin.default.svc.cluster.local:9080"
	const clientID = "URI=spiffe://cluster.local/ns/default/sa/client"

	t.Run("PERMISSIVE accepts mTLS and plaintext", func(t *testing.T) {
		var xfcc string
		if !poll(20*time.Second, func() bool {
			var err error
			xfcc, err = xfccOf(mesh, svc, "")
			return err == nil && strings.Contains(xfcc, clientID)
		}) {
			t.Fatalf("mesh client: the app saw XFCC %q, want %s\n%s", xfcc, clientID, m.tails())
		}
		if !strings.Contains(xfcc, "By=spiffe://cluster.local/ns/default/sa/httpbin") {
			t.Errorf("XFCC %q: want By= httpbin's SPIFFE ID", xfcc)
		}
		x, err := xfccOf(plain, direct, host)
		if err != nil || x != "" {
			t.Fatalf("plaintext client: XFCC %q, %v; want served without XFCC", x, err)
		}
	})

	t.Run("the sidecar's certificate chains to loomd's root with httpbin's SPIFFE ID", func(t *testing.T) {
		pem, err := os.ReadFile(m.rootCert)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			t.Fatal("no root in root-cert.pem")
		}
		var uri string
		cfg := &tls.Config{
			// SPIFFE certificates carry no DNS name: verify the chain and
			// the URI SAN by hand.
			InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
			NextProtos:         []string{"istio-peer-exchange", "istio"},
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("no server certificate")
				}
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					return err
				}
				if len(cs.PeerCertificates[0].URIs) != 1 {
					return fmt.Errorf("URI SANs %v", cs.PeerCertificates[0].URIs)
				}
				uri = cs.PeerCertificates[0].URIs[0].String()
				return nil
			},
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", m.ip(11)+":15006", cfg)
		if err != nil {
			t.Fatalf("TLS handshake with httpbin's sidecar: %v", err)
		}
		defer conn.Close()
		if want := "spiffe://cluster.local/ns/default/sa/httpbin"; uri != want {
			t.Errorf("sidecar's URI SAN %q, want %q", uri, want)
		}
		// Without a client certificate the sidecar refuses the connection.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host); err == nil {
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Error("the sidecar served a TLS client without a certificate")
			}
		}
	})

	t.Run("STRICT refuses plaintext, serves the mesh", func(t *testing.T) {
		m.apply(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
`)
		refused := func() bool {
			_, err := xfccOf(plain, direct, host)
			return err != nil && !strings.Contains(err.Error(), "Client.Timeout")
		}
		if !poll(10*time.Second, refused) {
			t.Fatalf("STRICT: the plaintext client is still served\n%s", m.tails())
		}
		for i := range 5 {
			if _, err := xfccOf(plain, direct, host); err == nil {
				t.Fatalf("STRICT: plaintext request %d served", i)
			} else if i == 0 {
				t.Logf("plaintext client under STRICT: %v", err)
			}
		}
		for i := range 20 {
			if x, err := xfccOf(mesh, svc, ""); err != nil || !strings.Contains(x, clientID) {
				t.Fatalf("STRICT: mesh request %d: XFCC %q, %v", i, x, err)
			}
		}
	})

	t.Run("DISABLE serves plaintext and the client stops mTLS", func(t *testing.T) {
		m.apply(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: DISABLE}}
`)
		if !poll(10*time.Second, func() bool { x, err := xfccOf(plain, direct, host); return err == nil && x == "" }) {
			t.Fatalf("DISABLE: the plaintext client is not served\n%s", m.tails())
		}
		for i := range 20 {
			if x, err := xfccOf(mesh, svc, ""); err != nil || x != "" {
				t.Fatalf("DISABLE: mesh request %d: XFCC %q, %v; want plaintext", i, x, err)
			}
		}
	})
}

// TestMutualTLSRotation: with 1-minute certificates, 5 minutes of steady
// load from the client's sidecar to httpbin's over mTLS fail no request,
// and both sidecars rotate their certificate at least 8 times.
func TestMutualTLSRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("5 minutes of load: not with -short")
	}
	m := startMTLSMesh(t, "127.174.0", []appWorkload{
		{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: xfccApp},
		{Name: "client", App: "client", Version: "v1", Octet: clientOctet},
	}, "1m")
	const svc = "http://httpbin.default.svc.cluster.local:9080/"
	const clientID = "URI=spiffe://cluster.local/ns/default/sa/client"
	mesh := m.client(5 * time.Second)
	if !poll(20*time.Second, func() bool { x, err := xfccOf(mesh, svc, ""); return err == nil && strings.Contains(x, clientID) }) {
		t.Fatalf("no mTLS request got through\n%s", m.tails())
	}
	rotations := func() (uint64, uint64) {
		var a, b agentStatus
		_ = getJSON("http://"+m.ip(11)+":15000/agent", &a)
		_ = getJSON("http://"+m.ip(clientOctet)+":15000/agent", &b)
		return a.Rotations, b.Rotations
	}
	startS, startC := rotations()
	// Four workers, each a request at a time (about 40 rps in all): a
	// steady load through new and reused connections.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	const workers = 4
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				x, err := xfccOf(mesh, svc, "")
				if err == nil && !strings.Contains(x, clientID) {
					err = fmt.Errorf("XFCC %q: not the client's identity", x)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for range workers {
		<-done
	}
	endS, endC := rotations()
	t.Logf("%d requests, %d failed; rotations: httpbin %d, client %d", ok.Load(), failed.Load(), endS-startS, endC-startC)
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed (first: %v)", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 5*60*10*workers/4 { // a quarter of the ticks (10 a second per worker) at least
		t.Errorf("only %d requests in 5 minutes", ok.Load())
	}
	if endS-startS < 8 || endC-startC < 8 {
		t.Errorf("rotations during the load: httpbin %d, client %d; want 8 or more each", endS-startS, endC-startC)
	}
}

// mintToken runs loomctl token create against loomd's data dir dataDir: a
// bootstrap token for workload with service account sa (in namespace ns;
// "" is loomctl's default), in a file under t's temporary directory,
// whose path it returns.
func mintToken(t *testing.T, dataDir, ns, sa, workload string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), workload+".token")
	args := []string{"token", "create", "--data-dir", dataDir, "--service-account", sa, "--workload", workload, "--out", file}
	if ns != "" {
		args = append(args, "--namespace", ns)
	}
	if out, err := exec.Command(filepath.Join(binDir, "loomctl"), args...).CombinedOutput(); err != nil {
		t.Fatalf("loomctl token create: %v\n%s", err, out)
	}
	return file
}
