package config

import (
	"net/http/httptest"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

func hv(k, v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: a}
}

func TestBuildRouteActionErrors(t *testing.T) {
	const pre = `route_config "http_proxy": virtual_hosts[0].`
	tests := []struct {
		name    string
		mutate  func(rc *routev3.RouteConfiguration, r *routev3.Route)
		wantErr string
	}{
		{"redirect bad scheme", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "ftp"}}}
		}, pre + `routes[2].redirect.scheme_redirect = "ftp": must be http or https`},
		{"redirect path relative", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "x"}}}
		}, pre + `routes[2].redirect.path_redirect = "x": must start with /`},
		{"redirect port", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PortRedirect: 70000}}
		}, pre + `routes[2].redirect.port_redirect = "70000": must be 0-65535`},
		{"redirect regex group", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{
				RegexRewrite: &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/a"}, Substitution: `/\1`}}}}
		}, pre + `routes[2].redirect.regex_rewrite.substitution = "/\\1": \1: the pattern has 0 groups`},
		{"direct status", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 99}}
		}, pre + `routes[2].direct_response.status = "99": must be 200-599`},
		{"direct body file", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
				Body: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/passwd"}}}}
		}, pre + `routes[2].direct_response.body: must be inline_string or inline_bytes`},
		{"direct body too big", func(rc *routev3.RouteConfiguration, r *routev3.Route) {
			rc.MaxDirectResponseBodySizeBytes = wrapperspb.UInt32(2)
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
				Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "abc"}}}}
		}, pre + `routes[2].direct_response.body = "3 bytes": must be at most max_direct_response_body_size_bytes (2)`},
		{"regex rewrite bad", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "("}}
		}, pre + "routes[2].route.regex_rewrite.pattern.regex = \"(\": must be RE2: error parsing regexp: missing closing ): `(`"},
		{"auto host rewrite", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}, pre + `routes[2].route.host_rewrite_specifier: must be host_rewrite_literal (auto_host_rewrite, host_rewrite_header and host_rewrite_path_regex are not supported)`},
		{"header command", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-a", "1", 0), hv("x-ip", "%DOWNSTREAM_REMOTE_ADDRESS%", 0)}
		}, pre + `routes[2].request_headers_to_add[1].header.value = "%DOWNSTREAM_REMOTE_ADDRESS%": must be a literal: %COMMAND% substitutions are not supported (write %% for a percent sign)`},
		{"header pseudo", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hv(":status", "1", 0)}
		}, pre + `routes[2].response_headers_to_add[0].header.key = ":status": must not be a pseudo-header or host`},
		{"vhost remove host", func(rc *routev3.RouteConfiguration, _ *routev3.Route) {
			rc.VirtualHosts[0].RequestHeadersToRemove = []string{"Host"}
		}, pre + `request_headers_to_remove[0] = "Host": must not be a pseudo-header or host`},
		{"rc header value command", func(rc *routev3.RouteConfiguration, _ *routev3.Route) {
			rc.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hv("x-t", "%START_TIME%", 0)}
		}, `route_config "http_proxy": response_headers_to_add[0].header.value = "%START_TIME%": must be a literal: %COMMAND% substitutions are not supported (write %% for a percent sign)`},
		{"weighted cluster header", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(1),
					RequestHeadersToAdd: []*corev3.HeaderValueOption{hv("bad name", "v", 0)}}}}}
		}, pre + `routes[2].route.weighted_clusters.clusters[0].request_headers_to_add[0].header.key = "bad name": must be a valid header name`},
		{"append and append_action", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			o := hv("x-a", "v", corev3.HeaderValueOption_ADD_IF_ABSENT)
			o.Append = wrapperspb.Bool(true)
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{o}
		}, pre + `routes[2].request_headers_to_add[0]: append and append_action must not both be set`},
		{"mirror cluster_header", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "m"}, {ClusterHeader: "x-c"}}
		}, pre + `routes[2].route.request_mirror_policies[1].cluster: must not be empty (cluster_header is not supported)`},
		{"mirror fraction", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "m",
				RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 1, Denominator: 7}}}}
		}, pre + `routes[2].route.request_mirror_policies[0].runtime_fraction.default_value.denominator = "7": must be HUNDRED, TEN_THOUSAND or MILLION`},
		{"vhost mirror", func(rc *routev3.RouteConfiguration, _ *routev3.Route) {
			rc.VirtualHosts[0].RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "m"}}
		}, pre + `request_mirror_policies: not supported on a virtual host; set it on the route`},
		{"retry host predicate", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{
				{Name: PreviousHostsPredicateName}, {Name: "envoy.retry_host_predicates.omit_canary_hosts"}}}
		}, pre + `routes[2].route.retry_policy.retry_host_predicate[1].name = "envoy.retry_host_predicates.omit_canary_hosts": must be envoy.retry_host_predicates.previous_hosts`},
		{"retry priority", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryPriority: &routev3.RetryPolicy_RetryPriority{Name: "x"}}
		}, pre + `routes[2].route.retry_policy.retry_priority.name = "x": must be envoy.retry_priorities.previous_priorities`},
		{"retriable header", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetriableHeaders: []*routev3.HeaderMatcher{{Name: ""}}}
		}, pre + `routes[2].route.retry_policy.retriable_headers[0].name: must not be empty`},
		{"empty decorator", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.Decorator = &routev3.Decorator{}
		}, pre + `routes[2].decorator.operation: must not be empty`},
		{"retry backoff", func(_ *routev3.RouteConfiguration, r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
				BaseInterval: durationpb.New(100e6), MaxInterval: durationpb.New(10e6)}}
		}, pre + `routes[2].route.retry_policy.retry_back_off.max_interval = "10ms": must be at least base_interval`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testResources(t)
			rc := res.Routes[0].(*routev3.RouteConfiguration)
			tc.mutate(rc, route2(rc))
			g, err := Build(res, nil)
			if err == nil {
				t.Fatalf("Build = generation %d, want error %q", g.Number, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantErr, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRouteActionFields(t *testing.T) {
	rc := testRouteConfig()
	rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-level", "rc", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	rc.VirtualHosts[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-level", "vh", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
	r := route2(rc)
	r.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-level", "route", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		hv("x-pct", "100%%", 0), {Header: &corev3.HeaderValue{Key: "x-empty"}, KeepEmptyValue: true}, hv("x-dropped", "", 0)}
	r.RequestHeadersToRemove = []string{"x-secret"}
	a := r.GetRoute()
	a.PrefixRewrite = "/v2/"
	a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "new.example"}
	a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "m",
		RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 25}}}, {Cluster: "all"}}
	a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "unavailable,5xx", HostSelectionRetryMaxAttempts: 5,
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: PreviousHostsPredicateName,
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: xdstest.MustAny(t, &previoushostsv3.PreviousHostsPredicate{})}}},
		RetryPriority: &routev3.RetryPolicy_RetryPriority{Name: PreviousPrioritiesName,
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: xdstest.MustAny(t, &previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})}}}
	rt, err := buildRouteTable(testFilterBuilder(t), "http_proxy", rc)
	if err != nil {
		t.Fatal(err)
	}
	got := rt.VirtualHosts[0].Routes[2]
	if got.Operation != "" || got.PropagateOperation {
		t.Errorf("no decorator: operation %q, propagate %v", got.Operation, got.PropagateOperation)
	}
	if diff := cmp.Diff(&Rewrite{Prefix: "/v2/", Host: "new.example"}, got.Rewrite); diff != "" {
		t.Errorf("rewrite (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]MirrorPolicy{{Cluster: "m", Percent: Fraction{25, 100}}, {Cluster: "all", Percent: Fraction{100, 100}}}, got.Mirrors); diff != "" {
		t.Errorf("mirrors (-want +got):\n%s", diff)
	}
	if !got.Retry.AvoidPreviousHosts || got.Retry.HostSelectionMaxAttempts != 5 || got.Retry.PreviousPrioritiesEvery != 2 {
		t.Errorf("retry = %+v, want previous_hosts, 5 host selection attempts and previous_priorities every 2", got.Retry)
	}
	// Envoy's default order: route, virtual host, route configuration:
	// the least specific level wins.
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Secret", "s")
	got.RequestHeaders.Apply(req.Header, nil)
	want := map[string][]string{"X-Level": {"rc"}, "X-Pct": {"100%"}, "X-Empty": {""}}
	if diff := cmp.Diff(want, map[string][]string(req.Header)); diff != "" {
		t.Errorf("request headers (-want +got):\n%s", diff)
	}
	// most_specific_header_mutations_wins reverses it.
	rc.MostSpecificHeaderMutationsWins = true
	rt, err = buildRouteTable(testFilterBuilder(t), "http_proxy", rc)
	if err != nil {
		t.Fatal(err)
	}
	req = httptest.NewRequest("GET", "/", nil)
	rt.VirtualHosts[0].Routes[2].RequestHeaders.Apply(req.Header, &HeaderMutation{Add: []filter.HeaderOption{{Key: "X-Level", Value: "wc", Action: filter.AddIfAbsent}}})
	if got := req.Header["X-Level"]; !cmp.Equal(got, []string{"route"}) {
		t.Errorf("most specific wins: X-Level = %q, want [route]", got)
	}
}

func TestHeaderMutationApply(t *testing.T) {
	in := func() map[string][]string { return map[string][]string{"A": {"1"}, "R": {"x"}} }
	tests := []struct {
		name string
		m    HeaderMutation
		want map[string][]string
	}{
		{"append", HeaderMutation{Add: []filter.HeaderOption{{Key: "A", Value: "2"}, {Key: "B", Value: "3"}}},
			map[string][]string{"A": {"1", "2"}, "B": {"3"}, "R": {"x"}}},
		{"add if absent", HeaderMutation{Add: []filter.HeaderOption{{Key: "A", Value: "2", Action: filter.AddIfAbsent}, {Key: "B", Value: "3", Action: filter.AddIfAbsent}}},
			map[string][]string{"A": {"1"}, "B": {"3"}, "R": {"x"}}},
		{"overwrite or add", HeaderMutation{Add: []filter.HeaderOption{{Key: "A", Value: "2", Action: filter.OverwriteIfExistsOrAdd}, {Key: "B", Value: "3", Action: filter.OverwriteIfExistsOrAdd}}},
			map[string][]string{"A": {"2"}, "B": {"3"}, "R": {"x"}}},
		{"overwrite if exists", HeaderMutation{Add: []filter.HeaderOption{{Key: "A", Value: "2", Action: filter.OverwriteIfExists}, {Key: "B", Value: "3", Action: filter.OverwriteIfExists}}},
			map[string][]string{"A": {"2"}, "R": {"x"}}},
		{"remove before add", HeaderMutation{Remove: []string{"R", "A"}, Add: []filter.HeaderOption{{Key: "A", Value: "2"}}},
			map[string][]string{"A": {"2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := in()
			tc.m.Apply(h)
			if diff := cmp.Diff(tc.want, h); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestShadowHost(t *testing.T) {
	for in, want := range map[string]string{
		"reviews":        "reviews-shadow",
		"reviews:9080":   "reviews-shadow:9080",
		"10.0.0.1:80":    "10.0.0.1:80-shadow",
		"[::1]:80":       "[::1]:80-shadow",
		"a.example.com:": "a.example.com:-shadow",
	} {
		if got := ShadowHost(in); got != want {
			t.Errorf("ShadowHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRouteDecorator: Route.decorator's operation names the span and
// propagates unless propagate is false (Envoy's default true).
func TestRouteDecorator(t *testing.T) {
	for _, tc := range []struct {
		propagate *wrapperspb.BoolValue
		want      bool
	}{{nil, true}, {wrapperspb.Bool(true), true}, {wrapperspb.Bool(false), false}} {
		rc := testRouteConfig()
		route2(rc).Decorator = &routev3.Decorator{Operation: "reviews.default.svc.cluster.local:9080/*", Propagate: tc.propagate}
		rt, err := buildRouteTable(testFilterBuilder(t), "http_proxy", rc)
		if err != nil {
			t.Fatal(err)
		}
		got := rt.VirtualHosts[0].Routes[2]
		if got.Operation != "reviews.default.svc.cluster.local:9080/*" || got.PropagateOperation != tc.want {
			t.Errorf("propagate %v: operation %q, propagate %v; want %v", tc.propagate, got.Operation, got.PropagateOperation, tc.want)
		}
	}
}
