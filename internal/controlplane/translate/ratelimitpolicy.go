package translate

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// What a RateLimitPolicy adds to a proxy's config: its own two filters
// (named so that an EnvoyFilter's typed_per_filter_config for Envoy's
// filter names never reaches them), the stages their rate_limits use on
// routes (so that the filters of an EnvoyFilter, at stage 0 by default,
// never see them), and the cluster of loomd's rate limit service.
const (
	RateLimitPolicyLocalFilter  = "loom.ratelimitpolicy.local"
	RateLimitPolicyGlobalFilter = "loom.ratelimitpolicy.global"
	rateLimitPolicyGlobalStage  = 9
	rateLimitPolicyLocalStage   = 10
	// RateLimitServiceCluster is the cluster of loomd's rate limit
	// service (HTTP/2, STATIC at its address).
	RateLimitServiceCluster = "loom_ratelimit"
	// rateLimitServiceTimeout bounds a proxy's call to the service.
	rateLimitServiceTimeout = time.Second
	// rateLimitMaxValues bounds the buckets a local limit per header value
	// keeps in each proxy (least recently used out first).
	rateLimitMaxValues = 10000
)

// applyRateLimitPolicies adds pols' limits to r, the config of proxy type
// pt: on a sidecar its inbound side (the inbound listener's HTTP
// connection manager and the inbound route table), on a gateway every
// HTTP connection manager and route table. Each forwarding route gets one
// rate_limits entry per limit that applies on it (every route, or those
// named by match.route); local limits become the descriptors of a
// local_ratelimit filter, global ones are asked of the rate limit service
// at rls ("ip:port", whose cluster is added). Global limits are skipped
// when rls is "" (loomd's validation refuses them then). A route that
// gets its first rate_limits also gets include_vh_rate_limits, so that the
// virtual host's rate limits an EnvoyFilter merged still apply to it.
func applyRateLimitPolicies(r *Resources, pt model.ProxyType, pols []*model.RateLimitPolicy, rls string) error {
	var local, global []model.RateLimit
	failDeny := false
	for _, p := range pols {
		for _, l := range p.Limits {
			switch {
			case !l.Global:
				local = append(local, l)
			case rls != "":
				global = append(global, l)
				failDeny = failDeny || p.FailureModeDeny
			}
		}
	}
	if len(local) == 0 && len(global) == 0 {
		return nil
	}
	for _, rc := range r.Routes {
		if pt == model.SidecarProxy && rc.GetName() != xdsapi.InboundRoute {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				addRouteRateLimits(rt, local, global)
			}
		}
	}
	var filters []*hcmv3.HttpFilter
	if len(local) > 0 {
		f, err := localRateLimitFilter(local)
		if err != nil {
			return err
		}
		filters = append(filters, f)
	}
	if len(global) > 0 {
		f, err := globalRateLimitFilter(failDeny)
		if err != nil {
			return err
		}
		filters = append(filters, f)
		c, err := rateLimitServiceCluster(rls)
		if err != nil {
			return err
		}
		r.Clusters = append(r.Clusters, c)
	}
	for _, l := range r.Listeners {
		if pt == model.SidecarProxy && l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
			continue
		}
		if err := patchHCMs(l, func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append(append([]*hcmv3.HttpFilter(nil), filters...), h.HttpFilters...)
		}); err != nil {
			return err
		}
	}
	return nil
}

// addRouteRateLimits appends to rt's rate_limits an entry per limit that
// applies on it.
func addRouteRateLimits(rt *routev3.Route, local, global []model.RateLimit) {
	ra := rt.GetRoute()
	if ra == nil {
		return // redirects and direct responses are not rate limited
	}
	had := len(ra.GetRateLimits()) > 0
	add := func(ls []model.RateLimit, stage uint32) {
		for _, l := range ls {
			if l.Route != "" && l.Route != rt.GetName() {
				continue
			}
			ra.RateLimits = append(ra.RateLimits, &routev3.RateLimit{Stage: wrapperspb.UInt32(stage), Actions: rateLimitActions(l)})
		}
	}
	add(local, rateLimitPolicyLocalStage)
	add(global, rateLimitPolicyGlobalStage)
	if !had && len(ra.GetRateLimits()) > 0 {
		//nolint:staticcheck // include_vh_rate_limits is deprecated but honoured by Envoy and loom-proxy.
		ra.IncludeVhRateLimits = wrapperspb.Bool(true)
	}
}

// rateLimitActions make limit l's descriptor: its ID, then its path when it
// has one (a header_value_match on :path, so that other paths make no
// descriptor), then the header's value (no descriptor without the header).
func rateLimitActions(l model.RateLimit) []*routev3.RateLimit_Action {
	acts := []*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
		GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: model.RateLimitKeyLimit, DescriptorValue: l.ID}}}}
	if p := l.Path(); p != "" {
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: l.PathPrefix}}
		if l.PathExact != "" {
			// :path carries the query; the exact path may be followed by one.
			sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
				Regex: regexp.QuoteMeta(l.PathExact) + `(\?.*)?`}}}
		}
		acts = append(acts, &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{
			HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{
				DescriptorKey:   model.RateLimitKeyPath,
				DescriptorValue: p,
				Headers: []*routev3.HeaderMatcher{{Name: ":path",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}},
			}}})
	}
	if l.Header != "" {
		acts = append(acts, &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
			RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: l.Header, DescriptorKey: l.Header}}})
	}
	return acts
}

// localRateLimitFilter is the local_ratelimit filter of local limits: a
// descriptor per limit (the header's entry without a value, so that each
// value gets a bucket), no default bucket, always enforced.
func localRateLimitFilter(ls []model.RateLimit) (*hcmv3.HttpFilter, error) {
	all := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
	c := &lrlv3.LocalRateLimit{
		StatPrefix:                      "ratelimitpolicy_local",
		Stage:                           rateLimitPolicyLocalStage,
		FilterEnabled:                   all,
		FilterEnforced:                  all,
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
	}
	for _, l := range ls {
		d := &ratelimitcommonv3.LocalRateLimitDescriptor{
			Entries: []*ratelimitcommonv3.RateLimitDescriptor_Entry{{Key: model.RateLimitKeyLimit, Value: l.ID}},
			TokenBucket: &typev3.TokenBucket{MaxTokens: l.RequestsPerUnit, TokensPerFill: wrapperspb.UInt32(l.RequestsPerUnit),
				FillInterval: durationpb.New(time.Duration(l.UnitSeconds) * time.Second)},
			ShadowMode: l.ShadowMode,
		}
		if p := l.Path(); p != "" {
			d.Entries = append(d.Entries, &ratelimitcommonv3.RateLimitDescriptor_Entry{Key: model.RateLimitKeyPath, Value: p})
		}
		if l.Header != "" {
			d.Entries = append(d.Entries, &ratelimitcommonv3.RateLimitDescriptor_Entry{Key: l.Header})
			c.MaxDynamicDescriptors = wrapperspb.UInt32(rateLimitMaxValues)
		}
		c.Descriptors = append(c.Descriptors, d)
	}
	a, err := packAny(c)
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: RateLimitPolicyLocalFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

// globalRateLimitFilter is the ratelimit filter of global limits, asking
// loomd's service in the domain model.RateLimitDomain, with X-RateLimit
// headers on responses.
func globalRateLimitFilter(failDeny bool) (*hcmv3.HttpFilter, error) {
	c := &rlv3.RateLimit{
		Domain:                  model.RateLimitDomain,
		Stage:                   rateLimitPolicyGlobalStage,
		Timeout:                 durationpb.New(rateLimitServiceTimeout),
		FailureModeDeny:         failDeny,
		EnableXRatelimitHeaders: rlv3.RateLimit_DRAFT_VERSION_03,
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: RateLimitServiceCluster}}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
	}
	a, err := packAny(c)
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: RateLimitPolicyGlobalFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

// rateLimitServiceCluster is the STATIC HTTP/2 cluster of the service at
// addr ("ip:port").
func rateLimitServiceCluster(addr string) (*clusterv3.Cluster, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("rate limit service address %q: %w", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("rate limit service address %q: bad port", addr)
	}
	c, err := baseCluster(RateLimitServiceCluster, registry.GRPC, false)
	if err != nil {
		return nil, err
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
		ClusterName: RateLimitServiceCluster,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(host, uint32(n), 1)}}},
	}
	return c, nil
}
