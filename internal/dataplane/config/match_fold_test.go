package config

import (
	"net/http/httptest"
	"testing"
)

// TestPathCaseInsensitiveIsASCII checks that a route's case_sensitive:
// false folds ASCII letters only, as Envoy's (absl::EqualsIgnoreCase):
// "/k" does not match the path "/K" written with the Kelvin sign (U+212A),
// which Unicode folding takes for a "k".
func TestPathCaseInsensitiveIsASCII(t *testing.T) {
	for _, tt := range []struct {
		name, path, req string
		want            bool
	}{
		{"ASCII letters fold", "/Kelvin", "/kELVIN", true},
		{"Kelvin sign is no K", "/\u212a", "/k", false},
		{"long s is no s", "/\u017ftatus", "/status", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &Route{Match: RouteMatch{PathKind: PathExact, Path: tt.path, CaseInsensitive: true}}
			if got := r.MatchesMetadata(httptest.NewRequest("GET", tt.req, nil), nil); got != tt.want {
				t.Errorf("path %q matches request %q = %v, want %v", tt.path, tt.req, got, tt.want)
			}
		})
	}
}
