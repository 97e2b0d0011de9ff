package http

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
)

// DefaultMaxMirrorsInFlight is Options.MaxMirrorsInFlight when unset.
const DefaultMaxMirrorsInFlight = 256

// mirrorPool owns the goroutines of mirrored requests: at most cap(sem)
// at once, each bounded by its route's timeout, all cancelled by close.
type mirrorPool struct {
	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards closed and wg.Add against close's Wait.
	mu     sync.Mutex
	closed bool
}

func (p *mirrorPool) init(n int) {
	p.sem = make(chan struct{}, n)
	p.ctx, p.cancel = context.WithCancel(context.Background())
}

// start runs f on a new goroutine unless the pool is full or closed; it
// never blocks.
func (p *mirrorPool) start(f func(ctx context.Context)) bool {
	select {
	case p.sem <- struct{}{}:
	default:
		return false
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.sem
		return false
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer func() { <-p.sem; p.wg.Done() }()
		f(p.ctx)
	}()
	return true
}

func (p *mirrorPool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}

// mirror sends a copy of r to each of route's mirror clusters
// (RouteAction.request_mirror_policies), sampled by its runtime_fraction,
// on the pool's goroutines: the primary request never waits for them and
// their responses are discarded. The copy has r's headers as they go
// upstream, its authority host with "-shadow" (config.ShadowHost) and the
// upstream path; its body, when rb is not nil, streams as the primary's
// does (Envoy's streaming shadows): each shadow gets the bytes as the
// primary reads them, through a shadowPipe that drops the shadow when it
// falls mirrorBacklogBytes behind. A mirror is dropped (and counted) when
// the pool is full, when its cluster is unknown or when it falls behind.
// Call it before the primary's first attempt reads the body.
func (cm *ConnectionManager) mirror(gen *config.Generation, route *config.Route, r *http.Request, host, path, rawPath string, rb *requestBody) {
	timeout := route.Timeout
	if timeout <= 0 {
		timeout = config.DefaultRouteTimeout
	}
	for i := range route.Mirrors {
		m := &route.Mirrors[i]
		if !m.Percent.Sample(rand.Uint64()) {
			continue
		}
		c := gen.Clusters[m.Cluster]
		if c == nil {
			cm.metrics.MirrorDropped(m.Cluster)
			continue
		}
		h := host
		if !m.DisableShadowHostSuffix {
			h = config.ShadowHost(host)
		}
		out := &http.Request{
			Method:     r.Method,
			URL:        &url.URL{Scheme: "http", Path: path, RawPath: rawPath, RawQuery: r.URL.RawQuery},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     r.Header.Clone(),
			Host:       h,
		}
		var pipe *shadowPipe
		if rb != nil {
			pipe = newShadowPipe(mirrorBacklogBytes)
			out.Body = pipe
			out.ContentLength = r.ContentLength
		}
		if !cm.mirrors.start(func(ctx context.Context) { cm.sendMirror(ctx, c, out, pipe, timeout) }) {
			cm.metrics.MirrorDropped(m.Cluster)
			continue
		}
		if pipe != nil {
			rb.addShadow(pipe)
		}
	}
}

// sendMirror sends one mirrored request, its body read from pipe (nil:
// none), and discards the response.
func (cm *ConnectionManager) sendMirror(ctx context.Context, c *config.Cluster, out *http.Request, pipe *shadowPipe, timeout time.Duration) {
	uh, err := cm.clusters.Pick(c, upstream.PickOptions{})
	if err != nil {
		if pipe != nil {
			pipe.Close()
		}
		cm.metrics.MirrorDropped(c.Name)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if pipe != nil {
		pipe.setCancel(cancel)
	}
	out.URL.Host = uh.Addr
	resp, err := uh.RT.RoundTrip(out.WithContext(ctx))
	if err != nil {
		if pipe != nil && pipe.wasDropped() {
			// The proxy gave up on it: not the host's failure.
			cm.metrics.MirrorDropped(c.Name)
			uh.Done(upstream.Result{})
			return
		}
		cm.metrics.UpstreamRequest(c.Name, 0)
		uh.Done(upstream.Result{LocalOrigin: ctx.Err() == nil || ctx.Err() == context.DeadlineExceeded})
		cm.logger.Debug("mirror failed", "cluster", c.Name, "endpoint", uh.Addr, "error", err)
		return
	}
	cm.metrics.UpstreamRequest(c.Name, resp.StatusCode)
	// Discard the whole response, as Envoy's shadow does: closing it
	// early would reset a stream whose request body is still flowing.
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if pipe != nil && pipe.wasDropped() {
		cm.metrics.MirrorDropped(c.Name)
	}
	uh.Done(upstream.Result{Status: resp.StatusCode})
}
