// Package translate turns a push context and one proxy into xDS resources:
// Listener, RouteConfiguration, Cluster and ClusterLoadAssignment, one file
// per type (listeners.go, routes.go, clusters.go, endpoints.go). It sits
// between package model and the xDS server in the data flow.
//
// It is pure: the same (PushContext, Proxy) always gives the same resources,
// each list sorted by name. It reads nothing but package model (and the
// registry types model hands out) and the shared names of internal/xdsapi;
// it must not import the xDS server, client-go or internal/dataplane.
//
// This version serves explicit (INTERCEPTION_MODE NONE) sidecars and HTTP
// gateways; the subset of Envoy fields it emits is the one the Loom proxy
// supports (see the xDS contract in DESIGN.md).
package translate
