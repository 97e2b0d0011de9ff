// Package registry is the service registry of local mode: it derives
// services and their workload instances from Istio's ServiceEntry and
// WorkloadEntry resources of a config snapshot, as Istio's serviceentry
// registry does (pilot/pkg/serviceregistry/serviceentry), and from
// Kubernetes Services read from the same snapshot, as Istio's kube
// registry converts them (pilot/pkg/serviceregistry/kube), with
// WorkloadEntries as their endpoints.
//
// Everything here is a pure function of a *config.Snapshot; nothing is
// cached or watched. Package model indexes the result in the push context.
//
// It imports only package config, Loom's loomapi types and istio.io/api;
// never xDS protos, client-go or internal/dataplane.
package registry
