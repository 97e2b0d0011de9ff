// Package v1alpha1 is Loom's own configuration API, group loom.dev version
// v1alpha1: the kinds Istio's API has no counterpart for (RateLimitPolicy).
// The message types are generated from the .proto files beside (make
// proto); the config package decodes them from YAML as it decodes
// istio.io/api's, and validation checks them with field paths.
//
// It imports only the protobuf runtime.
package v1alpha1
