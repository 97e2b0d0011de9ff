package listener

import (
	"time"

	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// maxPeek bounds the bytes listener filters may read ahead of the filter
// chain: a ClientHello of up to 64 KiB in its record headers (Envoy's
// tls_inspector limit).
const maxPeek = 64<<10 + 5

// errPeekLimit is returned by fill past maxPeek.
var errPeekLimit = errors.New("listener filters: more than 64 KiB inspected")

// peekConn is an accepted connection whose first bytes listener filters
// read without consuming them: fill reads ahead into buf, Read returns
// buf's bytes first, then reads the socket. It is used by one goroutine at
// a time until handed to the filter chain.
type peekConn struct {
	net.Conn
	buf []byte // read from Conn, not yet consumed by Read
	off int    // consumed bytes of buf
	// accepted is when the connection was accepted (Envoy's connection
	// start, which DOWNSTREAM_HANDSHAKE_DURATION counts from).
	accepted time.Time
}

// fill reads until at least n bytes are buffered (n <= maxPeek) and
// returns the buffered bytes; with fewer, the read's error.
func (c *peekConn) fill(n int) ([]byte, error) {
	if n > maxPeek {
		return c.buf, errPeekLimit
	}
	for len(c.buf) < n {
		if cap(c.buf) < n {
			nb := make([]byte, len(c.buf), min(max(2*cap(c.buf), n, 1024), maxPeek))
			copy(nb, c.buf)
			c.buf = nb
		}
		m, err := c.Conn.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+m]
		if err != nil && len(c.buf) < n {
			return c.buf, err
		}
	}
	return c.buf, nil
}

func (c *peekConn) Read(p []byte) (int, error) {
	if c.off < len(c.buf) {
		n := copy(p, c.buf[c.off:])
		c.off += n
		if c.off == len(c.buf) {
			c.buf, c.off = nil, 0
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo writes the buffered bytes, then copies the socket: between two
// TCP sockets (the TCP proxy) the copy is spliced by the kernel.
func (c *peekConn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if c.off < len(c.buf) {
		m, err := w.Write(c.buf[c.off:])
		n += int64(m)
		c.off += m
		if err != nil {
			return n, err
		}
		c.buf, c.off = nil, 0
	}
	m, err := io.Copy(w, c.Conn)
	return n + m, err
}

// ReadFrom writes r to the socket (spliced when r is a TCP socket).
func (c *peekConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite half-closes the socket.
func (c *peekConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// acceptedConn is a connection handed to a filter chain with its
// Connection facts; an HTTP server finds them through ConnContext (also
// under a *tls.Conn, as its NetConn, and a noALPNConn).
type acceptedConn struct {
	*peekConn
	info *filter.Connection
}

// SetLocalCertificate records the certificate the proxy presented
// (transport.LocalCertificateRecorder); called from the handshake, before
// the Connection is shared.
func (c *acceptedConn) SetLocalCertificate(cert *x509.Certificate) { c.info.LocalCertificate = cert }

// connectionOf returns the facts of a connection a chain server
// accepted, or nil.
func connectionOf(c net.Conn) *filter.Connection {
	if nc, ok := c.(*noALPNConn); ok {
		c = nc.tc
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if ac, ok := c.(*acceptedConn); ok {
		return ac.info
	}
	return nil
}

// replayConn reads a peekConn's bytes from position 0 without consuming
// them, reading ahead on the socket as needed, for crypto/tls to parse a
// ClientHello; writes go nowhere.
type replayConn struct {
	net.Conn // the peekConn's socket: addresses and deadlines
	pc       *peekConn
	pos      int
	err      error // the socket's read error, when a read came up empty
}

func (r *replayConn) Read(p []byte) (int, error) {
	buf, err := r.pc.fill(r.pos + 1)
	if len(buf) <= r.pos {
		r.err = err
		return 0, err
	}
	n := copy(p, buf[r.pos:])
	r.pos += n
	return n, nil
}

func (r *replayConn) Write(p []byte) (int, error) { return len(p), nil }
func (r *replayConn) Close() error                { return nil }

// chanListener is the net.Listener of a filter chain's http.Server:
// connections the listener matched to the chain are pushed to it.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closer sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the server; false when the listener is closed (the
// caller keeps c).
func (l *chanListener) push(c net.Conn) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closer.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// onceCloseListener is a net.Listener whose Close may be called more than
// once and reports no error on the later calls.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}
