package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

func gen(cs ...*config.Cluster) *config.Generation {
	g := &config.Generation{Clusters: map[string]*config.Cluster{}}
	for _, c := range cs {
		g.Clusters[c.Name] = c
	}
	return g
}

func TestPickRoundRobinHealthyOnly(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{
		{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2", Health: config.Unhealthy}, {Address: "127.0.0.1:3"},
	}}
	m.Update(gen(c))
	var got []string
	for range 4 {
		h, err := m.Pick(c, PickOptions{})
		if err != nil || h.RT == nil {
			t.Fatalf("Pick: %v, %v", h, err)
		}
		got = append(got, h.Addr)
		h.Done(Result{Status: 200})
	}
	want := []string{"127.0.0.1:1", "127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:3"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got)\n%s", d)
	}
	// Panic mode off: with the default threshold (50%) Envoy would balance
	// over the unhealthy endpoint.
	none := &config.Cluster{Name: "none", HealthyPanicThreshold: new(uint32(0)),
		Endpoints: []config.Endpoint{{Address: "127.0.0.1:2", Health: config.Unhealthy}}}
	if _, err := m.Pick(none, PickOptions{}); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Fatalf("Pick(no healthy) err = %v", err)
	}
}

func TestStateSurvivesAndIsForgotten(t *testing.T) {
	var forgot []string
	m := New(Options{OnForget: func(c string) { forgot = append(forgot, c) }})
	defer m.Close()
	a := &config.Cluster{Name: "a", Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}}}
	b := &config.Cluster{Name: "b", Endpoints: []config.Endpoint{{Address: "127.0.0.1:1"}}}
	m.Update(gen(a, b))
	h1, _ := m.Pick(a, PickOptions{})
	rt1 := h1.RT
	// A new generation with an equal cluster: same pool, round robin goes on.
	a2 := &config.Cluster{Name: "a", Endpoints: a.Endpoints}
	m.Update(gen(a2))
	h2, _ := m.Pick(a2, PickOptions{})
	addr, rt2 := h2.Addr, h2.RT
	if rt1 != rt2 {
		t.Error("the connection pool changed across generations")
	}
	if addr != "127.0.0.1:2" {
		t.Errorf("round robin restarted: got %s, want 127.0.0.1:2", addr)
	}
	if len(forgot) != 0 {
		t.Fatalf("forgot %v after one generation", forgot)
	}
	m.Update(gen(a2))
	if d := cmp.Diff([]string{"b"}, forgot); d != "" {
		t.Fatalf("forgotten after 2 generations (-want +got)\n%s", d)
	}
}

func TestConnectError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{{Address: addr}}}
	m.Update(gen(c))
	h, err := m.Pick(c, PickOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+h.Addr+"/", nil)
	_, err = h.RT.RoundTrip(req)
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("RoundTrip err = %v, want a *ConnectError", err)
	}
}

// TestUpstreamBind: a cluster's upstream_bind_config address is the
// source of its connections, HTTP and TCP proxy alike (Istio's inbound
// clusters to the pod IP dial from 127.0.0.6); a cluster without one
// leaves the choice to the kernel.
func TestUpstreamBind(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		_, _ = io.WriteString(w, host)
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	m := New(Options{})
	defer m.Close()
	bound := &config.Cluster{Name: "bound", UpstreamBind: "127.0.0.6", Endpoints: []config.Endpoint{{Address: addr}}}
	plain := &config.Cluster{Name: "plain", Endpoints: []config.Endpoint{{Address: addr}}}
	m.Update(gen(bound, plain))
	for _, tc := range []struct {
		c    *config.Cluster
		want string
	}{{bound, "127.0.0.6"}, {plain, "127.0.0.1"}} {
		h, err := m.Pick(tc.c, PickOptions{})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", "http://"+h.Addr+"/", nil)
		resp, err := h.RT.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: RoundTrip: %v", tc.c.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h.Done(Result{Status: resp.StatusCode})
		if string(body) != tc.want {
			t.Errorf("%s: the upstream saw the request from %q, want %q", tc.c.Name, body, tc.want)
		}
		// The TCP proxy's dial.
		c, err := h.Dial(context.Background())
		if err != nil {
			t.Fatalf("%s: Dial: %v", tc.c.Name, err)
		}
		if got, _, _ := net.SplitHostPort(c.LocalAddr().String()); got != tc.want {
			t.Errorf("%s: the TCP proxy's connection is from %s, want %s", tc.c.Name, got, tc.want)
		}
		c.Close()
	}
}
