package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/redis/go-redis/v9"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/ratelimit"
)

// checkRateLimitFlags: --ratelimit-addr is an IP:PORT proxies can dial
// and comes with --ratelimit-redis; the other two need it.
func checkRateLimitFlags(o options) error {
	if o.rateLimitAddr == "" {
		if o.rateLimitRedis != "" || o.rateLimitConfig != "" {
			return fmt.Errorf("--ratelimit-redis and --ratelimit-config need --ratelimit-addr")
		}
		return nil
	}
	host, _, err := net.SplitHostPort(o.rateLimitAddr)
	if err != nil {
		return fmt.Errorf("--ratelimit-addr %q: %w", o.rateLimitAddr, err)
	}
	if a, err := netip.ParseAddr(host); err != nil || a.IsUnspecified() {
		return fmt.Errorf("--ratelimit-addr %q: must be an IP address proxies can dial, not a name or 0.0.0.0", o.rateLimitAddr)
	}
	if o.rateLimitRedis == "" {
		return fmt.Errorf("--ratelimit-addr needs --ratelimit-redis HOST:PORT")
	}
	return nil
}

// rateLimit is loomd's rate limit service and what its config is made of.
type rateLimit struct {
	svc   *ratelimit.Service
	store *config.Store
	log   *slog.Logger
	// files and src are the documents of --ratelimit-config and their
	// files, read at start.
	files []*ratelimit.DomainConfig
	src   []string
	// changes is the store's subscription, made before its first load.
	changes <-chan struct{}
}

// newRateLimitService binds the service when o has --ratelimit-addr (nil
// otherwise) and loads its config: the files, and the RateLimitPolicies of
// store's current snapshot. Bad files are an error, as bad flags.
func newRateLimitService(o options, store *config.Store, log *slog.Logger) (*rateLimit, error) {
	if o.rateLimitAddr == "" {
		return nil, nil
	}
	// go-redis logs to stderr by itself; its lines go to loomd's log.
	redis.SetLogger(redisLogger{log.With("component", "ratelimit")})
	rl := &rateLimit{store: store, log: log.With("component", "ratelimit"), changes: store.Subscribe()}
	if o.rateLimitConfig != "" {
		var err error
		if rl.files, rl.src, err = ratelimit.LoadConfigFiles(o.rateLimitConfig); err != nil {
			return nil, fmt.Errorf("--ratelimit-config: %w", err)
		}
	}
	svc, err := ratelimit.New(ratelimit.Options{Addr: o.rateLimitAddr, Redis: o.rateLimitRedis, Logger: log})
	if err != nil {
		return nil, err
	}
	rl.svc = svc
	if err := rl.reload(); err != nil {
		return nil, fmt.Errorf("--ratelimit-config: %w", err)
	}
	return rl, nil
}

// reload builds the service's config from the files and the policies of
// the store's snapshot.
func (rl *rateLimit) reload() error {
	docs, src := rl.files, rl.src
	if d := ratelimit.FromPolicies(model.RateLimitPolicies(rl.store.Snapshot())); d != nil {
		docs = append(docs[:len(docs):len(docs)], d)
		src = append(src[:len(src):len(src)], "RateLimitPolicies")
	}
	cfg, err := ratelimit.NewConfig(docs, src)
	if err != nil {
		return err
	}
	rl.svc.SetConfig(cfg)
	rl.log.Info("rate limit config loaded", "domains", cfg.Domains())
	return nil
}

// watch reloads the config on every change of the store until ctx ends;
// a config that does not build is logged and the last good one kept.
func (rl *rateLimit) watch(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-rl.changes:
			if err := rl.reload(); err != nil {
				rl.log.Error("rate limit config refused; the last good one keeps serving", "err", err)
			}
		}
	}
}

// redisLogger sends go-redis's log lines to slog at Debug: they report
// connection failures, which calls already return as errors.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
