// Package grpcgen is the xDS generator of proxyless gRPC clients (Istio's
// pilot/pkg/networking/grpcgen): a grpc-go application whose bootstrap
// node metadata says GENERATOR: grpc talks to loomd's ADS server directly,
// with no sidecar in its path (gRFC A27, A28).
//
// It sits beside package translate in the control-plane data flow: the
// xDS server calls Generate instead of translate.Generate for such a node.
// Generate reuses translate's sidecar output (route building, subset
// clusters and their traffic policy) and reshapes it into what grpc-go's
// xDS client accepts: one api_listener per service port, named
// "HOST:PORT"; one RouteConfiguration per listener, named as Istio's
// cluster key "outbound|PORT||HOST"; EDS clusters with only the fields
// grpc-go reads; and endpoints at the applications' own address and port.
//
// It is pure and must not import the xDS server or internal/dataplane.
package grpcgen
