package upstream

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// h2Pool is the HTTP/2 connection pool of one cluster over one transport
// socket (h2c, or h2 over one TLS transport socket): Envoy's HTTP/2
// connection pool. It multiplexes requests over as few connections as the
// limits allow and opens a new connection when none has a free stream:
//   - http2_protocol_options.max_concurrent_streams (Istio
//     http.maxConcurrentStreams) caps the streams open on one connection,
//     and so does the peer's SETTINGS_MAX_CONCURRENT_STREAMS;
//   - max_requests_per_connection (http.maxRequestsPerConnection) drains a
//     connection once it has carried that many streams: it takes no new
//     ones and closes when its last stream ends;
//   - max_connection_duration (tcp.maxConnectionDuration) drains a
//     connection that old the same way;
//   - the circuit breakers max_connections (tcp.maxConnections) and
//     max_pending_requests (http.http1MaxPendingRequests) are the cluster's
//     one resource manager, shared with its HTTP/1.1 pool and TCP proxy
//     (h1Transport's open, waiters and overflow counters, under its mu):
//     draining connections count until closed, and a request that finds no
//     free stream and no connection slot waits as a pending request, or
//     fails with ErrOverflow (503 UO) when max_pending_requests wait; but
//     a request for an endpoint with no connection in this pool connects
//     past max_connections (upstream_cx_overflow), as Envoy's per-host
//     pools do (see h1Transport).
//
// A request that waits for a connection being established (one another
// request opened) is pending too. Connections are made with net/http's
// Transport.NewClientConn (the same HTTP/2 client as before), so the idle
// timeout, flow control and frame handling are net/http's; the pool owns
// which connection carries which stream. It is safe for concurrent use.
type h2Pool struct {
	t *h1Transport // the cluster's resource manager; t.mu guards conns and every h2Conn's counters
	// tt is the TLS transport socket of the pool's connections; nil for h2c.
	tt *tlsTransport
	// transport makes a connection to an address ("http" scheme for h2c,
	// "https" over tt): the cluster's h2c transport or tt's HTTP/2 one.
	transport func() *http.Transport
	scheme    string

	// conns are the connections that take new streams (connecting or
	// ready), by endpoint address, oldest first. Draining connections
	// leave it but keep their slot in t.open until closed.
	conns map[string][]*h2Conn
}

// h2Conn is one HTTP/2 connection of an h2Pool. Its counters are guarded
// by the pool's t.mu.
type h2Conn struct {
	p *h2Pool
	// addr keys the connection in its pool: the endpoint's address, or
	// its PROXY protocol header's key when it has one (proxyHeader.key).
	addr string
	// dial is the endpoint's address; hdr the PROXY protocol header the
	// connection starts with (nil: none).
	dial string
	hdr  *proxyHeader
	// ready is closed once the connection is established (cc set) or
	// failed (err set).
	ready chan struct{}
	err   error
	cc    *http.ClientConn // nil while connecting

	streams  int    // streams reserved or open on the connection (ours)
	total    uint32 // streams ever started on it (max_requests_per_connection)
	peerMax  int    // the peer's concurrent stream limit as last seen; math.MaxInt while connecting
	draining bool   // takes no new stream; closed when streams reach 0
	// gone is set once the connection's slot in t.open was given back or
	// handed on (closed, failed, or retired for a waiter).
	gone  bool
	timer *time.Timer // max_connection_duration; nil when unset
	id    uint64      // filter.NewConnectionID
}

func newH2Pool(t *h1Transport, tt *tlsTransport, transport func() *http.Transport) *h2Pool {
	p := &h2Pool{t: t, tt: tt, transport: transport, scheme: "http", conns: map[string][]*h2Conn{}}
	if tt != nil {
		p.scheme = "https"
	}
	t.mu.Lock()
	t.h2pools = append(t.h2pools, p)
	t.mu.Unlock()
	return p
}

// release drains p for good and takes it off the cluster's pools (its TLS
// transport socket is no longer used).
func (p *h2Pool) release() {
	p.drainAll()
	p.t.mu.Lock()
	p.t.h2pools = slices.DeleteFunc(p.t.h2pools, func(q *h2Pool) bool { return q == p })
	p.t.mu.Unlock()
}

// retireIdleLocked takes one established connection of p with no stream
// out of the pool, its slot in t.open passing to the caller's request (the
// caller moves it in t.perPool), and returns it for the caller to close;
// nil when p has none.
func (p *h2Pool) retireIdleLocked() *h2Conn {
	for _, l := range p.conns {
		for _, c := range l {
			if c.cc != nil && c.streams == 0 && !c.draining && !c.gone {
				p.drainLocked(c)
				c.gone = true
				c.stopTimer()
				return c
			}
		}
	}
	return nil
}

var _ http.RoundTripper = (*h2Pool)(nil)

// RoundTrip sends req to req.URL.Host over one stream of a pooled
// connection. A request that fails the way net/http's HTTP/2 transport
// retries by itself (connection unusable, GOAWAY, REFUSED_STREAM: the
// upstream did not process it) is sent again once, on another stream,
// when it can be (no body, or GetBody). Connect and TLS failures wrap
// *ConnectError; limits full, ErrOverflow; a response head past Envoy's
// header limits, *ProtocolError.
func (p *h2Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	return p.roundTrip(req, nil)
}

// roundTrip is RoundTrip over a connection that starts with PROXY
// protocol header hdr (nil: none), pooled apart from the others.
func (p *h2Pool) roundTrip(req *http.Request, hdr *proxyHeader) (*http.Response, error) {
	ctx := req.Context()
	out := req
	if p.tt != nil && req.URL.Scheme != "https" {
		// :scheme says how the upstream is reached.
		r := *req
		u := *req.URL
		u.Scheme = "https"
		r.URL = &u
		out = &r
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 0; ; attempt++ {
		c, err := p.acquire(ctx, req.URL.Host, hdr)
		if err != nil {
			return nil, err
		}
		noteConnectionID(ctx, c.id)
		resp, err := c.cc.RoundTrip(out)
		if err != nil {
			retryable := h2Retryable(err)
			if retryable {
				// The connection refused the stream or takes no more
				// (GOAWAY) though net/http has not closed it yet: stop
				// picking it.
				p.t.mu.Lock()
				p.drainLocked(c)
				p.t.mu.Unlock()
			}
			p.streamDone(c)
			if attempt == 0 && replayable && ctx.Err() == nil && retryable {
				if req.GetBody != nil {
					body, gerr := req.GetBody()
					if gerr != nil {
						return nil, err
					}
					out.Body = body
				}
				continue
			}
			return nil, err
		}
		if err := checkResponseHead(resp.Header); err != nil {
			resp.Body.Close()
			p.streamDone(c)
			return nil, err
		}
		if resp.Body == nil || resp.Body == http.NoBody {
			p.streamDone(c)
			return resp, nil
		}
		resp.Body = &h2Body{rc: resp.Body, c: c}
		return resp, nil
	}
}

// h2Retryable reports whether a stream failed before the upstream saw it,
// as net/http's HTTP/2 transport decides when it retries a request on
// another connection (http2canRetryError): the connection was unusable or
// got a graceful GOAWAY before the stream was sent, or the peer reset the
// stream with REFUSED_STREAM (or PROTOCOL_ERROR, golang/go#47635). Those
// errors are unexported, so they are known by their whole text: a
// GoAwayError, whose text carries the peer's debug data and error code,
// is for streams the upstream may have processed and is never retried.
func h2Retryable(err error) bool {
	s := err.Error()
	if s == "http2: client conn not usable" || s == "http2: Transport received Server's graceful shutdown GOAWAY" {
		return true
	}
	// http2StreamError: "stream error: stream ID N; CODE[; cause]".
	rest, ok := strings.CutPrefix(s, "stream error: stream ID ")
	if !ok {
		return false
	}
	if _, rest, ok = strings.Cut(rest, "; "); !ok {
		return false
	}
	code, cause, _ := strings.Cut(rest, "; ")
	return code == "REFUSED_STREAM" || code == "PROTOCOL_ERROR" && cause == "received from peer"
}

// checkResponseHead applies Envoy's upstream header limits
// (MaxResponseHeaders fields, MaxResponseHeaderBytes of names and values)
// to an HTTP/2 response head, as readResponse does for HTTP/1.1.
func checkResponseHead(h http.Header) error {
	n, size := 0, 0
	for k, vv := range h {
		for _, v := range vv {
			n++
			size += len(k) + len(v)
		}
	}
	switch {
	case n > MaxResponseHeaders:
		return &ProtocolError{Err: fmt.Errorf("%d response headers: more than %d", n, MaxResponseHeaders)}
	case size > MaxResponseHeaderBytes:
		return &ProtocolError{Err: fmt.Errorf("%d bytes of response headers: more than %d", size, MaxResponseHeaderBytes)}
	}
	return nil
}

// h2Body is a response body that ends its stream in the pool's accounting
// at EOF, on a read error, or on Close.
type h2Body struct {
	rc   io.ReadCloser
	c    *h2Conn
	done bool
}

func (b *h2Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && !b.done {
		b.done = true
		b.c.p.streamDone(b.c)
	}
	return n, err
}

func (b *h2Body) Close() error {
	err := b.rc.Close() // resets the stream when the body was not read to its end
	if !b.done {
		b.done = true
		b.c.p.streamDone(b.c)
	}
	return err
}

// acquire reserves a stream to addr: on a connection with a free stream,
// on a new connection when the cluster has fewer than max_connections, or
// else waiting as a pending request for the next free stream or slot.
func (p *h2Pool) acquire(ctx context.Context, dial string, hdr *proxyHeader) (*h2Conn, error) {
	addr := dial
	if hdr != nil {
		addr = hdr.key // dial, then the header
	}
	t := p.t
	o := t.connOpts.Load()
	t.mu.Lock()
	if c := p.pickLocked(addr, o); c != nil {
		if c.cc != nil {
			p.reserveLocked(c, o)
			t.mu.Unlock()
			return c, nil
		}
		// The connection is being established: wait for it as a pending
		// request.
		if t.pendingFullLocked() {
			t.mu.Unlock()
			t.pendingOverflow.Add(1)
			return nil, ErrOverflow
		}
		p.reserveLocked(c, o)
		t.h2Pending++
		t.mu.Unlock()
		return p.await(ctx, c, true)
	}
	pool := poolID{h2: p, key: addr}
	if t.open < t.maxConns {
		t.takeLocked(pool)
		c := p.connectLocked(addr, dial, hdr, o)
		t.mu.Unlock()
		return p.await(ctx, c, false)
	}
	// The endpoint has no connection in p: connect past the limit, as
	// Envoy's pool does.
	if t.perPool[pool] == 0 {
		if !t.pastLimitLocked(pool) {
			t.mu.Unlock()
			return nil, ErrOverflow
		}
		c := p.connectLocked(addr, dial, hdr, o)
		t.mu.Unlock()
		return p.await(ctx, c, false)
	}
	// At the limit, an idle connection of the cluster gives its slot to
	// this request rather than make it wait (as h1Transport.acquire).
	if retire := t.retireIdleLocked(pool); retire != nil {
		c := p.connectLocked(addr, dial, hdr, o)
		t.mu.Unlock()
		retire()
		return p.await(ctx, c, false)
	}
	g, err := t.waitLocked(ctx, &h1Waiter{key: addr, h2: p, ch: make(chan h1Grant, 1)})
	if err != nil {
		return nil, err
	}
	if g.h2 != nil {
		// A stream freed on an established connection.
		return p.await(ctx, g.h2, false)
	}
	// A bare slot, already counted in open and for (p, addr).
	t.mu.Lock()
	c := p.connectLocked(addr, dial, hdr, o)
	t.mu.Unlock()
	return p.await(ctx, c, false)
}

// await waits until c, on which the caller reserved a stream, is
// established; pending says the caller counts in t.h2Pending meanwhile.
// When ctx ends first the reservation is given back.
func (p *h2Pool) await(ctx context.Context, c *h2Conn, pending bool) (*h2Conn, error) {
	select {
	case <-c.ready:
		if pending {
			p.t.mu.Lock()
			p.t.h2Pending--
			p.t.mu.Unlock()
		}
	case <-ctx.Done():
		if pending {
			p.t.mu.Lock()
			p.t.h2Pending--
			p.t.mu.Unlock()
		}
		p.streamDone(c)
		return nil, ctx.Err()
	}
	if c.err != nil {
		return nil, c.err
	}
	return c, nil
}

// pickLocked returns the oldest connection to addr with a free stream, or
// nil.
func (p *h2Pool) pickLocked(addr string, o *config.ConnectionOptions) *h2Conn {
	for _, c := range p.conns[addr] {
		if c.hasRoomLocked(o) {
			return c
		}
	}
	return nil
}

// hasRoomLocked reports whether c takes one more stream: it is not
// draining and has fewer streams than max_concurrent_streams and the
// peer's limit.
func (c *h2Conn) hasRoomLocked(o *config.ConnectionOptions) bool {
	limit := c.peerMax
	if o.MaxConcurrentStreams > 0 {
		limit = min(limit, int(min(o.MaxConcurrentStreams, math.MaxInt32)))
	}
	return !c.draining && c.streams < limit
}

// reserveLocked takes one stream of c; the connection drains once it has
// carried max_requests_per_connection streams.
func (p *h2Pool) reserveLocked(c *h2Conn, o *config.ConnectionOptions) {
	c.streams++
	c.total++
	if o.MaxRequestsPerConnection > 0 && c.total >= o.MaxRequestsPerConnection {
		p.drainLocked(c)
	}
}

// connectLocked adds a connection to dial (starting with PROXY protocol
// header hdr, nil: none) under pool key addr, with a slot already counted in
// t.open and for (p, addr) in t.perPool, and one stream reserved for the
// caller, and starts establishing it. The dial runs on its own goroutine,
// bounded by the cluster's connect_timeout, so that a request that gives
// up does not fail the requests waiting for the same connection.
func (p *h2Pool) connectLocked(addr, dial string, hdr *proxyHeader, o *config.ConnectionOptions) *h2Conn {
	c := &h2Conn{p: p, addr: addr, dial: dial, hdr: hdr, ready: make(chan struct{}), peerMax: math.MaxInt, id: filter.NewConnectionID()}
	p.conns[addr] = append(p.conns[addr], c)
	p.reserveLocked(c, o)
	go p.connect(c)
	return c
}

func (p *h2Pool) connect(c *h2Conn) {
	ctx := context.Background()
	if c.hdr != nil {
		ctx = withProxyHeader(ctx, c.hdr)
	}
	dial := c.dial
	if config.IsPipe(dial) {
		ctx, dial = withPipe(ctx, dial), pipeDialAddress
	}
	cc, err := p.transport().NewClientConn(ctx, p.scheme, dial)
	t := p.t
	t.mu.Lock()
	if err != nil {
		c.err = err
		p.goneLocked(c)
		t.mu.Unlock()
		close(c.ready)
		return
	}
	c.cc = cc
	c.peerMax = cc.Available() + cc.InFlight()
	closeNow := c.streams == 0 && c.draining
	if closeNow {
		p.goneLocked(c)
	} else if d := t.connOpts.Load().MaxConnectionDuration; d > 0 {
		c.timer = time.AfterFunc(d, func() { p.expire(c) })
	}
	t.mu.Unlock()
	close(c.ready)
	if closeNow {
		cc.Close()
		return
	}
	cc.SetStateHook(c.stateChanged)
}

// stateChanged is c's net/http state hook: called (never with t.mu held)
// when a stream ends, the peer raises its stream limit, or the connection
// closes (idle timeout, GOAWAY, peer gone).
func (c *h2Conn) stateChanged(cc *http.ClientConn) {
	p, t := c.p, c.p.t
	if cc.Err() != nil {
		t.mu.Lock()
		p.goneLocked(c)
		t.mu.Unlock()
		return
	}
	peer := cc.Available() + cc.InFlight()
	t.mu.Lock()
	raised := peer > c.peerMax
	c.peerMax = peer
	var closing *h2Conn
	if raised && len(t.waiters) > 0 {
		closing = p.serveLocked(c)
	}
	t.mu.Unlock()
	closing.close()
}

// expire drains c at max_connection_duration.
func (p *h2Pool) expire(c *h2Conn) {
	p.t.mu.Lock()
	var closing *h2Conn
	if !c.gone {
		p.drainLocked(c)
		closing = p.serveLocked(c)
	}
	p.t.mu.Unlock()
	closing.close()
}

// streamDone ends one stream of c: it may serve a waiting request, or
// close c when it drains.
func (p *h2Pool) streamDone(c *h2Conn) {
	p.t.mu.Lock()
	c.streams--
	closing := p.serveLocked(c)
	p.t.mu.Unlock()
	closing.close()
}

// serveLocked hands c's free streams to pending requests for its endpoint,
// oldest first. It returns c when c must be closed (by the caller, after
// unlocking): c drained its last stream, or c is idle while requests for
// another endpoint or pool wait for a connection slot, which c then gives
// them.
func (p *h2Pool) serveLocked(c *h2Conn) *h2Conn {
	t := p.t
	if c.gone || c.cc == nil {
		return nil
	}
	if c.draining {
		if c.streams > 0 {
			return nil
		}
		p.goneLocked(c)
		return c
	}
	o := t.connOpts.Load()
	for i := 0; i < len(t.waiters) && c.hasRoomLocked(o); {
		w := t.waiters[i]
		if w.h2 != p || w.key != c.addr {
			i++
			continue
		}
		t.waiters = slices.Delete(t.waiters, i, i+1)
		p.reserveLocked(c, o)
		w.ch <- h1Grant{h2: c} // buffered, never blocks
	}
	if c.streams == 0 && !c.draining && len(t.waiters) > 0 && t.open >= t.maxConns {
		p.drainLocked(c)
		c.gone = true // its slot goes to the oldest waiter
		c.stopTimer()
		w := t.waiters[0]
		t.waiters = slices.Delete(t.waiters, 0, 1)
		t.moveLocked(poolID{h2: p, key: c.addr}, w.pool())
		w.ch <- h1Grant{}
		return c
	}
	return nil
}

// drainLocked takes c out of the pool for new streams.
func (p *h2Pool) drainLocked(c *h2Conn) {
	if c.draining {
		return
	}
	c.draining = true
	l := p.conns[c.addr]
	if i := slices.Index(l, c); i >= 0 {
		l = slices.Delete(l, i, i+1)
	}
	if len(l) == 0 {
		delete(p.conns, c.addr)
	} else {
		p.conns[c.addr] = l
	}
}

// goneLocked takes c out of the pool and gives its slot back to the
// cluster (a pending request may take it). Calling it again is harmless.
func (p *h2Pool) goneLocked(c *h2Conn) {
	if c.gone {
		return
	}
	p.drainLocked(c)
	c.gone = true
	c.stopTimer()
	p.t.giveLocked(poolID{h2: p, key: c.addr})
}

func (c *h2Conn) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
	}
}

// close closes c's connection; nil or a connection still connecting is
// left alone (connect closes a drained one itself).
func (c *h2Conn) close() {
	if c != nil && c.cc != nil {
		c.cc.Close()
	}
}

// drainAll drains every connection of the pool: idle ones close now, the
// others once their streams end (a new generation changed the transport's
// settings).
func (p *h2Pool) drainAll() {
	var closing []*h2Conn
	p.t.mu.Lock()
	for _, l := range p.conns {
		for _, c := range slices.Clone(l) {
			// One still connecting is closed by connect once its
			// streams are over.
			p.drainLocked(c)
			if c := p.serveLocked(c); c != nil {
				closing = append(closing, c)
			}
		}
	}
	p.t.mu.Unlock()
	for _, c := range closing {
		c.close()
	}
}
