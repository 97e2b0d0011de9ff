package model

import (
	security "istio.io/api/security/v1beta1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// MTLSMode is a resolved PeerAuthentication mode: never UNSET.
type MTLSMode = security.PeerAuthentication_MutualTLS_Mode

// The resolved modes (istio.io/api security/v1beta1 PeerAuthentication.MutualTLS.Mode).
const (
	MTLSDisable    = security.PeerAuthentication_MutualTLS_DISABLE
	MTLSPermissive = security.PeerAuthentication_MutualTLS_PERMISSIVE
	MTLSStrict     = security.PeerAuthentication_MutualTLS_STRICT
)

// MTLSPolicy is the mutual TLS a workload's sidecar accepts on its inbound
// side: Mode for every port, except the workload ports (target ports, as
// Istio keys portLevelMtls) listed in Ports. No value is ever UNSET.
type MTLSPolicy struct {
	Mode  MTLSMode
	Ports map[uint32]MTLSMode
}

// ForPort is the mode of workload port port.
func (m MTLSPolicy) ForPort(port uint32) MTLSMode {
	if pm, ok := m.Ports[port]; ok {
		return pm
	}
	return m.Mode
}

// peerAuthn is one PeerAuthentication resource.
type peerAuthn struct {
	name, namespace string
	spec            *security.PeerAuthentication
}

// peerAuthentications lists the PeerAuthentications of snap, sorted by
// namespace and name (the store's order).
func peerAuthentications(snap *config.Snapshot) []*peerAuthn {
	var out []*peerAuthn
	for _, r := range snap.List(config.KindPeerAuthentication) {
		if spec, ok := r.Spec.(*security.PeerAuthentication); ok {
			out = append(out, &peerAuthn{name: r.Name, namespace: r.Namespace, spec: spec})
		}
	}
	return out
}

// MutualTLSFor returns the PeerAuthentication policy in effect for a
// workload in namespace ns with labels, as Istio's
// ComposePeerAuthentication: of the policies without a selector, the
// first of RootNamespace (mesh-wide) and the first of ns; of the policies
// of ns (not the root namespace) whose selector the labels contain, the
// first; "first" is by name, where Istio takes the oldest (Loom has no
// creation time). The mode starts PERMISSIVE and is replaced, in the order
// mesh, namespace, workload, by each policy whose mtls mode is not UNSET.
// Only the workload policy's portLevelMtls counts (validation refuses it
// elsewhere); an UNSET port inherits the workload's resolved mode.
func (pc *PushContext) MutualTLSFor(ns string, labels map[string]string) MTLSPolicy {
	all := pc.peerAuthns
	if pc.base != nil {
		all = pc.base.peerAuthns
	}
	var mesh, namespace, workload *peerAuthn
	for _, pa := range all {
		if pa.namespace != RootNamespace && pa.namespace != ns {
			continue
		}
		if len(pa.spec.GetSelector().GetMatchLabels()) == 0 {
			if pa.namespace == RootNamespace {
				if mesh == nil {
					mesh = pa
				}
			} else if namespace == nil {
				namespace = pa
			}
			continue
		}
		if pa.namespace != RootNamespace && workload == nil && registry.LabelsContain(labels, pa.spec.GetSelector().GetMatchLabels()) {
			workload = pa
		}
	}
	out := MTLSPolicy{Mode: MTLSPermissive}
	for _, pa := range []*peerAuthn{mesh, namespace, workload} {
		if pa != nil && pa.spec.GetMtls().GetMode() != security.PeerAuthentication_MutualTLS_UNSET {
			out.Mode = pa.spec.GetMtls().GetMode()
		}
	}
	if workload != nil && len(workload.spec.GetPortLevelMtls()) > 0 {
		out.Ports = make(map[uint32]MTLSMode, len(workload.spec.GetPortLevelMtls()))
		for port, m := range workload.spec.GetPortLevelMtls() {
			mode := m.GetMode()
			if mode == security.PeerAuthentication_MutualTLS_UNSET {
				mode = out.Mode
			}
			out.Ports[port] = mode
		}
	}
	return out
}

// NamespaceMutualTLSMode is the mode the policies without a selector give
// the workloads of namespace ns (the namespace's, else the mesh's, else
// PERMISSIVE), what Istio's BestEffortInferServiceMTLSMode reads to decide
// whether a client may originate auto mTLS to a service of ns: never to
// DISABLE. Workload policies are not looked at, as in Istio.
func (pc *PushContext) NamespaceMutualTLSMode(ns string) MTLSMode {
	return pc.MutualTLSFor(ns, nil).Mode
}
