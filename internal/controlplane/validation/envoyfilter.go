package validation

import (
	"fmt"
	"slices"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/loom-mesh/loom/internal/controlplane/config"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	// The filter types a patch value may name in typed_config, so that
	// protojson can resolve their "@type".
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
)

// EnvoyFilter (Istio's ValidateEnvoyFilter), restricted to the patches
// Loom applies: HTTP_FILTER with INSERT_BEFORE, INSERT_AFTER or
// INSERT_FIRST in an http_connection_manager; HTTP_ROUTE and VIRTUAL_HOST
// with MERGE of typed_per_filter_config and rate_limits; CLUSTER with ADD.
// Everything else is refused as Unsupported with its field path, so that no
// patch is silently ignored.

// HCMFilterName is the network filter HTTP_FILTER patches apply inside.
const HCMFilterName = "envoy.filters.network.http_connection_manager"

// RouterFilterName is the terminal HTTP filter; nothing may follow it.
const RouterFilterName = "envoy.filters.http.router"

// ProxyHTTPFilterTypes are the typed_config type URLs of the HTTP filters
// loom-proxy implements besides the router.
var ProxyHTTPFilterTypes = []string{
	"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
	"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
	"type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
	RateLimitTypeURL,
}

// proxyOverrideTypes are the typed_per_filter_config types loom-proxy
// reads besides ProxyHTTPFilterTypes' (a per-route type is not a filter's
// config).
var proxyOverrideTypes = []string{RateLimitPerRouteTypeURL}

// Type URLs of the global rate limit filter's config and per-route
// override.
const (
	RateLimitTypeURL         = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
	RateLimitPerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute"
)

// EnvoyFilterValue converts a patch's value (Envoy JSON) into the Envoy
// message applyTo names: HttpFilter, Route, VirtualHost or Cluster. Unknown
// fields and unresolvable "@type"s are errors.
func EnvoyFilterValue(applyTo networking.EnvoyFilter_ApplyTo, v *structpb.Struct) (proto.Message, error) {
	var m proto.Message
	switch applyTo {
	case networking.EnvoyFilter_HTTP_FILTER:
		m = &hcmv3.HttpFilter{}
	case networking.EnvoyFilter_HTTP_ROUTE:
		m = &routev3.Route{}
	case networking.EnvoyFilter_VIRTUAL_HOST:
		m = &routev3.VirtualHost{}
	case networking.EnvoyFilter_CLUSTER:
		m = &clusterv3.Cluster{}
	default:
		return nil, fmt.Errorf("applyTo %s: %s", applyTo, Unsupported)
	}
	js, err := protojson.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode value: %w", err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		return nil, fmt.Errorf("decode as %s: %s", m.ProtoReflect().Descriptor().FullName(), config.ProtoErrorText(err))
	}
	// loom-proxy reads filter configs by their own type: a TypedStruct
	// (the form of Istio's rate limit tasks) is emitted as the Any it
	// stands for, which Envoy would build from it.
	err = nil
	switch v := m.(type) {
	case *hcmv3.HttpFilter:
		if tc := v.GetTypedConfig(); tc != nil {
			if v.ConfigType, err = typedConfig(tc); err != nil {
				return nil, fmt.Errorf("typed_config: %w", err)
			}
		}
	case *routev3.Route:
		err = resolveTypedStructs(v.GetTypedPerFilterConfig())
	case *routev3.VirtualHost:
		err = resolveTypedStructs(v.GetTypedPerFilterConfig())
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func typedConfig(a *anypb.Any) (*hcmv3.HttpFilter_TypedConfig, error) {
	r, err := resolveTypedStruct(a)
	return &hcmv3.HttpFilter_TypedConfig{TypedConfig: r}, err
}

func resolveTypedStructs(m map[string]*anypb.Any) error {
	for _, k := range sortedKeys(m) {
		r, err := resolveTypedStruct(m[k])
		if err != nil {
			return fmt.Errorf("typed_per_filter_config[%s]: %w", k, err)
		}
		m[k] = r
	}
	return nil
}

// unknownHTTPFilterType returns the typed_config "@type" of an HTTP_FILTER
// patch value and the filter's name when the type is one loomd does not
// know, such as Istio's Lua sample (envoy.extensions.filters.http.lua.v3.Lua):
// loom-proxy runs no such filter, which says more than protojson's
// "unable to resolve". Empty for other patches, known types and optional
// filters (Envoy ignores those it lacks).
func unknownHTTPFilterType(applyTo networking.EnvoyFilter_ApplyTo, v *structpb.Struct) (typeURL, name string) {
	if applyTo != networking.EnvoyFilter_HTTP_FILTER || v.GetFields()["is_optional"].GetBoolValue() {
		return "", ""
	}
	u := v.GetFields()["typed_config"].GetStructValue().GetFields()["@type"].GetStringValue()
	if u == "" {
		return "", ""
	}
	if _, err := protoregistry.GlobalTypes.FindMessageByURL(u); err == nil {
		return "", ""
	}
	return u, v.GetFields()["name"].GetStringValue()
}

// resolveTypedStruct returns a unchanged, or the Any a TypedStruct
// (udpa.type.v1 or xds.type.v3) stands for.
func resolveTypedStruct(a *anypb.Any) (*anypb.Any, error) {
	u := FilterTypeURL(a)
	if u == a.GetTypeUrl() {
		return a, nil
	}
	var value *structpb.Struct
	var ts1 udpatypev1.TypedStruct
	var ts3 xdstypev3.TypedStruct
	if a.UnmarshalTo(&ts1) == nil {
		value = ts1.GetValue()
	} else if err := a.UnmarshalTo(&ts3); err == nil {
		value = ts3.GetValue()
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(u)
	if err != nil {
		return nil, fmt.Errorf("type_url %q: unknown type", u)
	}
	msg := mt.New().Interface()
	if value != nil {
		js, err := protojson.Marshal(value)
		if err != nil {
			return nil, fmt.Errorf("encode TypedStruct value: %w", err)
		}
		if err := protojson.Unmarshal(js, msg); err != nil {
			return nil, fmt.Errorf("TypedStruct value as %s: %w", mt.Descriptor().FullName(), err)
		}
	}
	return anypb.New(msg)
}

// FilterTypeURL returns the type URL of a filter config, looking through a
// udpa.type.v1 or xds.type.v3 TypedStruct to the type it carries.
func FilterTypeURL(a *anypb.Any) string {
	switch a.GetTypeUrl() {
	case "type.googleapis.com/udpa.type.v1.TypedStruct":
		var ts udpatypev1.TypedStruct
		if a.UnmarshalTo(&ts) == nil {
			return ts.GetTypeUrl()
		}
	case "type.googleapis.com/xds.type.v3.TypedStruct":
		var ts xdstypev3.TypedStruct
		if a.UnmarshalTo(&ts) == nil {
			return ts.GetTypeUrl()
		}
	}
	return a.GetTypeUrl()
}

func (c *checker) envoyFilter(ef *networking.EnvoyFilter) {
	if ws := ef.WorkloadSelector; ws != nil {
		c.selector("spec.workloadSelector.labels", ws.Labels)
	}
	if ef.TargetRefs != nil {
		c.unsupported("spec.targetRefs")
	}
	for i, cp := range ef.ConfigPatches {
		p := fmt.Sprintf("spec.configPatches[%d]", i)
		if cp == nil {
			c.errf(p, "Required value: Envoy filter: null config patch")
			continue
		}
		c.configPatch(p, cp)
	}
}

func (c *checker) configPatch(p string, cp *networking.EnvoyFilter_EnvoyConfigObjectPatch) {
	if cp.Patch == nil {
		c.errf(p+".patch", "Required value: Envoy filter: missing patch")
		return
	}
	op := cp.Patch.Operation
	var ops []networking.EnvoyFilter_Patch_Operation
	switch cp.ApplyTo {
	case networking.EnvoyFilter_HTTP_FILTER:
		ops = []networking.EnvoyFilter_Patch_Operation{networking.EnvoyFilter_Patch_INSERT_BEFORE, networking.EnvoyFilter_Patch_INSERT_AFTER, networking.EnvoyFilter_Patch_INSERT_FIRST}
	case networking.EnvoyFilter_HTTP_ROUTE, networking.EnvoyFilter_VIRTUAL_HOST:
		ops = []networking.EnvoyFilter_Patch_Operation{networking.EnvoyFilter_Patch_MERGE}
	case networking.EnvoyFilter_CLUSTER:
		ops = []networking.EnvoyFilter_Patch_Operation{networking.EnvoyFilter_Patch_ADD}
	default:
		c.errf(p+".applyTo", "Unsupported value: %q: %s (supported: HTTP_FILTER, HTTP_ROUTE, VIRTUAL_HOST, CLUSTER)", cp.ApplyTo, Unsupported)
		return
	}
	if op == networking.EnvoyFilter_Patch_INVALID {
		c.errf(p+".patch.operation", "Required value: Envoy filter: missing operation")
		return
	}
	if !slices.Contains(ops, op) {
		c.errf(p+".patch.operation", "Unsupported value: %q: %s for applyTo %s", op, Unsupported, cp.ApplyTo)
		return
	}
	if cp.Patch.FilterClass != networking.EnvoyFilter_Patch_UNSPECIFIED {
		c.unsupported(p + ".patch.filterClass")
	}
	m := cp.Match
	if m == nil {
		m = &networking.EnvoyFilter_EnvoyConfigObjectMatch{}
	}
	if m.Proxy != nil {
		c.unsupported(p + ".match.proxy")
	}
	if cp.Patch.Value == nil {
		c.errf(p+".patch.value", "Required value: Envoy filter: missing value")
		return
	}
	if u, name := unknownHTTPFilterType(cp.ApplyTo, cp.Patch.Value); u != "" {
		c.errf(p+".patch.value.typed_config", "Unsupported value: %q: the HTTP filter %q is %s", u, name, Unsupported)
		return
	}
	val, err := EnvoyFilterValue(cp.ApplyTo, cp.Patch.Value)
	if err != nil {
		c.errf(p+".patch.value", "Invalid value: %v", err)
		return
	}
	switch cp.ApplyTo {
	case networking.EnvoyFilter_HTTP_FILTER:
		if m.GetRouteConfiguration() != nil || m.GetCluster() != nil {
			c.errf(p+".match", "Invalid value: Envoy filter: applyTo HTTP_FILTER must match a listener")
		}
		c.httpFilterPatch(p, op, m.GetListener(), val.(*hcmv3.HttpFilter))
	case networking.EnvoyFilter_HTTP_ROUTE, networking.EnvoyFilter_VIRTUAL_HOST:
		if m.GetListener() != nil || m.GetCluster() != nil {
			c.errf(p+".match", "Invalid value: Envoy filter: applyTo %s must match a routeConfiguration", cp.ApplyTo)
		}
		c.routeConfigurationMatch(p+".match.routeConfiguration", m.GetRouteConfiguration())
		c.mergeValue(p+".patch.value", cp.Patch.Value, val)
	case networking.EnvoyFilter_CLUSTER:
		// ADD ignores the match (Istio's semantics): the cluster is added
		// to every proxy of the context.
		cl := val.(*clusterv3.Cluster)
		if cl.GetName() == "" {
			c.errf(p+".patch.value.name", "Required value: Envoy filter: cluster name")
		}
	}
}

func (c *checker) httpFilterPatch(p string, op networking.EnvoyFilter_Patch_Operation, l *networking.EnvoyFilter_ListenerMatch, hf *hcmv3.HttpFilter) {
	lp := p + ".match.listener"
	var sub string
	if l != nil {
		if l.PortName != "" {
			c.unsupported(lp + ".portName")
		}
		if l.Name != "" {
			c.unsupported(lp + ".name")
		}
		if l.ListenerFilter != "" {
			c.unsupported(lp + ".listenerFilter")
		}
		if fc := l.FilterChain; fc != nil {
			fp := lp + ".filterChain"
			if fc.Name != "" || fc.Sni != "" || fc.TransportProtocol != "" || fc.ApplicationProtocols != "" || fc.DestinationPort != 0 {
				c.errf(fp, "%s: only filterChain.filter may be matched", Unsupported)
			}
			if f := fc.Filter; f != nil {
				if f.Name != "" && f.Name != HCMFilterName && f.Name != "envoy.http_connection_manager" {
					c.errf(fp+".filter.name", "Unsupported value: %q: %s (HTTP_FILTER patches apply in %s)", f.Name, Unsupported, HCMFilterName)
				}
				sub = f.GetSubFilter().GetName()
			}
		}
	}
	vp := p + ".patch.value"
	switch {
	case op == networking.EnvoyFilter_Patch_INSERT_AFTER && sub == "":
		c.errf(lp+".filterChain.filter.subFilter.name", "Required value: Envoy filter: INSERT_AFTER without a subFilter would add the filter after %s (%s)", RouterFilterName, Unsupported)
	case op == networking.EnvoyFilter_Patch_INSERT_AFTER && sub == RouterFilterName:
		c.errf(lp+".filterChain.filter.subFilter.name", "Invalid value: %q: nothing may be inserted after the router", sub)
	}
	if hf.GetName() == "" {
		c.errf(vp+".name", "Required value: Envoy filter: HTTP filter name")
	}
	if hf.GetName() == RouterFilterName || hf.GetTypedConfig().GetTypeUrl() == "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" {
		c.errf(vp+".name", "Invalid value: %q: the router is already the last filter", hf.GetName())
	}
	if hf.GetConfigDiscovery() != nil {
		c.unsupported(vp + ".config_discovery")
	}
	if tc := hf.GetTypedConfig(); tc != nil && !hf.GetIsOptional() && !slices.Contains(ProxyHTTPFilterTypes, FilterTypeURL(tc)) {
		c.errf(vp+".typed_config", "Unsupported value: %q: the HTTP filter %q is %s", FilterTypeURL(tc), hf.GetName(), Unsupported)
	}
	if hf.GetTypedConfig() == nil && !hf.GetIsOptional() {
		c.errf(vp+".typed_config", "Required value: Envoy filter: HTTP filter %q needs a typed_config", hf.GetName())
	}
	var rl ratelimitv3.RateLimit
	if hf.GetTypedConfig().GetTypeUrl() == RateLimitTypeURL && hf.GetTypedConfig().UnmarshalTo(&rl) == nil {
		c.rateLimitFilter(vp+".typed_config", &rl)
	}
	var lrl localratelimitv3.LocalRateLimit
	if hf.GetTypedConfig().GetTypeUrl() == localRateLimitTypeURL && hf.GetTypedConfig().UnmarshalTo(&lrl) == nil && len(lrl.GetRateLimits()) > 0 {
		c.errf(vp+".typed_config.rate_limits", "%s (set rate_limits on the route or virtual host)", Unsupported)
	}
}

const localRateLimitTypeURL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

// rateLimitFilter refuses what loom-proxy's envoy.filters.http.ratelimit
// does not implement, so that no proxy NACKs it.
func (c *checker) rateLimitFilter(p string, rl *ratelimitv3.RateLimit) {
	if rl.GetDomain() == "" {
		c.errf(p+".domain", "Required value: the rate limit domain")
	}
	gs := rl.GetRateLimitService().GetGrpcService()
	switch {
	case gs.GetGoogleGrpc() != nil:
		c.errf(p+".rate_limit_service.grpc_service.google_grpc", "%s (use envoy_grpc)", Unsupported)
	case gs.GetEnvoyGrpc().GetClusterName() == "":
		c.errf(p+".rate_limit_service.grpc_service.envoy_grpc.cluster_name", "Required value: the rate limit service's cluster")
	}
	if len(rl.GetRateLimits()) > 0 {
		c.errf(p+".rate_limits", "%s (set rate_limits on the route or virtual host)", Unsupported)
	}
	if rl.GetFilterEnabled() != nil || rl.GetFilterEnforced() != nil || rl.GetFailureModeDenyPercent() != nil {
		c.errf(p, "filter_enabled, filter_enforced and failure_mode_deny_percent are %s", Unsupported)
	}
}

// rateLimits refuses the rate limit actions and fields loom-proxy does not
// implement in route and virtual host rate_limits.
func (c *checker) rateLimits(p string, rls []*routev3.RateLimit) {
	for i, rl := range rls {
		rp := fmt.Sprintf("%s.rate_limits[%d]", p, i)
		if rl.GetStage().GetValue() > 10 {
			c.errf(rp+".stage", "Invalid value: %d: must be 0-10", rl.GetStage().GetValue())
		}
		if rl.GetLimit() != nil || rl.GetHitsAddend() != nil || rl.GetApplyOnStreamDone() || rl.GetXRatelimitOption() != routev3.RateLimit_UNSPECIFIED {
			c.errf(rp, "limit, hits_addend, apply_on_stream_done and x_ratelimit_option are %s", Unsupported)
		}
		if len(rl.GetActions()) == 0 {
			c.errf(rp+".actions", "Required value: at least one action")
		}
		for j, a := range rl.GetActions() {
			ap := fmt.Sprintf("%s.actions[%d]", rp, j)
			switch a.GetActionSpecifier().(type) {
			case *routev3.RateLimit_Action_SourceCluster_, *routev3.RateLimit_Action_DestinationCluster_,
				*routev3.RateLimit_Action_RequestHeaders_, *routev3.RateLimit_Action_RemoteAddress_,
				*routev3.RateLimit_Action_GenericKey_, *routev3.RateLimit_Action_HeaderValueMatch_,
				*routev3.RateLimit_Action_MaskedRemoteAddress_, *routev3.RateLimit_Action_QueryParameters_,
				*routev3.RateLimit_Action_QueryParameterValueMatch_:
			default:
				c.errf(ap, "%s (supported actions: source_cluster, destination_cluster, request_headers, remote_address, generic_key, header_value_match, masked_remote_address, query_parameters, query_parameter_value_match)", Unsupported)
			}
		}
	}
}

func (c *checker) routeConfigurationMatch(p string, rc *networking.EnvoyFilter_RouteConfigurationMatch) {
	if rc == nil {
		return
	}
	if rc.PortName != "" {
		c.unsupported(p + ".portName")
	}
	if rc.Gateway != "" {
		c.unsupported(p + ".gateway")
	}
	if rc.Name != "" {
		c.unsupported(p + ".name")
	}
	if rt := rc.GetVhost().GetRoute(); rt != nil && rt.Action != networking.EnvoyFilter_RouteConfigurationMatch_RouteMatch_ANY {
		c.errf(p+".vhost.route.action", "Unsupported value: %q: %s (only ANY)", rt.Action, Unsupported)
	}
}

// mergeValue allows only the fields a MERGE of a route or virtual host
// may carry: typed_per_filter_config of filters the proxy has, and
// rate_limits (read only by a rate limit filter).
func (c *checker) mergeValue(p string, raw *structpb.Struct, val proto.Message) {
	for _, k := range sortedKeys(raw.GetFields()) {
		switch k {
		case "typed_per_filter_config", "typedPerFilterConfig", "rate_limits", "rateLimits":
		default:
			c.errf(p+"."+k, "%s in a MERGE (only typed_per_filter_config and rate_limits)", Unsupported)
		}
	}
	var tpfc map[string]*anypb.Any
	switch v := val.(type) {
	case *routev3.Route:
		tpfc = v.GetTypedPerFilterConfig()
		c.rateLimits(p+".route", v.GetRoute().GetRateLimits())
	case *routev3.VirtualHost:
		tpfc = v.GetTypedPerFilterConfig()
		c.rateLimits(p, v.GetRateLimits())
	}
	for _, k := range sortedKeys(tpfc) {
		if u := FilterTypeURL(tpfc[k]); !slices.Contains(ProxyHTTPFilterTypes, u) && !slices.Contains(proxyOverrideTypes, u) {
			c.errf(fmt.Sprintf("%s.typed_per_filter_config[%s]", p, k), "Unsupported value: %q: %s", u, Unsupported)
		}
	}
}
