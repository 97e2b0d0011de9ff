// Package authzoracle holds no code: its tests check Loom's authorization
// end to end against Istio's own authz builder test data
// (shared/istio-samples/authz-builder). Loom's control plane translates
// every input for the proxy Istio's test uses; the filters must equal
// Istio's output, the proxy must accept both sets (no NACK), and the
// proxy's compiled filters must decide alike on thousands of generated
// requests and connections. It is the one place that imports both planes,
// as test/e2e does.
package authzoracle
