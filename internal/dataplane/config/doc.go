// Package config is the proxy's runtime configuration: an immutable
// Generation built from a complete set of xDS resources (or a bootstrap
// file), validated at the edge so that no proto reaches the request path.
//
// Data flow: xdsclient (decoded protos) -> Build -> *Generation -> published
// with an atomic pointer swap; listeners and the HTTP router Load() it once
// per request. A Generation is never modified after Build returns.
//
// It must not import internal/controlplane.
package config
