package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

func TestStringMatchConflict(t *testing.T) {
	exact := func(s string) *networking.StringMatch {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: s}}
	}
	prefix := func(s string) *networking.StringMatch {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: s}}
	}
	regex := &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: ".*"}}
	tests := []struct {
		name       string
		root, leaf *networking.StringMatch
		want       bool
	}{
		{"root unset", nil, exact("/a"), false},
		{"leaf unset", prefix("/a"), nil, false},
		{"prefix under prefix", prefix("/a"), prefix("/a/b"), false},
		{"prefix outside prefix", prefix("/a/b"), prefix("/a"), true},
		{"exact under prefix", prefix("/a"), exact("/a/x"), false},
		{"exact outside prefix", prefix("/a"), exact("/b"), true},
		{"same exact", exact("/a"), exact("/a"), false},
		{"other exact", exact("/a"), exact("/b"), true},
		{"prefix under exact", exact("/a"), prefix("/a"), true},
		{"regex root", regex, prefix("/a"), true},
		{"regex leaf", prefix("/a"), regex, true},
	}
	for _, tt := range tests {
		if got := stringMatchConflict(tt.root, tt.leaf); got != tt.want {
			t.Errorf("%s: stringMatchConflict = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestMergeHTTPRoute merges one root route with one delegate route, both
// written as YAML (Istio's field names).
func TestMergeHTTPRoute(t *testing.T) {
	tests := []struct {
		name, root, sub, want string // want "" means dropped
	}{
		{"matches narrowed, names joined, root fields inherited",
			`{name: r, match: [{name: m, uri: {prefix: /a}, headers: {x: {exact: "1"}}}], timeout: 5s, retries: {attempts: 1}, headers: {request: {set: {a: b}}}}`,
			`{name: s, match: [{uri: {prefix: /a/b}, headers: {y: {exact: "2"}}}], retries: {attempts: 3}, route: [{destination: {host: d}}]}`,
			`{name: r-s, match: [{name: m, uri: {prefix: /a/b}, headers: {x: {exact: "1"}, y: {exact: "2"}}}], timeout: 5s, retries: {attempts: 3}, headers: {request: {set: {a: b}}}, route: [{destination: {host: d}}]}`},
		{"delegate without match takes the root's",
			`{match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]}`,
			`{route: [{destination: {host: d}}]}`,
			`{match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}], route: [{destination: {host: d}}]}`},
		{"delegate match under one of two root matches",
			`{match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]}`,
			`{match: [{uri: {exact: /b/1}}], route: [{destination: {host: d}}]}`,
			`{match: [{uri: {exact: /b/1}}], route: [{destination: {host: d}}]}`},
		{"header conflict drops the route",
			`{match: [{headers: {end-user: {exact: jason}}}]}`,
			`{match: [{headers: {end-user: {exact: bob}}}], route: [{destination: {host: d}}]}`, ""},
		{"port conflict drops the route",
			`{match: [{port: 80}]}`,
			`{match: [{port: 81}], route: [{destination: {host: d}}]}`, ""},
		{"one delegate match of two conflicting drops the route",
			`{match: [{uri: {prefix: /a}}]}`,
			`{match: [{uri: {prefix: /a/1}}, {uri: {prefix: /b}}], route: [{destination: {host: d}}]}`, ""},
	}
	parse := func(t *testing.T, s string) *networking.HTTPRoute {
		t.Helper()
		hr := &networking.HTTPRoute{}
		if err := yaml.Unmarshal([]byte(s), hr); err != nil {
			t.Fatalf("parse %s: %v", s, err)
		}
		return hr
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mergeHTTPRoute(parse(t, tt.root), parse(t, tt.sub))
			var want *networking.HTTPRoute
			if tt.want != "" {
				want = parse(t, tt.want)
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("merged route (-want +got):\n%s", diff)
			}
		})
	}
}
