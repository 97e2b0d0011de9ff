package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil"
)

// TestSidecarEgressScope: a Sidecar in namespace default importing only
// "./alpha.default.svc.cluster.local" gives the client's sidecar alpha's
// cluster and not beta's (its /config_dump on IP:15000 says so), and
// alpha answers 200 through it. An egress listener of captureMode NONE
// with a bind is then a listener on that address, which the app dials
// directly. An egress listener of protocol HTTP_PROXY is an HTTP proxy
// on its bind that the app names in HTTP_PROXY.
func TestSidecarEgressScope(t *testing.T) {
	alpha, beta := &nameApp{name: "alpha-v1"}, &nameApp{name: "beta-v1"}
	m := startAppMesh(t, "127.64.0", []appWorkload{
		{Name: "alpha-v1", App: "alpha", Version: "v1", Octet: 11, Handler: alpha},
		{Name: "beta-v1", App: "beta", Version: "v1", Octet: 12, Handler: beta},
	}, "")
	const alphaCluster, betaCluster = "outbound|9080||alpha.default.svc.cluster.local", "outbound|9080||beta.default.svc.cluster.local"
	dump := configDump(t, m.ip(clientOctet))
	if !strings.Contains(dump, alphaCluster) || !strings.Contains(dump, betaCluster) {
		t.Fatalf("before the Sidecar the client's config_dump lacks %q or %q", alphaCluster, betaCluster)
	}

	m.apply(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - hosts: ["./alpha.default.svc.cluster.local"]
`)
	dump = configDump(t, m.ip(clientOctet))
	if !strings.Contains(dump, alphaCluster) {
		t.Errorf("the client's config_dump lacks the imported %q", alphaCluster)
	}
	if strings.Contains(dump, betaCluster) {
		t.Errorf("the client's config_dump has %q, which the Sidecar does not import", betaCluster)
	}
	hc := m.client(5 * time.Second)
	if code, body, _ := getBody(t, hc, "http://alpha:9080/", nil); code != http.StatusOK || body != "alpha-v1" {
		t.Errorf("GET alpha through the scoped sidecar = %d %q, want 200 alpha-v1", code, body)
	}

	t.Run("captureMode NONE listener on its bind", func(t *testing.T) {
		// The client's egress listener for 9080, captureMode NONE, bound
		// to another address of the host: the app dials it directly (no
		// HTTP_PROXY) and reaches alpha through the client's sidecar.
		bind := m.ip(99)
		m.applyFor(fmt.Sprintf(appSidecar("client", `  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: %s
    captureMode: NONE
    hosts: ["./alpha.default.svc.cluster.local"]
  - hosts: ["./beta.default.svc.cluster.local"]
`), bind), "client")
		direct := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
		req, err := http.NewRequest(http.MethodGet, "http://"+bind+":9080/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "alpha.default.svc.cluster.local:9080"
		resp, err := direct.Do(req)
		if err != nil {
			t.Fatalf("GET %s:9080 (the egress listener's bind) for alpha: %v\n%s", bind, err, m.tails())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "alpha-v1" {
			t.Errorf("GET %s:9080 for alpha = %d %q, want 200 alpha-v1 through the client's bound egress listener", bind, resp.StatusCode, b)
		}
	})

	t.Run("HTTP_PROXY listener", func(t *testing.T) {
		// The client's egress listener of protocol HTTP_PROXY on
		// BIND:15080 imports alpha only: an app whose HTTP_PROXY names it
		// reaches alpha through it (on alpha's own port 9080, not the
		// listener's), and a host the listener does not import (a server
		// outside the mesh) goes to PassthroughCluster, Istio's catch-all
		// under ALLOW_ANY, not a 404.
		bind := m.ip(98)
		outside, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "outside")
		})}
		go func() { _ = srv.Serve(outside) }()
		t.Cleanup(func() { _ = srv.Close() })
		m.applyFor(fmt.Sprintf(appSidecar("client", `  egress:
  - port: {number: 15080, protocol: HTTP_PROXY, name: http-proxy}
    bind: %s
    hosts: ["./alpha.default.svc.cluster.local"]
  - hosts: ["./beta.default.svc.cluster.local"]
`), bind), "client")
		proxy := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: bind + ":15080"})}}
		if code, body, _ := getBody(t, proxy, "http://alpha:9080/", nil); code != http.StatusOK || body != "alpha-v1" {
			t.Errorf("GET alpha through HTTP_PROXY=%s:15080 = %d %q, want 200 alpha-v1\n%s", bind, code, body, m.tails())
		}
		if code, body, _ := getBody(t, proxy, "http://"+outside.Addr().String()+"/", nil); code != http.StatusOK || body != "outside" {
			t.Errorf("GET %s (not imported) through HTTP_PROXY=%s:15080 = %d %q, want 200 outside by PassthroughCluster", outside.Addr(), bind, code, body)
		}
	})
}

// configDump returns the /config_dump of the proxy whose admin listens
// on ip:15000; a failure fails the test.
func configDump(t *testing.T, ip string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":15000/config_dump", nil)
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatalf("GET config_dump of %s: %v", ip, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET config_dump of %s: %d, %v", ip, resp.StatusCode, err)
	}
	return string(body)
}

// TestSidecarIngressListeners: a Sidecar's ingress listeners, not the
// service's ports, define the "moved" workload's inbound side. Service
// port 9080 is mapped to an app on port 8080 (defaultEndpoint
// 127.0.0.1:8080: in local mode the workload's own IP), and a TCP port
// 7070 that no service has to a tcp-echo on 7071. A request through the
// client's sidecar reaches the app through moved's sidecar (mTLS: the app
// sees the client's SPIFFE ID in XFCC); a plaintext peer reaches it at
// moved's IP:9080, where moved's sidecar now listens (Istio's bound
// inbound listener), and the echo at IP:7070. Then the ingress
// listener's connectionPool (maxConnections 1, http1MaxPendingRequests 1)
// limits the inbound cluster: with one request held by the app and one
// pending, a third is refused by moved's sidecar with 503 and
// x-envoy-overloaded, and its pending-overflow stat counts it. With tls
// SIMPLE on 9443 (PeerAuthentication DISABLE there) a Go TLS client gets
// the app over HTTP/2 with the configured certificate; with bind, the
// TCP port listens on the bind address instead of moved's.
func TestSidecarIngressListeners(t *testing.T) {
	const prefix = "127.157.0"
	const movedOctet = 11
	moved := fmt.Sprintf("%s.%d", prefix, movedOctet)
	ln, err := net.Listen("tcp", moved+":8080")
	if err != nil {
		t.Fatal(err)
	}
	// /hold reports its arrival and answers when released: it keeps the
	// inbound cluster's one connection busy for the connectionPool case.
	arrived, release := make(chan struct{}, 4), make(chan struct{})
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		fmt.Fprintf(w, "moved xfcc=%s", r.Header.Get("X-Forwarded-Client-Cert"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	startTCPEcho(t, moved+":7071", "moved")

	m := startMTLSMesh(t, prefix, []appWorkload{
		{Name: "moved-v1", App: "moved", Version: "v1", Octet: movedOctet},
		{Name: "client", App: "client", Version: "v1", Octet: clientOctet},
	}, "1h")
	m.applyFor(appSidecar("moved", `  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 7070, protocol: TCP, name: tcp-echo}
    defaultEndpoint: 127.0.0.1:7071
`), "moved-v1")

	hc := m.client(5 * time.Second)
	code, body, _ := getBody(t, hc, "http://moved:9080/", nil)
	if code != http.StatusOK || !strings.HasPrefix(body, "moved xfcc=") || !strings.Contains(body, "spiffe://cluster.local/ns/default/sa/client") {
		t.Errorf("GET moved:9080 through the client's sidecar = %d %q, want 200 from the app on 8080 with the client's SPIFFE ID", code, body)
	}

	direct := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	if code, body, _ := getBody(t, direct, "http://"+moved+":9080/", nil); code != http.StatusOK || body != "moved xfcc=" {
		t.Errorf("GET %s:9080 in plaintext = %d %q, want 200 %q from the app on 8080 through moved's sidecar", moved, code, body, "moved xfcc=")
	}

	if got, err := tcpEchoOnce(moved+":7070", "hello"); err != nil || got != "moved hello" {
		t.Errorf("TCP to %s:7070 (an ingress port no service has) = %q, %v; want %q from the echo on 7071", moved, got, err, "moved hello")
	}

	t.Run("connectionPool", func(t *testing.T) {
		m.applyFor(appSidecar("moved", `  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
  - port: {number: 7070, protocol: TCP, name: tcp-echo}
    defaultEndpoint: 127.0.0.1:7071
`), "moved-v1")
		type result struct {
			code       int
			overloaded string
			err        error
		}
		get := func(out chan<- result) {
			resp, err := direct.Get("http://" + moved + ":9080/hold")
			if err != nil {
				out <- result{err: err}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			out <- result{code: resp.StatusCode, overloaded: resp.Header.Get("x-envoy-overloaded")}
		}
		held := make(chan result, 1)
		go get(held)
		select {
		case <-arrived: // the one connection is busy
		case r := <-held:
			t.Fatalf("the first /hold returned %+v before the app held it", r)
		case <-time.After(5 * time.Second):
			t.Fatal("the first /hold never reached the app")
		}
		// Of two more, one waits as the one pending request and the
		// other overflows, whichever the proxy sees first.
		rest := make(chan result, 2)
		go get(rest)
		go get(rest)
		var first result
		select {
		case first = <-rest:
		case <-time.After(5 * time.Second):
			t.Fatal("neither of two requests beyond the pool returned")
		}
		close(release)
		second, last := <-rest, <-held
		if first.err != nil || first.code != http.StatusServiceUnavailable || first.overloaded != "true" {
			t.Errorf("the request beyond maxConnections 1 and http1MaxPendingRequests 1 = %+v, want 503 with x-envoy-overloaded true", first)
		}
		for _, r := range []result{second, last} {
			if r.err != nil || r.code != http.StatusOK {
				t.Errorf("a request within the pool = %+v, want 200", r)
			}
		}
		if n := statValue(t, moved, "envoy_cluster_upstream_rq_pending_overflow", "inbound|9080||"); n != 1 {
			t.Errorf("moved's envoy_cluster_upstream_rq_pending_overflow{inbound|9080||} = %v, want 1", n)
		}
	})

	t.Run("tls", func(t *testing.T) {
		dir := t.TempDir()
		ca := testutil.NewCA(t, "moved server CA")
		cert := ca.Issue(t, testutil.LeafOptions{DNS: []string{"moved.example.com"}})
		certFile := writeFile(t, dir, "cert.pem", cert.CertPEM)
		keyFile := writeFile(t, dir, "key.pem", cert.KeyPEM)
		m.applyFor(fmt.Sprintf(appSidecar("moved", `  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9443, protocol: HTTPS, name: https}
    defaultEndpoint: 127.0.0.1:8080
    tls: {mode: SIMPLE, serverCertificate: %s, privateKey: %s}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: moved, namespace: default}
spec:
  selector: {matchLabels: {app: moved}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    9443: {mode: DISABLE}
`), certFile, keyFile), "moved-v1")

		resp, err := gatewayTLSClient(moved+":9443", ca.Pool).Get("https://moved.example.com/")
		if err != nil {
			t.Fatalf("GET https://moved.example.com/ at %s:9443: %v", moved, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "moved xfcc=" {
			t.Errorf("GET over the ingress listener's TLS = %d %q, want 200 %q from the app on 8080", resp.StatusCode, body, "moved xfcc=")
		}
		if resp.Proto != "HTTP/2.0" {
			t.Errorf("protocol = %s, want HTTP/2.0 (ALPN h2, as Istio's BuildListenerTLSContext)", resp.Proto)
		}
		if pc := resp.TLS.PeerCertificates; len(pc) == 0 || !pc[0].Equal(cert.Cert) {
			t.Errorf("the sidecar did not present the configured certificate")
		}
		// The port takes only TLS: plaintext matches no chain.
		if resp, err := direct.Get("http://" + moved + ":9443/"); err == nil {
			resp.Body.Close()
			t.Errorf("plaintext GET %s:9443 = %d, want the connection closed", moved, resp.StatusCode)
		}
	})

	t.Run("bind", func(t *testing.T) {
		// Another address of the host: the listener's bind, not moved's.
		bind := fmt.Sprintf("%s.%d", prefix, 99)
		m.applyFor(fmt.Sprintf(appSidecar("moved", `  ingress:
  - port: {number: 7070, protocol: TCP, name: tcp-echo}
    bind: %s
    defaultEndpoint: 127.0.0.1:7071
`), bind), "moved-v1")
		if got, err := tcpEchoOnce(bind+":7070", "hello"); err != nil || got != "moved hello" {
			t.Errorf("TCP to the bind address %s:7070 = %q, %v; want %q from the echo on 7071", bind, got, err, "moved hello")
		}
		if c, err := net.DialTimeout("tcp", moved+":7070", 2*time.Second); err == nil {
			c.Close()
			t.Errorf("%s:7070 still accepts connections; the listener should have moved to %s:7070", moved, bind)
		}
	})

	t.Run("unix", func(t *testing.T) {
		// An app served on a unix socket (a short directory: socket
		// paths hold 107 bytes), reached through a unix://
		// defaultEndpoint; and the sidecar's own unix socket egress
		// listener (port 0) that the app can call the mesh through.
		dir := testutil.SocketDir(t)
		appSock, egressSock := filepath.Join(dir, "app.sock"), filepath.Join(dir, "egress.sock")
		uln, err := net.Listen("unix", appSock)
		if err != nil {
			t.Fatal(err)
		}
		usrv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "unix xfcc=%s", r.Header.Get("X-Forwarded-Client-Cert"))
		})}
		go usrv.Serve(uln)
		t.Cleanup(func() { usrv.Close() })
		m.applyFor(fmt.Sprintf(appSidecar("moved", `  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: unix://%s
  egress:
  - port: {number: 0, protocol: HTTP, name: http-uds}
    bind: unix://%s
    hosts: ["./*"]
`), appSock, egressSock), "moved-v1")

		code, body, _ := getBody(t, hc, "http://moved:9080/", nil)
		if code != http.StatusOK || !strings.HasPrefix(body, "unix xfcc=") || !strings.Contains(body, "spiffe://cluster.local/ns/default/sa/client") {
			t.Errorf("GET moved:9080 through the client's sidecar = %d %q, want 200 from the app on %s with the client's SPIFFE ID", code, body, appSock)
		}
		if code, body, _ := getBody(t, direct, "http://"+moved+":9080/", nil); code != http.StatusOK || body != "unix xfcc=" {
			t.Errorf("GET %s:9080 in plaintext = %d %q, want 200 %q from the app on %s", moved, code, body, "unix xfcc=", appSock)
		}

		// The app calls moved:9080 through its sidecar's socket: out
		// over mTLS and back in to the app, which sees moved's own ID.
		viaSock := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", egressSock)
			}}}
		defer viaSock.CloseIdleConnections()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.Dial("unix", egressSock)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("moved's sidecar never listened on %s: %v", egressSock, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		code, body, _ = getBody(t, viaSock, "http://moved:9080/", nil)
		if code != http.StatusOK || !strings.HasPrefix(body, "unix xfcc=") || !strings.Contains(body, "URI=spiffe://cluster.local/ns/default/sa/moved") {
			t.Errorf("GET moved:9080 through %s = %d %q, want 200 from the app over mTLS with moved's own SPIFFE ID as the client", egressSock, code, body)
		}
	})
}

// appSidecar is the Sidecar named app in namespace default whose
// workloadSelector picks app's pods; spec is the rest of its spec,
// indented under spec:.
func appSidecar(app, spec string) string {
	return "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: " + app + ", namespace: default}\nspec:\n  workloadSelector: {labels: {app: " + app + "}}\n" + spec
}
