package upstream

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

func TestOriginalDstAddr(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		override uint32
		want     string
		wantErr  bool
	}{
		{"ip and port", "127.54.0.200:8081", 0, "127.54.0.200:8081", false},
		{"ip default port", "10.0.0.1", 0, "10.0.0.1:80", false},
		{"host name", "external.test:8081", 0, "external.test:8081", false},
		{"host name default port", "external.test", 0, "external.test:80", false},
		{"ipv6", "[::1]:9000", 0, "[::1]:9000", false},
		{"ipv6 default port", "[::1]", 0, "[::1]:80", false},
		{"override", "external.test:8081", 9090, "external.test:9090", false},
		{"empty", "", 0, "", true},
		{"bad port", "a.test:http", 0, "", true},
		{"port 0", "a.test:0", 0, "", true},
		{"bad host", "a_b.test:80", 0, "", true},
		{"ipv6 without brackets", "::1", 0, "", true},
		{"path", "a.test/x", 0, "", true},
		{"bracketed ipv4", "[127.0.0.1]:80", 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OriginalDstAddr(tt.in, tt.override)
			if tt.wantErr {
				if !errors.Is(err, ErrNoOriginalDst) {
					t.Fatalf("OriginalDstAddr(%q) = %q, %v; want ErrNoOriginalDst", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("OriginalDstAddr(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// egressGet sends GET / with authority host through h, as the connection
// manager does: URL.Host is h.Addr, Host the downstream authority.
func egressGet(t *testing.T, h *Host, host string, hdr http.Header) (string, error) {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: h.Addr, Path: "/"},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: hdr, Host: host}
	resp, err := h.RT.RoundTrip(req)
	if err != nil {
		h.Done(Result{LocalOrigin: true})
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	h.Done(Result{Status: resp.StatusCode})
	return string(b), err
}

func TestOriginalDstCluster(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "reached "+r.Host)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	m := New(Options{})
	defer m.Close()
	authority := &config.Cluster{Name: "PassthroughCluster", LBPolicy: config.LBClusterProvided,
		OriginalDst: &config.OriginalDstConfig{Header: ":authority"}}
	header := &config.Cluster{Name: "od-header", LBPolicy: config.LBClusterProvided,
		OriginalDst: &config.OriginalDstConfig{Header: config.DefaultOriginalDstHeader}}
	m.Update(gen(authority, header))

	var got []string
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port} {
		h, err := m.Pick(authority, PickOptions{Authority: host})
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr != host {
			t.Errorf("Pick with authority %s: Host.Addr = %q, want the authority", host, h.Addr)
		}
		body, err := egressGet(t, h, host, nil)
		if err != nil {
			t.Fatalf("authority %s: %v", host, err)
		}
		got = append(got, body)
	}
	// The header cluster dials what the header says; the authority is
	// passed on unchanged.
	h, err := m.Pick(header, PickOptions{Authority: "external.test"})
	if err != nil {
		t.Fatal(err)
	}
	if h.Addr != "" {
		t.Errorf("a cluster reading another header got Host.Addr %q from the authority", h.Addr)
	}
	body, err := egressGet(t, h, "external.test", http.Header{"X-Envoy-Original-Dst-Host": {"127.0.0.1:" + port}})
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, body)
	want := []string{"reached 127.0.0.1:" + port, "reached localhost:" + port, "reached external.test"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got)\n%s", d)
	}

	// No header: a connect error before any dial.
	h, err = m.Pick(header, PickOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = egressGet(t, h, "external.test", nil)
	var ce *ConnectError
	if !errors.As(err, &ce) || !errors.Is(err, ErrNoOriginalDst) {
		t.Fatalf("no header: err = %v, want a *ConnectError wrapping ErrNoOriginalDst", err)
	}
}

func TestDNSClusterResolvesAtDial(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	m := New(Options{})
	defer m.Close()
	v4 := &config.Cluster{Name: "dns-v4", DNSNetwork: "tcp4", Endpoints: []config.Endpoint{{Address: "localhost:" + port, Weight: 1}}}
	// The server listens on 127.0.0.1 only: restricted to IPv6, localhost
	// cannot reach it.
	v6 := &config.Cluster{Name: "dns-v6", DNSNetwork: "tcp6", Endpoints: []config.Endpoint{{Address: "localhost:" + port, Weight: 1}}}
	m.Update(gen(v4, v6))

	h, err := m.Pick(v4, PickOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Addr != "localhost:"+port {
		t.Fatalf("Addr = %q, want the host name endpoint", h.Addr)
	}
	if body, err := egressGet(t, h, "external.test", nil); err != nil || body != "ok" {
		t.Fatalf("tcp4: %q, %v", body, err)
	}
	h, err = m.Pick(v6, PickOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ce *ConnectError
	if _, err := egressGet(t, h, "external.test", nil); !errors.As(err, &ce) {
		t.Fatalf("tcp6: err = %v, want a *ConnectError", err)
	}
}
