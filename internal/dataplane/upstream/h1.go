package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// h1Transport is the HTTP/1.1 keep-alive pool of one cluster. A round trip
// runs on the caller's goroutine: write the request, read the response
// head, and hand back a body that returns the connection to the pool when
// it is read to EOF. net/http.Transport instead hands every request to two
// goroutines per connection (writeLoop, readLoop) and back through
// channels; on a proxy those wake-ups are a large share of the CPU per
// request. It is safe for concurrent use.
type h1Transport struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int           // idle connections kept per endpoint
	idleTimeout time.Duration // an idle connection older than this is closed, not reused
	bufSize     int           // bufio reader and writer size per connection

	// mu guards idle and closed. No I/O happens while it is held.
	mu     sync.Mutex
	idle   map[string][]*h1Conn // by endpoint address; newest last
	closed bool
}

var _ http.RoundTripper = (*h1Transport)(nil)

type h1Conn struct {
	t         *h1Transport
	addr      string
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	wrote     int64 // bytes the socket accepted in the current round trip
	werr      error // the socket's write error in the current round trip
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

// aLongTimeAgo is a deadline in the past: setting it makes pending I/O on a
// connection return at once (how a cancelled request interrupts a read).
var aLongTimeAgo = time.Unix(1, 0)

func newH1Transport(dial func(context.Context, string, string) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *h1Transport {
	return &h1Transport{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, bufSize: 16 << 10, idle: map[string][]*h1Conn{}}
}

// RoundTrip sends req to req.URL.Host over a pooled connection. A reused
// connection that turns out to be dead before any response byte arrived is
// replaced by a new one once, when the request can be sent again (no body,
// or GetBody). Dial errors wrap *ConnectError.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	addr := req.URL.Host
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 0; ; attempt++ {
		c := t.getIdle(addr)
		reused := c != nil
		if c == nil {
			nc, err := t.dial(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			c = &h1Conn{t: t, addr: addr, nc: nc, br: bufio.NewReaderSize(nc, t.bufSize)}
			c.bw = bufio.NewWriterSize(countingConn{nc, c}, t.bufSize)
		}
		c.wrote, c.werr = 0, nil
		resp, err := c.roundTrip(ctx, req)
		if err == nil {
			return resp, nil
		}
		c.close()
		if reused && attempt == 0 && ctx.Err() == nil && replayable {
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
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	werr := req.Write(c.bw)
	if werr == nil {
		werr = c.bw.Flush()
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
		resp, err = http.ReadResponse(c.br, req)
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
	reuse := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	if resp.Body == http.NoBody || resp.Body == nil {
		c.release(stop, reuse)
		return resp, nil
	}
	resp.Body = &h1Body{rc: resp.Body, c: c, stop: stop, reuse: reuse}
	return resp, nil
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

func (c *h1Conn) close() { c.nc.Close() }

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

func (t *h1Transport) getIdle(addr string) *h1Conn {
	for {
		t.mu.Lock()
		l := t.idle[addr]
		if len(l) == 0 {
			t.mu.Unlock()
			return nil
		}
		c := l[len(l)-1]
		l[len(l)-1] = nil
		t.idle[addr] = l[:len(l)-1]
		t.mu.Unlock()
		if time.Since(c.idleSince) < t.idleTimeout && c.br.Buffered() == 0 && connAlive(c.nc) {
			return c
		}
		c.close()
	}
}

func (t *h1Transport) putIdle(c *h1Conn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	if t.closed || len(t.idle[c.addr]) >= t.maxIdle {
		t.mu.Unlock()
		c.close()
		return
	}
	t.idle[c.addr] = append(t.idle[c.addr], c)
	t.mu.Unlock()
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
