// Package model is the control plane's push context: an immutable snapshot
// of config and service registry, with the indexes translation needs
// (services by host, destination rules by host, virtual services by
// gateway and host, gateways by selector, workload instances by proxy IP).
// It is rebuilt on every config change and read by many goroutines without
// locks. ForNamespace gives a proxy namespace's view, which applies
// exportTo; ForProxy narrows that by the Sidecar applying to the proxy
// (its egress hosts). Root VirtualServices come with their delegates
// merged in.
//
// It builds on package registry (services and instances from ServiceEntry
// and WorkloadEntry) and must not import client-go, xDS protos or
// internal/dataplane.
package model
