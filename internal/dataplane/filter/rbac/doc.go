// Package rbac is Envoy's role-based access control filter, as Istio's
// AuthorizationPolicy compiles to it: envoy.filters.http.rbac on HTTP
// connection managers and envoy.filters.network.rbac on TCP filter chains
// (envoy.config.rbac.v3 policies with ALLOW, DENY and LOG actions, and
// shadow rules for dry-run and for CUSTOM's ext_authz trigger).
//
// Data flow: config.Build parses the typed_config at the edge into an
// immutable Config with compiled Engines (NewEngine); the HTTP filter
// runs in the listener's chain and answers 403 "RBAC: access denied"
// when the enforced engine denies; the network filter decides once per
// connection and makes the listener close it. Both record the shadow
// engine's result in the dynamic metadata (filter.State.Metadata), where
// ext_authz's filter_enabled_metadata reads it.
//
// Facts come from the request (headers, the normalized path), the
// listener's filter.Connection (addresses, SNI, TLS peer certificate) and
// the dynamic metadata (the JWT payload jwt_authn leaves). remote_ip is
// the trusted client address under the connection manager's
// use_remote_address and xff_num_trusted_hops (filter.TrustedClientAddress).
//
// It imports filter and matcher only; not config, http or controlplane.
package rbac
