package localratelimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock               { return &fakeClock{t: time.Unix(1000, 0)} }
func takeN(b *bucket, n int) (got int) {
	for range n {
		if ok, _ := b.take(); ok {
			got++
		}
	}
	return got
}

// TestBucket: the bucket starts full, refills tokens_per_fill per whole
// fill_interval elapsed (never above max_tokens) and reports the wait to
// the next fill.
func TestBucket(t *testing.T) {
	type step struct {
		advance time.Duration
		take    int // requests
		want    int // allowed
	}
	tests := []struct {
		name  string
		tb    TokenBucket
		steps []step
	}{
		{"istio task: 4 per 60s", TokenBucket{4, 4, time.Minute}, []step{
			{0, 10, 4}, {59 * time.Second, 1, 0}, {time.Second, 10, 4}, {30 * time.Second, 1, 0},
		}},
		{"partial fills add up", TokenBucket{10, 2, time.Second}, []step{
			{0, 10, 10}, {time.Second, 5, 2}, {2500 * time.Millisecond, 5, 4}, {500 * time.Millisecond, 5, 2},
		}},
		{"capped at max_tokens", TokenBucket{3, 2, time.Second}, []step{
			{0, 1, 1}, {time.Hour, 10, 3},
		}},
		{"one token per fill by default", TokenBucket{1, 1, 100 * time.Millisecond}, []step{
			{0, 3, 1}, {99 * time.Millisecond, 1, 0}, {time.Millisecond, 3, 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			b := newBucket(tt.tb, clk.now)
			for i, s := range tt.steps {
				clk.advance(s.advance)
				if got := takeN(b, s.take); got != s.want {
					t.Fatalf("step %d: %d of %d allowed, want %d", i, got, s.take, s.want)
				}
			}
		})
	}
}

func TestBucketWait(t *testing.T) {
	clk := newFakeClock()
	b := newBucket(TokenBucket{1, 1, 10 * time.Second}, clk.now)
	takeN(b, 1)
	clk.advance(3 * time.Second)
	ok, wait := b.take()
	if ok || wait != 7*time.Second {
		t.Fatalf("take() = %v, %v; want false, 7s", ok, wait)
	}
}

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func pct(n uint32) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{RuntimeKey: "k", DefaultValue: &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}}
}

// istioTask is the LocalRateLimit of Istio's local rate limit task.
func istioTask() *lrlv3.LocalRateLimit {
	return &lrlv3.LocalRateLimit{
		StatPrefix: "http_local_rate_limiter",
		TokenBucket: &typev3.TokenBucket{MaxTokens: 4, TokensPerFill: wrapperspb.UInt32(4),
			FillInterval: durationpb.New(60 * time.Second)},
		FilterEnabled:  pct(100),
		FilterEnforced: pct(100),
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "x-local-rate-limit", Value: "true"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		mod      func(m *lrlv3.LocalRateLimit)
		override bool
		want     *Config
		wantErr  string
	}{
		{name: "istio task", want: &Config{
			StatPrefix: "http_local_rate_limiter", Status: 429, Bucket: &TokenBucket{4, 4, time.Minute},
			Enabled: Fraction{100, 100}, Enforced: Fraction{100, 100},
			ResponseHeaders:      []Header{{Key: "X-Local-Rate-Limit", Value: "true", Action: filter.OverwriteIfExistsOrAdd}},
			AlwaysConsumeDefault: true, MaxDynamicDescriptors: 20,
		}},
		{name: "defaults: 0 % enabled, one token per fill, status below 400 is 429", mod: func(m *lrlv3.LocalRateLimit) {
			m.FilterEnabled, m.FilterEnforced, m.ResponseHeadersToAdd = nil, nil, nil
			m.TokenBucket.TokensPerFill = nil
			m.Status = &typev3.HttpStatus{Code: typev3.StatusCode_OK}
		}, want: &Config{StatPrefix: "http_local_rate_limiter", Status: 429, Bucket: &TokenBucket{4, 1, time.Minute},
			Enabled: Fraction{0, 100}, Enforced: Fraction{0, 100}, AlwaysConsumeDefault: true, MaxDynamicDescriptors: 20}},
		{name: "no token bucket at the HCM level limits nothing", mod: func(m *lrlv3.LocalRateLimit) {
			m.TokenBucket, m.ResponseHeadersToAdd = nil, nil
			m.Status = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
		}, want: &Config{StatPrefix: "http_local_rate_limiter", Status: 503, Enabled: Fraction{100, 100}, Enforced: Fraction{100, 100},
			AlwaysConsumeDefault: true, MaxDynamicDescriptors: 20}},
		{name: "override needs a token bucket", override: true, mod: func(m *lrlv3.LocalRateLimit) { m.TokenBucket = nil },
			wantErr: "token_bucket: must be set in a route or virtual host override"},
		{name: "stat_prefix", mod: func(m *lrlv3.LocalRateLimit) { m.StatPrefix = "" }, wantErr: "stat_prefix: must not be empty"},
		{name: "empty descriptor", mod: func(m *lrlv3.LocalRateLimit) {
			m.Descriptors = append(m.Descriptors, nil)
		}, wantErr: "descriptors[0].entries: must not be empty"},
		{name: "filter-level rate_limits", mod: func(m *lrlv3.LocalRateLimit) {
			m.RateLimits = append(m.RateLimits, &routev3.RateLimit{})
		}, wantErr: "rate_limits: not supported"},
		{name: "per connection", mod: func(m *lrlv3.LocalRateLimit) { m.LocalRateLimitPerDownstreamConnection = true },
			wantErr: "local_rate_limit_per_downstream_connection: not supported"},
		{name: "short fill interval", mod: func(m *lrlv3.LocalRateLimit) { m.TokenBucket.FillInterval = durationpb.New(time.Millisecond) },
			wantErr: `token_bucket.fill_interval = "1ms": must be at least 50ms`},
		{name: "max_tokens 0", mod: func(m *lrlv3.LocalRateLimit) { m.TokenBucket.MaxTokens = 0 },
			wantErr: "token_bucket.max_tokens = 0: must be greater than 0"},
		{name: "substitution", mod: func(m *lrlv3.LocalRateLimit) { m.ResponseHeadersToAdd[0].Header.Value = "%START_TIME%" },
			wantErr: `response_headers_to_add[0].header.value = "%START_TIME%": must be a literal`},
		{name: "host", mod: func(m *lrlv3.LocalRateLimit) { m.ResponseHeadersToAdd[0].Header.Key = "Host" },
			wantErr: `response_headers_to_add[0].header.key = "Host": must not be a pseudo-header or host`},
		{name: "pseudo-header", mod: func(m *lrlv3.LocalRateLimit) { m.ResponseHeadersToAdd[0].Header.Key = ":status" },
			wantErr: `response_headers_to_add[0].header.key = ":status": must not be a pseudo-header or host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := istioTask()
			if tt.mod != nil {
				tt.mod(m)
			}
			parse := Factory{}.Parse
			if tt.override {
				parse = Factory{}.ParseOverride
			}
			got, err := parse(anyOf(t, m))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(Config{})); diff != "" {
				t.Fatalf("config (-want +got):\n%s", diff)
			}
			if c := got.(*Config); (c.bucket != nil) != (c.Bucket != nil) {
				t.Fatalf("bucket state = %v for token_bucket %v", c.bucket, c.Bucket)
			}
		})
	}
}

// serve runs one request through f with state st and reports the status
// and whether next was reached.
func serve(f filter.Filter, st *filter.State, hdr http.Header) (*httptest.ResponseRecorder, bool) {
	r := httptest.NewRequest(http.MethodGet, "http://reviews/", nil)
	for k, v := range hdr {
		r.Header[k] = v
	}
	r = r.WithContext(filter.NewContext(context.Background(), st))
	w := httptest.NewRecorder()
	reached := false
	f.ServeHTTP(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = true
		w.WriteHeader(http.StatusOK)
	}))
	return w, reached
}

func build(t *testing.T, m *lrlv3.LocalRateLimit, override bool) (*Config, filter.Filter) {
	t.Helper()
	parse := Factory{}.Parse
	if override {
		parse = Factory{}.ParseOverride
	}
	cfg, err := parse(anyOf(t, m))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Factory{}.Build(cfg, filter.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.(*Config), f
}

// TestFilterIstioTask: 10 quick requests, 4 reach the router and 6 get
// 429 with x-envoy-ratelimited, the configured header, flag RL and details
// local_rate_limited.
func TestFilterIstioTask(t *testing.T) {
	_, f := build(t, istioTask(), false)
	var codes []int
	for range 10 {
		st := &filter.State{}
		w, reached := serve(f, st, nil)
		if reached {
			codes = append(codes, 200)
			if st.Flags != 0 || st.ReplyCode != 0 {
				t.Fatalf("allowed request has flags %v, reply %d", st.Flags, st.ReplyCode)
			}
			continue
		}
		codes = append(codes, w.Code)
		if st.Flags != filter.FlagRateLimited || st.Flags.String() != "RL" || st.ReplyCode != 429 || st.ReplyDetails != Details ||
			st.ReplyBytes != int64(len(Body)) {
			t.Fatalf("state = %+v, want RL 429 %s", st, Details)
		}
		if got := w.Header().Get("X-Envoy-Ratelimited"); got != "true" {
			t.Fatalf("x-envoy-ratelimited = %q, want true", got)
		}
		if got := w.Header().Values("X-Local-Rate-Limit"); !cmp.Equal(got, []string{"true"}) {
			t.Fatalf("x-local-rate-limit = %q, want [true]", got)
		}
		if w.Body.String() != Body {
			t.Fatalf("body = %q, want %q", w.Body.String(), Body)
		}
	}
	want := []int{200, 200, 200, 200, 429, 429, 429, 429, 429, 429}
	if diff := cmp.Diff(want, codes); diff != "" {
		t.Fatalf("codes (-want +got):\n%s", diff)
	}
}

// TestReplyHeadersAsEnvoy: response_headers_to_add of a rate limited reply
// follow Envoy's HeaderValueOption, as route headers do: "%%" is a percent
// sign, raw_value is the value, an empty value is dropped unless
// keep_empty_value, and OVERWRITE_IF_EXISTS adds nothing when the header
// is absent.
func TestReplyHeadersAsEnvoy(t *testing.T) {
	m := istioTask()
	m.TokenBucket.MaxTokens, m.TokenBucket.TokensPerFill = 1, wrapperspb.UInt32(1)
	m.ResponseHeadersToAdd = []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: "x-quota", Value: "100%% used"}},
		{Header: &corev3.HeaderValue{Key: "x-raw", RawValue: []byte("raw")}},
		{Header: &corev3.HeaderValue{Key: "x-dropped"}},
		{Header: &corev3.HeaderValue{Key: "x-kept"}, KeepEmptyValue: true},
		{Header: &corev3.HeaderValue{Key: "x-absent", Value: "v"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS},
	}
	_, f := build(t, m, false)
	if _, reached := serve(f, &filter.State{}, nil); !reached {
		t.Fatal("first request was limited")
	}
	w, reached := serve(f, &filter.State{}, nil)
	if reached || w.Code != 429 {
		t.Fatalf("second request: %d (reached %v), want 429", w.Code, reached)
	}
	h := w.Header()
	if got := h.Values("X-Quota"); !cmp.Equal(got, []string{"100% used"}) {
		t.Errorf("x-quota = %q, want [100%% used]", got)
	}
	if got := h.Values("X-Raw"); !cmp.Equal(got, []string{"raw"}) {
		t.Errorf("x-raw = %q, want [raw]", got)
	}
	if _, ok := h["X-Dropped"]; ok {
		t.Errorf("x-dropped = %q: an empty value without keep_empty_value must not be added", h["X-Dropped"])
	}
	if got, ok := h["X-Kept"]; !ok || !cmp.Equal(got, []string{""}) {
		t.Errorf("x-kept = %q (present %v), want one empty value", got, ok)
	}
	if _, ok := h["X-Absent"]; ok {
		t.Errorf("x-absent was added by OVERWRITE_IF_EXISTS")
	}
}

// TestFilterOverride: a route override has its own bucket and replaces the
// HCM-level config on its route; the HCM-level one without a bucket limits
// nothing.
func TestFilterOverride(t *testing.T) {
	base := istioTask()
	base.TokenBucket = nil
	_, f := build(t, base, false)
	ovm := istioTask()
	ovm.TokenBucket.MaxTokens = 2
	ovm.Status = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
	ov, _ := build(t, ovm, true)

	for i := range 5 {
		if _, reached := serve(f, &filter.State{}, nil); !reached {
			t.Fatalf("request %d without override was limited", i)
		}
	}
	var codes []int
	for range 4 {
		w, reached := serve(f, &filter.State{Override: ov}, nil)
		if reached {
			codes = append(codes, 200)
		} else {
			codes = append(codes, w.Code)
		}
	}
	if diff := cmp.Diff([]int{200, 200, 503, 503}, codes); diff != "" {
		t.Fatalf("codes (-want +got):\n%s", diff)
	}
}

// TestFilterNotEnforced: enabled but not enforced, an over-limit request
// goes on with request_headers_to_add_when_not_enforced; disabled, no
// token is taken.
func TestFilterNotEnforced(t *testing.T) {
	m := istioTask()
	m.TokenBucket.MaxTokens = 1
	m.FilterEnforced = pct(0)
	m.RequestHeadersToAddWhenNotEnforced = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-rl-shadow", Value: "1"}}}
	c, f := build(t, m, false)
	var seen []string
	for range 3 {
		r := httptest.NewRequest(http.MethodGet, "http://reviews/", nil)
		r = r.WithContext(filter.NewContext(context.Background(), &filter.State{}))
		f.ServeHTTP(httptest.NewRecorder(), r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = append(seen, r.Header.Get("X-Rl-Shadow"))
		}))
	}
	if diff := cmp.Diff([]string{"", "1", "1"}, seen); diff != "" {
		t.Fatalf("x-rl-shadow seen upstream (-want +got):\n%s", diff)
	}

	c.Enabled = Fraction{0, 100}
	c.bucket = newBucket(TokenBucket{1, 1, time.Hour}, time.Now)
	for i := range 3 {
		if _, reached := serve(f, &filter.State{}, nil); !reached {
			t.Fatalf("disabled filter limited request %d", i)
		}
	}
	if ok, _ := c.bucket.take(); !ok {
		t.Fatal("disabled filter took tokens")
	}
}

// TestFilterGRPC: a rate limited gRPC request gets HTTP 200 with
// grpc-status 14 (8 with rate_limited_as_resource_exhausted).
func TestFilterGRPC(t *testing.T) {
	for _, re := range []bool{false, true} {
		m := istioTask()
		m.TokenBucket.MaxTokens = 1
		m.RateLimitedAsResourceExhausted = re
		_, f := build(t, m, false)
		hdr := http.Header{"Content-Type": {"application/grpc"}}
		serve(f, &filter.State{}, hdr)
		w, reached := serve(f, &filter.State{}, hdr)
		want := "14"
		if re {
			want = "8"
		}
		if reached || w.Code != 200 || w.Header().Get("Grpc-Status") != want {
			t.Fatalf("resource_exhausted=%v: reached=%v code=%d grpc-status=%q, want 200 %s", re, reached, w.Code, w.Header().Get("Grpc-Status"), want)
		}
	}
}

func TestFlagsString(t *testing.T) {
	tests := []struct {
		f    filter.Flags
		want string
	}{
		{filter.FlagRateLimited, "RL"},
		{filter.FlagFaultInjected | filter.FlagRateLimited, "FI,RL"},
		{filter.FlagDelayInjected | filter.FlagFaultInjected | filter.FlagRateLimited, "DI,FI,RL"},
		{filter.FlagDelayInjected | filter.FlagFaultInjected, "DI,FI"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("Flags(%#x).String() = %q, want %q", uint8(tt.f), got, tt.want)
		}
	}
}

// policyState is a request state whose route has one rate limit per
// action list (stage 0).
func policyState(actions ...[]filter.RateLimitAction) *filter.State {
	p := &filter.RateLimitPolicy{}
	for _, a := range actions {
		p.Route = append(p.Route, filter.RateLimit{Actions: a})
	}
	return &filter.State{Route: &filter.RouteInfo{Name: "r", Cluster: "c", ClusterExists: true, RateLimits: p}}
}

func genericKey(k, v string) filter.RateLimitAction {
	return filter.RateLimitAction{Kind: filter.ActionGenericKey, Key: k, Value: v}
}

func userHeader() filter.RateLimitAction {
	return filter.RateLimitAction{Kind: filter.ActionRequestHeaders, Key: "user", Name: "X-User"}
}

func descriptor(max uint32, fill time.Duration, entries ...*ratelimitcommonv3.RateLimitDescriptor_Entry) *ratelimitcommonv3.LocalRateLimitDescriptor {
	return &ratelimitcommonv3.LocalRateLimitDescriptor{Entries: entries,
		TokenBucket: &typev3.TokenBucket{MaxTokens: max, TokensPerFill: wrapperspb.UInt32(max), FillInterval: durationpb.New(fill)}}
}

func entry(k, v string) *ratelimitcommonv3.RateLimitDescriptor_Entry {
	return &ratelimitcommonv3.RateLimitDescriptor_Entry{Key: k, Value: v}
}

// TestDescriptors: a request whose route's actions make a configured
// descriptor takes from that descriptor's bucket; a descriptor entry
// without a value gives each value its own bucket, at most
// max_dynamic_descriptors of them; without a match the default bucket
// applies, and with always_consume_default_token_bucket false only then.
func TestDescriptors(t *testing.T) {
	m := istioTask()
	m.TokenBucket.MaxTokens = 3 // the default bucket
	m.AlwaysConsumeDefaultTokenBucket = wrapperspb.Bool(false)
	m.MaxDynamicDescriptors = wrapperspb.UInt32(2)
	m.Descriptors = []*ratelimitcommonv3.LocalRateLimitDescriptor{
		descriptor(2, time.Minute, entry("limit", "a")),
		descriptor(1, time.Minute, entry("limit", "per-user"), entry("user", "")),
	}
	_, f := build(t, m, false)
	run := func(n int, st func() *filter.State, hdr http.Header) (passed int) {
		for range n {
			if _, ok := serve(f, st(), hdr); ok {
				passed++
			}
		}
		return passed
	}
	limitA := func() *filter.State { return policyState([]filter.RateLimitAction{genericKey("limit", "a")}) }
	perUser := func() *filter.State {
		return policyState([]filter.RateLimitAction{genericKey("limit", "per-user"), userHeader()})
	}
	if got := run(5, limitA, nil); got != 2 {
		t.Fatalf("descriptor limit=a: %d of 5 passed, want 2", got)
	}
	for _, u := range []string{"ann", "bob"} {
		if got := run(3, perUser, http.Header{"X-User": {u}}); got != 1 {
			t.Fatalf("user %s: %d of 3 passed, want 1 (a bucket per value)", u, got)
		}
	}
	// A third user pushes ann's bucket out (2 kept): ann starts afresh.
	run(1, perUser, http.Header{"X-User": {"carl"}})
	if got := run(2, perUser, http.Header{"X-User": {"ann"}}); got != 1 {
		t.Fatalf("ann after eviction: %d of 2 passed, want 1", got)
	}
	// No header: the per-user descriptor is not made; the default bucket
	// (3) applies, untouched so far since every request above matched.
	if got := run(5, perUser, nil); got != 3 {
		t.Fatalf("without x-user: %d of 5 passed, want the default bucket's 3", got)
	}
}

// TestDescriptorsStageAndShadow: rate limits of another stage make no
// descriptor; a shadow descriptor never refuses; matched descriptors take
// from the default bucket too when always_consume_default_token_bucket is
// true (the default).
func TestDescriptorsStageAndShadow(t *testing.T) {
	m := istioTask()
	m.TokenBucket.MaxTokens = 2
	m.Stage = 1
	sh := descriptor(1, time.Minute, entry("k", "shadow"))
	sh.ShadowMode = true
	m.Descriptors = []*ratelimitcommonv3.LocalRateLimitDescriptor{sh, descriptor(100, time.Minute, entry("k", "v"))}
	_, f := build(t, m, false)
	st := func(stage uint32, v string) *filter.State {
		s := policyState([]filter.RateLimitAction{genericKey("k", v)})
		s.Route.RateLimits.Route[0].Stage = stage
		return s
	}
	for i := range 3 {
		if _, ok := serve(f, st(1, "shadow"), nil); !ok && i < 2 {
			t.Fatalf("shadow request %d refused", i+1)
		}
	}
	// The shadow requests took the default bucket's 2 tokens.
	if _, ok := serve(f, st(1, "v"), nil); ok {
		t.Fatal("a matched request passed with the default bucket empty (always_consume_default_token_bucket)")
	}
	if _, ok := serve(f, st(0, "v"), nil); ok {
		t.Fatal("a stage-0 request passed with the default bucket empty")
	}
}
