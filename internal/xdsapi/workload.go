package xdsapi

import "strings"

// DefaultClusterID is the CLUSTER_ID of a proxy and of the endpoints in
// its registry when none is configured (Istio's default, "Kubernetes").
const DefaultClusterID = "Kubernetes"

// Istio's endpoint telemetry metadata: istiod writes it on each LbEndpoint
// of a workload as filter_metadata["istio"]["workload"], and Istio's stats
// filter reads it for a source reporter's destination labels when no
// metadata exchange told it the peer.
const (
	EndpointMetadataNamespace = "istio"
	EndpointMetadataWorkload  = "workload"
)

// EndpointWorkload is the decoded endpoint telemetry metadata.
type EndpointWorkload struct {
	Name, Namespace                     string
	CanonicalService, CanonicalRevision string
	ClusterID                           string
}

// String encodes w as Istio does:
// "workload;namespace;canonical-service;canonical-revision;cluster-id".
func (w EndpointWorkload) String() string {
	return strings.Join([]string{w.Name, w.Namespace, w.CanonicalService, w.CanonicalRevision, w.ClusterID}, ";")
}

// ParseEndpointWorkload decodes an endpoint's telemetry metadata; ok is
// false when s has fewer than five fields (Istio's filter then ignores it;
// extra fields are ignored too).
func ParseEndpointWorkload(s string) (w EndpointWorkload, ok bool) {
	p := strings.Split(s, ";")
	if len(p) < 5 {
		return w, false
	}
	return EndpointWorkload{Name: p[0], Namespace: p[1], CanonicalService: p[2], CanonicalRevision: p[3], ClusterID: p[4]}, true
}

// CanonicalService returns a workload's canonical service and revision
// from its labels, as Istio's injector sets them:
// service.istio.io/canonical-name, else app.kubernetes.io/name, else
// app, else the workload's name; service.istio.io/canonical-revision,
// else app.kubernetes.io/version, else version, else "latest".
func CanonicalService(labels map[string]string, workload string) (name, revision string) {
	name = firstOf(labels["service.istio.io/canonical-name"], labels["app.kubernetes.io/name"], labels["app"], workload)
	revision = firstOf(labels["service.istio.io/canonical-revision"], labels["app.kubernetes.io/version"], labels["version"], "latest")
	return name, revision
}

func firstOf(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
