// Package e2e holds Loom's end-to-end tests: they build the real loomd,
// loom-proxy, loomctl and bookinfo binaries, start the local Bookinfo mesh
// with `loomctl demo` on 127.42.0.0/24, apply Istio's own sample files from
// shared/istio-samples with `loomctl apply`, and check where real HTTP
// requests through the ingress gateway land.
//
// Run them with `go test ./test/e2e/` (they take about a minute); they
// need the go tool and the Istio samples checked out beside the module
// (../shared/istio-samples).
package e2e
