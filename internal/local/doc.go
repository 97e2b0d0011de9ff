// Package local is the local runtime behind `loomctl demo`: it runs a whole
// mesh on one machine without Kubernetes. Every workload gets its own
// loopback IP in a /24 of 127.0.0.0/8 (the control plane at .1, the ingress
// gateway at .10, the Bookinfo workloads at .11 to .16); it writes loomd's
// config directory (ServiceEntries, WorkloadEntries and Istio's
// bookinfo-gateway.yaml), starts loomd, the Bookinfo apps with their
// sidecars (explicit HTTP-proxy mode) and the ingress gateway as child
// processes, mints a bootstrap token per proxy (so that each gets its
// certificate from loomd's CA), forwards a port of 127.0.0.1 to the
// gateway, waits until every proxy is in sync and the product page answers,
// and stops everything on cancel.
//
// It runs the loomd, loom-proxy and bookinfo binaries and talks to loomd
// over HTTP; it imports neither plane's internals (only internal/xdsapi for
// node IDs, internal/loomctl for loomd's API client and
// internal/bootstraptoken for the tokens).
package local
