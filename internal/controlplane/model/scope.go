package model

import (
	"slices"

	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// ForNamespace returns the view of pc a proxy in namespace ns has, as
// Istio's default SidecarScope: only the services, DestinationRules and
// VirtualServices whose exportTo includes ns. Among services of one
// hostname, the one in ns wins, else the first in namespace order.
// DestinationRule applies Istio's namespace order (see there); inbound
// lookups (ServicesForProxy, InstancesForProxy, WorkloadForProxy) and
// Gateways are not scoped. Workloads and Config stay mesh-wide.
//
// The view is built once per namespace and cached in pc; it is immutable
// and safe for concurrent use. ForNamespace on a view returns the view of
// ns of the same mesh-wide context.
func (pc *PushContext) ForNamespace(ns string) *PushContext {
	base := pc
	if pc.scoped {
		if pc.namespace == ns {
			return pc
		}
		base = pc.base
	}
	base.viewsMu.Lock()
	defer base.viewsMu.Unlock()
	if v, ok := base.views[ns]; ok {
		return v
	}
	v := base.newView(ns)
	base.views[ns] = v
	return v
}

// Namespace returns the namespace of a view, "" for the mesh-wide context.
func (pc *PushContext) Namespace() string { return pc.namespace }

func (pc *PushContext) newView(ns string) *PushContext {
	v := &PushContext{
		Config:         pc.Config,
		namespace:      ns,
		scoped:         true,
		base:           pc,
		servicesByHost: map[string]*registry.Service{},
		workloads:      pc.workloads,
		allServices:    pc.allServices,
		inbound:        pc.inbound,
		exportTo:       pc.exportTo,
		vsByGateway:    map[string][]*VirtualService{},
		delegates:      pc.delegates,
		gateways:       pc.gateways,
	}
	// allServices is sorted by host then namespace: keep the first visible
	// service of each host, replaced by one of ns when there is one.
	for _, s := range pc.allServices {
		if vis, ok := pc.exportTo[s.Source]; ok && !vis.VisibleTo(ns) {
			continue
		}
		prev, dup := v.servicesByHost[s.Hostname]
		switch {
		case !dup:
			v.services = append(v.services, s)
		case s.Namespace == ns && prev.Namespace != ns:
			v.services[len(v.services)-1] = s
		default:
			continue
		}
		v.servicesByHost[s.Hostname] = s
	}
	for _, dr := range pc.mergedDRs {
		if dr.ExportTo.VisibleTo(ns) {
			v.mergedDRs = append(v.mergedDRs, dr)
		}
	}
	for _, vs := range pc.virtualServices {
		if !vs.ExportTo.VisibleTo(ns) {
			continue
		}
		v.virtualServices = append(v.virtualServices, vs)
		for _, g := range vs.Gateways {
			v.vsByGateway[g] = append(v.vsByGateway[g], vs)
		}
	}
	v.virtualServices = slices.Clip(v.virtualServices)
	return v
}
