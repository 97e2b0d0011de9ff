// Package analysis holds cross-resource analyzers that report Istio's
// analyzer messages (IST0118 ...) about a config set: advice that is not a
// validation error, what `istioctl analyze` prints. `loomctl analyze` runs
// them over files.
//
// Analyzers are pure functions of a *config.Snapshot, listed explicitly in
// Analyzers. It imports config and registry; never xDS protos, client-go
// or internal/dataplane.
package analysis
