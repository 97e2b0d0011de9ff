// Package cors is Envoy's CORS HTTP filter (envoy.filters.http.cors): it
// answers preflight requests and adds the Access-Control-* headers to the
// responses of allowed origins, per the matched route's CorsPolicy
// (typed_per_filter_config). The HCM-level config (Cors) is empty.
//
// It sits in a listener's compiled chain (config.Listener.HTTPFilters) and
// imports only the filter package and Envoy's protos.
package cors
