// Package model is the control plane's push context: an immutable snapshot
// of config and service registry, with the indexes translation needs
// (services by host, destination rules by host, virtual services by
// gateway and host, workload instances by service). It is rebuilt on every
// config change and read by many goroutines without locks.
//
// It must not import client-go, xDS protos or internal/dataplane.
package model
