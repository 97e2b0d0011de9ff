package translate

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

func TestMirrorPolicies(t *testing.T) {
	pc := loadPushContext(t, meshFile)
	const ratingsCluster = "outbound|9080||ratings.default.svc.cluster.local"
	const detailsV2 = "outbound|9080|v2|details.default.svc.cluster.local"
	ratings := &networking.Destination{Host: "ratings"}
	policy := func(cluster string, num uint32, den typev3.FractionalPercent_DenominatorType) *routev3.RouteAction_RequestMirrorPolicy {
		return &routev3.RouteAction_RequestMirrorPolicy{
			Cluster:         cluster,
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: num, Denominator: den}},
			TraceSampled:    wrapperspb.Bool(false),
		}
	}
	tests := []struct {
		name string
		in   *networking.HTTPRoute
		want []*routev3.RouteAction_RequestMirrorPolicy
	}{
		{"none", &networking.HTTPRoute{}, nil},
		{"mirror defaults to 100 %", &networking.HTTPRoute{Mirror: ratings},
			[]*routev3.RouteAction_RequestMirrorPolicy{policy(ratingsCluster, 100, typev3.FractionalPercent_HUNDRED)}},
		{"mirrorPercentage in parts per million", &networking.HTTPRoute{Mirror: ratings, MirrorPercentage: &networking.Percent{Value: 0.5}},
			[]*routev3.RouteAction_RequestMirrorPolicy{policy(ratingsCluster, 5000, typev3.FractionalPercent_MILLION)}},
		{"mirrorPercentage 0 mirrors nothing", &networking.HTTPRoute{Mirror: ratings, MirrorPercentage: &networking.Percent{Value: 0}}, nil},
		{"deprecated mirrorPercent", &networking.HTTPRoute{Mirror: ratings, MirrorPercent: wrapperspb.UInt32(30)},
			[]*routev3.RouteAction_RequestMirrorPolicy{policy(ratingsCluster, 30, typev3.FractionalPercent_HUNDRED)}},
		{"deprecated mirrorPercent 0 mirrors nothing", &networking.HTTPRoute{Mirror: ratings, MirrorPercent: wrapperspb.UInt32(0)}, nil},
		{"mirrors after mirror, a 0 % one left out", &networking.HTTPRoute{Mirror: ratings, Mirrors: []*networking.HTTPMirrorPolicy{
			{Destination: &networking.Destination{Host: "details", Subset: "v2"}, Percentage: &networking.Percent{Value: 20}},
			{Destination: ratings, Percentage: &networking.Percent{Value: 0}},
			{Destination: ratings},
		}}, []*routev3.RouteAction_RequestMirrorPolicy{
			policy(ratingsCluster, 100, typev3.FractionalPercent_HUNDRED),
			policy(detailsV2, 200000, typev3.FractionalPercent_MILLION),
			policy(ratingsCluster, 100, typev3.FractionalPercent_HUNDRED),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, mirrorPolicies(pc, "default", tt.in, 9080), protocmp.Transform()); diff != "" {
				t.Errorf("mirrorPolicies (-want +got):\n%s", diff)
			}
		})
	}
}
