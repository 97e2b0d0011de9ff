// Package bookinfo is Istio's Bookinfo sample application written in Go: the
// four services productpage, details, reviews (v1, v2, v3) and ratings as
// http.Handlers, plus the local-mode mesh config (ServiceEntries and
// WorkloadEntries) that declares them to loomd.
//
// The services behave like Istio's (istio/istio samples/bookinfo/src): same
// paths, JSON bodies, error texts, timeouts and retries, and the same tracing
// and end-user headers propagated from each incoming request to its outgoing
// calls. productpage calls details and reviews; reviews v2 and v3 call ratings;
// reviews v1 does not. Outgoing calls use plain service names
// (http://reviews:9080) and go through HTTP_PROXY, which in local mode points
// at the workload's sidecar.
//
// The package sits outside the mesh: it imports neither the control plane nor
// the data plane. cmd/bookinfo is the binary that runs one service.
package bookinfo
