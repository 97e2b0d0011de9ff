package translate

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// hashDRs give reviews a hash at every level hashForHTTPDestination
// reads, ratings a cookie, details none.
const hashDRs = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-top}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        consistentHash: {httpQueryParameterName: top-port}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true}
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer:
          consistentHash: {httpHeaderName: x-v3-port}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          path: /
          ttl: 60s
          attributes: [{name: SameSite, value: Lax}, {name: Secure}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
`

func hashPushContext(t *testing.T) *model.PushContext {
	t.Helper()
	f := filepath.Join(t.TempDir(), "drs.yaml")
	if err := os.WriteFile(f, []byte(hashDRs), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadPushContext(t, meshFile, f)
}

func headerHash(name string) *routev3.RouteAction_HashPolicy {
	return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
		Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: name}}}
}

func queryHash(name string) *routev3.RouteAction_HashPolicy {
	return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
		QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: name}}}
}

func sourceIPHash() *routev3.RouteAction_HashPolicy {
	return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
		ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
}

func cookieHash() *routev3.RouteAction_HashPolicy {
	return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{
		Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "user", Path: "/", Ttl: durationpb.New(time.Minute),
			Attributes: []*routev3.RouteAction_HashPolicy_CookieAttribute{{Name: "SameSite", Value: "Lax"}, {Name: "Secure"}}}}}
}

func dest(host, subset string, port uint32, weight int32) *networking.HTTPRouteDestination {
	d := &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: host, Subset: subset}, Weight: weight}
	if port != 0 {
		d.Destination.Port = &networking.PortSelector{Number: port}
	}
	return d
}

func TestHashPolicies(t *testing.T) {
	pc := hashPushContext(t)
	tests := []struct {
		name  string
		route []*networking.HTTPRouteDestination
		want  []*routev3.RouteAction_HashPolicy
	}{
		{"DestinationRule top level", []*networking.HTTPRouteDestination{dest("reviews", "", 0, 0)}, []*routev3.RouteAction_HashPolicy{headerHash("x-top")}},
		{"port level needs destination.port", []*networking.HTTPRouteDestination{dest("reviews", "", 9080, 0)}, []*routev3.RouteAction_HashPolicy{queryHash("top-port")}},
		{"subset without policy falls back", []*networking.HTTPRouteDestination{dest("reviews", "v1", 9080, 0)}, []*routev3.RouteAction_HashPolicy{queryHash("top-port")}},
		{"subset over port level", []*networking.HTTPRouteDestination{dest("reviews", "v2", 9080, 0)}, []*routev3.RouteAction_HashPolicy{sourceIPHash()}},
		{"subset port level first", []*networking.HTTPRouteDestination{dest("reviews", "v3", 9080, 0)}, []*routev3.RouteAction_HashPolicy{headerHash("x-v3-port")}},
		{"subset port level needs destination.port", []*networking.HTTPRouteDestination{dest("reviews.default.svc.cluster.local", "v3", 0, 0)}, []*routev3.RouteAction_HashPolicy{sourceIPHash()}},
		{"cookie with path, ttl and attributes", []*networking.HTTPRouteDestination{dest("ratings", "", 0, 0)}, []*routev3.RouteAction_HashPolicy{cookieHash()}},
		{"no consistentHash", []*networking.HTTPRouteDestination{dest("details", "", 0, 0)}, nil},
		{"no DestinationRule", []*networking.HTTPRouteDestination{dest("productpage", "", 0, 0)}, nil},
		{"weighted: one per destination in order", []*networking.HTTPRouteDestination{
			dest("ratings", "", 0, 50), dest("details", "", 0, 25), dest("reviews", "v2", 0, 25),
		}, []*routev3.RouteAction_HashPolicy{cookieHash(), sourceIPHash()}},
		{"weight 0 gets no traffic and no policy", []*networking.HTTPRouteDestination{
			dest("ratings", "", 0, 0), dest("reviews", "v2", 0, 100),
		}, []*routev3.RouteAction_HashPolicy{sourceIPHash()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hashPolicies(pc, "default", &networking.HTTPRoute{Route: tt.route})
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("hash_policy (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaultRouteHashPolicies(t *testing.T) {
	pc := hashPushContext(t)
	tests := []struct {
		host string
		port uint32
		want []*routev3.RouteAction_HashPolicy
	}{
		{"reviews.default.svc.cluster.local", 9080, []*routev3.RouteAction_HashPolicy{queryHash("top-port")}},
		{"reviews.default.svc.cluster.local", 8080, []*routev3.RouteAction_HashPolicy{headerHash("x-top")}},
		{"details.default.svc.cluster.local", 9080, nil},
		{"productpage.default.svc.cluster.local", 9080, nil},
	}
	for _, tt := range tests {
		got := defaultRouteHashPolicies(pc, tt.host, tt.port)
		if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
			t.Errorf("%s:%d hash_policy (-want +got):\n%s", tt.host, tt.port, diff)
		}
	}
}

// TestDefaultRouteCarriesHashPolicy: a service with a consistentHash and no
// VirtualService gets the hash on its default outbound route, and no
// previous_hosts retry predicate (a retry must reach the same host).
func TestDefaultRouteCarriesHashPolicy(t *testing.T) {
	pc := hashPushContext(t)
	rc, err := httpProxyRoute(pc, productpageSidecar())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*routev3.RouteAction{}
	for _, vh := range rc.GetVirtualHosts() {
		byName[vh.GetName()] = vh.GetRoutes()[0].GetRoute()
	}
	reviews, details := byName["reviews.default.svc.cluster.local:9080"], byName["details.default.svc.cluster.local:9080"]
	if reviews == nil || details == nil {
		t.Fatalf("virtual hosts %v: want reviews and details on 9080", slices.Collect(maps.Keys(byName)))
	}
	if diff := cmp.Diff([]*routev3.RouteAction_HashPolicy{queryHash("top-port")}, reviews.GetHashPolicy(), protocmp.Transform()); diff != "" {
		t.Errorf("reviews default route hash_policy (-want +got):\n%s", diff)
	}
	if n := len(reviews.GetRetryPolicy().GetRetryHostPredicate()); n != 0 {
		t.Errorf("reviews default route has %d retry host predicates, want none with a consistent hash", n)
	}
	if len(details.GetHashPolicy()) != 0 || len(details.GetRetryPolicy().GetRetryHostPredicate()) != 1 {
		t.Errorf("details default route: hash_policy %v, retry host predicates %d: want none and previous_hosts", details.GetHashPolicy(), len(details.GetRetryPolicy().GetRetryHostPredicate()))
	}
}
