// Package agent is loom-proxy's certificate agent (Istio's pilot-agent
// secret manager): it gets the proxy's workload certificate from loomd's CA
// and keeps it fresh.
//
// It generates an ECDSA P-256 key in memory (never written, never logged),
// sends a CSR for spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT to
// Istio's IstioCertificateService/CreateCertificate over TLS (loomd's
// 15012, verified as istiod.istio-system.svc against the --root-cert file
// and the current trust bundle), authenticated by the workload's bootstrap
// token (internal/bootstraptoken). It checks the answer (the leaf verifies
// against the roots it came with and names the identity asked for, with
// the key it holds) and stores it in the proxy's secret.Store under Istio's
// names: "ROOTCA" (the roots of the response, replacing the previous
// bundle) and then "default" (leaf, intermediates and key). Listener and
// upstream TLS resolve those names at each handshake, so a rotation is one
// Store.Set.
//
// It rotates at half of the certificate's lifetime (Istio's
// SECRET_GRACE_PERIOD_RATIO, with its 1 % jitter), retries failures with
// exponential backoff, and logs at Warn when the certificate is in its last
// 10 % without a replacement (Error once it has expired). XDSTLS gives the
// xDS client's mTLS config from the same secrets.
//
// It sits beside the xDS client in the data plane; it must not import
// internal/controlplane.
package agent
