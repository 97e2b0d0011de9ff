package upstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/testutil"
)

// TestMeshNameDial: a DNS cluster whose endpoint is a mesh service's name
// ("reviews.default.svc.cluster.local:9080", which no resolver knows)
// dials an endpoint of the service's outbound cluster, picked by that
// cluster's balancer; the dial is the pick's attempt, so a refused
// connection counts for the service cluster's outlier detection and
// ejects the dead endpoint, after which every dial reaches the live one.
func TestMeshNameDial(t *testing.T) {
	live := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "reached "+r.Host) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // connections to it are refused

	const name = "reviews.default.svc.cluster.local:9080"
	svc := &config.Cluster{Name: "outbound|9080||reviews.default.svc.cluster.local",
		Endpoints: []config.Endpoint{{Address: dead, Weight: 1}, {Address: addrOf(live), Weight: 1}},
		Outlier: &config.OutlierDetection{Consecutive5xx: 1, EnforcingConsecutive5xx: 100, Interval: time.Hour,
			BaseEjectionTime: time.Hour, MaxEjectionTime: time.Hour, MaxEjectionPercent: 100}}
	dns := &config.Cluster{Name: "outbound|9080||reviews.example", DNSNetwork: "tcp", ConnectTimeout: 5 * time.Second,
		Endpoints: []config.Endpoint{{Address: name, Weight: 1}}}
	m := New(Options{})
	defer m.Close()
	m.Update(gen(svc, dns))
	svcState, dnsState := m.state(svc.Name), m.state(dns.Name)

	// Round robin over two endpoints: within two dials one goes to the
	// dead endpoint, is refused, and ejects it.
	refused := 0
	for i := 0; i < 2 && !svcState.ejected(dead); i++ {
		c, err := dnsState.dial(context.Background(), "tcp", name)
		if err != nil {
			refused++
			continue
		}
		if got := c.RemoteAddr().String(); got != addrOf(live) {
			t.Errorf("dial %d reached %s, want the live endpoint %s", i, got, addrOf(live))
		}
		c.Close()
	}
	if refused != 1 || !svcState.ejected(dead) {
		t.Fatalf("%d dials refused, dead endpoint ejected %v; want the refused dial reported and the endpoint ejected",
			refused, svcState.ejected(dead))
	}
	for i := range 4 {
		c, err := dnsState.dial(context.Background(), "tcp", name)
		if err != nil {
			t.Fatalf("dial %d after the ejection: %v", i, err)
		}
		if got := c.RemoteAddr().String(); got != addrOf(live) {
			t.Errorf("dial %d after the ejection reached %s", i, got)
		}
		c.Close()
	}
	// Every pick's attempt has ended: the service cluster's circuit
	// breaker holds no request.
	if n := svcState.pol.requests.Load(); n != 0 {
		t.Errorf("service cluster counts %d requests in flight, want 0", n)
	}

	// A request through the DNS cluster carries its own authority to the
	// service's endpoint.
	h, err := m.Pick(dns, PickOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if body, err := egressGet(t, h, "reviews.example", nil); err != nil || body != "reached reviews.example" {
		t.Fatalf("GET through the DNS cluster: %q, %v", body, err)
	}
}

// TestMeshNameDialPipeWithBind: a DNS cluster with upstream_bind_config
// whose mesh name resolves to a service's pipe endpoint dials the unix
// socket without the bind's source IP, which a unix socket cannot take.
func TestMeshNameDialPipeWithBind(t *testing.T) {
	dir := testutil.SocketDir(t)
	path := filepath.Join(dir, "svc.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	const name = "uds.default.svc.cluster.local:80"
	svc := &config.Cluster{Name: "outbound|80||uds.default.svc.cluster.local",
		Endpoints: []config.Endpoint{{Address: path, Weight: 1}}}
	dns := &config.Cluster{Name: "outbound|80||uds.example", DNSNetwork: "tcp", UpstreamBind: "127.0.0.6",
		ConnectTimeout: 5 * time.Second, Endpoints: []config.Endpoint{{Address: name, Weight: 1}}}
	m := New(Options{})
	defer m.Close()
	m.Update(gen(svc, dns))
	c, err := m.state(dns.Name).dial(context.Background(), "tcp", name)
	if err != nil {
		t.Fatalf("dial %s (pipe endpoint %s) from a bound cluster: %v", name, path, err)
	}
	if got := c.RemoteAddr().Network(); got != "unix" {
		t.Errorf("connection network %q, want unix", got)
	}
	c.Close()
}
