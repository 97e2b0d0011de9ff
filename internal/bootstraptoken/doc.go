// Package bootstraptoken is the bootstrap-token format of local mode: how a
// workload proves who it is to loomd's CA before it has a certificate.
//
// A token is 256 random bits, written base64url with the prefix "loom-bt-",
// in a file of its own (mode 0600) that the workload's loom-proxy reads
// (--token-file). loomd keeps a registry of the tokens it honours: a
// directory (mode 0700) of one JSON file per token (mode 0600) that binds
// the token's SHA-256 to a namespace and a service account. The registry
// never holds a token itself, so reading it gives no usable credential;
// removing a file revokes its token.
//
//	<data-dir>/tokens/default.reviews-v1.json
//	  {"namespace":"default","serviceAccount":"bookinfo-reviews","workload":"reviews-v1","sha256":"9f86d0..."}
//
// `loomctl token create` and the local runtime (internal/local) write both
// files with Mint; loomd's CA (internal/controlplane/ca) reads the registry
// with LoadRegistry. Nothing here logs or prints a token.
//
// It imports only the standard library, so both planes and loomctl may use
// it.
package bootstraptoken
