package translate

import (
	"net"
	"strconv"

	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// sidecarMeshConfig returns mesh with the outboundTrafficPolicy of Sidecar
// sc (Sidecar.outboundTrafficPolicy.mode), which overrides the mesh
// config's for the proxies it applies to, as in Istio. mesh itself when sc
// is nil or sets none; mesh is never modified.
func sidecarMeshConfig(sc *model.Sidecar, mesh *meshv1alpha1.MeshConfig) *meshv1alpha1.MeshConfig {
	tp := sc.GetSpec().GetOutboundTrafficPolicy()
	if tp == nil {
		return mesh
	}
	mode := meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY
	if tp.GetMode() == networking.OutboundTrafficPolicy_ALLOW_ANY {
		mode = meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY
	}
	out := &meshv1alpha1.MeshConfig{}
	if mesh != nil {
		out = proto.Clone(mesh).(*meshv1alpha1.MeshConfig)
	}
	out.OutboundTrafficPolicy = &meshv1alpha1.MeshConfig_OutboundTrafficPolicy{Mode: mode}
	return out
}

// ingressEndpointPorts maps each ingress listener port of Sidecar sc that
// sets a defaultEndpoint to the endpoint's port ("127.0.0.1:8080" gives
// 8080). The inbound cluster of that port goes to the workload's IP at
// that port: in local mode an app binds its workload's IP, so the app's
// own address stands in for 127.0.0.1 and 0.0.0.0. Validation refuses
// other forms. Nil when sc is nil.
func ingressEndpointPorts(sc *model.Sidecar) map[uint32]uint32 {
	var out map[uint32]uint32
	for _, in := range sc.GetSpec().GetIngress() {
		ep := in.GetDefaultEndpoint()
		if ep == "" || in.GetPort() == nil {
			continue
		}
		_, port, err := net.SplitHostPort(ep)
		if err != nil {
			continue // unix://, refused by validation
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			continue
		}
		if out == nil {
			out = map[uint32]uint32{}
		}
		out[in.GetPort().GetNumber()] = uint32(n)
	}
	return out
}
