package filter

import "testing"

func TestFlagsString(t *testing.T) {
	for _, tc := range []struct {
		in   Flags
		want string
	}{
		{0, ""},
		{FlagFaultInjected, "FI"},
		{FlagDelayInjected | FlagFaultInjected, "DI,FI"},
		{FlagRateLimited | FlagRateLimitServiceError, "RL,RLSE"},
		{FlagUnauthorizedExternal, "UAEX"},
		{FlagDelayInjected | FlagUnauthorizedExternal | 0x80, "DI,UAEX,Flags(0x80)"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("Flags(%#x).String() = %q, want %q", uint8(tc.in), got, tc.want)
		}
	}
}

func TestSetMetadata(t *testing.T) {
	var s State
	s.SetMetadata("envoy.filters.http.jwt_authn", "payload", map[string]any{"iss": "a"})
	s.SetMetadata("envoy.filters.http.jwt_authn", "other", true)
	ns := s.Metadata["envoy.filters.http.jwt_authn"]
	if len(ns) != 2 || ns["other"] != true || ns["payload"].(map[string]any)["iss"] != "a" {
		t.Fatalf("Metadata = %#v", s.Metadata)
	}
}

func TestPeerPrincipal(t *testing.T) {
	var nilConn *Connection
	if got := nilConn.PeerPrincipal(); got != "" {
		t.Fatalf("nil connection principal = %q", got)
	}
	if got := (&Connection{}).PeerPrincipal(); got != "" {
		t.Fatalf("plaintext principal = %q", got)
	}
}
