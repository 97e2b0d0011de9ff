package http_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// BenchmarkProxyHTTP1 measures one proxied HTTP/1.1 GET with a 1 KiB
// response over loopback: client -> proxy listener -> route -> upstream
// keep-alive pool -> httptest upstream, with the access log on. Allocations
// counted include the client's and the upstream server's, which run in the
// same process.
func BenchmarkProxyHTTP1(b *testing.B) {
	body := strings.Repeat("x", 1024)
	up := startBackend(b, "up", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		io.WriteString(w, body)
	})
	lAddr := closedAddr(b)
	g := build(b, nil,
		[]*listenerv3.Listener{httpListener(b, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "up")))},
		[]*clusterv3.Cluster{staticCluster(b, "up", false, up.addr)})
	p := startProxy(b, g)
	req, err := http.NewRequest("GET", "http://"+lAddr+"/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Host = "svc"
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	for b.Loop() {
		resp, err := p.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.ReadFull(resp.Body, buf[:1024])
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 1024 {
			b.Fatalf("got %d, %d bytes", resp.StatusCode, n)
		}
	}
}

// BenchmarkDirectHTTP1 is the same request without the proxy, the baseline
// BenchmarkProxyHTTP1 is compared with.
func BenchmarkDirectHTTP1(b *testing.B) {
	body := strings.Repeat("x", 1024)
	up := startBackend(b, "up", false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		io.WriteString(w, body)
	})
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest("GET", "http://"+up.addr+"/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(1024)
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.ReadFull(resp.Body, buf[:1024])
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 1024 {
			b.Fatalf("got %d, %d bytes", resp.StatusCode, n)
		}
	}
}
