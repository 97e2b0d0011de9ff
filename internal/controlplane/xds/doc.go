// Package xds is the control plane's ADS server (Istio's Pilot discovery
// server): it serves Listener, RouteConfiguration, Cluster and
// ClusterLoadAssignment resources over gRPC, state of the world, on one
// aggregated stream per proxy.
//
// It sits at the end of the control-plane data flow: a config change is
// signalled with Server.Trigger, debounced, turned into one new
// model.PushContext, and every connected proxy's resources are regenerated
// with translate.Generate (grpcgen.Generate for a proxyless gRPC node, whose
// metadata GENERATOR is "grpc") and set as that proxy's snapshot in
// go-control-plane's SnapshotCache. Per proxy and type it tracks the version
// sent, ACKed and NACKed, which Syncz reports (istioctl proxy-status).
//
// Resource versions are "PREFIX-N": PREFIX is the server's start time in
// Unix nanoseconds, base 36, so that versions of a restarted loomd never
// equal those a reconnecting proxy still holds; N is the number of the push
// that last changed the type's resources for that proxy.
//
// It must not import internal/dataplane.
package xds
