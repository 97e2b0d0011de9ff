// Package extauthz is Envoy's external authorization filter, as Istio's
// CUSTOM AuthorizationPolicy action uses it: envoy.filters.http.ext_authz
// (gRPC envoy.service.auth.v3.Authorization/Check, or a plain HTTP check)
// and envoy.filters.network.ext_authz (gRPC) for TCP filter chains.
//
// Data flow: config.Build parses the typed_config at the edge into an
// immutable Config. Istio puts the filter after an RBAC filter whose
// shadow rules match the CUSTOM policies' rules; filter_enabled_metadata
// reads that shadow result from the dynamic metadata, so only matching
// requests are checked. A check goes to a cluster of the proxy through
// filter.Upstreams (the cluster manager): HTTP checks over the cluster's
// pool, gRPC checks over one long-lived connection per cluster that
// survives generations. A denial is the service's answer (403 by
// default); a failed check is status_on_error unless failure_mode_allow;
// both flag UAEX.
//
// It imports filter and matcher only; not config, upstream, http or
// controlplane.
package extauthz
