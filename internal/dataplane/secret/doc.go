// Package secret holds the proxy's TLS secrets by name: the workload
// certificate and trust bundle the agent obtains from loomd's CA (Istio's
// secret names "default" and "ROOTCA"), secrets delivered over SDS, and
// file-backed ones from a bootstrap.
//
// It sits between the sources of secrets (internal/dataplane/agent, the xDS
// client, the bootstrap) and their readers (listener TLS termination,
// upstream TLS origination). Readers resolve a name at each handshake, so a
// rotated certificate or a new trust bundle applies to the next connection
// without rebuilding any listener or cluster.
//
// It imports only the standard library.
package secret
