package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// Name is the filter's Envoy name, the key of its typed_per_filter_config.
const Name = "envoy.filters.http.ratelimit"

// Type URLs of the filter's config and of its per-route override.
const (
	TypeURL         = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
	PerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute"
)

// %RESPONSE_CODE_DETAILS% of the filter's local replies, as Envoy's.
const (
	DetailsRateLimited = "request_rate_limited"
	DetailsError       = "rate_limiter_error"
)

// DefaultTimeout is the rate limit service call's timeout when the config
// has none (Envoy's 20ms).
const DefaultTimeout = 20 * time.Millisecond

// MetadataNamespace is where the service's dynamic_metadata goes when the
// config names no metadata_namespace.
const MetadataNamespace = Name

// Config is a parsed RateLimit. It is immutable.
type Config struct {
	Domain string
	Stage  uint32 // 0-10
	// Internal and External say which requests the filter applies to
	// (request_type: "internal" is a request with x-envoy-internal: true;
	// "both", the default, sets both).
	Internal, External bool
	// Timeout bounds each call to the service; 0 leaves only the
	// request's own deadline.
	Timeout time.Duration
	// FailureModeDeny answers StatusOnError (with the flag RLSE) when the
	// service cannot be asked; false lets the request go on.
	FailureModeDeny bool
	// ResourceExhausted is rate_limited_as_resource_exhausted: a limited
	// gRPC request gets grpc-status 8 instead of 14.
	ResourceExhausted bool
	// Cluster is rate_limit_service.grpc_service.envoy_grpc.cluster_name.
	Cluster string
	// XRateLimitHeaders is enable_x_ratelimit_headers DRAFT_VERSION_03:
	// X-RateLimit-Limit, -Remaining and -Reset from the service's
	// descriptor statuses on every response.
	XRateLimitHeaders bool
	// NoXEnvoyRateLimited is disable_x_envoy_ratelimited_header.
	NoXEnvoyRateLimited bool
	// RateLimitedStatus is rate_limited_status (429 by default or below
	// 400); StatusOnError is status_on_error (500 by default).
	RateLimitedStatus, StatusOnError int
	// ResponseHeaders are response_headers_to_add, on rate limited
	// replies.
	ResponseHeaders []filter.HeaderOption
	// RetryAfter is enable_retry_after_header.
	RetryAfter bool
	// MetadataNamespace is where the service's dynamic_metadata goes.
	MetadataNamespace string
}

// PerRoute is a parsed RateLimitPerRoute: a route's or virtual host's
// typed_per_filter_config for the filter.
type PerRoute struct {
	// VHRateLimits is vh_rate_limits: whether the virtual host's rate
	// limits apply besides or instead of the route's.
	VHRateLimits filter.VHRateLimits
	// Domain, when not "", replaces the filter's domain.
	Domain string
}

// Factory is the filter.Factory of the rate limit filter.
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// TypeURLs implements filter.Factory. RateLimitPerRoute is the override's
// type; an HCM-level config of that type is refused by Parse.
func (Factory) TypeURLs() []string { return []string{TypeURL, PerRouteTypeURL} }

// Parse implements filter.Factory; nil cfg is refused, as Envoy requires
// domain and rate_limit_service.
func (Factory) Parse(cfg *anypb.Any) (filter.Config, error) {
	if cfg == nil {
		return nil, errors.New("typed_config: must be set (domain and rate_limit_service are required)")
	}
	if cfg.GetTypeUrl() != TypeURL {
		return nil, fmt.Errorf("type_url %q: must be %s", cfg.GetTypeUrl(), TypeURL)
	}
	var m rlv3.RateLimit
	if err := cfg.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode RateLimit: %w", err)
	}
	return fromProto(&m)
}

func fromProto(m *rlv3.RateLimit) (*Config, error) {
	c := &Config{
		Domain:              m.GetDomain(),
		Stage:               m.GetStage(),
		Internal:            true,
		External:            true,
		Timeout:             DefaultTimeout,
		FailureModeDeny:     m.GetFailureModeDeny(),
		ResourceExhausted:   m.GetRateLimitedAsResourceExhausted(),
		NoXEnvoyRateLimited: m.GetDisableXEnvoyRatelimitedHeader(),
		RateLimitedStatus:   http.StatusTooManyRequests,
		StatusOnError:       http.StatusInternalServerError,
		RetryAfter:          m.GetEnableRetryAfterHeader(),
		MetadataNamespace:   m.GetMetadataNamespace(),
	}
	if c.MetadataNamespace == "" {
		c.MetadataNamespace = MetadataNamespace
	}
	switch {
	case c.Domain == "":
		return nil, errors.New("domain: must not be empty")
	case c.Stage > 10:
		return nil, fmt.Errorf("stage = %d: must be 0-10", c.Stage)
	case len(m.GetRateLimits()) > 0:
		return nil, errors.New("rate_limits: not supported (set rate_limits on the route or virtual host)")
	case m.GetFilterEnabled() != nil, m.GetFilterEnforced() != nil, m.GetFailureModeDenyPercent() != nil:
		return nil, errors.New("filter_enabled, filter_enforced and failure_mode_deny_percent: not supported")
	}
	switch m.GetRequestType() {
	case "", "both":
	case "internal":
		c.External = false
	case "external":
		c.Internal = false
	default:
		return nil, fmt.Errorf("request_type = %q: must be internal, external or both", m.GetRequestType())
	}
	if t := m.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, fmt.Errorf("timeout = %q: must be a duration of at least 0", t.AsDuration())
		}
		c.Timeout = t.AsDuration()
	}
	var err error
	if c.Cluster, err = serviceCluster(m.GetRateLimitService()); err != nil {
		return nil, err
	}
	switch m.GetEnableXRatelimitHeaders() {
	case rlv3.RateLimit_OFF:
	case rlv3.RateLimit_DRAFT_VERSION_03:
		c.XRateLimitHeaders = true
	default:
		return nil, fmt.Errorf("enable_x_ratelimit_headers = %s: must be OFF or DRAFT_VERSION_03", m.GetEnableXRatelimitHeaders())
	}
	if s := m.GetRateLimitedStatus(); s != nil && s.GetCode() >= 400 {
		if s.GetCode() > 599 {
			return nil, fmt.Errorf("rate_limited_status.code = %d: must be 400-599", s.GetCode())
		}
		c.RateLimitedStatus = int(s.GetCode())
	}
	if s := m.GetStatusOnError(); s != nil {
		if s.GetCode() < 200 || s.GetCode() > 599 {
			return nil, fmt.Errorf("status_on_error.code = %d: must be 200-599", s.GetCode())
		}
		c.StatusOnError = int(s.GetCode())
	}
	if c.ResponseHeaders, err = filter.ParseHeaderOptions("response_headers_to_add", m.GetResponseHeadersToAdd()); err != nil {
		return nil, err
	}
	return c, nil
}

// serviceCluster validates rate_limit_service and returns its cluster.
func serviceCluster(s interface {
	GetGrpcService() *corev3.GrpcService
	GetTransportApiVersion() corev3.ApiVersion
}) (string, error) {
	const p = "rate_limit_service"
	gs := s.GetGrpcService()
	switch {
	case gs == nil:
		return "", errors.New(p + ".grpc_service: must be set")
	case s.GetTransportApiVersion() == corev3.ApiVersion_V2:
		return "", errors.New(p + ".transport_api_version = V2: must be V3")
	case gs.GetGoogleGrpc() != nil:
		return "", errors.New(p + ".grpc_service.google_grpc: not supported (use envoy_grpc)")
	case len(gs.GetInitialMetadata()) > 0 || gs.GetRetryPolicy() != nil:
		return "", errors.New(p + ".grpc_service: initial_metadata and retry_policy are not supported")
	}
	eg := gs.GetEnvoyGrpc()
	switch {
	case eg == nil:
		return "", errors.New(p + ".grpc_service.envoy_grpc: must be set")
	case eg.GetClusterName() == "":
		return "", errors.New(p + ".grpc_service.envoy_grpc.cluster_name: must not be empty")
	case eg.GetAuthority() != "" || eg.GetRetryPolicy() != nil:
		return "", errors.New(p + ".grpc_service.envoy_grpc: authority and retry_policy are not supported")
	}
	return eg.GetClusterName(), nil
}

// ParseOverride implements filter.Factory: a RateLimitPerRoute with
// vh_rate_limits and domain; its own rate_limits are refused.
func (Factory) ParseOverride(cfg *anypb.Any) (filter.Config, error) {
	if cfg.GetTypeUrl() != PerRouteTypeURL {
		return nil, fmt.Errorf("type_url %q: must be %s", cfg.GetTypeUrl(), PerRouteTypeURL)
	}
	var m rlv3.RateLimitPerRoute
	if err := cfg.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode RateLimitPerRoute: %w", err)
	}
	vh, ok := filter.VHRateLimitsOf(int32(m.GetVhRateLimits()))
	if !ok {
		return nil, fmt.Errorf("vh_rate_limits = %s: must be OVERRIDE, INCLUDE or IGNORE", m.GetVhRateLimits())
	}
	pr := &PerRoute{Domain: m.GetDomain(), VHRateLimits: vh}
	switch {
	case m.GetOverrideOption() != rlv3.RateLimitPerRoute_DEFAULT:
		return nil, fmt.Errorf("override_option = %s: not supported (must be DEFAULT)", m.GetOverrideOption())
	case len(m.GetRateLimits()) > 0:
		return nil, errors.New("rate_limits: not supported (set rate_limits on the route or virtual host)")
	}
	return pr, nil
}

// Build implements filter.Factory. The service's cluster must be in the
// generation, as Envoy refuses an unknown gRPC client cluster.
func (Factory) Build(cfg filter.Config, deps filter.Deps) (filter.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("ratelimit: config is %T, want *ratelimit.Config", cfg)
	}
	if deps.HasCluster == nil || !deps.HasCluster(c.Cluster) {
		return nil, fmt.Errorf("rate_limit_service.grpc_service.envoy_grpc.cluster_name = %q: must name a cluster of the config", c.Cluster)
	}
	return &rateLimitFilter{cfg: c, serviceCluster: deps.ServiceCluster}, nil
}

// errNoUpstreams is the call error of a request whose state has no way to
// reach a cluster (a filter run outside a connection manager).
var errNoUpstreams = errors.New("no upstreams to call the rate limit service")

// rateLimitFilter is one listener's rate limit filter.
type rateLimitFilter struct {
	cfg            *Config
	serviceCluster string
}

func (f *rateLimitFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	c := f.cfg
	st := filter.StateFrom(r)
	// Envoy's filter asks only for a forwarded request whose cluster
	// exists, of the configured request type.
	if st == nil || st.Route == nil || !st.Route.ClusterExists || !f.applies(r) {
		next.ServeHTTP(w, r)
		return
	}
	vh, domain := filter.VHRateLimitsOverride, c.Domain
	if pr, ok := st.Override.(*PerRoute); ok {
		vh = pr.VHRateLimits
		if pr.Domain != "" {
			domain = pr.Domain
		}
	}
	in := filter.DescriptorInput{ServiceCluster: f.serviceCluster, Cluster: st.Route.Cluster, XFF: st.XFF}
	descs := st.Route.RateLimits.Descriptors(nil, c.Stage, vh, r, &in)
	if len(descs) == 0 {
		next.ServeHTTP(w, r)
		return
	}
	resp, err := f.call(r.Context(), st.Upstreams, domain, descs)
	if r.Context().Err() != nil {
		return // the client left while the service was asked
	}
	if err != nil {
		if !c.FailureModeDeny {
			next.ServeHTTP(w, r)
			return
		}
		code, n := localReply(w, r, c.StatusOnError, nil, c.ResourceExhausted)
		st.Flags |= filter.FlagRateLimitServiceError
		st.ReplyCode, st.ReplyDetails, st.ReplyBytes = code, DetailsError, n
		return
	}
	if md := resp.GetDynamicMetadata(); md != nil {
		for k, v := range md.GetFields() {
			st.SetMetadata(c.MetadataNamespace, k, v.AsInterface())
		}
	}
	h := w.Header()
	for _, hv := range resp.GetResponseHeadersToAdd() {
		if k := hv.GetKey(); k != "" && !strings.HasPrefix(k, ":") {
			ck := http.CanonicalHeaderKey(k)
			h[ck] = append(h[ck], hv.GetValue())
		}
	}
	if c.XRateLimitHeaders {
		xRateLimitHeaders(h, resp.GetStatuses())
	}
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		for _, hv := range resp.GetRequestHeadersToAdd() {
			if k := hv.GetKey(); k != "" && !strings.HasPrefix(k, ":") {
				ck := http.CanonicalHeaderKey(k)
				r.Header[ck] = append(r.Header[ck], hv.GetValue())
			}
		}
		next.ServeHTTP(w, r)
		return
	}
	if !c.NoXEnvoyRateLimited {
		h["X-Envoy-Ratelimited"] = []string{"true"}
	}
	for _, hd := range c.ResponseHeaders {
		hd.Apply(h)
	}
	if c.RetryAfter && h.Get("Retry-After") == "" {
		if secs := retryAfter(resp.GetStatuses()); secs > 0 {
			h["Retry-After"] = []string{strconv.FormatInt(secs, 10)}
		}
	}
	code, n := localReply(w, r, c.RateLimitedStatus, resp.GetRawBody(), c.ResourceExhausted)
	st.Flags |= filter.FlagRateLimited
	st.ReplyCode, st.ReplyDetails, st.ReplyBytes = code, DetailsRateLimited, n
}

// applies says whether r is of the configured request type.
func (f *rateLimitFilter) applies(r *http.Request) bool {
	internal := r.Header.Get("X-Envoy-Internal") == "true"
	return (internal && f.cfg.Internal) || (!internal && f.cfg.External)
}

// call asks the service about descs within the configured timeout, over
// the cluster's long-lived gRPC connection (one per cluster, kept across
// generations by the proxy; :authority is the cluster's name, as Envoy's
// envoy_grpc default).
func (f *rateLimitFilter) call(ctx context.Context, ups filter.Upstreams, domain string, descs []filter.Descriptor) (*rlsv3.RateLimitResponse, error) {
	if ups == nil {
		return nil, errNoUpstreams
	}
	conn, err := ups.GRPC(f.cfg.Cluster, f.cfg.Cluster)
	if err != nil {
		return nil, err
	}
	if f.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.cfg.Timeout)
		defer cancel()
	}
	req := &rlsv3.RateLimitRequest{Domain: domain, Descriptors: make([]*ratelimitcommonv3.RateLimitDescriptor, len(descs))}
	for i, d := range descs {
		pd := &ratelimitcommonv3.RateLimitDescriptor{Entries: make([]*ratelimitcommonv3.RateLimitDescriptor_Entry, len(d.Entries))}
		for j, e := range d.Entries {
			pd.Entries[j] = &ratelimitcommonv3.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value}
		}
		req.Descriptors[i] = pd
	}
	return rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, req)
}

// xRateLimitHeaders adds the DRAFT_VERSION_03 headers of statuses to h, as
// Envoy's XRateLimitHeaderUtils: the status with a limit and the fewest
// requests remaining gives X-RateLimit-Remaining and -Reset, and
// X-RateLimit-Limit is its limit followed by each limit's quota policy
// ("10, 10;w=60, 100;w=3600;name=\"per-user\"").
func xRateLimitHeaders(h http.Header, statuses []*rlsv3.RateLimitResponse_DescriptorStatus) {
	var minSt *rlsv3.RateLimitResponse_DescriptorStatus
	var policy strings.Builder
	for _, s := range statuses {
		l := s.GetCurrentLimit()
		if l == nil {
			continue
		}
		if minSt == nil || s.GetLimitRemaining() < minSt.GetLimitRemaining() {
			minSt = s
		}
		if w := unitSeconds(l.GetUnit()); w > 0 {
			fmt.Fprintf(&policy, ", %d;w=%d", l.GetRequestsPerUnit(), w)
			if l.GetName() != "" {
				fmt.Fprintf(&policy, ";name=%q", l.GetName())
			}
		}
	}
	if minSt == nil {
		return
	}
	h["X-Ratelimit-Limit"] = []string{strconv.FormatUint(uint64(minSt.GetCurrentLimit().GetRequestsPerUnit()), 10) + policy.String()}
	h["X-Ratelimit-Remaining"] = []string{strconv.FormatUint(uint64(minSt.GetLimitRemaining()), 10)}
	h["X-Ratelimit-Reset"] = []string{strconv.FormatInt(minSt.GetDurationUntilReset().GetSeconds(), 10)}
}

// retryAfter is the largest duration_until_reset of the over-limit
// statuses in whole seconds, at least 1; 0 when none has one.
func retryAfter(statuses []*rlsv3.RateLimitResponse_DescriptorStatus) int64 {
	var d time.Duration
	found := false
	for _, s := range statuses {
		if s.GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT || s.GetDurationUntilReset() == nil {
			continue
		}
		found = true
		d = max(d, s.GetDurationUntilReset().AsDuration())
	}
	if !found {
		return 0
	}
	return max(int64((d+time.Second-1)/time.Second), 1)
}

// unitSeconds is a rate limit unit's window in seconds; 0 for UNKNOWN.
func unitSeconds(u rlsv3.RateLimitResponse_RateLimit_Unit) int64 {
	switch u {
	case rlsv3.RateLimitResponse_RateLimit_SECOND:
		return 1
	case rlsv3.RateLimitResponse_RateLimit_MINUTE:
		return 60
	case rlsv3.RateLimitResponse_RateLimit_HOUR:
		return 3600
	case rlsv3.RateLimitResponse_RateLimit_DAY:
		return 86400
	case rlsv3.RateLimitResponse_RateLimit_WEEK:
		return 7 * 86400
	case rlsv3.RateLimitResponse_RateLimit_MONTH:
		return 30 * 86400
	case rlsv3.RateLimitResponse_RateLimit_YEAR:
		return 365 * 86400
	}
	return 0
}

// localReply answers r with code and body and returns the status written
// and the body bytes. A gRPC request gets HTTP 200 with the grpc-status
// Envoy maps code to (429 is UNAVAILABLE, 14, or RESOURCE_EXHAUSTED, 8,
// when resourceExhausted), as Envoy's local replies to gRPC.
func localReply(w http.ResponseWriter, r *http.Request, code int, body []byte, resourceExhausted bool) (int, int64) {
	gs := -1
	if resourceExhausted && code == http.StatusTooManyRequests {
		gs = 8
	}
	return filter.LocalReply(w, r, code, gs, string(body))
}
