package config

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/filter/fault"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const faultName = "envoy.filters.http.fault"

func faultFilter(t testing.TB, f *faultv3.HTTPFault) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: faultName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, f)}}
}

func abortPct(code, num uint32, den typev3.FractionalPercent_DenominatorType) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: code},
		Percentage: &typev3.FractionalPercent{Numerator: num, Denominator: den}}}
}

// unknownAny is a typed_config of a type no filter has.
func unknownAny(t testing.TB) *anypb.Any { return xdstest.MustAny(t, &structpb.Struct{}) }

func TestBuildHTTPFilters(t *testing.T) {
	const hcmPath = `listener "virtualOutbound": filter_chains[0].filters[0].typed_config.`
	const routePath = `route_config "http_proxy": virtual_hosts[0].`
	tests := []struct {
		name      string
		filters   func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter
		route     func(t testing.TB, rc *routev3.RouteConfiguration)
		wantChain []string // names of the compiled filters
		wantErr   string
	}{
		{name: "router only", wantChain: nil},
		{name: "istio chain", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{faultFilter(t, &faultv3.HTTPFault{}), router}
		}, wantChain: []string{faultName}},
		{name: "fault without typed_config", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{{Name: faultName}, router}
		}, wantChain: []string{faultName}},
		{name: "unknown optional filter skipped", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{{Name: "x.cors", IsOptional: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: unknownAny(t)}},
				faultFilter(t, &faultv3.HTTPFault{}), router}
		}, wantChain: []string{faultName}},
		{name: "unknown filter type", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{{Name: "x.cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: unknownAny(t)}}, router}
		}, wantErr: hcmPath + `http_filters[0].typed_config.type_url = "type.googleapis.com/google.protobuf.Struct": unknown HTTP filter "x.cors" (not is_optional)`},
		{name: "router not last", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{router, faultFilter(t, &faultv3.HTTPFault{})}
		}, wantErr: hcmPath + `http_filters[0].name = "envoy.filters.http.router": the router must be the last filter`},
		{name: "last not router", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{faultFilter(t, &faultv3.HTTPFault{})}
		}, wantErr: hcmPath + `http_filters[0].name = "envoy.filters.http.fault": must be envoy.filters.http.router (the last filter must be the router)`},
		{name: "two routers", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{router, router}
		}, wantErr: hcmPath + `http_filters[0].name = "envoy.filters.http.router": the router must be the last filter`},
		{name: "no filters", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter { return nil },
			wantErr: hcmPath + `http_filters: must not be empty; the last filter must be envoy.filters.http.router`},
		{name: "fault percentage over denominator", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{faultFilter(t, abortPct(503, 101, typev3.FractionalPercent_HUNDRED)), router}
		}, wantErr: hcmPath + `http_filters[0].typed_config: abort.percentage.numerator = 101: must be at most the denominator (HUNDRED)`},
		{name: "fault max_active_faults", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{faultFilter(t, &faultv3.HTTPFault{MaxActiveFaults: wrapperspb.UInt32(1)}), router}
		}, wantErr: hcmPath + `http_filters[0].typed_config: max_active_faults: not supported`},
		{name: "override bad status", route: func(t testing.TB, rc *routev3.RouteConfiguration) {
			route2(rc).TypedPerFilterConfig = map[string]*anypb.Any{faultName: xdstest.MustAny(t, abortPct(99, 1, typev3.FractionalPercent_HUNDRED))}
		}, wantErr: routePath + `routes[2].typed_per_filter_config["envoy.filters.http.fault"]: abort.http_status = 99: must be 200-599`},
		{name: "override unknown type", route: func(t testing.TB, rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].TypedPerFilterConfig = map[string]*anypb.Any{"x.cors": unknownAny(t)}
		}, wantErr: routePath + `typed_per_filter_config["x.cors"].type_url = "type.googleapis.com/google.protobuf.Struct": unknown HTTP filter type (not optional)`},
		{name: "override unknown optional", route: func(t testing.TB, rc *routev3.RouteConfiguration) {
			route2(rc).TypedPerFilterConfig = map[string]*anypb.Any{"x.cors": xdstest.MustAny(t, &routev3.FilterConfig{Config: unknownAny(t), IsOptional: true})}
		}},
		{name: "override disabled", route: func(t testing.TB, rc *routev3.RouteConfiguration) {
			route2(rc).TypedPerFilterConfig = map[string]*anypb.Any{faultName: xdstest.MustAny(t, &routev3.FilterConfig{Disabled: true})}
		}, wantErr: routePath + `routes[2].typed_per_filter_config["envoy.filters.http.fault"].disabled: not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := testResources(t)
			if tt.filters != nil {
				h := testHCM(t)
				h.HttpFilters = tt.filters(t, h.HttpFilters[0])
				res.Listeners[0] = testListener(t, h)
			}
			if tt.route != nil {
				tt.route(t, res.Routes[0].(*routev3.RouteConfiguration))
			}
			g, err := Build(res, nil)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Build error:\n got %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			var names []string
			for _, f := range g.Listeners["virtualOutbound"].FilterChains[0].HTTPFilters {
				names = append(names, f.Name)
			}
			if diff := cmp.Diff(tt.wantChain, names); diff != "" {
				t.Errorf("chain (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBuildFilterOverrides checks that a route's override beats its
// virtual host's, which beats the route configuration's, and that the
// listener's filter finds it through its slot.
func TestBuildFilterOverrides(t *testing.T) {
	res := testResources(t)
	h := testHCM(t)
	h.HttpFilters = append([]*hcmv3.HttpFilter{faultFilter(t, &faultv3.HTTPFault{})}, h.HttpFilters...)
	res.Listeners[0] = testListener(t, h)
	rc := res.Routes[0].(*routev3.RouteConfiguration)
	over := func(code uint32) map[string]*anypb.Any {
		return map[string]*anypb.Any{faultName: xdstest.MustAny(t, abortPct(code, 1, typev3.FractionalPercent_HUNDRED))}
	}
	rc.TypedPerFilterConfig = over(501)
	rc.VirtualHosts[0].TypedPerFilterConfig = over(502)
	rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = over(503)
	rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "other", Domains: []string{"other"},
		Routes: []*routev3.Route{prefixRoute("/", reviewsV1)}})
	g, err := Build(res, nil)
	if err != nil {
		t.Fatal(err)
	}
	chain := g.Listeners["virtualOutbound"].FilterChains[0].HTTPFilters
	if len(chain) != 1 {
		t.Fatalf("chain has %d filters, want 1", len(chain))
	}
	slot := chain[0].Slot
	status := func(c filter.Config) int {
		if c == nil {
			return 0
		}
		return c.(*fault.Config).Abort.HTTPStatus
	}
	vhs := g.Routes["http_proxy"].VirtualHosts
	got := []int{status(vhs[0].Routes[0].Override(slot)), status(vhs[0].Routes[1].Override(slot)), status(vhs[1].Routes[0].Override(slot))}
	if diff := cmp.Diff([]int{503, 502, 501}, got); diff != "" {
		t.Errorf("override abort status of routes (-want +got):\n%s", diff)
	}
	var none *Route
	if c := none.Override(slot); c != nil {
		t.Errorf("nil route: Override = %v, want nil", c)
	}
}
