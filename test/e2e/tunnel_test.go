package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/loom-mesh/loom/internal/testutil"
)

// connectProxy is an HTTP/1.1 forward proxy (net/http) for tunnels to
// host:port (the request's Host): a CONNECT is answered 200 and its
// hijacked connection piped to that address; a POST is a plain handler
// that pipes its request body (chunked) there and streams the answer back
// as its response body. It records each request's method and Host.
type connectProxy struct {
	mu   sync.Mutex
	seen []string // "METHOD host"
}

func (p *connectProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// startConnectProxy serves a connectProxy on addr until cleanup.
func startConnectProxy(t *testing.T, addr string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{}
	var wg sync.WaitGroup
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, r.Method+" "+r.Host)
		p.mu.Unlock()
		up, err := net.DialTimeout("tcp", r.Host, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		if r.Method == http.MethodPost {
			rc := http.NewResponseController(w)
			if rc.EnableFullDuplex() != nil {
				return
			}
			w.WriteHeader(http.StatusOK)
			_ = rc.Flush()
			testutil.RelayPOST(w, r.Body, up, &wg)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(up, brw)
			_ = up.(*net.TCPConn).CloseWrite()
		}()
		_, _ = io.Copy(conn, up)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return p
}

// startProxyProtocolEcho serves, on addr, connections that must start
// with a PROXY protocol header (go-proxyproto): each line read is
// answered "<header source> <header destination> <line>".
func startProxyProtocolEcho(t *testing.T, addr string) {
	t.Helper()
	serveConns(t, addr, func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			_, _ = fmt.Fprintf(c, "no PROXY header: %v\n", err)
			return
		}
		src, dst, ok := h.TCPAddrs()
		if !ok {
			_, _ = fmt.Fprintf(c, "PROXY header without addresses\n")
			return
		}
		sc := bufio.NewScanner(br)
		for sc.Scan() {
			if _, err := fmt.Fprintf(c, "%s %s %s\n", src, dst, sc.Text()); err != nil {
				return
			}
		}
	})
}

// TestDestinationRuleTunnelAndProxyProtocol: a DestinationRule's
// trafficPolicy.tunnel makes the client's sidecar carry a TCP connection
// to the proxy's service inside an HTTP/1.1 CONNECT (then, with protocol
// POST, a POST) to targetHost:targetPort through a forward proxy the test
// runs; trafficPolicy.proxyProtocol makes it start each connection to the
// service with a PROXY protocol header naming the client's own address,
// TCP and HTTP alike.
func TestDestinationRuleTunnelAndProxyProtocol(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	const (
		prefix  = "127.83.0"
		target  = prefix + ".201:9100" // the tunnel's destination, reachable only through the proxy's dial
		proxy   = prefix + ".202:3128"
		ppTCP   = prefix + ".203:9200"
		ppHTTP  = prefix + ".204:9300"
		localIP = prefix + ".210" // the test's client address
	)
	startTCPEcho(t, target, "tunneled")
	cp := startConnectProxy(t, proxy)
	startProxyProtocolEcho(t, ppTCP)
	hln, err := net.Listen("tcp", ppHTTP)
	if err != nil {
		t.Fatal(err)
	}
	hsrv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.RemoteAddr) // the PROXY header's source
	})}
	go hsrv.Serve(&proxyproto.Listener{Listener: hln, Policy: func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }})
	t.Cleanup(func() { hsrv.Close() })

	m := startAppMesh(t, prefix, nil, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egress-proxy, namespace: default}
spec:
  hosts: [egress-proxy.test]
  location: MESH_EXTERNAL
  ports: [{number: 3128, name: tcp-proxy, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.83.0.202}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pp-tcp, namespace: default}
spec:
  hosts: [pp-tcp.test]
  location: MESH_EXTERNAL
  ports: [{number: 9200, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.83.0.203}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pp-http, namespace: default}
spec:
  hosts: [pp-http.test]
  location: MESH_EXTERNAL
  ports: [{number: 9300, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.83.0.204}]
`)
	sidecarProxy := m.ip(clientOctet) + ":3128"
	sidecarPP := m.ip(clientOctet) + ":9200"

	// tunnel CONNECT: the proxy is asked for the target and the bytes
	// reach the target's echo through it.
	applyTCP(t, m, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egress-proxy, namespace: default}
spec:
  host: egress-proxy.test
  trafficPolicy:
    tunnel: {targetHost: 127.83.0.201, targetPort: 9100}
`)
	if !poll(20*time.Second, func() bool { got, err := tcpEchoOnce(sidecarProxy, "x"); return err == nil && got == "tunneled x" }) {
		t.Fatalf("no answer through the CONNECT tunnel via the sidecar's %s within 20 s; proxy saw %q\n%s", sidecarProxy, cp.requests(), m.tails())
	}
	if got, err := tcpEchoOnce(sidecarProxy, "hello"); err != nil || got != "tunneled hello" {
		t.Fatalf("through the tunnel: %q, %v", got, err)
	}
	for _, r := range cp.requests() {
		if r != "CONNECT "+target {
			t.Errorf("the proxy saw %q, want only CONNECT %s", r, target)
		}
	}

	// protocol POST: the same, over POST.
	applyTCP(t, m, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egress-proxy, namespace: default}
spec:
  host: egress-proxy.test
  trafficPolicy:
    tunnel: {protocol: POST, targetHost: 127.83.0.201, targetPort: 9100}
`)
	posted := func() bool {
		rs := cp.requests()
		return len(rs) > 0 && rs[len(rs)-1] == "POST "+target
	}
	if !poll(20*time.Second, func() bool {
		got, err := tcpEchoOnce(sidecarProxy, "y")
		return err == nil && got == "tunneled y" && posted()
	}) {
		t.Fatalf("no answer through a POST tunnel within 20 s; proxy saw %q\n%s", cp.requests(), m.tails())
	}

	// proxyProtocol over TCP: the header names the client's address (the
	// connection the sidecar accepted) and the sidecar's listener.
	applyTCP(t, m, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pp-tcp, namespace: default}
spec:
  host: pp-tcp.test
  trafficPolicy:
    proxyProtocol: {version: V2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pp-http, namespace: default}
spec:
  host: pp-http.test
  trafficPolicy:
    proxyProtocol: {}
`)
	var last string
	if !poll(20*time.Second, func() bool {
		got, local, err := tcpEchoLocal(localIP, sidecarPP, "z")
		last = fmt.Sprintf("%q %v", got, err)
		return err == nil && got == local+" "+sidecarPP+" z"
	}) {
		t.Fatalf("the upstream never saw a PROXY header naming the client %s and %s within 20 s: last %s\n%s", localIP, sidecarPP, last, m.tails())
	}

	// proxyProtocol over HTTP: the upstream's RemoteAddr (the header's
	// source) is the client's address as the sidecar accepted it.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy:       http.ProxyURL(&url.URL{Scheme: "http", Host: m.ip(clientOctet) + ":15001"}),
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}).DialContext,
	}}
	if !poll(20*time.Second, func() bool {
		resp, err := hc.Get("http://pp-http.test:9300/")
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		last = fmt.Sprintf("%d %q", resp.StatusCode, b)
		return resp.StatusCode == http.StatusOK && strings.HasPrefix(string(b), localIP+":")
	}) {
		t.Fatalf("the HTTP upstream never saw a PROXY header naming the client %s within 20 s: last %s\n%s", localIP, last, m.tails())
	}
}

// tcpEchoLocal is tcpEchoFrom that also returns the connection's local
// address ("ip:port").
func tcpEchoLocal(src, addr, line string) (got, local string, err error) {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", "", err
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err = bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), c.LocalAddr().String(), err
}
