package config

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestPipeAddress: an Address.pipe (a unix domain socket, as loomd sends
// for a Sidecar unix:// bind or defaultEndpoint) is taken for a listener
// or a STATIC/EDS endpoint when Envoy would take it: an absolute path or
// @name (abstract), short enough for sockaddr_un, mode at most 0777.
func TestPipeAddress(t *testing.T) {
	pipe := func(path string, mode uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path, Mode: mode}}}
	}
	tests := []struct {
		name    string
		addr    *corev3.Address
		want    string
		wantErr string
	}{
		{"path", pipe("/var/run/app.sock", 0), "/var/run/app.sock", ""},
		{"abstract", pipe("@app", 0), "@app", ""},
		{"mode", pipe("/var/run/app.sock", 0o660), "/var/run/app.sock", ""},
		{"socket address still", socketAddr("127.0.0.1", 80), "127.0.0.1:80", ""},
		{"empty", pipe("", 0), "", "a.pipe.path: must not be empty"},
		{"relative", pipe("app.sock", 0), "", `a.pipe.path = "app.sock": must be an absolute path or @name`},
		{"scheme kept", pipe("unix:///var/run/app.sock", 0), "", "must be an absolute path or @name"},
		{"too long", pipe("/"+strings.Repeat("x", MaxPipePath), 0), "", "must be at most 107 bytes"},
		{"bad mode", pipe("/a.sock", 0o1777), "", `a.pipe.mode = "1777": must be at most 0777`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := endpointAddress("a", tt.addr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v, want %q", got, err, tt.want)
			}
		})
	}
	for addr, want := range map[string]string{"/a.sock": "unix", "@a": "unix", "127.0.0.1:80": "tcp", "[::1]:80": "tcp", "host:80": "tcp"} {
		if got := Network(addr); got != want {
			t.Errorf("Network(%q) = %q, want %q", addr, got, want)
		}
	}
}

func socketAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}
