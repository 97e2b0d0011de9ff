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

// mirrorDrainBytes is how much of a mirror's response is read before it
// is closed (the response is discarded).
const mirrorDrainBytes = 64 << 10

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
// upstream, its authority host with "-shadow" (config.ShadowHost), the
// upstream path and the buffered body. A mirror is dropped (and counted)
// when the pool is full, when its cluster is unknown or when the body
// was too large to buffer (streamed).
func (cm *ConnectionManager) mirror(gen *config.Generation, route *config.Route, r *http.Request, host, path, rawPath string, body []byte, streamed bool) {
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
		if c == nil || streamed {
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
		if body != nil {
			out.ContentLength = int64(len(body))
			out.GetBody = func() (io.ReadCloser, error) { return bytesReader(body), nil }
		}
		if !cm.mirrors.start(func(ctx context.Context) { cm.sendMirror(ctx, c, out, body, timeout) }) {
			cm.metrics.MirrorDropped(m.Cluster)
		}
	}
}

// sendMirror sends one mirrored request and discards the response.
func (cm *ConnectionManager) sendMirror(ctx context.Context, c *config.Cluster, out *http.Request, body []byte, timeout time.Duration) {
	uh, err := cm.clusters.Pick(c, upstream.PickOptions{})
	if err != nil {
		cm.metrics.MirrorDropped(c.Name)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out.URL.Host = uh.Addr
	if body != nil {
		out.Body = bytesReader(body)
	}
	resp, err := uh.RT.RoundTrip(out.WithContext(ctx))
	if err != nil {
		cm.metrics.UpstreamRequest(c.Name, 0)
		uh.Done(upstream.Result{LocalOrigin: ctx.Err() == nil || ctx.Err() == context.DeadlineExceeded})
		cm.logger.Debug("mirror failed", "cluster", c.Name, "endpoint", uh.Addr, "error", err)
		return
	}
	cm.metrics.UpstreamRequest(c.Name, resp.StatusCode)
	_, _ = io.CopyN(io.Discard, resp.Body, mirrorDrainBytes)
	resp.Body.Close()
	uh.Done(upstream.Result{Status: resp.StatusCode})
}
