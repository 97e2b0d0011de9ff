// Package transport turns the proxy's compiled TLS contexts
// (config.DownstreamTLS of a filter chain, config.UpstreamTLS of a
// cluster's transport socket) into crypto/tls configurations, Envoy's
// envoy.transport_sockets.tls.
//
// Certificates and trust bundles named by an SdsSecretConfig are resolved
// in a secret.Store at each handshake, so a rotated certificate applies to
// the next connection with nothing rebuilt and no connection dropped; a
// secret that has not arrived fails that handshake (no warming). Peer
// certificates are verified as Envoy does: the chain against the trusted
// roots, with no host name check and any extended key usage, then the
// subject alternative names against the context's matchers.
//
// It sits between internal/dataplane/config (what to do) and the
// listener and upstream packages (who dials and accepts). It must not
// import internal/controlplane.
package transport
