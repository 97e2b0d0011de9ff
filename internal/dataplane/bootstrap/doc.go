// Package bootstrap loads a static Envoy-bootstrap-shaped YAML file, for
// running loom-proxy with no control plane (`loom-proxy --bootstrap FILE`).
//
// Data flow: FILE -> ${VAR} expansion -> YAML to JSON -> protojson into
// envoy.config.bootstrap.v3.Bootstrap -> config.Resources, which the caller
// passes to config.Build like an xDS update.
//
// It must not import internal/controlplane.
package bootstrap
