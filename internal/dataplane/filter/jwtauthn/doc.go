// Package jwtauthn is Envoy's JWT authentication HTTP filter
// (envoy.filters.http.jwt_authn,
// envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication), which
// Istio generates from RequestAuthentication: it extracts tokens from the
// locations of its providers (headers with a value prefix, query
// parameters, cookies; by default "Authorization: Bearer" and
// access_token), verifies them against each provider's inline JWKS
// (local_jwks) with go-jose, checks issuer, audiences, exp and nbf with
// Envoy's clock skew, and evaluates the requirement of the first rule
// whose match applies (provider_name, provider_and_audiences,
// requires_any, requires_all, allow_missing, allow_missing_or_failed)
// exactly as Envoy's verifier tree does. A request that fails gets
// Envoy's local reply: 401 (403 for audiences) with Envoy's status text as
// body and a www-authenticate header. A verified token's claims go to the
// request's dynamic metadata (payload_in_metadata), where the rbac filter
// reads them; forward_payload_header, claim_to_headers and forward act on
// the request headers as Envoy's do. With clear_route_cache, a verified
// token that set the metadata or a claim header clears the route cache
// (filter.State.ClearRouteCache), so the route is matched again on them:
// Istio's JWT claim routing at gateways.
//
// remote_jwks is refused: Loom's control plane fetches a jwksUri itself and
// inlines the key set (Istio's default, PILOT_JWT_ENABLE_REMOTE_JWKS off).
// Tokens are never logged.
//
// Data flow: parsed by config.Build through its Factory; runs in the HTTP
// connection manager's chain before the router. It must not import
// internal/dataplane/config, internal/dataplane/http or internal/controlplane.
package jwtauthn
