package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Options configure a Service.
type Options struct {
	// Addr is the gRPC listen address, "host:port". Required.
	Addr string
	// Redis is the Redis server's address, "host:port". Required.
	Redis string
	// KeyPrefix is prepended to every Redis key (envoyproxy/ratelimit's
	// CACHE_KEY_PREFIX); default none.
	KeyPrefix string
	// RedisTimeout bounds each Redis round trip. Default 1s.
	RedisTimeout time.Duration
	// Now is the clock; default time.Now. Tests move it.
	Now    func() time.Time
	Logger *slog.Logger
}

// Service is the rate limit service (envoy.service.ratelimit.v3
// RateLimitService) of envoyproxy/ratelimit's design: each descriptor of a
// request is matched against the configuration of its domain, and a
// matched limit is a fixed window of its unit, counted in Redis under
// "PREFIX DOMAIN_KEY_VALUE_..._WINDOWSTART" with INCRBY and an EXPIRE of
// the unit, so that every replica of the service (and every proxy that
// asks it) shares the same counters. A request is over the limit when any
// of its descriptors is. When Redis cannot be reached the call fails with
// UNAVAILABLE and the proxy's failure_mode_deny decides.
//
// It is safe for concurrent use; SetConfig swaps the configuration
// atomically.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer

	opts Options
	log  *slog.Logger
	rdb  *redis.Client
	cfg  atomic.Pointer[Config]
	ln   net.Listener
	grpc *grpc.Server
}

// New binds opts.Addr and makes the Redis client (which connects on first
// use). It fails when the address cannot be bound.
func New(opts Options) (*Service, error) {
	if opts.Addr == "" || opts.Redis == "" {
		return nil, errors.New("rate limit service: Addr and Redis are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RedisTimeout <= 0 {
		opts.RedisTimeout = time.Second
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("rate limit service: %w", err)
	}
	s := &Service{opts: opts, log: opts.Logger.With("component", "ratelimit"), ln: ln}
	s.rdb = redis.NewClient(&redis.Options{
		Addr:         opts.Redis,
		DialTimeout:  opts.RedisTimeout,
		ReadTimeout:  opts.RedisTimeout,
		WriteTimeout: opts.RedisTimeout,
		MaxRetries:   -1, // an error goes back to the proxy at once
	})
	s.grpc = grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(s.grpc, s)
	return s, nil
}

// Addr is the bound gRPC address.
func (s *Service) Addr() string { return s.ln.Addr().String() }

// SetConfig replaces the configuration; calls under way keep the one they
// started with.
func (s *Service) SetConfig(c *Config) { s.cfg.Store(c) }

// Run serves until ctx ends, then stops the gRPC server (calls under way
// finish) and closes the Redis client. It returns the server's error, nil
// after ctx ended.
func (s *Service) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.ln) }()
	var err error
	select {
	case <-ctx.Done():
		s.grpc.GracefulStop()
		<-errc
	case err = <-errc:
	}
	if cerr := s.rdb.Close(); cerr != nil && err == nil {
		s.log.Debug("closing the Redis client", "error", cerr)
	}
	return err
}

// ShouldRateLimit implements RateLimitServiceServer.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	switch {
	case req.GetDomain() == "":
		return nil, status.Error(codes.InvalidArgument, "rate limit domain must not be empty")
	case len(req.GetDescriptors()) == 0:
		return nil, status.Error(codes.InvalidArgument, "rate limit descriptor list must not be empty")
	}
	cfg := s.cfg.Load()
	if cfg == nil {
		return nil, status.Error(codes.Unavailable, "no rate limit configuration loaded")
	}
	descs := req.GetDescriptors()
	limits := make([]*Limit, len(descs))
	replaced := map[string]bool{}
	for i, d := range descs {
		limits[i] = cfg.Limit(req.GetDomain(), d)
		if l := limits[i]; l != nil {
			for _, r := range l.Replaces {
				replaced[r] = true
			}
		}
	}
	for i, l := range limits {
		if l != nil && l.Name != "" && replaced[l.Name] {
			limits[i] = nil
		}
	}
	statuses, err := s.doLimit(ctx, req, limits)
	if err != nil {
		s.log.Debug("redis", "error", err)
		return nil, status.Errorf(codes.Unavailable, "redis: %v", err)
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: statuses}
	for _, st := range statuses {
		if st.GetCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
		}
	}
	return resp, nil
}

// hitsAddend is how much descriptor d adds to its counter: its own
// hits_addend when set, else the request's, at least 1.
func hitsAddend(req *rlsv3.RateLimitRequest, d *ratelimitcommonv3.RateLimitDescriptor) uint64 {
	if h := d.GetHitsAddend(); h != nil {
		return h.GetValue()
	}
	return max(1, uint64(req.GetHitsAddend()))
}

// doLimit counts the request against limits (nil: no limit for that
// descriptor) and returns one status per descriptor, as envoyproxy/
// ratelimit's fixed window cache: when several descriptors are counted and
// one would go over, only that one is incremented, so that a refused
// request does not use up the others' quota.
func (s *Service) doLimit(ctx context.Context, req *rlsv3.RateLimitRequest, limits []*Limit) ([]*rlsv3.RateLimitResponse_DescriptorStatus, error) {
	now := s.opts.Now().Unix()
	descs := req.GetDescriptors()
	keys := make([]string, len(limits))
	adds := make([]uint64, len(limits))
	counted := 0
	for i, l := range limits {
		if l == nil || l.Unlimited {
			continue
		}
		keys[i] = s.cacheKey(req.GetDomain(), descs[i], l, now)
		adds[i] = hitsAddend(req, descs[i])
		counted++
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RedisTimeout)
	defer cancel()
	if counted > 1 {
		// Read the counters first: a descriptor that this request would
		// take over its limit is the only one counted.
		pipe := s.rdb.Pipeline()
		gets := make([]*redis.StringCmd, len(keys))
		for i, k := range keys {
			if k != "" {
				gets[i] = pipe.Get(ctx, k)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for i, g := range gets {
			if g == nil {
				continue
			}
			cur, _ := g.Uint64() // redis.Nil: 0
			if cur+adds[i] > uint64(limits[i].Limit.GetRequestsPerUnit()) {
				for j := range adds {
					if j != i {
						adds[j] = 0
					}
				}
				break
			}
		}
	}
	incrs := make([]*redis.IntCmd, len(keys))
	if counted > 0 {
		pipe := s.rdb.Pipeline()
		for i, k := range keys {
			if k == "" {
				continue
			}
			incrs[i] = pipe.IncrBy(ctx, k, int64(min(adds[i], math.MaxInt64)))
			pipe.Expire(ctx, k, time.Duration(limits[i].Window)*time.Second)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(limits))
	for i, l := range limits {
		switch {
		case l == nil:
			out[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		case l.Unlimited:
			out[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK, LimitRemaining: math.MaxUint32}
		default:
			after := uint64(incrs[i].Val())
			reset := durationpb.New(time.Duration(l.Window-now%l.Window) * time.Second)
			st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK, CurrentLimit: l.Limit, DurationUntilReset: reset}
			if limit := uint64(l.Limit.GetRequestsPerUnit()); after > limit {
				if !l.ShadowMode {
					st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
				}
			} else {
				st.LimitRemaining = uint32(limit - after)
			}
			out[i] = st
		}
	}
	return out, nil
}

// cacheKey is envoyproxy/ratelimit's key of descriptor d under limit l at
// now (unix seconds): PREFIX + DOMAIN_ + KEY_VALUE_ per entry + the start
// of the current window of l's unit.
func (s *Service) cacheKey(domain string, d *ratelimitcommonv3.RateLimitDescriptor, l *Limit, now int64) string {
	var b strings.Builder
	b.WriteString(s.opts.KeyPrefix)
	b.WriteString(domain)
	b.WriteByte('_')
	for _, e := range d.GetEntries() {
		b.WriteString(e.GetKey())
		b.WriteByte('_')
		b.WriteString(e.GetValue())
		b.WriteByte('_')
	}
	b.WriteString(strconv.FormatInt(now/l.Window*l.Window, 10))
	return b.String()
}
