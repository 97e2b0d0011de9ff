package analysis

import (
	"cmp"
	"fmt"
	"strconv"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	loomv1alpha1 "github.com/loom-mesh/loom/internal/controlplane/loomapi/v1alpha1"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// LabelGatewayManaged marks a Service Istio's gateway controller made for
// a Gateway or waypoint (gateway.istio.io/managed); its ports are not the
// user's to name.
const LabelGatewayManaged = "gateway.istio.io/managed"

// ignoredNamespaces are Kubernetes' system namespaces, which Istio's
// analyzers skip (inject.IgnoredNamespaces).
var ignoredNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true,
}

// PortNameAnalyzer is Istio's IST0118 PortNameIsNotUnderNamingConvention
// (pkg/config/analysis/analyzers/service): a Kubernetes Service port whose
// protocol neither its appProtocol nor its name's prefix selects
// (registry.KubernetesProtocol gives Unknown), so Istio falls back to
// protocol sniffing. Services in system namespaces and gateway-managed
// Services (LabelGatewayManaged) are skipped, as in Istio. Level Info.
type PortNameAnalyzer struct{}

// Analyze implements Analyzer.
func (PortNameAnalyzer) Analyze(snap *config.Snapshot) []Message {
	var out []Message
	for _, r := range snap.List(config.KindService) {
		s, ok := r.Spec.(*loomv1alpha1.KubernetesService)
		if !ok || ignoredNamespaces[r.Namespace] || r.Labels[LabelGatewayManaged] != "" {
			continue
		}
		for _, p := range s.GetPorts() {
			if registry.KubernetesProtocol(uint32(p.GetPort()), p.GetName(), p.GetProtocol(), p.GetAppProtocol()) != registry.Unknown {
				continue
			}
			target := p.GetTargetPortName()
			if target == "" {
				// Unset is port, as the API server defaults it.
				target = strconv.Itoa(int(cmp.Or(p.GetTargetPort(), p.GetPort())))
			}
			out = append(out, Message{
				Code: "IST0118", Name: "PortNameIsNotUnderNamingConvention", Level: Info,
				Resource: r.Key(), Source: r.Source,
				Text: fmt.Sprintf("Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port.", p.GetName(), p.GetPort(), target),
			})
		}
	}
	return out
}
