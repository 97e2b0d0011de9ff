package validation

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

func rlpDoc(spec string) string {
	return "apiVersion: loom.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: p, namespace: default}\nspec:\n" + spec
}

func TestRateLimitPolicy(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"valid", rlpDoc(`  selector: {matchLabels: {app: productpage}}
  limits:
  - {requestsPerUnit: 10, unit: second}
  - match: {route: products, path: {prefix: /api}, header: x-user}
    requestsPerUnit: 0
    unit: Hour
    scope: global
    shadowMode: true
`), nil},
		{"field paths", rlpDoc(`  selector: {matchLabels: {"app*": x}}
  limits:
  - {requestsPerUnit: 0, unit: week, scope: cluster}
  - match: {path: {prefix: api}, header: "x user"}
    requestsPerUnit: 0
    unit: second
  - match: {path: {}}
    requestsPerUnit: 1
    unit: day
`), []string{
			`spec.selector.matchLabels[app*]: Invalid value: wildcard is not supported in selector`,
			`spec.limits[0].unit: Unsupported value: "week": supported values: "second", "minute", "hour", "day"`,
			`spec.limits[0].scope: Unsupported value: "cluster": supported values: "local", "global"`,
			`spec.limits[1].requestsPerUnit: Invalid value: 0: a local limit is a token bucket, which must hold at least 1 request`,
			`spec.limits[1].match.path.prefix: Invalid value: "api": must start with /`,
			`spec.limits[1].match.header: Invalid value: "x user": must be a header name`,
			`spec.limits[2].match.path: Required value: prefix or exact`,
		}},
		{"no limits", rlpDoc("  selector: {matchLabels: {app: a}}\n"), []string{
			`spec.limits: Required value: a rate limit policy needs at least one limit`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, fieldErrors(t, tt.doc)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRateLimitServiceRequired: without a rate limit service every global
// limit is an error with its path; local ones are fine.
func TestRateLimitServiceRequired(t *testing.T) {
	rs, errs := config.Decode("p.yaml", []byte(rlpDoc(`  limits:
  - {requestsPerUnit: 1, unit: second}
  - {requestsPerUnit: 1, unit: second, scope: GLOBAL}
`)))
	if errs.Err() != nil {
		t.Fatal(errs)
	}
	var got []string
	for _, e := range RateLimitServiceRequired(rs) {
		got = append(got, e.Error())
	}
	want := []string{`p.yaml:1: RateLimitPolicy default/p: spec.limits[1].scope: Invalid value: "global": loomd serves no rate limit service (start it with --ratelimit-addr and --ratelimit-redis)`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

// TestRateLimitPolicyDecode: the kind is served as loom.dev/v1alpha1 only,
// and unknown fields are errors with their path.
func TestRateLimitPolicyDecode(t *testing.T) {
	for doc, want := range map[string]string{
		"apiVersion: networking.istio.io/v1\nkind: RateLimitPolicy\nmetadata: {name: p}\nspec: {}\n": `in.yaml:1: RateLimitPolicy default/p: apiVersion: "networking.istio.io/v1": RateLimitPolicy is served as loom.dev/{v1alpha1}`,
		rlpDoc("  limits: [{requestsPerUnit: 1, unit: second, burst: 2}]\n"):                         `in.yaml:1: RateLimitPolicy default/p: spec.limits[0].burst: unknown field`,
	} {
		_, errs := config.Decode("in.yaml", []byte(doc))
		if len(errs) != 1 || errs[0].Error() != want {
			t.Errorf("decode errors %v, want %q", errs, want)
		}
	}
}
