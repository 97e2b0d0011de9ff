package istiostats

import "strings"

// unknown is Istio's value for a label it cannot fill.
const unknown = "unknown"

// Peer is one workload's identity as Istio's metadata exchange carries it
// (its WorkloadMetadataObject): the node metadata a sidecar announces
// about itself. Empty fields are unknown. A Peer is immutable once built.
type Peer struct {
	// Workload is WORKLOAD_NAME (Istio's source_workload /
	// destination_workload).
	Workload string
	// Namespace is NAMESPACE.
	Namespace string
	// App and Version are LABELS app and version (or
	// app.kubernetes.io/name and app.kubernetes.io/version).
	App, Version string
	// Service and Revision are the canonical service and revision
	// (LABELS service.istio.io/canonical-name and -revision, defaulting
	// to App and Version, as Istio's injector sets them).
	Service, Revision string
	// Cluster is CLUSTER_ID.
	Cluster string
	// Labels are LABELS.
	Labels map[string]string
}

func (p *Peer) field(k string) string {
	if p == nil {
		return ""
	}
	switch k {
	case "workload":
		return p.Workload
	case "namespace":
		return p.Namespace
	case "app":
		return p.App
	case "version":
		return p.Version
	case "cluster":
		return p.Cluster
	case "service":
		return p.Service
	case "revision":
		return p.Revision
	}
	if l, ok := strings.CutPrefix(k, "labels/"); ok {
		return p.Labels[l]
	}
	return ""
}

// Node is the proxy's own xDS node as the stats read it: its ID, its
// string metadata, and the identity (Peer) that metadata gives.
type Node struct {
	ID       string
	Metadata map[string]string
	Self     Peer
}
