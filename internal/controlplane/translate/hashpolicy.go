package translate

import (
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// hashPolicies returns RouteAction.hash_policy for an HTTP route whose
// destinations' DestinationRule asks for loadBalancer.consistentHash
// (httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName), as
// Istio's route translation does; nil when none does.
//
// Each destination the route sends traffic to (those of weight 0 are left
// out when another has a weight, as in routeAction) adds its policy, in
// route order, as Istio's processWeightedDestination: Envoy takes the
// first that yields a hash. A portLevelSettings entry applies through
// destination.port only, as in Istio, not through the listener port.
func hashPolicies(pc *model.PushContext, vsNamespace string, hr *networking.HTTPRoute) []*routev3.RouteAction_HashPolicy {
	dests := hr.GetRoute()
	if len(dests) > 1 {
		weighted := slices.DeleteFunc(slices.Clone(dests), func(d *networking.HTTPRouteDestination) bool { return d.GetWeight() <= 0 })
		if len(weighted) > 0 {
			dests = weighted
		}
	}
	var out []*routev3.RouteAction_HashPolicy
	for _, d := range dests {
		if hp := consistentHashPolicy(destinationConsistentHash(pc, vsNamespace, d.GetDestination())); hp != nil {
			out = append(out, hp)
		}
	}
	return out
}

// destinationConsistentHash is the consistentHash applying to route
// destination d, as Istio's hashForHTTPDestination picks it from the
// DestinationRule of d's host: the subset's portLevelSettings entry for
// destination.port, else the subset's trafficPolicy, else the
// DestinationRule's portLevelSettings entry for destination.port, else its
// trafficPolicy. Nil when none is set.
func destinationConsistentHash(pc *model.PushContext, vsNamespace string, d *networking.Destination) *networking.LoadBalancerSettings_ConsistentHashLB {
	dr := pc.DestinationRule(model.ResolveShortName(d.GetHost(), vsNamespace))
	if dr == nil {
		return nil
	}
	tp := dr.Spec.GetTrafficPolicy()
	var subsetTP *networking.TrafficPolicy
	if s := dr.Subset(d.GetSubset()); s != nil && d.GetSubset() != "" {
		subsetTP = s.GetTrafficPolicy()
	}
	for _, ch := range []*networking.LoadBalancerSettings_ConsistentHashLB{
		portLevelConsistentHash(d, subsetTP),
		subsetTP.GetLoadBalancer().GetConsistentHash(),
		portLevelConsistentHash(d, tp),
	} {
		if ch != nil {
			return ch
		}
	}
	return tp.GetLoadBalancer().GetConsistentHash()
}

// portLevelConsistentHash is the consistentHash of tp's portLevelSettings
// entry for d's port; nil when d names no port or no entry matches.
func portLevelConsistentHash(d *networking.Destination, tp *networking.TrafficPolicy) *networking.LoadBalancerSettings_ConsistentHashLB {
	n := d.GetPort().GetNumber()
	if n == 0 {
		return nil
	}
	for _, pls := range tp.GetPortLevelSettings() {
		if pls.GetPort().GetNumber() == n {
			return pls.GetLoadBalancer().GetConsistentHash()
		}
	}
	return nil
}

// consistentHashPolicy translates a consistentHash key into an Envoy hash
// policy, as Istio's consistentHashToHashPolicy: httpHeaderName → header,
// httpCookie {name, path, ttl, attributes} → cookie, useSourceIp →
// connection_properties.source_ip, httpQueryParameterName →
// query_parameter. Nil ch or a key of no known kind gives nil.
func consistentHashPolicy(ch *networking.LoadBalancerSettings_ConsistentHashLB) *routev3.RouteAction_HashPolicy {
	switch k := ch.GetHashKey().(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: k.HttpHeaderName},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		cookie := &routev3.RouteAction_HashPolicy_Cookie{Name: k.HttpCookie.GetName(), Path: k.HttpCookie.GetPath()}
		if ttl := k.HttpCookie.GetTtl(); ttl != nil {
			cookie.Ttl = durationpb.New(ttl.AsDuration())
		}
		for _, a := range k.HttpCookie.GetAttributes() {
			cookie.Attributes = append(cookie.Attributes, &routev3.RouteAction_HashPolicy_CookieAttribute{Name: a.GetName(), Value: a.GetValue()})
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: cookie}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: k.UseSourceIp},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: k.HttpQueryParameterName},
		}}
	}
	return nil
}

// defaultRouteHashPolicies returns the hash_policy Istio puts on the
// default route of a service port that no VirtualService routes
// (hashForService): the DestinationRule's portLevelSettings consistentHash
// for port, else its trafficPolicy's. Nil when none applies. host is an
// FQDN.
func defaultRouteHashPolicies(pc *model.PushContext, host string, port uint32) []*routev3.RouteAction_HashPolicy {
	dr := pc.DestinationRule(host)
	if dr == nil {
		return nil
	}
	tp := dr.Spec.GetTrafficPolicy()
	ch := tp.GetLoadBalancer().GetConsistentHash()
	for _, pls := range tp.GetPortLevelSettings() {
		if pls.GetPort().GetNumber() == port {
			if c := pls.GetLoadBalancer().GetConsistentHash(); c != nil {
				ch = c
			}
			break
		}
	}
	if hp := consistentHashPolicy(ch); hp != nil {
		return []*routev3.RouteAction_HashPolicy{hp}
	}
	return nil
}
