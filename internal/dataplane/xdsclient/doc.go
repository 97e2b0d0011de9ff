// Package xdsclient is the proxy's ADS client: one aggregated
// (state-of-the-world) gRPC stream to the control plane subscribing to CDS,
// EDS, LDS and RDS with wildcard, decoding and validating each response at
// the edge into a complete config.Generation, and ACKing or NACKing it.
//
// Data flow: loomd (or any xDS server) -> Client.Run -> config.Build ->
// Options.Apply (the caller publishes the Generation with an atomic swap).
// A response that does not build is NACKed with the Build error and the
// previous generation keeps serving; nothing is half-applied.
//
// It must not import internal/controlplane.
package xdsclient
