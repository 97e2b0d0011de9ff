// Package translate turns a push context and one proxy into xDS resources:
// Listener, RouteConfiguration, Cluster and ClusterLoadAssignment, one file
// per type. It is pure: the same (PushContext, Proxy) always gives the same
// resources, and it reads nothing but package model.
package translate
