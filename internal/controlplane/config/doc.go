// Package config holds Istio configuration resources as Loom reads them:
// apiVersion, kind and metadata around a spec of the istio.io/api types,
// the decoder from Kubernetes-style multi-document YAML, the immutable
// Snapshot every later stage reads, and the sources that feed it (a watched
// directory, and resources applied through loomd's API).
//
// It sits at the start of the control plane's data flow: sources -> Store ->
// Snapshot -> model. It must not import internal/dataplane, xDS or client-go.
package config
