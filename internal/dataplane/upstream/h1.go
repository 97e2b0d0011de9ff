package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// h1Transport is the HTTP/1.1 keep-alive pool of one cluster. A round trip
// runs on the caller's goroutine: write the request, read the response
// head, and hand back a body that returns the connection to the pool when
// it is read to EOF. net/http.Transport instead hands every request to two
// goroutines per connection (writeLoop, readLoop) and back through
// channels; on a proxy those wake-ups are a large share of the CPU per
// request. It is safe for concurrent use.
//
// It is also the cluster's resource manager for max_connections and
// max_pending_requests, shared with the cluster's HTTP/2 pools (h2.go) and
// TCP proxy (acquireSlot). As Envoy's connection pools
// (ConnPoolImplBase::tryCreateNewConnection), max_connections is not a
// hard cap: a request for a host pool (one endpoint over one transport and
// protocol, Envoy's per-host pool) that has no connection at all
// (connecting, busy, idle or draining) counts upstream_cx_overflow and
// connects anyway, so that it is never queued behind another endpoint's
// connection with no connection of its own to be served on; a pool whose
// last connection closes while requests wait for it connects again the
// same way. Such a request is first checked against max_pending_requests,
// as Envoy's newStream checks pending capacity before it queues the
// request it then connects for: when they are full it fails with
// ErrOverflow and nothing is dialled. So Istio's tcp.maxConnections 1
// over 3 endpoints keeps up to one connection per endpoint, as Envoy does.
type h1Transport struct {
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle int // idle connections kept per endpoint
	bufSize int // bufio reader and writer size per connection
	// idleTimeout is the default (time.Duration) of an idle connection's
	// life when the cluster sets no idle_timeout.
	idleTimeout time.Duration
	// connOpts are the cluster's connection options (never nil).
	connOpts atomic.Pointer[config.ConnectionOptions]

	// Circuit-breaker counters (Envoy's upstream_cx_overflow and
	// upstream_rq_pending_overflow of the connection pool).
	cxOverflow      atomic.Uint64
	pendingOverflow atomic.Uint64

	// mu guards the fields below. No I/O or blocking send happens while
	// it is held.
	mu     sync.Mutex
	idle   map[string][]*h1Conn // by pool key (transport and endpoint address); newest last
	closed bool
	// open counts connections open or being dialled, in use or idle,
	// across all endpoints: max_connections applies per cluster.
	open int
	// perPool counts the slots of open each host pool holds (its
	// connections connecting, in use, idle or draining; a slot granted to
	// a waiter of the pool): a pool with none connects past
	// max_connections. Entries are deleted at zero; the TCP proxy's slots
	// belong to no pool.
	perPool    map[poolID]int
	maxConns   int // circuit_breakers max_connections
	maxPending int // circuit_breakers max_pending_requests
	// waiters are the pending requests, oldest first, of this pool and
	// of the cluster's HTTP/2 pools (h2.go); with h2Pending at most
	// maxPending.
	waiters []*h1Waiter
	// h2Pending counts the requests of the cluster's HTTP/2 pools waiting
	// for a connection being established: pending requests too.
	h2Pending int
	// h2pools are the cluster's HTTP/2 pools (h2c, and one per TLS
	// transport socket in use): their idle connections give up their slot
	// to a request at max_connections as idle HTTP/1.1 ones do.
	h2pools []*h2Pool
}

// poolID names a host pool of the cluster, Envoy's per-host connection
// pool: an HTTP/1.1 pool key (poolKey: transport and address, h2 nil), or
// an HTTP/2 pool and an endpoint address. The zero poolID is no pool (the
// TCP proxy's slots).
type poolID struct {
	h2  *h2Pool
	key string
}

// h1Waiter is a pending request waiting for a connection to addr. It is
// granted at most one h1Grant, after it was removed from waiters.
type h1Waiter struct {
	key string       // pool key: transport and address (the address for an HTTP/2 pool)
	h2  *h2Pool      // the HTTP/2 pool the request waits in; nil for HTTP/1.1
	ch  chan h1Grant // buffered: a grant never blocks
}

func (w *h1Waiter) pool() poolID { return poolID{h2: w.h2, key: w.key} }

// h1Grant hands a waiter an idle connection to its endpoint (c), a stream
// reserved on an HTTP/2 connection of its pool (h2), or (both nil) a
// connection slot, already counted in open and for the waiter's pool, to
// dial with.
type h1Grant struct {
	c  *h1Conn
	h2 *h2Conn
}

var _ http.RoundTripper = (*h1Transport)(nil)

type h1Conn struct {
	t         *h1Transport
	key       string // pool key (poolKey): transport and address
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	created   time.Time
	// hdrLeft is how many more bytes the reader may take from the socket
	// while a response head is read (bounded by maxHeadPull); -1 while a
	// body or nothing is read.
	hdrLeft  int64
	requests uint32      // round trips started on this connection
	closed   atomic.Bool // its slot in open was given back or handed on
	wrote    int64       // bytes the socket accepted in the current round trip
	werr     error       // the socket's write error in the current round trip
	// tls is the connection's TLS state (nil for plaintext), handed to
	// every response as resp.TLS, as net/http's Transport does; immutable.
	tls *tls.ConnectionState
	id  uint64 // filter.NewConnectionID
}

// countingConn counts the bytes written to a connection, so that a failed
// write tells an upstream that stopped reading from one never reached.
type countingConn struct {
	net.Conn
	c *h1Conn
}

func (cc countingConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	cc.c.wrote += int64(n)
	if err != nil && cc.c.werr == nil {
		cc.c.werr = err
	}
	return n, err
}

// Envoy's default limits on an upstream response's headers
// (common_http_protocol_options max_headers_count, and
// max_response_headers_kb): header bytes are the names' and values' lengths
// summed, as Envoy's header map byteSize counts them. A response beyond
// them is a *ProtocolError.
const (
	MaxResponseHeaderBytes = 60 << 10
	MaxResponseHeaders     = 100
)

// errHeadTooLarge ends a response head that runs past what the reader may
// pull from the socket for it.
var errHeadTooLarge = errors.New("response headers exceed the size limit")

// ProtocolError is an upstream response that is not valid HTTP/1.1
// (malformed status line or header, bad framing) or that exceeds
// MaxResponseHeaderBytes or MaxResponseHeaders. The connection is closed.
// The router answers 502 with flag UPE, as Envoy does for an upstream codec
// error.
type ProtocolError struct{ Err error }

func (e *ProtocolError) Error() string { return "upstream protocol error: " + e.Err.Error() }
func (e *ProtocolError) Unwrap() error { return e.Err }

// headReader is an h1Conn's socket as its bufio.Reader sees it: while a
// response head is read, at most hdrLeft bytes are pulled, so that an
// upstream sending endless headers cannot grow the proxy's memory.
type headReader struct{ c *h1Conn }

func (r headReader) Read(p []byte) (int, error) {
	c := r.c
	if c.hdrLeft < 0 {
		return c.nc.Read(p)
	}
	if c.hdrLeft == 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > c.hdrLeft {
		p = p[:c.hdrLeft]
	}
	n, err := c.nc.Read(p)
	c.hdrLeft -= int64(n)
	return n, err
}

// readResponse reads one response head from c under the head limits.
// Errors that are not the network's (malformed HTTP, limits) are
// *ProtocolError.
func (c *h1Conn) readResponse(req *http.Request) (*http.Response, error) {
	// What the bufio.Reader pulls for a head of exactly the limit may also
	// hold the first buffer's worth of body; the exact limits are checked
	// on the parsed head below.
	c.hdrLeft = int64(MaxResponseHeaderBytes + c.t.bufSize + 4<<10 - c.br.Buffered())
	resp, err := http.ReadResponse(c.br, req)
	c.hdrLeft = -1
	if err != nil {
		if isProtocolError(err) {
			return nil, &ProtocolError{Err: err}
		}
		return nil, err
	}
	n, size := 0, 0
	for k, vv := range resp.Header {
		for _, v := range vv {
			n++
			size += len(k) + len(v)
		}
	}
	switch {
	case n > MaxResponseHeaders:
		return nil, &ProtocolError{Err: fmt.Errorf("%d response headers: more than %d", n, MaxResponseHeaders)}
	case size > MaxResponseHeaderBytes:
		return nil, &ProtocolError{Err: fmt.Errorf("%d bytes of response headers: more than %d", size, MaxResponseHeaderBytes)}
	}
	return resp, nil
}

// isProtocolError tells a malformed response from a connection that failed
// or closed while it was read.
func isProtocolError(err error) bool {
	if errors.Is(err, errHeadTooLarge) {
		return true
	}
	var ne net.Error
	var errno syscall.Errno
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.As(err, &ne), errors.As(err, &errno):
		return false
	}
	return true
}

// aLongTimeAgo is a deadline in the past: setting it makes pending I/O on a
// connection return at once (how a cancelled request interrupts a read).
var aLongTimeAgo = time.Unix(1, 0)

func newH1Transport(dial func(context.Context, string, string) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *h1Transport {
	t := &h1Transport{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, bufSize: 16 << 10, idle: map[string][]*h1Conn{},
		perPool: map[poolID]int{}, maxConns: config.DefaultMaxConnections, maxPending: config.DefaultMaxPendingRequests}
	t.connOpts.Store(&config.ConnectionOptions{})
	return t
}

// RoundTrip sends req to req.URL.Host over a pooled plaintext
// connection; see roundTrip.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.roundTrip(req, nil, nil)
}

// h1Via is the h1Transport of a cluster bound to one TLS transport
// socket: its connections are TLS and pooled apart from the plaintext
// ones and those of other transports.
type h1Via struct {
	t  *h1Transport
	tt *tlsTransport
}

func (v h1Via) RoundTrip(req *http.Request) (*http.Response, error) {
	return v.t.roundTrip(req, v.tt, nil)
}

// poolKey keys a connection to addr over tt (nil: plaintext); addr is a
// PROXY protocol header's key (proxyHeader.key, the address and the
// header) for a connection that starts with one.
func poolKey(addr string, tt *tlsTransport) string {
	if tt == nil {
		return addr
	}
	return tt.key + "|" + addr
}

// roundTrip sends req to req.URL.Host over a pooled connection of
// transport tt (nil: plaintext) that starts with PROXY protocol header
// hdr (nil: none; pooled by hdr.key). A reused connection that turns out to be
func (t *h1Transport) roundTrip(req *http.Request, tt *tlsTransport, hdr *proxyHeader) (*http.Response, error) {
	ctx := req.Context()
	addr := req.URL.Host
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 0; ; attempt++ {
		c, reused, err := t.acquire(ctx, addr, tt, hdr)
		if err != nil {
			return nil, err
		}
		c.wrote, c.werr = 0, nil
		cs := c.tls // c may be handed to another request once the body is read
		resp, err := c.roundTrip(ctx, req)
		if err == nil {
			resp.TLS = cs
			return resp, nil
		}
		c.close()
		var pe *ProtocolError
		if reused && attempt == 0 && ctx.Err() == nil && replayable && !errors.As(err, &pe) {
			if req.GetBody != nil {
				body, gerr := req.GetBody()
				if gerr != nil {
					return nil, err
				}
				req.Body = body
			}
			continue
		}
		return nil, err
	}
}

func (c *h1Conn) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	c.requests++
	noteConnectionID(ctx, c.id)
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	werr := req.Write(c.bw)
	if werr == nil {
		werr = c.bw.Flush()
	}
	if werr == nil {
		// As net/http's transports: the request is written to its end.
		if tr := httptrace.ContextClientTrace(ctx); tr != nil && tr.WroteRequest != nil {
			tr.WroteRequest(httptrace.WroteRequestInfo{})
		}
	}
	if werr != nil {
		// An upstream may answer before reading the whole body (413, 401)
		// and close: our write then fails, but its response is there.
		if resp := c.earlyResponse(req); resp != nil {
			c.release(stop, false)
			return resp, nil
		}
		stop()
		return nil, werr
	}
	var resp *http.Response
	for {
		var err error
		resp, err = c.readResponse(req)
		if err != nil {
			stop()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		// Skip informational responses (100 Continue, 103 Early Hints);
		// 101 Switching Protocols is final.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return c.upgraded(ctx, stop, resp)
	}
	reuse := !resp.Close && !req.Close && c.reusable(time.Now())
	if resp.Body == http.NoBody || resp.Body == nil {
		c.release(stop, reuse)
		return resp, nil
	}
	resp.Body = &h1Body{rc: resp.Body, c: c, stop: stop, reuse: reuse}
	return resp, nil
}

// upgraded hands the connection of a 101 Switching Protocols response to
// the caller as resp.Body, an io.ReadWriteCloser, as net/http's Transport
// does: the connection leaves the pool for good (its slot in
// max_connections is held until Close) and ctx no longer bounds it.
func (c *h1Conn) upgraded(ctx context.Context, stop func() bool, resp *http.Response) (*http.Response, error) {
	if !stop() {
		// ctx ended while the response was read: its deadline may be set.
		c.close()
		return nil, ctx.Err()
	}
	resp.Body = &UpgradedConn{c: c}
	return resp, nil
}

// UpgradedConn is the body of a 101 Switching Protocols response of an
// HTTP/1.1 upstream: the raw connection, bytes the upstream sent after its
// response head first. Read and Write may be called from two goroutines;
// Close, safe to call more than once and concurrently, closes the
// connection and gives its slot back to the cluster's pool.
type UpgradedConn struct {
	c *h1Conn
}

var _ io.ReadWriteCloser = (*UpgradedConn)(nil)

func (u *UpgradedConn) Read(p []byte) (int, error)  { return u.c.br.Read(p) }
func (u *UpgradedConn) Write(p []byte) (int, error) { return u.c.nc.Write(p) }

// CloseWrite half-closes the connection (TCP FIN): the upstream reads EOF
// and may go on writing.
func (u *UpgradedConn) CloseWrite() error {
	if cw, ok := u.c.nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return u.c.nc.Close()
}

// Close closes the connection.
func (u *UpgradedConn) Close() error {
	u.c.close()
	return nil
}

// earlyResponse reads the response an upstream sent before it stopped
// reading the request, when writing failed with a broken pipe or a reset
// after some bytes were accepted. The response body is read into memory
// (bounded) because the connection is done for. It returns nil when there
// is no complete response.
func (c *h1Conn) earlyResponse(req *http.Request) *http.Response {
	// c.werr, not the error req.Write returned: net/http wraps that one in
	// a type without Unwrap when the body is copied with WriteTo.
	if c.wrote == 0 || !(errors.Is(c.werr, syscall.EPIPE) || errors.Is(c.werr, syscall.ECONNRESET)) {
		return nil
	}
	c.nc.SetReadDeadline(time.Now().Add(earlyResponseWait))
	resp, err := http.ReadResponse(c.br, req)
	if err != nil || resp.StatusCode < 200 {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, earlyResponseMaxBody+1))
	resp.Body.Close()
	if err != nil || len(body) > earlyResponseMaxBody {
		return nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Close = true
	return resp
}

// Bounds of reading an early response from a connection whose write failed.
const (
	earlyResponseWait    = time.Second
	earlyResponseMaxBody = 64 << 10
)

// release ends a round trip: the connection goes back to the pool when the
// exchange completed cleanly and no cancellation poisoned its deadline.
func (c *h1Conn) release(stop func() bool, reuse bool) {
	if stop() && reuse {
		c.t.putIdle(c)
		return
	}
	c.close()
}

// close closes the connection and gives its slot back to the pool (a
// pending request may take it). Closing twice is harmless.
func (c *h1Conn) close() {
	if c.closed.Swap(true) {
		return
	}
	c.nc.Close()
	c.t.slotFreed(poolID{key: c.key})
}

// retire closes the connection and keeps its slot in open: the caller
// hands the slot (moveLocked) to a pending request.
func (c *h1Conn) retire() {
	c.closed.Store(true)
	c.nc.Close()
}

// reusable reports whether the connection may serve another request:
// max_requests_per_connection and max_connection_duration not reached.
func (c *h1Conn) reusable(now time.Time) bool {
	o := c.t.connOpts.Load()
	if o.MaxRequestsPerConnection > 0 && c.requests >= o.MaxRequestsPerConnection {
		return false
	}
	return o.MaxConnectionDuration <= 0 || now.Sub(c.created) < o.MaxConnectionDuration
}

// h1Body is a response body that gives its connection back at EOF, and
// closes it when the reader gives up early (the rest of the body is not
// drained: a proxy's client went away, nothing waits for it).
type h1Body struct {
	rc    io.ReadCloser
	c     *h1Conn
	stop  func() bool
	reuse bool
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.done = true
		b.c.release(b.stop, b.reuse)
	} else if err != nil {
		b.done = true
		b.stop()
		b.c.close()
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.done = true
		b.stop()
		b.c.close()
	}
	return nil
}

// acquire gets a connection to addr: an idle one (reused true), a new
// one when the cluster has fewer than max_connections or the endpoint's
// pool has no connection (past the limit, as Envoy), or else the next one
// freed, waiting as a pending request. With max_pending_requests already
// waiting it fails at once with ErrOverflow. Dial errors wrap
// *ConnectError; a cancelled ctx ends the wait with ctx.Err().
func (t *h1Transport) acquire(ctx context.Context, addr string, tt *tlsTransport, hdr *proxyHeader) (c *h1Conn, reused bool, err error) {
	key := poolKey(addr, tt)
	if hdr != nil {
		key = poolKey(hdr.key, tt)
	}
	pool := poolID{key: key}
	for {
		t.mu.Lock()
		c := t.popIdleLocked(key)
		if c != nil {
			t.mu.Unlock()
			if t.fresh(c) {
				return c, true, nil
			}
			c.close()
			continue // bounded: every turn takes one idle connection away
		}
		if t.open < t.maxConns {
			t.takeLocked(pool)
			t.mu.Unlock()
			c, err := t.dialSlot(ctx, addr, tt, key, hdr)
			return c, false, err
		}
		if t.perPool[pool] == 0 {
			ok := t.pastLimitLocked(pool)
			t.mu.Unlock()
			if !ok {
				return nil, false, ErrOverflow
			}
			c, err := t.dialSlot(ctx, addr, tt, key, hdr)
			return c, false, err
		}
		// At the limit, an idle connection to another endpoint gives its
		// slot to this request rather than make it wait.
		if retire := t.retireIdleLocked(pool); retire != nil {
			t.mu.Unlock()
			retire()
			c, err := t.dialSlot(ctx, addr, tt, key, hdr)
			return c, false, err
		}
		g, err := t.waitLocked(ctx, &h1Waiter{key: key, ch: make(chan h1Grant, 1)})
		if err != nil {
			return nil, false, err
		}
		if g.c != nil {
			return g.c, true, nil
		}
		c, err = t.dialSlot(ctx, addr, tt, key, hdr)
		return c, false, err
	}
}

// waitLocked, called with t.mu held at max_connections, counts the
// overflow and queues w as a pending request, or fails at once with
// ErrOverflow when max_pending_requests are already waiting. It unlocks
// t.mu and blocks until a grant or ctx's end (ctx.Err()).
func (t *h1Transport) waitLocked(ctx context.Context, w *h1Waiter) (h1Grant, error) {
	t.cxOverflow.Add(1)
	if t.pendingFullLocked() {
		t.mu.Unlock()
		t.pendingOverflow.Add(1)
		return h1Grant{}, ErrOverflow
	}
	t.waiters = append(t.waiters, w)
	t.mu.Unlock()
	select {
	case g := <-w.ch:
		return g, nil
	case <-ctx.Done():
		t.mu.Lock()
		i := slices.Index(t.waiters, w)
		if i >= 0 {
			t.waiters = slices.Delete(t.waiters, i, i+1)
		}
		t.mu.Unlock()
		if i < 0 {
			// Granted while giving up: pass it on.
			switch g := <-w.ch; {
			case g.c != nil:
				t.putIdle(g.c)
			case g.h2 != nil:
				g.h2.p.streamDone(g.h2)
			default:
				t.slotFreed(w.pool())
			}
		}
		return h1Grant{}, ctx.Err()
	}
}

// pastLimitLocked, called with t.mu held at max_connections for a request
// of pool, which has no connection, makes room for the connection Envoy
// makes past the limit for it: it takes a slot for pool and counts
// upstream_cx_overflow. When max_pending_requests already wait it counts
// upstream_rq_pending_overflow instead and returns false: Envoy checks
// pending capacity before it queues the request it connects for.
func (t *h1Transport) pastLimitLocked(pool poolID) bool {
	if t.pendingFullLocked() {
		t.pendingOverflow.Add(1)
		return false
	}
	t.cxOverflow.Add(1)
	t.takeLocked(pool)
	return true
}

// pendingFullLocked reports whether max_pending_requests are waiting: the
// HTTP/1.1 and HTTP/2 waiters and the HTTP/2 requests waiting for a
// connection being established.
func (t *h1Transport) pendingFullLocked() bool {
	return len(t.waiters)+t.h2Pending >= t.maxPending
}

// acquireSlot takes one of the cluster's max_connections slots for a
// connection the caller dials itself (the TCP proxy's): Envoy counts TCP
// and HTTP connections of a cluster against one limit. At the limit it
// counts upstream_cx_overflow and fails at once with ErrOverflow, without
// waiting: Envoy's tcp_proxy checks the limit before asking its pool,
// whose queue would wait for a connection that is never released, so the
// per-host pool's exception to the limit (h1Transport) never applies to
// it. The slot belongs to no host pool. release gives the slot back; it
// is safe to call more than once.
func (t *h1Transport) acquireSlot() (release func(), err error) {
	t.mu.Lock()
	if t.open >= t.maxConns {
		t.mu.Unlock()
		t.cxOverflow.Add(1)
		return nil, ErrOverflow
	}
	t.takeLocked(poolID{})
	t.mu.Unlock()
	return sync.OnceFunc(func() { t.slotFreed(poolID{}) }), nil
}

// dialSlot dials addr over tt (nil: plaintext) for the pool of key with
// a slot already counted in open and for that pool; a failed dial or
// handshake gives the slot back.
func (t *h1Transport) dialSlot(ctx context.Context, addr string, tt *tlsTransport, key string, hdr *proxyHeader) (*h1Conn, error) {
	nc, err := t.dial(ctx, "tcp", addr)
	if err == nil && hdr != nil {
		// First, before any TLS handshake, as Envoy's
		// upstream_proxy_protocol socket wraps the TLS one.
		if err = hdr.write(nc); err != nil {
			_ = nc.Close()
			err = &ConnectError{Addr: addr, Err: err}
		}
	}
	if err == nil && tt != nil {
		nc, err = tt.handshake(ctx, nc, addr)
	}
	if err != nil {
		t.slotFreed(poolID{key: key})
		return nil, err
	}
	c := &h1Conn{t: t, key: key, nc: nc, created: time.Now(), hdrLeft: -1, id: filter.NewConnectionID()}
	// *tls.Conn, or the metadata exchange's istiostats.MXConn over one.
	if tc, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		cs := tc.ConnectionState()
		c.tls = &cs
	}
	c.br = bufio.NewReaderSize(headReader{c}, t.bufSize)
	c.bw = bufio.NewWriterSize(countingConn{nc, c}, t.bufSize)
	return c, nil
}

// keepAliveConfig maps Envoy's TcpKeepalive to the socket options; an
// unset field (0) leaves the socket's value unchanged.
func keepAliveConfig(ka *config.TCPKeepalive) net.KeepAliveConfig {
	kc := net.KeepAliveConfig{Enable: true, Idle: ka.Time, Interval: ka.Interval, Count: int(ka.Probes)}
	if kc.Idle == 0 {
		kc.Idle = -1
	}
	if kc.Interval == 0 {
		kc.Interval = -1
	}
	if kc.Count == 0 {
		kc.Count = -1
	}
	return kc
}

// fresh reports whether an idle connection may be reused: not idle past
// the idle timeout, not past max_connection_duration, and still open.
func (t *h1Transport) fresh(c *h1Conn) bool {
	now := time.Now()
	idleTimeout := t.idleTimeout
	if d := t.connOpts.Load().IdleTimeout; d > 0 {
		idleTimeout = d
	}
	return now.Sub(c.idleSince) < idleTimeout && c.reusable(now) && c.br.Buffered() == 0 && connAlive(c.nc)
}

func (t *h1Transport) popIdleLocked(key string) *h1Conn {
	l := t.idle[key]
	if len(l) == 0 {
		return nil
	}
	c := l[len(l)-1]
	l[len(l)-1] = nil
	t.idle[key] = l[:len(l)-1]
	return c
}

// retireIdleLocked takes an idle connection of the cluster out of its
// pool for a request that found max_connections in use, the oldest idle
// HTTP/1.1 connection of any endpoint first, else an idle HTTP/2
// connection of any pool: its slot in open passes to that request's pool
// to. It returns what closes the connection (call it after unlocking
// t.mu), nil when no connection is idle.
func (t *h1Transport) retireIdleLocked(to poolID) (retire func()) {
	if c := t.popOtherIdleLocked(); c != nil {
		t.moveLocked(poolID{key: c.key}, to)
		return c.retire
	}
	for _, p := range t.h2pools {
		if c := p.retireIdleLocked(); c != nil {
			t.moveLocked(poolID{h2: p, key: c.addr}, to)
			return c.close
		}
	}
	return nil
}

// popOtherIdleLocked takes the oldest idle connection of any endpoint.
func (t *h1Transport) popOtherIdleLocked() *h1Conn {
	for key, l := range t.idle {
		if len(l) == 0 {
			continue
		}
		c := l[0]
		t.idle[key] = slices.Delete(l, 0, 1)
		return c
	}
	return nil
}

// slotFreed gives back one slot of open, held by pool, and grants free
// slots to pending requests, oldest first.
func (t *h1Transport) slotFreed(pool poolID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.giveLocked(pool)
}

// takeLocked counts one more slot of open, for pool.
func (t *h1Transport) takeLocked(pool poolID) {
	t.open++
	if pool != (poolID{}) {
		t.perPool[pool]++
	}
}

// giveLocked gives back one slot of open held by pool and grants free
// slots to pending requests; see rescueLocked.
func (t *h1Transport) giveLocked(pool poolID) {
	t.open--
	t.dropLocked(pool)
	t.grantLocked()
	t.rescueLocked(pool)
}

// moveLocked hands a slot of open from pool from to pool to.
func (t *h1Transport) moveLocked(from, to poolID) {
	t.perPool[to]++
	t.dropLocked(from)
	t.rescueLocked(from)
}

func (t *h1Transport) dropLocked(pool poolID) {
	if pool == (poolID{}) {
		return
	}
	if n := t.perPool[pool] - 1; n > 0 {
		t.perPool[pool] = n
	} else {
		delete(t.perPool, pool)
	}
}

func (t *h1Transport) grantLocked() {
	for len(t.waiters) > 0 && t.open < t.maxConns {
		w := t.waiters[0]
		t.waiters = slices.Delete(t.waiters, 0, 1)
		t.takeLocked(w.pool())
		w.ch <- h1Grant{} // buffered, never blocks
	}
}

// rescueLocked gives the oldest request waiting for pool, when pool has
// no connection left, a slot past max_connections (upstream_cx_overflow):
// as Envoy's pool, which connects for its pending streams when it loses
// its last connection, so that they do not wait for another endpoint's.
func (t *h1Transport) rescueLocked(pool poolID) {
	if pool == (poolID{}) || t.perPool[pool] > 0 {
		return
	}
	for i, w := range t.waiters {
		if w.pool() == pool {
			t.waiters = slices.Delete(t.waiters, i, i+1)
			t.cxOverflow.Add(1)
			t.takeLocked(pool)
			w.ch <- h1Grant{} // buffered, never blocks
			return
		}
	}
}

// setPolicy takes a new generation's circuit-breaker limits and
// connection options.
func (t *h1Transport) setPolicy(maxConns, maxPending uint32, o config.ConnectionOptions) {
	t.connOpts.Store(&o)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxConns, t.maxPending = int(min(maxConns, math.MaxInt32)), int(min(maxPending, math.MaxInt32))
	t.grantLocked()
}

// putIdle keeps a connection whose exchange completed for the next
// request: the oldest pending request to the same endpoint takes it
// first; a pending request to another endpoint takes its slot.
func (t *h1Transport) putIdle(c *h1Conn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		c.close()
		return
	}
	for i, w := range t.waiters {
		if w.h2 == nil && w.key == c.key {
			t.waiters = slices.Delete(t.waiters, i, i+1)
			t.mu.Unlock()
			w.ch <- h1Grant{c: c}
			return
		}
	}
	if len(t.waiters) > 0 && t.open >= t.maxConns {
		w := t.waiters[0]
		t.waiters = slices.Delete(t.waiters, 0, 1)
		t.moveLocked(poolID{key: c.key}, w.pool())
		t.mu.Unlock()
		c.retire()
		w.ch <- h1Grant{}
		return
	}
	if len(t.idle[c.key]) >= t.maxIdle {
		t.mu.Unlock()
		c.close()
		return
	}
	t.idle[c.key] = append(t.idle[c.key], c)
	t.mu.Unlock()
}

// closeIdleWhere closes the idle connections whose pool key matches.
func (t *h1Transport) closeIdleWhere(match func(key string) bool) {
	var drop []*h1Conn
	t.mu.Lock()
	for k, l := range t.idle {
		if match(k) {
			drop = append(drop, l...)
			delete(t.idle, k)
		}
	}
	t.mu.Unlock()
	for _, c := range drop {
		c.close()
	}
}

// CloseIdleConnections closes every idle connection; connections in use
// are closed when their round trip ends.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	t.mu.Unlock()
	for _, l := range idle {
		for _, c := range l {
			c.close()
		}
	}
}

// close closes idle connections and keeps connections in use out of the
// pool once their round trip ends.
func (t *h1Transport) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.CloseIdleConnections()
}
