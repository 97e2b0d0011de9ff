package translate

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

func TestCorsPolicy(t *testing.T) {
	enabled := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	tests := []struct {
		name string
		in   *networking.CorsPolicy
		want *corsv3.CorsPolicy
	}{
		{"nil", nil, nil},
		{"every field", &networking.CorsPolicy{
			AllowOrigins: []*networking.StringMatch{
				{MatchType: &networking.StringMatch_Exact{Exact: "https://a.example"}},
				{MatchType: &networking.StringMatch_Regex{Regex: `https://.*\.b\.example`}},
			},
			AllowMethods:        []string{"GET", "POST"},
			AllowHeaders:        []string{"x-a", "x-b"},
			ExposeHeaders:       []string{"x-c"},
			MaxAge:              durationpb.New(36 * time.Hour),
			AllowCredentials:    wrapperspb.Bool(true),
			UnmatchedPreflights: networking.CorsPolicy_IGNORE,
		}, &corsv3.CorsPolicy{
			AllowOriginStringMatch: []*matcherv3.StringMatcher{
				exact("https://a.example"),
				{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `https://.*\.b\.example`}}},
			},
			AllowMethods:                 "GET,POST",
			AllowHeaders:                 "x-a,x-b",
			ExposeHeaders:                "x-c",
			MaxAge:                       "129600",
			AllowCredentials:             wrapperspb.Bool(true),
			FilterEnabled:                enabled,
			ForwardNotMatchingPreflights: wrapperspb.Bool(false),
		}},
		{"deprecated allowOrigin, preflights forwarded by default", &networking.CorsPolicy{AllowOrigin: []string{"https://c.example"}},
			&corsv3.CorsPolicy{
				AllowOriginStringMatch:       []*matcherv3.StringMatcher{exact("https://c.example")},
				FilterEnabled:                enabled,
				ForwardNotMatchingPreflights: wrapperspb.Bool(true),
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, corsPolicy(tt.in), protocmp.Transform()); diff != "" {
				t.Errorf("corsPolicy (-want +got):\n%s", diff)
			}
		})
	}
}
