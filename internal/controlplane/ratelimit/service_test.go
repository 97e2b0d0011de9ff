package ratelimit

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock for the services of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// startService runs a Service with cfg against redisAddr and returns a
// client of it over a real gRPC connection; both stop at cleanup.
func startService(t *testing.T, redisAddr string, cfg *Config, clk *clock) rlsv3.RateLimitServiceClient {
	t.Helper()
	s, err := New(Options{Addr: "127.0.0.1:0", Redis: redisAddr, Now: clk.now, KeyPrefix: t.Name() + ":"})
	if err != nil {
		t.Fatal(err)
	}
	s.SetConfig(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	cc, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return rlsv3.NewRateLimitServiceClient(cc)
}

const testConfig = `
domain: test
descriptors:
  - key: path
    value: /three
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    value: /five
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: path
    value: /shadow
    rate_limit: {unit: second, requests_per_unit: 1}
    shadow_mode: true
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: free
    rate_limit: {unlimited: true}
  - key: tier
    value: generic
    rate_limit: {unit: minute, requests_per_unit: 1, name: generic}
  - key: tier
    value: gold
    rate_limit: {unit: minute, requests_per_unit: 4, replaces: [{name: generic}]}
`

func call(t *testing.T, c rlsv3.RateLimitServiceClient, req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.ShouldRateLimit(ctx, req)
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp
}

func req(ds ...*ratelimitcommonv3.RateLimitDescriptor) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "test", Descriptors: ds}
}

// TestFixedWindow: a limit of 3 per minute lets 3 requests through in a
// window, reports what remains and when the window ends, and starts over
// in the next window.
func TestFixedWindow(t *testing.T) {
	rd := testutil.StartRedis(t)
	clk := &clock{t: time.Unix(1_700_000_020, 0)} // 40 s into a minute
	c := startService(t, rd.Addr, mustConfig(t, testConfig), clk)
	var codes []rlsv3.RateLimitResponse_Code
	var remaining []uint32
	for range 5 {
		resp := call(t, c, req(desc("path=/three")))
		codes = append(codes, resp.GetOverallCode())
		st := resp.GetStatuses()[0]
		remaining = append(remaining, st.GetLimitRemaining())
		if got := st.GetDurationUntilReset().AsDuration(); got != 20*time.Second {
			t.Fatalf("duration_until_reset = %v, want 20s", got)
		}
		if st.GetCurrentLimit().GetRequestsPerUnit() != 3 || st.GetCurrentLimit().GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE {
			t.Fatalf("current_limit = %v", st.GetCurrentLimit())
		}
	}
	ok, over := rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT
	if diff := cmp.Diff([]rlsv3.RateLimitResponse_Code{ok, ok, ok, over, over}, codes); diff != "" {
		t.Errorf("codes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint32{2, 1, 0, 0, 0}, remaining); diff != "" {
		t.Errorf("limit_remaining (-want +got):\n%s", diff)
	}
	clk.advance(20 * time.Second) // the next minute
	if got := call(t, c, req(desc("path=/three"))).GetOverallCode(); got != ok {
		t.Errorf("first request of the next window: %v, want OK", got)
	}
}

// TestSharedAcrossReplicas: two service instances on one Redis count
// together: 10 requests alternating between them, 5 pass.
func TestSharedAcrossReplicas(t *testing.T) {
	rd := testutil.StartRedis(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	cfg := mustConfig(t, testConfig)
	a, b := startService(t, rd.Addr, cfg, clk), startService(t, rd.Addr, cfg, clk)
	passed := 0
	for i := range 10 {
		c := a
		if i%2 == 1 {
			c = b
		}
		if call(t, c, req(desc("path=/five"))).GetOverallCode() == rlsv3.RateLimitResponse_OK {
			passed++
		}
	}
	if passed != 5 {
		t.Fatalf("%d of 10 requests passed through two replicas, want 5", passed)
	}
}

// TestDescriptorSemantics: per-value counters for a key-only entry,
// hits_addend, shadow mode, unlimited, replaces, and a refused request
// taking nothing from its other descriptors' quota.
func TestDescriptorSemantics(t *testing.T) {
	rd := testutil.StartRedis(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c := startService(t, rd.Addr, mustConfig(t, testConfig), clk)
	ok, over := rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT

	t.Run("each value of a key-only entry counts alone", func(t *testing.T) {
		for _, u := range []string{"ann", "bob"} {
			for i, want := range []rlsv3.RateLimitResponse_Code{ok, ok, over} {
				if got := call(t, c, req(desc("user="+u))).GetOverallCode(); got != want {
					t.Fatalf("%s request %d: %v, want %v", u, i+1, got, want)
				}
			}
		}
	})
	t.Run("hits_addend", func(t *testing.T) {
		r := req(desc("path=/five"))
		r.HitsAddend = 3
		if st := call(t, c, r).GetStatuses()[0]; st.GetCode() != ok || st.GetLimitRemaining() != 2 {
			t.Fatalf("first 3 hits: %v remaining %d, want OK 2", st.GetCode(), st.GetLimitRemaining())
		}
		d := desc("path=/five")
		d.HitsAddend = wrapperspb.UInt64(1) // the descriptor's own addend wins
		if st := call(t, c, req(d)).GetStatuses()[0]; st.GetCode() != ok || st.GetLimitRemaining() != 1 {
			t.Fatalf("1 more hit: %v remaining %d, want OK 1", st.GetCode(), st.GetLimitRemaining())
		}
		if got := call(t, c, r).GetOverallCode(); got != over {
			t.Fatalf("3 more hits: %v, want OVER_LIMIT", got)
		}
	})
	t.Run("shadow mode never refuses", func(t *testing.T) {
		for i := range 3 {
			if got := call(t, c, req(desc("path=/shadow"))).GetOverallCode(); got != ok {
				t.Fatalf("request %d: %v, want OK", i+1, got)
			}
		}
	})
	t.Run("unlimited", func(t *testing.T) {
		st := call(t, c, req(desc("free=x"))).GetStatuses()[0]
		if st.GetCode() != ok || st.GetLimitRemaining() != math.MaxUint32 {
			t.Fatalf("status %v remaining %d, want OK MaxUint32", st.GetCode(), st.GetLimitRemaining())
		}
	})
	t.Run("replaces", func(t *testing.T) {
		for i := range 4 {
			resp := call(t, c, req(desc("tier=generic"), desc("tier=gold")))
			if resp.GetOverallCode() != ok || resp.GetStatuses()[0].GetCurrentLimit() != nil {
				t.Fatalf("request %d: %v (generic status %v), want OK with generic replaced", i+1, resp.GetOverallCode(), resp.GetStatuses()[0])
			}
		}
		if got := call(t, c, req(desc("tier=generic"))).GetOverallCode(); got != ok {
			t.Fatalf("generic alone: %v, want OK (its counter was not used)", got)
		}
	})
	t.Run("a refused request takes nothing from its other limits", func(t *testing.T) {
		for range 3 {
			call(t, c, req(desc("path=/three"), desc("user=carl")))
		}
		// carl's 2 per hour went on the first two; the third request was
		// refused by user=carl and did not count on /three.
		if st := call(t, c, req(desc("path=/three"))).GetStatuses()[0]; st.GetCode() != ok || st.GetLimitRemaining() != 0 {
			t.Fatalf("/three after: %v remaining %d, want OK 0", st.GetCode(), st.GetLimitRemaining())
		}
	})
}

// TestRedisDown: with Redis stopped the service answers UNAVAILABLE, and
// counts again once it is back.
func TestRedisDown(t *testing.T) {
	rd := testutil.StartRedis(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c := startService(t, rd.Addr, mustConfig(t, testConfig), clk)
	call(t, c, req(desc("path=/three")))
	rd.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.ShouldRateLimit(ctx, req(desc("path=/three")))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("with Redis down: err %v, want UNAVAILABLE", err)
	}
	rd.Start()
	if got := call(t, c, req(desc("path=/three"))).GetOverallCode(); got != rlsv3.RateLimitResponse_OK {
		t.Fatalf("after Redis is back: %v, want OK", got)
	}
}

func TestRequestErrors(t *testing.T) {
	rd := testutil.StartRedis(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c := startService(t, rd.Addr, mustConfig(t, testConfig), clk)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range []*rlsv3.RateLimitRequest{{Descriptors: []*ratelimitcommonv3.RateLimitDescriptor{desc("a=b")}}, {Domain: "test"}} {
		if _, err := c.ShouldRateLimit(ctx, r); status.Code(err) != codes.InvalidArgument {
			t.Errorf("request %v: err %v, want INVALID_ARGUMENT", r, err)
		}
	}
	if got := call(t, c, &rlsv3.RateLimitRequest{Domain: "other", Descriptors: []*ratelimitcommonv3.RateLimitDescriptor{desc("a=b")}}).GetOverallCode(); got != rlsv3.RateLimitResponse_OK {
		t.Errorf("unknown domain: %v, want OK", got)
	}
}
