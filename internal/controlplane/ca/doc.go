// Package ca is loomd's certificate authority (Istio's Citadel, inside
// istiod): it holds a signing key and certificate, signs X.509 SVIDs for
// workloads, and serves Istio's CSR API.
//
// The signing material is either a self-signed root that the CA creates on
// first start and keeps in a data directory (ECDSA P-256, 10 years; never
// regenerated while its files exist), or a plug-in CA read from a directory
// laid out as Istio's cacerts secret (ca-cert.pem, ca-key.pem,
// root-cert.pem, cert-chain.pem). See New and docs/security.md.
//
// Sign issues a workload certificate for a SPIFFE ID
// spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT, the URI SAN being
// its only name. Server implements istio.v1.auth.IstioCertificateService
// (CreateCertificate) over gRPC: it authenticates the caller with an
// Authenticator (local mode: TokenAuthenticator, bootstrap tokens from
// internal/bootstraptoken), refuses a CSR for any other identity, and
// answers with the chain as Istio does: leaf, intermediates, roots last, one
// certificate per element. ServerTLS gives the TLS config of loomd's 15012
// port, with a serving certificate issued by this CA and renewed at half its
// life. CheckNodeIdentity is the check of an xDS client certificate against
// the node's namespace and service account.
//
// Private keys and tokens are never logged nor put into errors.
//
// It sits beside the xDS server in the control plane; it must not import
// internal/dataplane.
package ca
