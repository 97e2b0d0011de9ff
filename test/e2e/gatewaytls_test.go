package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil"
)

// startTLSNamer serves TLS on addr with cert: each connection, once its
// handshake is done, is answered with name and a newline, then closed.
// It stands for a TLS backend a gateway passes connections through to.
// Stopped at cleanup.
func startTLSNamer(t *testing.T, addr, name string, cert tls.Certificate) {
	t.Helper()
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.WriteString(c, name+"\n")
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// tlsLine dials addr over TLS with sni, trusting roots, and returns the
// line the server sent and the server's leaf certificate.
func tlsLine(addr, sni string, roots *x509.CertPool) (string, *x509.Certificate, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{ServerName: sni, RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", nil, err
	}
	return strings.TrimSuffix(line, "\n"), c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// writeFile writes data to dir/name (0600) and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// gatewayTLSClient is an HTTPS client that sends every request to the
// gateway at addr, whatever the URL's host (as curl --resolve does), with
// the URL's host as SNI, trusting roots and presenting certs.
func gatewayTLSClient(addr string, roots *x509.CertPool, certs ...tls.Certificate) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
			TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: certs},
			ForceAttemptHTTP2: true,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// TestGatewayTLS drives an ingress gateway with Gateway servers of every
// kind, from certificate files the test makes, over real proxies:
//
//   - SIMPLE HTTPS on 8443 for web.example.com: a Go TLS client that
//     trusts the test CA gets the app's page over HTTP/2 (ALPN h2);
//   - httpsRedirect on the HTTP server 8080: 301 to https;
//   - MUTUAL HTTPS for mtls.example.com on the same port: a client
//     without a certificate is refused, one with a certificate of the
//     client CA gets the page;
//   - PASSTHROUGH TLS for *.pass.example.com: a.pass.example.com reaches
//     the TLS backend tls-a, and the client sees tls-a's own certificate;
//     split.pass.example.com is weighted 80/20 between tls-a and tls-b
//     (±5 % over 500 connections);
//   - a TCP server on 31400 routed by a tcp route to tcp-echo;
//   - a tls route on the client's sidecar splitting tls-a's SNI 50/50.
func TestGatewayTLS(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	const prefix = "127.131.0"
	const gwOctet = 2
	ip := func(o int) string { return fmt.Sprintf("%s.%d", prefix, o) }
	dir := t.TempDir()

	serverCA := testutil.NewCA(t, "gateway server CA")
	clientCA := testutil.NewCA(t, "gateway client CA")
	backendCA := testutil.NewCA(t, "backend CA")
	gwCert := serverCA.Issue(t, testutil.LeafOptions{DNS: []string{"web.example.com", "mtls.example.com"}})
	certFile := writeFile(t, dir, "cert.pem", gwCert.CertPEM)
	keyFile := writeFile(t, dir, "key.pem", gwCert.KeyPEM)
	caFile := writeFile(t, dir, "client-ca.pem", clientCA.PEM)
	client := clientCA.Issue(t, testutil.LeafOptions{DNS: []string{"client.example.com"}})
	stranger := testutil.NewCA(t, "other CA").Issue(t, testutil.LeafOptions{DNS: []string{"client.example.com"}})

	ws := []appWorkload{
		{Name: "web", App: "web", Version: "v1", Octet: 11, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "web %s", r.Header.Get("X-Forwarded-Proto"))
		})},
		{Name: "tls-a", App: "tls-a", Version: "v1", Octet: 12, Protocol: "TLS", Port: 8443},
		{Name: "tls-b", App: "tls-b", Version: "v1", Octet: 13, Protocol: "TLS", Port: 8443},
		{Name: "tcp-echo", App: "tcp-echo", Version: "v1", Octet: 14, Protocol: "TCP", Port: tcpEchoPort},
		{Name: "ingress", App: "ingress", Octet: gwOctet, Gateway: true},
	}
	startTLSNamer(t, ip(12)+":8443", "A", backendCA.Issue(t, testutil.LeafOptions{DNS: []string{"a.pass.example.com", "split.pass.example.com", "tls-a.default.svc.cluster.local"}}).TLS)
	startTLSNamer(t, ip(13)+":8443", "B", backendCA.Issue(t, testutil.LeafOptions{DNS: []string{"split.pass.example.com", "tls-a.default.svc.cluster.local", "tls-b.default.svc.cluster.local"}}).TLS)
	startTCPEcho(t, ip(14)+":9000", "echo")

	extra := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [web.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [web.example.com]
    tls: {mode: SIMPLE, serverCertificate: %[1]s, privateKey: %[2]s}
  - port: {number: 8443, name: https-mutual, protocol: HTTPS}
    hosts: [mtls.example.com]
    tls: {mode: MUTUAL, serverCertificate: %[1]s, privateKey: %[2]s, caCertificates: %[3]s}
  - port: {number: 8443, name: https-cred, protocol: HTTPS}
    hosts: [cred.example.com]
    tls: {mode: SIMPLE, credentialName: web-cred}
  - port: {number: 8443, name: tls-passthrough, protocol: TLS}
    hosts: ["*.pass.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com, mtls.example.com, cred.example.com]
  gateways: [ingress-gw]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough, namespace: default}
spec:
  hosts: ["*.pass.example.com"]
  gateways: [ingress-gw]
  tls:
  - match: [{sniHosts: [a.pass.example.com]}]
    route: [{destination: {host: tls-a.default.svc.cluster.local, port: {number: 8443}}}]
  - match: [{sniHosts: [split.pass.example.com]}]
    route:
    - {destination: {host: tls-a.default.svc.cluster.local, port: {number: 8443}}, weight: 80}
    - {destination: {host: tls-b.default.svc.cluster.local, port: {number: 8443}}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: default}
spec:
  hosts: ["*"]
  gateways: [ingress-gw]
  tcp:
  - route: [{destination: {host: tcp-echo.default.svc.cluster.local, port: {number: 9000}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-mesh, namespace: default}
spec:
  hosts: [tls-a.default.svc.cluster.local]
  tls:
  - match: [{sniHosts: [tls-a.default.svc.cluster.local]}]
    route:
    - {destination: {host: tls-a.default.svc.cluster.local}, weight: 50}
    - {destination: {host: tls-b.default.svc.cluster.local}, weight: 50}
`, certFile, keyFile, caFile)
	m := startAppMesh(t, prefix, ws, extra)
	gw := ip(gwOctet)

	simple := gatewayTLSClient(gw+":8443", serverCA.Pool)
	var page string
	if !poll(20*time.Second, func() bool {
		resp, err := simple.Get("https://web.example.com:8443/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		page = string(b)
		return resp.StatusCode == 200 && resp.Proto == "HTTP/2.0"
	}) {
		t.Fatalf("no HTTP/2 200 over TLS from the gateway's SIMPLE server within 20 s (last body %q)\n%s", page, m.tails())
	}
	if page != "web https" {
		t.Errorf("SIMPLE: page %q, want %q (the app sees x-forwarded-proto https)", page, "web https")
	}

	t.Run("httpsRedirect", func(t *testing.T) {
		c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequest("GET", "http://"+gw+":8080/status?x=1", nil)
		req.Host = "web.example.com"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "https://web.example.com/status?x=1" {
			t.Errorf("plain HTTP: %d Location %q, want 301 https://web.example.com/status?x=1", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	t.Run("MUTUAL", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			certs []tls.Certificate
			ok    bool
		}{
			{"no client certificate", nil, false},
			{"certificate of another CA", []tls.Certificate{stranger.TLS}, false},
			{"client certificate", []tls.Certificate{client.TLS}, true},
		} {
			resp, err := gatewayTLSClient(gw+":8443", serverCA.Pool, tc.certs...).Get("https://mtls.example.com:8443/")
			if !tc.ok {
				if err == nil {
					resp.Body.Close()
					t.Errorf("%s: got %d, want the connection refused", tc.name, resp.StatusCode)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc.name, err, m.tails())
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "web https" {
				t.Errorf("%s: %d %q, want 200 %q", tc.name, resp.StatusCode, b, "web https")
			}
		}
	})

	t.Run("credentialName", func(t *testing.T) {
		// The Secret is applied in the gateway proxy's namespace
		// (istio-system), as Istio's gateways read their own namespace's.
		secret := func(leaf *testutil.Leaf, ns string) string {
			return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: web-cred, namespace: %s}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n",
				ns, base64.StdEncoding.EncodeToString(leaf.CertPEM), base64.StdEncoding.EncodeToString(leaf.KeyPEM))
		}
		issuer := func(roots *x509.CertPool) (string, error) {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", gw+":8443",
				&tls.Config{ServerName: "cred.example.com", RootCAs: roots})
			if err != nil {
				return "", err
			}
			defer c.Close()
			return c.ConnectionState().PeerCertificates[0].Issuer.CommonName, nil
		}
		// A Secret in another namespace is not the gateway's.
		applyTCP(t, m, secret(serverCA.Issue(t, testutil.LeafOptions{DNS: []string{"cred.example.com"}}), "default"))
		if _, err := issuer(serverCA.Pool); err == nil {
			t.Errorf("the gateway served a credential from the default namespace")
		}
		applyTCP(t, m, secret(serverCA.Issue(t, testutil.LeafOptions{DNS: []string{"cred.example.com"}}), "istio-system"))
		var resp *http.Response
		var err error
		if !poll(20*time.Second, func() bool {
			resp, err = gatewayTLSClient(gw+":8443", serverCA.Pool).Get("https://cred.example.com:8443/")
			return err == nil
		}) {
			t.Fatalf("no answer with the credential's certificate within 20 s: %v\n%s", err, m.tails())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "web https" {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, b, "web https")
		}
		// A new certificate in the Secret is served without a restart.
		otherCA := testutil.NewCA(t, "rotated CA")
		applyTCP(t, m, secret(otherCA.Issue(t, testutil.LeafOptions{DNS: []string{"cred.example.com"}}), "istio-system"))
		if !poll(20*time.Second, func() bool { cn, err := issuer(otherCA.Pool); return err == nil && cn == "rotated CA" }) {
			t.Fatalf("the rotated certificate was not served within 20 s\n%s", m.tails())
		}
		// The key reached the proxy (its config_dump names the secret) and
		// nothing shows it: config_dump, loomd's configz and config list.
		outputs := map[string]string{}
		for name, url := range map[string]string{
			"config_dump": "http://" + gw + ":15000/config_dump",
			"configz":     "http://" + m.ip(1) + ":15014/debug/configz",
			"config list": "http://" + m.ip(1) + ":15014/api/v1/config",
		} {
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			outputs[name] = string(b)
		}
		if !strings.Contains(outputs["config_dump"], "kubernetes://web-cred") {
			t.Fatalf("the gateway's config_dump lacks the secret kubernetes://web-cred: the leak check would look at the wrong config")
		}
		checkNoSecrets(t, outputs)
	})

	t.Run("PASSTHROUGH", func(t *testing.T) {
		line, leaf, err := tlsLine(gw+":8443", "a.pass.example.com", backendCA.Pool)
		if err != nil {
			t.Fatalf("a.pass.example.com through the gateway: %v\n%s", err, m.tails())
		}
		if line != "A" || leaf.Issuer.CommonName != "backend CA" || leaf.DNSNames[0] != "a.pass.example.com" {
			t.Errorf("got %q from a certificate for %v issued by %q, want A from tls-a's own certificate", line, leaf.DNSNames, leaf.Issuer.CommonName)
		}
		// An SNI no route claims gets no chain: the gateway closes.
		if _, _, err := tlsLine(gw+":8443", "b.pass.example.com", backendCA.Pool); err == nil {
			t.Errorf("b.pass.example.com (no tls route) was answered")
		}
		const n = 500
		counts := map[string]int{}
		for i := range n {
			line, _, err := tlsLine(gw+":8443", "split.pass.example.com", backendCA.Pool)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			counts[line]++
		}
		if counts["A"]+counts["B"] != n {
			t.Fatalf("answers %v, want only A and B", counts)
		}
		if share := float64(counts["B"]) / n; math.Abs(share-0.20) > 0.05 {
			t.Errorf("tls-b answered %d of %d (%.1f %%), want 20 ±5 %%", counts["B"], n, 100*share)
		}
		t.Logf("%d connections to split.pass.example.com: tls-a %d, tls-b %d", n, counts["A"], counts["B"])
	})

	t.Run("sidecar tls route", func(t *testing.T) {
		// The client app connects to its own sidecar's IP on the TLS port;
		// the SNI picks the route: tls-a's is split 50/50, tls-b's is the
		// service's own chain.
		sidecar := ip(clientOctet) + ":8443"
		counts := map[string]int{}
		for i := range 40 {
			line, _, err := tlsLine(sidecar, "tls-a.default.svc.cluster.local", backendCA.Pool)
			if err != nil {
				t.Fatalf("connection %d through the client sidecar: %v\n%s", i, err, m.tails())
			}
			counts[line]++
		}
		if counts["A"] < 14 || counts["B"] < 14 || counts["A"]+counts["B"] != 40 {
			t.Errorf("40 connections to tls-a's SNI: %v, want about 20 each (50/50)", counts)
		}
		if line, _, err := tlsLine(sidecar, "tls-b.default.svc.cluster.local", backendCA.Pool); err != nil || line != "B" {
			t.Errorf("tls-b's SNI: %q, %v, want B", line, err)
		}
	})

	t.Run("TCP", func(t *testing.T) {
		var got string
		var err error
		if !poll(10*time.Second, func() bool { got, err = tcpEchoOnce(gw+":31400", "hello"); return err == nil }) {
			t.Fatalf("tcp through the gateway: %v\n%s", err, m.tails())
		}
		if got != "echo hello" {
			t.Errorf("got %q, want %q", got, "echo hello")
		}
	})

	// Nothing the test made secret reaches a log.
	for _, p := range m.logs {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "PRIVATE KEY") {
			t.Errorf("%s holds a private key", filepath.Base(p))
		}
	}
}
