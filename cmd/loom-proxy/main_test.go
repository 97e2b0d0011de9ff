package main

import (
	"strings"
	"testing"
)

func TestInterceptionMode(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "", want: "NONE"},
		{in: "none", want: "NONE"},
		{in: "redirect", want: "REDIRECT"},
		{in: "REDIRECT", want: "REDIRECT"},
		{in: "tproxy", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := interceptionMode(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("interceptionMode(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCheckAppMetricsURL(t *testing.T) {
	tests := []struct {
		name, url, merged string
		wantErr           bool
	}{
		{name: "none", url: "", merged: "127.0.0.5:15020"},
		{name: "app port", url: "http://127.0.0.5:8080/metrics", merged: "127.0.0.5:15020"},
		{name: "another proxy's page", url: "http://127.0.0.6:15020/stats/prometheus", merged: "127.0.0.5:15020"},
		{name: "merged off", url: "http://127.0.0.5:15020/stats/prometheus", merged: ""},
		{name: "itself", url: "http://127.0.0.5:15020/stats/prometheus", merged: "127.0.0.5:15020", wantErr: true},
		{name: "itself on every address", url: "http://localhost:15020/metrics", merged: ":15020", wantErr: true},
		{name: "localhost is the loopback listener", url: "http://localhost:15020/stats/prometheus", merged: "127.0.0.1:15020", wantErr: true},
		{name: "IPv6 loopback however written", url: "http://[0:0:0:0:0:0:0:1]:15020/", merged: "[::1]:15020", wantErr: true},
		{name: "localhost is not another loopback address", url: "http://localhost:15020/stats/prometheus", merged: "127.0.0.5:15020"},
		{name: "default port is itself", url: "http://10.0.0.1/metrics", merged: "10.0.0.1:80", wantErr: true},
		{name: "no scheme", url: "127.0.0.5:8080/metrics", merged: "127.0.0.5:15020", wantErr: true},
		{name: "ftp", url: "ftp://127.0.0.5/metrics", merged: "127.0.0.5:15020", wantErr: true},
		{name: "no host", url: "http:///metrics", merged: "127.0.0.5:15020", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkAppMetricsURL(tt.url, tt.merged)
			if (err != nil) != tt.wantErr {
				t.Fatalf("checkAppMetricsURL(%q, %q) = %v, want error %v", tt.url, tt.merged, err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "--app-metrics-url") {
				t.Errorf("error %q does not name --app-metrics-url", err)
			}
		})
	}
}
