package translate

import (
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// corsFilter is Envoy's CORS HTTP filter; every HTTP connection manager
// lists it, empty, after the fault filter (Istio's order), and a route
// with a corsPolicy configures it in typed_per_filter_config.
const corsFilter = "envoy.filters.http.cors"

// corsPolicy translates HTTPRoute.corsPolicy as Istio's
// TranslateCORSPolicy: allowOrigins to allow_origin_string_match (the
// deprecated allowOrigin, used only without allowOrigins, to exact
// matches); allowMethods, allowHeaders and exposeHeaders joined with ",";
// maxAge to whole seconds; allowCredentials as is; filter_enabled 100 %;
// forward_not_matching_preflights false only for unmatchedPreflights
// IGNORE. It returns nil for a nil policy.
func corsPolicy(in *networking.CorsPolicy) *corsv3.CorsPolicy {
	if in == nil {
		return nil
	}
	out := &corsv3.CorsPolicy{
		AllowMethods:                 strings.Join(in.GetAllowMethods(), ","),
		AllowHeaders:                 strings.Join(in.GetAllowHeaders(), ","),
		ExposeHeaders:                strings.Join(in.GetExposeHeaders(), ","),
		AllowCredentials:             in.GetAllowCredentials(),
		ForwardNotMatchingPreflights: wrapperspb.Bool(in.GetUnmatchedPreflights() != networking.CorsPolicy_IGNORE),
		FilterEnabled: &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
		},
	}
	if in.GetAllowOrigins() != nil {
		for _, o := range in.GetAllowOrigins() {
			if sm := stringMatcher(o); sm != nil {
				out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, sm)
			}
		}
	} else {
		for _, o := range in.GetAllowOrigin() { //nolint:staticcheck // deprecated, still honoured as by Istio
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch,
				&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}})
		}
	}
	if in.GetMaxAge() != nil {
		out.MaxAge = strconv.FormatInt(in.GetMaxAge().GetSeconds(), 10)
	}
	return out
}
