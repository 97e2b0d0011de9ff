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
	mesh, namespace, workload := pc.selectPeerAuthns(ns, labels)
	out := MTLSPolicy{Mode: MTLSPermissive}
	if from := modeSource(mesh, namespace, workload); from != nil {
		out.Mode = from.spec.GetMtls().GetMode()
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

// selectPeerAuthns picks, as Istio's ComposePeerAuthentication, the
// PeerAuthentications that may apply to a workload of namespace ns with
// labels: the first mesh-wide one (RootNamespace, no selector), the first
// namespace-wide one of ns and the first of ns whose selector labels
// contains. Any may be nil.
func (pc *PushContext) selectPeerAuthns(ns string, labels map[string]string) (mesh, namespace, workload *peerAuthn) {
	all := pc.peerAuthns
	if pc.base != nil {
		all = pc.base.peerAuthns
	}
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
	return mesh, namespace, workload
}

// PeerAuthenticationsFor returns the keys of the PeerAuthentications in
// effect for a workload of namespace ns with labels, the ones whose
// settings MutualTLSFor's result comes from: the policy that sets the
// mode (the last of mesh, namespace, workload whose mtls mode is not
// UNSET; none when the mode is the default PERMISSIVE), then the workload
// policy when it sets portLevelMtls. A policy another one overrides, or
// one that is not the first of its level, is not listed.
func (pc *PushContext) PeerAuthenticationsFor(ns string, labels map[string]string) []config.Key {
	mesh, namespace, workload := pc.selectPeerAuthns(ns, labels)
	modeFrom := modeSource(mesh, namespace, workload)
	var out []config.Key
	if modeFrom != nil {
		out = append(out, modeFrom.key())
	}
	if workload != nil && workload != modeFrom && len(workload.spec.GetPortLevelMtls()) > 0 {
		out = append(out, workload.key())
	}
	return out
}

// modeSource is the policy whose mtls mode a workload gets: the last of
// levels (mesh, namespace, workload order) whose mode is not UNSET, or nil
// (the default PERMISSIVE).
func modeSource(levels ...*peerAuthn) *peerAuthn {
	var from *peerAuthn
	for _, pa := range levels {
		if pa != nil && pa.spec.GetMtls().GetMode() != security.PeerAuthentication_MutualTLS_UNSET {
			from = pa
		}
	}
	return from
}

func (pa *peerAuthn) key() config.Key {
	return config.Key{Kind: config.KindPeerAuthentication, Namespace: pa.namespace, Name: pa.name}
}

// NamespaceMutualTLSMode is the mode the policies without a selector give
// the workloads of namespace ns (the namespace's, else the mesh's, else
// PERMISSIVE), what Istio's BestEffortInferServiceMTLSMode reads to decide
// whether a client may originate auto mTLS to a service of ns: never to
// DISABLE. Workload policies are not looked at, as in Istio.
func (pc *PushContext) NamespaceMutualTLSMode(ns string) MTLSMode {
	return pc.MutualTLSFor(ns, nil).Mode
}
