package translate

import (
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	// Filter types EnvoyFilter patch values name, for protojson's "@type".
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// applyEnvoyFilters applies the patches of efs (in order) to r, generated
// for a proxy of type pt, as Istio's envoyfilter package does for the
// patches validation accepts: HTTP_FILTER INSERT_BEFORE / INSERT_AFTER /
// INSERT_FIRST in each matching http_connection_manager, HTTP_ROUTE and
// VIRTUAL_HOST MERGE (proto.Merge: maps merged, lists appended), and
// CLUSTER ADD. A match.listener.portNumber is the listener's port (15006
// for the whole of a sidecar's inbound); a routeConfiguration portNumber is
// the port of the listener that uses the route table. A patch that matches
// nothing changes nothing, as in Istio. It fails only when a value or an
// HCM cannot be converted.
func applyEnvoyFilters(r *Resources, pt model.ProxyType, efs []*model.EnvoyFilter) error {
	for _, ef := range efs {
		for i, cp := range ef.Spec.GetConfigPatches() {
			if err := applyPatch(r, pt, cp); err != nil {
				return fmt.Errorf("EnvoyFilter %s/%s configPatches[%d]: %w", ef.Namespace, ef.Name, i, err)
			}
		}
	}
	if len(efs) > 0 {
		return checkRateLimitClusters(r)
	}
	return nil
}

// checkRateLimitClusters fails when a ratelimit filter an EnvoyFilter
// inserted names a cluster r does not have (its CLUSTER patch did not
// apply to this proxy): the proxy would NACK it, as Envoy refuses an
// unknown gRPC client cluster.
func checkRateLimitClusters(r *Resources) error {
	have := map[string]bool{}
	for _, c := range r.Clusters {
		have[c.GetName()] = true
	}
	var missing error
	for _, l := range r.Listeners {
		err := patchHCMs(l, func(h *hcmv3.HttpConnectionManager) {
			for _, hf := range h.GetHttpFilters() {
				var rl ratelimitv3.RateLimit
				if hf.GetTypedConfig().GetTypeUrl() != validation.RateLimitTypeURL || hf.GetTypedConfig().UnmarshalTo(&rl) != nil {
					continue
				}
				if c := rl.GetRateLimitService().GetGrpcService().GetEnvoyGrpc().GetClusterName(); !have[c] && missing == nil {
					missing = fmt.Errorf("listener %q: HTTP filter %q: rate_limit_service cluster %q is not in this proxy's config (add it with a CLUSTER patch of the same context)", l.GetName(), hf.GetName(), c)
				}
			}
		})
		if err != nil {
			return err
		}
	}
	return missing
}

func applyPatch(r *Resources, pt model.ProxyType, cp *networking.EnvoyFilter_EnvoyConfigObjectPatch) error {
	val, err := validation.EnvoyFilterValue(cp.GetApplyTo(), cp.GetPatch().GetValue())
	if err != nil {
		return err
	}
	m := cp.GetMatch()
	switch cp.GetApplyTo() {
	case networking.EnvoyFilter_HTTP_FILTER:
		for _, l := range r.Listeners {
			if !contextMatches(m.GetContext(), listenerContext(pt, l)) {
				continue
			}
			if pn := m.GetListener().GetPortNumber(); pn != 0 && pn != l.GetAddress().GetSocketAddress().GetPortValue() {
				continue
			}
			if err := patchHCMs(l, func(h *hcmv3.HttpConnectionManager) {
				h.HttpFilters = insertHTTPFilter(h.HttpFilters, cp.GetPatch().GetOperation(),
					m.GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName(), val.(*hcmv3.HttpFilter))
			}); err != nil {
				return err
			}
		}
	case networking.EnvoyFilter_HTTP_ROUTE, networking.EnvoyFilter_VIRTUAL_HOST:
		ports, err := routePorts(r.Listeners)
		if err != nil {
			return err
		}
		rm := m.GetRouteConfiguration()
		for _, rc := range r.Routes {
			if !contextMatches(m.GetContext(), routeContext(pt, rc.GetName())) {
				continue
			}
			if pn := rm.GetPortNumber(); pn != 0 && !slices.Contains(ports[rc.GetName()], pn) {
				continue
			}
			for _, vh := range rc.GetVirtualHosts() {
				if n := rm.GetVhost().GetName(); n != "" && n != vh.GetName() {
					continue
				}
				if cp.GetApplyTo() == networking.EnvoyFilter_VIRTUAL_HOST {
					proto.Merge(vh, val)
					continue
				}
				for _, rt := range vh.GetRoutes() {
					if n := rm.GetVhost().GetRoute().GetName(); n != "" && n != rt.GetName() {
						continue
					}
					proto.Merge(rt, val)
				}
			}
		}
	case networking.EnvoyFilter_CLUSTER:
		want := model.SidecarProxy
		if m.GetContext() == networking.EnvoyFilter_GATEWAY {
			want = model.RouterProxy
		}
		if m.GetContext() == networking.EnvoyFilter_ANY || want == pt {
			r.Clusters = append(r.Clusters, proto.Clone(val).(*clusterv3.Cluster))
		}
	default:
		return fmt.Errorf("applyTo %s: %s", cp.GetApplyTo(), validation.Unsupported)
	}
	return nil
}

func contextMatches(want, got networking.EnvoyFilter_PatchContext) bool {
	return want == networking.EnvoyFilter_ANY || want == got
}

func listenerContext(pt model.ProxyType, l *listenerv3.Listener) networking.EnvoyFilter_PatchContext {
	switch {
	case pt == model.RouterProxy:
		return networking.EnvoyFilter_GATEWAY
	case l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND:
		return networking.EnvoyFilter_SIDECAR_INBOUND
	}
	return networking.EnvoyFilter_SIDECAR_OUTBOUND
}

func routeContext(pt model.ProxyType, name string) networking.EnvoyFilter_PatchContext {
	switch {
	case pt == model.RouterProxy:
		return networking.EnvoyFilter_GATEWAY
	case name == xdsapi.InboundRoute:
		return networking.EnvoyFilter_SIDECAR_INBOUND
	}
	return networking.EnvoyFilter_SIDECAR_OUTBOUND
}

// patchHCMs unpacks every http_connection_manager of l, calls f on it and
// packs it back.
func patchHCMs(l *listenerv3.Listener, f func(*hcmv3.HttpConnectionManager)) error {
	for _, fc := range l.GetFilterChains() {
		for _, nf := range fc.GetFilters() {
			if nf.GetName() != validation.HCMFilterName {
				continue
			}
			var h hcmv3.HttpConnectionManager
			if err := nf.GetTypedConfig().UnmarshalTo(&h); err != nil {
				return fmt.Errorf("listener %q: decode http_connection_manager: %w", l.GetName(), err)
			}
			f(&h)
			a, err := packAny(&h)
			if err != nil {
				return err
			}
			nf.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
	return nil
}

// routePorts maps each RDS route name to the ports of the listeners that
// use it.
func routePorts(ls []*listenerv3.Listener) (map[string][]uint32, error) {
	out := map[string][]uint32{}
	for _, l := range ls {
		port := l.GetAddress().GetSocketAddress().GetPortValue()
		if err := patchHCMs(l, func(h *hcmv3.HttpConnectionManager) {
			if n := h.GetRds().GetRouteConfigName(); n != "" {
				out[n] = append(out[n], port)
			}
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// insertHTTPFilter inserts a copy of v into fs as Istio's
// doHTTPFilterOperation: INSERT_FIRST at the front; INSERT_BEFORE before
// the first filter named sub (at the front when sub is empty);
// INSERT_AFTER after the first filter named sub. Nothing is inserted when
// sub names no filter of fs.
func insertHTTPFilter(fs []*hcmv3.HttpFilter, op networking.EnvoyFilter_Patch_Operation, sub string, v *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
	c := proto.Clone(v).(*hcmv3.HttpFilter)
	pos := -1
	switch {
	case op == networking.EnvoyFilter_Patch_INSERT_FIRST, op == networking.EnvoyFilter_Patch_INSERT_BEFORE && sub == "":
		pos = 0
	case sub != "":
		if i := slices.IndexFunc(fs, func(f *hcmv3.HttpFilter) bool { return f.GetName() == sub }); i >= 0 {
			pos = i
			if op == networking.EnvoyFilter_Patch_INSERT_AFTER {
				pos = i + 1
			}
		}
	}
	if pos < 0 {
		return fs
	}
	return slices.Insert(fs, pos, c)
}
