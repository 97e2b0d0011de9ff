// Package matcher compiles Envoy's generic matchers
// (envoy.type.matcher.v3 StringMatcher, ValueMatcher, MetadataMatcher, and
// envoy.config.route.v3 HeaderMatcher as filters use it) into immutable
// values that match without allocating.
//
// It sits under the HTTP and network filters that evaluate policies
// (rbac, ext_authz): they compile their protos with it at the edge
// (config.Build) and call Match on the request path. Compile errors name
// the offending field as "safe_regex.regex = \"(\": must be RE2: ...", so a
// caller prefixes its own path and NACKs.
//
// It imports only envoy protos and the standard library; it must not
// import internal/dataplane/config, http or any controlplane package.
package matcher
