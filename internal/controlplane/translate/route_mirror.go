package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// mirrorPolicies translates HTTPRoute.mirror (with mirrorPercentage, else
// the deprecated mirrorPercent) and mirrors (each with its percentage) to
// RouteAction.request_mirror_policies, in that order, as Istio does: the
// cluster is named as a route destination's, runtime_fraction's default is
// the percentage (100 % when unset) and trace_sampled is false. A mirror
// whose percentage is explicitly 0 is left out.
func mirrorPolicies(pc *model.PushContext, vsNamespace string, hr *networking.HTTPRoute, port uint32) []*routev3.RouteAction_RequestMirrorPolicy {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	add := func(d *networking.Destination, pct *corev3.RuntimeFractionalPercent) {
		if d == nil || pct == nil {
			return
		}
		out = append(out, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster:         destinationCluster(pc, vsNamespace, d, port),
			RuntimeFraction: pct,
			TraceSampled:    wrapperspb.Bool(false),
		})
	}
	if m := hr.GetMirror(); m != nil {
		pct := mirrorPercent(hr.GetMirrorPercentage())
		//nolint:staticcheck // mirrorPercent is deprecated; Istio still honours it.
		if mp := hr.GetMirrorPercent(); hr.GetMirrorPercentage() == nil && mp != nil {
			pct = nil
			if mp.GetValue() > 0 {
				pct = &corev3.RuntimeFractionalPercent{DefaultValue: integerPercent(int32(min(mp.GetValue(), 100)))}
			}
		}
		add(m, pct)
	}
	for _, m := range hr.GetMirrors() {
		add(m.GetDestination(), mirrorPercent(m.GetPercentage()))
	}
	return out
}

// mirrorPercent is Istio's mirror fraction for a percentage: 100 % when
// unset, nil (no mirroring) when 0 or less.
func mirrorPercent(p *networking.Percent) *corev3.RuntimeFractionalPercent {
	switch {
	case p == nil:
		return &corev3.RuntimeFractionalPercent{DefaultValue: integerPercent(100)}
	case p.GetValue() <= 0:
		return nil
	}
	return &corev3.RuntimeFractionalPercent{DefaultValue: fractionalPercent(p)}
}
