package main

import "testing"

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
