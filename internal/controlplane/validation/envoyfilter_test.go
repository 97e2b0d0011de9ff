package validation

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
)

// efDoc is an EnvoyFilter "f" in namespace default whose spec is body.
func efDoc(body string) string {
	return "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f, namespace: default}\nspec:\n" + body
}

// localRateLimitTask is the EnvoyFilter of Istio's local rate limit task
// (TypedStruct form, INSERT_BEFORE without subFilter: first).
const localRateLimitTask = `  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
  - applyTo: HTTP_ROUTE
    match:
      context: SIDECAR_INBOUND
      routeConfiguration:
        vhost:
          name: "inbound|http|9080"
          route: {action: ANY}
    patch:
      operation: MERGE
      value:
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
`

func TestEnvoyFilter(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"istio local rate limit task", efDoc(localRateLimitTask), nil},
		{"insert after subFilter, cluster add", efDoc(`  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: ANY
      listener:
        portNumber: 8080
        filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.fault}}}
    patch:
      operation: INSERT_AFTER
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: p
  - applyTo: CLUSTER
    patch:
      operation: ADD
      value: {name: extra, type: STRICT_DNS, connect_timeout: 1s}
`), nil},
		{"unsupported applyTo, operation and filters", efDoc(`  configPatches:
  - applyTo: NETWORK_FILTER
    patch: {operation: MERGE, value: {}}
  - applyTo: HTTP_FILTER
    patch: {operation: REMOVE}
  - applyTo: HTTP_FILTER
    match: {listener: {name: virtualInbound, filterChain: {filter: {name: envoy.filters.network.tcp_proxy}}}}
    patch:
      operation: INSERT_AFTER
      value: {name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit, domain: d}}
  - applyTo: VIRTUAL_HOST
    match: {routeConfiguration: {vhost: {route: {action: ROUTE}}}}
    patch: {operation: MERGE, value: {domains: ["x"], typed_per_filter_config: {x: {"@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute}}}}
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_FIRST, value: {name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, bogus: 1}}}
`), []string{
			`spec.configPatches[0].applyTo: Unsupported value: "NETWORK_FILTER": not supported by this version of Loom (supported: HTTP_FILTER, HTTP_ROUTE, VIRTUAL_HOST, CLUSTER)`,
			`spec.configPatches[1].patch.operation: Unsupported value: "REMOVE": not supported by this version of Loom for applyTo HTTP_FILTER`,
			`spec.configPatches[2].match.listener.name: not supported by this version of Loom`,
			`spec.configPatches[2].match.listener.filterChain.filter.name: Unsupported value: "envoy.filters.network.tcp_proxy": not supported by this version of Loom (HTTP_FILTER patches apply in envoy.filters.network.http_connection_manager)`,
			`spec.configPatches[2].match.listener.filterChain.filter.subFilter.name: Required value: Envoy filter: INSERT_AFTER without a subFilter would add the filter after envoy.filters.http.router (not supported by this version of Loom)`,
			`spec.configPatches[2].patch.value.typed_config.rate_limit_service.grpc_service.envoy_grpc.cluster_name: Required value: the rate limit service's cluster`,
			`spec.configPatches[3].match.routeConfiguration.vhost.route.action: Unsupported value: "ROUTE": not supported by this version of Loom (only ANY)`,
			`spec.configPatches[3].patch.value.domains: not supported by this version of Loom in a MERGE (only typed_per_filter_config and rate_limits)`,
			`spec.configPatches[4].patch.value: Invalid value: decode as envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter: unknown field "bogus"`,
		}},
		// Istio's pilot-testdata/networking/envoyfilter-without-service.
		{"a filter type loomd does not know", efDoc(`  configPatches:
  - applyTo: HTTP_FILTER
    match: {listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          inlineCode: "function envoy_on_request(h) end"
`), []string{
			`spec.configPatches[0].patch.value.typed_config: Unsupported value: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua": the HTTP filter "envoy.lua" is not supported by this version of Loom`,
		}},
	}
	tests = append(tests, struct {
		name string
		doc  string
		want []string
	}{"rate limit actions and filter fields the proxy lacks", efDoc(`  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      operation: INSERT_FIRST
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          rate_limit_service: {grpc_service: {google_grpc: {target_uri: "rls:8081", stat_prefix: rls}}}
          rate_limits: [{actions: [{generic_key: {descriptor_value: x}}]}]
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_FIRST, value: {name: y, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute}}}
  - applyTo: VIRTUAL_HOST
    patch:
      operation: MERGE
      value:
        typed_per_filter_config:
          envoy.filters.http.ratelimit: {"@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute, vh_rate_limits: INCLUDE}
        rate_limits:
        - stage: 11
          actions: [{metadata: {descriptor_key: k, metadata_key: {key: a, path: [{key: b}]}}}, {request_headers: {header_name: x-user, descriptor_key: user}}]
        - {actions: []}
`), []string{
		`spec.configPatches[0].patch.value.typed_config.domain: Required value: the rate limit domain`,
		`spec.configPatches[0].patch.value.typed_config.rate_limit_service.grpc_service.google_grpc: not supported by this version of Loom (use envoy_grpc)`,
		`spec.configPatches[0].patch.value.typed_config.rate_limits: not supported by this version of Loom (set rate_limits on the route or virtual host)`,
		`spec.configPatches[1].patch.value.typed_config: Unsupported value: "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute": the HTTP filter "y" is not supported by this version of Loom`,
		`spec.configPatches[2].patch.value.rate_limits[0].stage: Invalid value: 11: must be 0-10`,
		`spec.configPatches[2].patch.value.rate_limits[0].actions[0]: not supported by this version of Loom (supported actions: source_cluster, destination_cluster, request_headers, remote_address, generic_key, header_value_match, masked_remote_address, query_parameters, query_parameter_value_match)`,
		`spec.configPatches[2].patch.value.rate_limits[1].actions: Required value: at least one action`,
	}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, tt.doc)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEnvoyFilterGlobalRateLimitSample: Istio's global rate limit sample
// (the ratelimit filter on the gateway, its cluster, and the virtual
// host's :path action) is accepted unchanged.
func TestEnvoyFilterGlobalRateLimitSample(t *testing.T) {
	rs, errs := config.Decode("productpage_envoy_ratelimit.yaml", readSample(t, "bookinfo/policy/productpage_envoy_ratelimit.yaml"))
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	var got []string
	for _, e := range ValidateAll(rs) {
		got = append(got, e.Key.String()+" "+e.Field+": "+e.Msg)
	}
	var want []string
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}
