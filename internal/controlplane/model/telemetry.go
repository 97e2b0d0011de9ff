package model

import (
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// Telemetry is one Telemetry resource (telemetry.istio.io).
type Telemetry struct {
	Name      string
	Namespace string
	Spec      *telemetry.Telemetry
}

// TelemetriesForProxy returns the Telemetries that apply to proxy p, in
// the order Istio's applicableTelemetries merges them (later ones
// override earlier ones):
//
//  1. the first Telemetry of RootNamespace without a selector (mesh-wide);
//  2. the first Telemetry of p's namespace without a selector
//     (namespace-wide), when that namespace is not RootNamespace;
//  3. every Telemetry of p's namespace whose selector's labels p's labels
//     contain (workload), as Istio's current matcher appends each one.
//
// Istio takes "first" by creation time; Loom's resources have none, so it
// is by name. A Telemetry with targetRef or targetRefs applies to
// waypoints and Kubernetes Gateways only, so to no Loom proxy. A selector
// in RootNamespace selects nothing: Istio looks for workload Telemetries in
// the proxy's own namespace only. The result is never shared.
func (pc *PushContext) TelemetriesForProxy(p *Proxy) []*Telemetry {
	all := pc.Config.List(config.KindTelemetry)
	var out []*Telemetry
	namespaceWide := func(ns string) {
		for _, r := range all {
			t, ok := r.Spec.(*telemetry.Telemetry)
			if !ok || r.Namespace != ns || targeted(t) || len(t.GetSelector().GetMatchLabels()) > 0 {
				continue
			}
			out = append(out, &Telemetry{Name: r.Name, Namespace: r.Namespace, Spec: t})
			return
		}
	}
	namespaceWide(RootNamespace)
	if p.Namespace != RootNamespace {
		namespaceWide(p.Namespace)
	}
	for _, r := range all {
		t, ok := r.Spec.(*telemetry.Telemetry)
		if !ok || r.Namespace != p.Namespace || targeted(t) {
			continue
		}
		sel := t.GetSelector().GetMatchLabels()
		if len(sel) > 0 && registry.LabelsContain(p.Labels, sel) {
			out = append(out, &Telemetry{Name: r.Name, Namespace: r.Namespace, Spec: t})
		}
	}
	return out
}

func targeted(t *telemetry.Telemetry) bool {
	return t.GetTargetRef() != nil || len(t.GetTargetRefs()) > 0
}
