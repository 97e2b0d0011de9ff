// Package xdsapi is the one leaf both planes share: xDS type URLs, the names
// of listeners, route configurations and clusters, and the node ID and
// metadata conventions. It imports only the envoy protos and the standard
// library; internal/controlplane and internal/dataplane may both import it,
// but it imports neither.
//
// The names follow Istio so that a user who knows `istioctl proxy-config`
// finds the same strings in `loomctl` and in /config_dump.
package xdsapi
