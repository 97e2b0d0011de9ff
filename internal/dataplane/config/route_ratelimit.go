package config

import (
	"net/http"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// maxRateLimitStage is the highest stage Envoy's rate limit filters take.
const maxRateLimitStage = 10

// routeRateLimits compiles a RouteAction's rate_limits with its virtual
// host's (already compiled) into the route's policy; nil when neither has
// any. Error paths are relative to the RouteAction.
func routeRateLimits(a *routev3.RouteAction, vh []filter.RateLimit) (*filter.RateLimitPolicy, error) {
	rls, err := buildRateLimits("rate_limits", a.GetRateLimits())
	if err != nil {
		return nil, err
	}
	//nolint:staticcheck // include_vh_rate_limits is deprecated but still honoured by Envoy.
	include := a.GetIncludeVhRateLimits().GetValue()
	if len(rls) == 0 && len(vh) == 0 {
		return nil, nil
	}
	return &filter.RateLimitPolicy{Route: rls, VirtualHost: vh, IncludeVirtualHost: include}, nil
}

// buildRateLimits compiles rate_limits (envoy.config.route.v3.RateLimit) at
// path: the actions this version implements, refusing the others by field.
func buildRateLimits(path string, rls []*routev3.RateLimit) ([]filter.RateLimit, error) {
	var out []filter.RateLimit
	for i, rl := range rls {
		p := idx(path, i)
		r := filter.RateLimit{Stage: rl.GetStage().GetValue()}
		switch {
		case r.Stage > maxRateLimitStage:
			return nil, verr(p+".stage", strconv.FormatUint(uint64(r.Stage), 10), "must be 0-10")
		case rl.GetLimit() != nil:
			return nil, ferr(p+".limit", "not supported")
		case rl.GetHitsAddend() != nil:
			return nil, ferr(p+".hits_addend", "not supported")
		case rl.GetApplyOnStreamDone():
			return nil, ferr(p+".apply_on_stream_done", "not supported")
		case rl.GetXRatelimitOption() != routev3.RateLimit_UNSPECIFIED:
			return nil, verr(p+".x_ratelimit_option", rl.GetXRatelimitOption().String(), "not supported (must be UNSPECIFIED)")
		case len(rl.GetActions()) == 0:
			return nil, ferr(p+".actions", "must not be empty")
		}
		// disable_key names a runtime key; this proxy has no runtime, so
		// the rate limit is always enabled, as Envoy's default.
		for j, a := range rl.GetActions() {
			act, err := buildRateLimitAction(a)
			if err != nil {
				return nil, under(idx(p+".actions", j), err)
			}
			r.Actions = append(r.Actions, act)
		}
		out = append(out, r)
	}
	return out, nil
}

func buildRateLimitAction(a *routev3.RateLimit_Action) (filter.RateLimitAction, error) {
	var act filter.RateLimitAction
	switch s := a.GetActionSpecifier().(type) {
	case *routev3.RateLimit_Action_SourceCluster_:
		act.Kind = filter.ActionSourceCluster
	case *routev3.RateLimit_Action_DestinationCluster_:
		act.Kind = filter.ActionDestinationCluster
	case *routev3.RateLimit_Action_RemoteAddress_:
		act.Kind = filter.ActionRemoteAddress
	case *routev3.RateLimit_Action_RequestHeaders_:
		rh := s.RequestHeaders
		act.Kind, act.Key, act.SkipIfAbsent = filter.ActionRequestHeaders, rh.GetDescriptorKey(), rh.GetSkipIfAbsent()
		if act.Key == "" {
			return act, ferr("request_headers.descriptor_key", "must not be empty")
		}
		name, err := actionHeaderName(rh.GetHeaderName())
		if err != nil {
			return act, under("request_headers", err)
		}
		act.Name = name
	case *routev3.RateLimit_Action_QueryParameters_:
		qp := s.QueryParameters
		act.Kind, act.Key, act.Name, act.SkipIfAbsent = filter.ActionQueryParameters, qp.GetDescriptorKey(), qp.GetQueryParameterName(), qp.GetSkipIfAbsent()
		if act.Name == "" {
			return act, ferr("query_parameters.query_parameter_name", "must not be empty")
		}
		if act.Key == "" {
			return act, ferr("query_parameters.descriptor_key", "must not be empty")
		}
	case *routev3.RateLimit_Action_GenericKey_:
		gk := s.GenericKey
		act.Kind, act.Key, act.Value = filter.ActionGenericKey, gk.GetDescriptorKey(), gk.GetDescriptorValue()
		if act.Key == "" {
			act.Key = "generic_key"
		}
		if act.Value == "" {
			return act, ferr("generic_key.descriptor_value", "must not be empty")
		}
	case *routev3.RateLimit_Action_HeaderValueMatch_:
		hv := s.HeaderValueMatch
		act.Kind, act.Key, act.Value = filter.ActionHeaderValueMatch, hv.GetDescriptorKey(), hv.GetDescriptorValue()
		act.ExpectMatch = hv.GetExpectMatch() == nil || hv.GetExpectMatch().GetValue()
		if act.Key == "" {
			act.Key = "header_match"
		}
		if act.Value == "" {
			return act, ferr("header_value_match.descriptor_value", "must not be empty")
		}
		if len(hv.GetHeaders()) == 0 {
			return act, ferr("header_value_match.headers", "must not be empty")
		}
		ms := make([]HeaderMatcher, 0, len(hv.GetHeaders()))
		for i, h := range hv.GetHeaders() {
			m, err := buildHeaderMatcher(h)
			if err != nil {
				return act, under(idx("header_value_match.headers", i), err)
			}
			ms = append(ms, m)
		}
		act.Match = func(r *http.Request) bool {
			for i := range ms {
				if !ms[i].matches(r) {
					return false
				}
			}
			return true
		}
	case *routev3.RateLimit_Action_QueryParameterValueMatch_:
		qv := s.QueryParameterValueMatch
		act.Kind, act.Key, act.Value = filter.ActionQueryParameterValueMatch, qv.GetDescriptorKey(), qv.GetDescriptorValue()
		act.ExpectMatch = qv.GetExpectMatch() == nil || qv.GetExpectMatch().GetValue()
		if act.Key == "" {
			act.Key = "query_match"
		}
		if act.Value == "" {
			return act, ferr("query_parameter_value_match.descriptor_value", "must not be empty")
		}
		if len(qv.GetQueryParameters()) == 0 {
			return act, ferr("query_parameter_value_match.query_parameters", "must not be empty")
		}
		ms := make([]QueryMatcher, 0, len(qv.GetQueryParameters()))
		for i, q := range qv.GetQueryParameters() {
			m, err := buildQueryMatcher(q)
			if err != nil {
				return act, under(idx("query_parameter_value_match.query_parameters", i), err)
			}
			ms = append(ms, m)
		}
		act.Match = func(r *http.Request) bool {
			for i := range ms {
				if !ms[i].matches(r.URL.RawQuery) {
					return false
				}
			}
			return true
		}
	case *routev3.RateLimit_Action_MaskedRemoteAddress_:
		mr := s.MaskedRemoteAddress
		act.Kind, act.V4Mask, act.V6Mask = filter.ActionMaskedRemoteAddress, 32, 128
		if v := mr.GetV4PrefixMaskLen(); v != nil {
			if v.GetValue() > 32 {
				return act, verr("masked_remote_address.v4_prefix_mask_len", strconv.FormatUint(uint64(v.GetValue()), 10), "must be 0-32")
			}
			act.V4Mask = int(v.GetValue())
		}
		if v := mr.GetV6PrefixMaskLen(); v != nil {
			if v.GetValue() > 128 {
				return act, verr("masked_remote_address.v6_prefix_mask_len", strconv.FormatUint(uint64(v.GetValue()), 10), "must be 0-128")
			}
			act.V6Mask = int(v.GetValue())
		}
	case *routev3.RateLimit_Action_DynamicMetadata:
		return act, ferr("dynamic_metadata", "not supported")
	case *routev3.RateLimit_Action_Metadata:
		return act, ferr("metadata", "not supported")
	case *routev3.RateLimit_Action_Extension:
		return act, ferr("extension", "not supported")
	case *routev3.RateLimit_Action_RemoteAddressMatch_:
		return act, ferr("remote_address_match", "not supported")
	default:
		return act, ferr("action_specifier", "must be set")
	}
	return act, nil
}

// actionHeaderName is request_headers' header_name as the action reads it:
// canonical, or one of the request-line pseudo-headers ("host" is
// ":authority").
func actionHeaderName(n string) (string, error) {
	l := strings.ToLower(n)
	switch {
	case l == "":
		return "", ferr("header_name", "must not be empty")
	case l == "host" || l == ":authority":
		return ":authority", nil
	case l == ":path", l == ":method", l == ":scheme":
		return l, nil
	case strings.HasPrefix(l, ":"):
		return "", verr("header_name", n, "must be a header or :authority, :method, :path or :scheme")
	}
	return http.CanonicalHeaderKey(l), nil
}
