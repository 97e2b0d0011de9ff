package model

import (
	"cmp"
	"slices"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// EnvoyFilter is one EnvoyFilter (networking.istio.io/v1alpha3) that
// applies to a proxy. Spec is shared and must not be modified.
type EnvoyFilter struct {
	Name, Namespace string
	Spec            *networking.EnvoyFilter
}

// EnvoyFiltersForProxy returns the EnvoyFilters that apply to p in the
// order Istio applies their patches: those of RootNamespace first, then
// those of p's namespace; within each, by priority (lower first), then by
// name (Istio's creation time tie-break, which Loom's config has not). An
// EnvoyFilter applies when it has no workloadSelector or its labels are
// contained in p's; one of RootNamespace applies to proxies of every
// namespace. It returns nil for a nil p.
func (pc *PushContext) EnvoyFiltersForProxy(p *Proxy) []*EnvoyFilter {
	if p == nil {
		return nil
	}
	var out []*EnvoyFilter
	for _, r := range pc.Config.List(config.KindEnvoyFilter) {
		spec, ok := r.Spec.(*networking.EnvoyFilter)
		if !ok || (r.Namespace != p.Namespace && r.Namespace != RootNamespace) {
			continue
		}
		if sel := spec.GetWorkloadSelector().GetLabels(); len(sel) > 0 && !registry.LabelsContain(p.Labels, sel) {
			continue
		}
		out = append(out, &EnvoyFilter{Name: r.Name, Namespace: r.Namespace, Spec: spec})
	}
	slices.SortStableFunc(out, func(a, b *EnvoyFilter) int {
		ar, br := a.Namespace != RootNamespace, b.Namespace != RootNamespace
		if ar != br {
			if !ar {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Spec.GetPriority(), b.Spec.GetPriority()), cmp.Compare(a.Name, b.Name))
	})
	return out
}
