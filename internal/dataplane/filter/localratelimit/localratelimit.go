package localratelimit

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// Name is the filter's Envoy name, the key of its typed_per_filter_config.
const Name = "envoy.filters.http.local_ratelimit"

// TypeURL is the type URL of LocalRateLimit.
const TypeURL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

// Body and Details are the body and %RESPONSE_CODE_DETAILS% of the local
// reply to a rate limited request, as Envoy's.
const (
	Body    = "local_rate_limited"
	Details = "local_rate_limited"
)

// minFillInterval is Envoy's lower bound on token_bucket.fill_interval.
const minFillInterval = 50 * time.Millisecond

// Fraction is the default_value of a RuntimeFractionalPercent: Numerator
// out of Denominator (100, 10000 or 1000000). Runtime keys are ignored:
// this proxy has no runtime.
type Fraction struct {
	Numerator   uint32
	Denominator uint32
}

func (f Fraction) sample() bool {
	if f.Numerator >= f.Denominator {
		return true
	}
	if f.Numerator == 0 {
		return false
	}
	return rand.Uint32N(f.Denominator) < f.Numerator
}

// Header is one HeaderValueOption of response_headers_to_add or
// request_headers_to_add_when_not_enforced: a literal value.
type Header = filter.HeaderOption

// Config is a parsed LocalRateLimit. A nil Bucket (no token_bucket) limits
// nothing at this level: Envoy allows an HCM-level config without one so
// that only routes' overrides limit. Config is immutable except for the
// state of its bucket, which every request using it shares.
type Config struct {
	StatPrefix string
	// Status is the local reply's status: status.code, 429 by default or
	// when below 400 (Envoy's rule).
	Status int
	Bucket *TokenBucket
	// Enabled and Enforced are filter_enabled and filter_enforced; unset
	// is 0 %, Envoy's default "for safety".
	Enabled, Enforced Fraction
	ResponseHeaders   []Header // response_headers_to_add, on rate limited replies
	// RequestHeaders are request_headers_to_add_when_not_enforced: added
	// to a request that is over the limit but not enforced.
	RequestHeaders []Header
	// RetryAfter is enable_retry_after_header.
	RetryAfter bool
	// ResourceExhausted is rate_limited_as_resource_exhausted: gRPC
	// requests get grpc-status 8 instead of 14.
	ResourceExhausted bool
	// Descriptors are the descriptors' own buckets, strictest (fewest
	// tokens per second) first, as Envoy consumes them. A request's
	// descriptors come from its route's rate limits of Stage, with the
	// virtual host's per VHRateLimits.
	Descriptors  []Descriptor
	Stage        uint32 // 0-10
	VHRateLimits filter.VHRateLimits
	// AlwaysConsumeDefault is always_consume_default_token_bucket (true
	// by default): the default bucket is taken from even when a
	// descriptor matched; false takes it only when none did.
	AlwaysConsumeDefault bool
	// MaxDynamicDescriptors bounds the buckets each wildcard descriptor
	// keeps, least recently used out first (max_dynamic_descriptors,
	// 20 by default).
	MaxDynamicDescriptors uint32

	bucket *bucket // nil when Bucket is nil
}

// Descriptor is one LocalRateLimitDescriptor
// (envoy.extensions.common.ratelimit.v3.LocalRateLimitDescriptor): a
// request descriptor with the same keys and values gets Bucket. An entry
// whose Value is "" is a wildcard: it matches any value, and each distinct
// value gets a bucket of its own (Envoy's dynamic descriptors).
type Descriptor struct {
	Entries []filter.DescriptorEntry
	Bucket  TokenBucket
	// ShadowMode takes tokens but never limits (shadow_mode).
	ShadowMode bool

	wildcard bool
	bucket   *bucket         // when not wildcard
	dynamic  *dynamicBuckets // when wildcard
}

// Factory is the filter.Factory of the local rate limit filter.
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// TypeURLs implements filter.Factory.
func (Factory) TypeURLs() []string { return []string{TypeURL} }

// Parse implements filter.Factory; nil cfg is refused, as Envoy refuses a
// LocalRateLimit without stat_prefix.
func (Factory) Parse(cfg *anypb.Any) (filter.Config, error) {
	if cfg == nil {
		return nil, errors.New("typed_config: must be set (stat_prefix is required)")
	}
	return parse(cfg, false)
}

// ParseOverride implements filter.Factory: an override is a whole
// LocalRateLimit with its own token bucket, shared by the routes it is
// attached to (its route, or every route of its virtual host).
func (Factory) ParseOverride(cfg *anypb.Any) (filter.Config, error) { return parse(cfg, true) }

// Build implements filter.Factory. The HCM-level bucket is made here, so
// it is shared by every connection of the listener's chain; it starts full
// with each new generation.
func (Factory) Build(cfg filter.Config, deps filter.Deps) (filter.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("local_ratelimit: config is %T, want *localratelimit.Config", cfg)
	}
	return &rateLimitFilter{base: c, serviceCluster: deps.ServiceCluster}, nil
}

func parse(a *anypb.Any, override bool) (*Config, error) {
	if a.GetTypeUrl() != TypeURL {
		return nil, fmt.Errorf("type_url %q: must be %s", a.GetTypeUrl(), TypeURL)
	}
	var m lrlv3.LocalRateLimit
	if err := a.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("decode LocalRateLimit: %w", err)
	}
	c, err := fromProto(&m, override)
	if err != nil {
		return nil, err
	}
	c.init(time.Now)
	return c, nil
}

// init makes c's bucket state: the default bucket and each descriptor's.
func (c *Config) init(now func() time.Time) {
	if c.Bucket != nil {
		c.bucket = newBucket(*c.Bucket, now)
	}
	for i := range c.Descriptors {
		d := &c.Descriptors[i]
		if d.wildcard {
			d.dynamic = newDynamicBuckets(d.Bucket, int(c.MaxDynamicDescriptors), now)
		} else {
			d.bucket = newBucket(d.Bucket, now)
		}
	}
}

func fromProto(m *lrlv3.LocalRateLimit, override bool) (*Config, error) {
	switch {
	case m.GetStatPrefix() == "":
		return nil, errors.New("stat_prefix: must not be empty")
	case len(m.GetRateLimits()) > 0:
		return nil, errors.New("rate_limits: not supported (set rate_limits on the route or virtual host)")
	case m.GetStage() > 10:
		return nil, fmt.Errorf("stage = %d: must be 0-10", m.GetStage())
	case m.GetLocalRateLimitPerDownstreamConnection():
		return nil, errors.New("local_rate_limit_per_downstream_connection: not supported")
	case m.GetLocalClusterRateLimit() != nil:
		return nil, errors.New("local_cluster_rate_limit: not supported")
	case m.GetEnableXRatelimitHeaders() != ratelimitcommonv3.XRateLimitHeadersRFCVersion_OFF:
		return nil, fmt.Errorf("enable_x_ratelimit_headers = %s: not supported (must be OFF)", m.GetEnableXRatelimitHeaders())
	}
	c := &Config{
		StatPrefix:            m.GetStatPrefix(),
		Status:                http.StatusTooManyRequests,
		RetryAfter:            m.GetEnableRetryAfterHeader(),
		ResourceExhausted:     m.GetRateLimitedAsResourceExhausted(),
		Stage:                 m.GetStage(),
		AlwaysConsumeDefault:  true,
		MaxDynamicDescriptors: defaultMaxDynamicDescriptors,
	}
	vh, ok := filter.VHRateLimitsOf(int32(m.GetVhRateLimits()))
	if !ok {
		return nil, fmt.Errorf("vh_rate_limits = %s: must be OVERRIDE, INCLUDE or IGNORE", m.GetVhRateLimits())
	}
	c.VHRateLimits = vh
	if v := m.GetAlwaysConsumeDefaultTokenBucket(); v != nil {
		c.AlwaysConsumeDefault = v.GetValue()
	}
	if v := m.GetMaxDynamicDescriptors(); v != nil {
		if v.GetValue() < 1 {
			return nil, errors.New("max_dynamic_descriptors = 0: must be at least 1")
		}
		c.MaxDynamicDescriptors = v.GetValue()
	}
	ds, err := descriptors(m.GetDescriptors())
	if err != nil {
		return nil, err
	}
	c.Descriptors = ds
	if s := m.GetStatus(); s != nil && s.GetCode() >= 400 {
		if s.GetCode() > 599 {
			return nil, fmt.Errorf("status.code = %d: must be 400-599", s.GetCode())
		}
		c.Status = int(s.GetCode())
	}
	if tb := m.GetTokenBucket(); tb != nil {
		b, err := tokenBucket(tb)
		if err != nil {
			return nil, err
		}
		c.Bucket = b
	} else if override {
		return nil, errors.New("token_bucket: must be set in a route or virtual host override")
	}
	if c.Enabled, err = fraction("filter_enabled", m.GetFilterEnabled()); err != nil {
		return nil, err
	}
	if c.Enforced, err = fraction("filter_enforced", m.GetFilterEnforced()); err != nil {
		return nil, err
	}
	if c.ResponseHeaders, err = filter.ParseHeaderOptions("response_headers_to_add", m.GetResponseHeadersToAdd()); err != nil {
		return nil, err
	}
	if c.RequestHeaders, err = filter.ParseHeaderOptions("request_headers_to_add_when_not_enforced", m.GetRequestHeadersToAddWhenNotEnforced()); err != nil {
		return nil, err
	}
	return c, nil
}

func tokenBucket(tb *typev3.TokenBucket) (*TokenBucket, error) {
	if tb.GetMaxTokens() == 0 {
		return nil, errors.New("token_bucket.max_tokens = 0: must be greater than 0")
	}
	b := &TokenBucket{MaxTokens: tb.GetMaxTokens(), TokensPerFill: 1}
	if v := tb.GetTokensPerFill(); v != nil {
		if v.GetValue() == 0 {
			return nil, errors.New("token_bucket.tokens_per_fill = 0: must be greater than 0")
		}
		b.TokensPerFill = v.GetValue()
	}
	fi := tb.GetFillInterval()
	if fi == nil {
		return nil, errors.New("token_bucket.fill_interval: must be set")
	}
	if err := fi.CheckValid(); err != nil {
		return nil, fmt.Errorf("token_bucket.fill_interval: %v", err)
	}
	if d := fi.AsDuration(); d < minFillInterval {
		return nil, fmt.Errorf("token_bucket.fill_interval = %q: must be at least 50ms", d)
	}
	b.FillInterval = fi.AsDuration()
	return b, nil
}

// fraction reads a RuntimeFractionalPercent's default_value; unset is 0 %.
func fraction(path string, p *corev3.RuntimeFractionalPercent) (Fraction, error) {
	dv := p.GetDefaultValue()
	if dv == nil {
		return Fraction{Numerator: 0, Denominator: 100}, nil
	}
	var den uint32
	switch dv.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		den = 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	default:
		return Fraction{}, fmt.Errorf("%s.default_value.denominator = %q: must be HUNDRED, TEN_THOUSAND or MILLION", path, dv.GetDenominator())
	}
	// Envoy caps a numerator above the denominator at 100 %.
	return Fraction{Numerator: min(dv.GetNumerator(), den), Denominator: den}, nil
}

// rateLimitFilter applies its route's override, or else base.
type rateLimitFilter struct {
	base *Config
	// serviceCluster is the proxy's service cluster, which source_cluster
	// rate limit actions read.
	serviceCluster string
}

func (f *rateLimitFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	st := filter.StateFrom(r)
	c := f.base
	if st != nil && st.Override != nil {
		c = st.Override.(*Config)
	}
	if (c.bucket == nil && len(c.Descriptors) == 0) || !c.Enabled.sample() {
		next.ServeHTTP(w, r)
		return
	}
	ok, wait := c.take(r, st, f.serviceCluster)
	if ok {
		next.ServeHTTP(w, r)
		return
	}
	if !c.Enforced.sample() {
		for _, h := range c.RequestHeaders {
			h.Apply(r.Header)
		}
		next.ServeHTTP(w, r)
		return
	}
	code, n := c.reply(w, r, wait)
	if st != nil {
		st.Flags |= filter.FlagRateLimited
		st.ReplyCode, st.ReplyDetails, st.ReplyBytes = code, Details, n
	}
}

// reply writes the local reply to a rate limited request and returns its
// status and body bytes. A gRPC request gets HTTP 200 with the
// grpc-status Envoy maps the status to (UNAVAILABLE, 14, for 429), or
// RESOURCE_EXHAUSTED (8) when so configured, as Envoy's local replies to
// gRPC.
func (c *Config) reply(w http.ResponseWriter, r *http.Request, wait time.Duration) (int, int64) {
	h := w.Header()
	h["X-Envoy-Ratelimited"] = []string{"true"}
	for _, hd := range c.ResponseHeaders {
		hd.Apply(h)
	}
	gs := -1
	if c.ResourceExhausted {
		gs = 8
	}
	if c.RetryAfter && c.Status == http.StatusTooManyRequests && h.Get("Retry-After") == "" && !filter.IsGRPC(r.Header) {
		secs := int64((wait + time.Second - 1) / time.Second)
		h["Retry-After"] = []string{strconv.FormatInt(max(secs, 1), 10)}
	}
	return filter.LocalReply(w, r, c.Status, gs, Body)
}
