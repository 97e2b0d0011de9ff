package tcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// maxTunnelHead bounds the bytes read for the proxy's response head
// (Envoy's default max_response_headers_kb, 60 KiB).
const maxTunnelHead = 60 << 10

// errTunnelHTTP2 refuses tunneling_config on a cluster that speaks HTTP/2:
// Envoy would send an HTTP/2 CONNECT (or POST) there; Loom speaks the
// tunnel over HTTP/1.1 only.
var errTunnelHTTP2 = errors.New("tunneling over HTTP/2 is not supported")

// tunnelError is a tunnel the upstream proxy refused: its response was not
// 2xx (status), or was no HTTP/1.1 response at all (status 502).
type tunnelError struct {
	status int
	reason string
}

func (e *tunnelError) Error() string { return e.reason }

// openTunnel asks the HTTP proxy at the other end of up to carry the
// connection to tc.Hostname, as Envoy's tcp_proxy tunneling_config over
// HTTP/1.1 (TcpProxy::HttpUpstream): it writes "CONNECT host:port
// HTTP/1.1" (or "POST path HTTP/1.1" with use_post) and "Host: host:port",
// then reads the response head within timeout (the cluster's
// connect_timeout) and ctx. Any 2xx opens the tunnel.
//
// For CONNECT the tunnel is up itself: the bytes of up that came after
// the head are returned (rest), to go downstream first. For POST it is a
// *postTunnel over up (rest is nil): Envoy's HTTP/1.1 codec sends a
// request without Content-Length as "Transfer-Encoding: chunked" and
// chunk-encodes the bytes it carries, and reads the response body by its
// framing.
//
// Anything but a 2xx is a *tunnelError; a failed write or read is returned
// as it is. The caller closes up on error.
func openTunnel(ctx context.Context, up net.Conn, tc *config.Tunneling, timeout time.Duration) (tunnel net.Conn, rest []byte, err error) {
	if timeout <= 0 {
		timeout = config.DefaultConnectTimeout
	}
	_ = up.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = up.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	// Written by hand rather than by http.Request.Write, which would add a
	// User-Agent: the request is exactly Envoy's.
	head := "CONNECT " + tc.Hostname + " HTTP/1.1\r\nHost: " + tc.Hostname + "\r\n\r\n"
	method := http.MethodConnect
	if tc.UsePost {
		method = http.MethodPost
		head = "POST " + tc.PostPath + " HTTP/1.1\r\nHost: " + tc.Hostname + "\r\nTransfer-Encoding: chunked\r\n\r\n"
	}
	if _, err := io.WriteString(up, head); err != nil {
		return nil, nil, err
	}
	tr := &tunnelReader{Conn: up}
	lr := &io.LimitedReader{R: tr, N: maxTunnelHead}
	br := bufio.NewReaderSize(lr, 4<<10)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || isHeadError(err) {
			return nil, nil, &tunnelError{status: http.StatusBadGateway, reason: "tunnel: no valid response from the upstream proxy: " + err.Error()}
		}
		return nil, nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, nil, &tunnelError{status: resp.StatusCode, reason: fmt.Sprintf("tunnel: the upstream proxy answered %s", resp.Status)}
	}
	if err := up.SetDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	if tc.UsePost {
		lr.N = math.MaxInt64 // the head limit is past; the body is the tunnel's
		return newPostTunnel(up, tr, br, resp.Body), nil, nil
	}
	// RFC 9110 9.3.6: a 2xx to CONNECT has no content; Content-Length and
	// Transfer-Encoding are ignored, so whatever the reader took past
	// the head is the tunnel's.
	if n := br.Buffered(); n > 0 {
		rest, _ = br.Peek(n)
	}
	return up, rest, nil
}

// postTunnel is a tunnel over an HTTP/1.1 POST (use_post): what is
// written goes to the proxy as one chunk per Write, CloseWrite ends the
// request body with the last chunk (and leaves the connection open), and
// Read returns the response body as its framing says (chunked,
// Content-Length, or until the proxy closes; net/http's reader). It is a
// bridge side: one goroutine reads, another writes (Write, then
// CloseWrite), so neither half needs a lock; Close may come from any.
//
// A read deadline (the bridge's wake for the idle timeout and interim
// reports) is applied only while waiting for the first byte of a Read,
// through the buffered reader: a deadline that struck inside the chunked
// decoder would leave it failed for good. Inside the decoder (a chunk cut
// short: its size line, its data or its CRLF) the wait is bounded by the
// idle timeout instead (tunnelReader.hold), so that a stalled response
// cannot hold the connection past idle_timeout.
type postTunnel struct {
	net.Conn // up, for its addresses, deadlines and Close
	// The read half.
	r    *tunnelReader
	br   *bufio.Reader
	body io.ReadCloser
	done bool // body ended
	// deadline is the read deadline set (zero: none).
	deadline time.Time
	// The write half.
	bw     *bufio.Writer
	size   []byte // scratch for a chunk's size line
	closed bool
}

func newPostTunnel(up net.Conn, r *tunnelReader, br *bufio.Reader, body io.ReadCloser) *postTunnel {
	// Room for a whole 32 KiB bridge copy and its chunk framing, so that
	// one chunk is one write to the socket.
	bw := bufio.NewWriterSize(up, 32<<10+32)
	return &postTunnel{Conn: up, r: r, br: br, body: body, bw: bw, size: make([]byte, 0, 18)}
}

// watchIdle makes the decoder's waits end only once no byte has moved
// either way for idle (0: never): last is the bridge's time of the last
// byte moved, in Unix nanoseconds, which reads through the tunnel also
// advance. Called before the first Read.
func (t *postTunnel) watchIdle(last *atomic.Int64, idle time.Duration) {
	t.r.last, t.r.idle = last, idle
}

// Write sends p as one chunk (RFC 9112 7.1: its size in hex, CRLF, the
// data, CRLF) without allocating, in one write to up when p fits in the
// 32 KiB buffer (a bridge copy does).
func (t *postTunnel) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // a zero-length chunk would end the body
	}
	if t.closed {
		return 0, net.ErrClosed
	}
	t.size = append(strconv.AppendUint(t.size[:0], uint64(len(p)), 16), '\r', '\n')
	_, _ = t.bw.Write(t.size) // bufio's errors stick: Flush returns the first
	_, _ = t.bw.Write(p)
	_, _ = t.bw.WriteString("\r\n")
	if err := t.bw.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite ends the request body: the last chunk and an empty trailer
// section ("0\r\n\r\n"), as Envoy's HTTP/1.1 codec ends a body
// (StreamEncoderImpl::endEncode). It does not half-close up: for HTTP a
// FIN is no part of the message, and a decapsulator written with net/http
// cancels r.Context() when it reads EOF after the body, which would cut
// its answer. Envoy itself closes the connection once the last chunk is
// flushed (endEncode's close(FlushWrite) under is_tcp_tunneling_), which
// drops the response's rest; Loom keeps reading the response until it
// ends, so that a half-closed client still gets the upstream's answer.
func (t *postTunnel) CloseWrite() error {
	if t.closed {
		return nil
	}
	t.closed = true
	_, _ = t.bw.WriteString("0\r\n\r\n")
	return t.bw.Flush()
}

func (t *postTunnel) Read(p []byte) (int, error) {
	if t.done {
		return 0, io.EOF
	}
	if !t.deadline.IsZero() && t.br.Buffered() == 0 {
		_ = t.Conn.SetReadDeadline(t.deadline)
		if _, err := t.br.Peek(1); err != nil && !errors.Is(err, io.EOF) {
			return 0, err // the reader forgets the error; the body never saw it
		}
	}
	_ = t.Conn.SetReadDeadline(t.r.idleDeadline())
	t.r.hold = true
	n, err := t.body.Read(p)
	t.r.hold = false
	if errors.Is(err, io.EOF) {
		t.done = true
	}
	return n, err
}

// SetReadDeadline sets the deadline of the next Reads' wait for a first
// byte; see postTunnel.
func (t *postTunnel) SetReadDeadline(d time.Time) error {
	t.deadline = d
	return nil
}

func (t *postTunnel) SetDeadline(d time.Time) error {
	_ = t.SetReadDeadline(d)
	return t.Conn.SetWriteDeadline(d)
}

// tunnelReader is what a tunnel's buffered reader reads up through. While
// hold is set (inside the chunked decoder), a read deadline that passes
// before the connection has been idle for idle is moved to last+idle and
// the read goes on, so the decoder sees a timeout only when the
// connection really is idle; otherwise errors pass as they are. Its reads
// advance last. One goroutine reads; last is shared with the bridge.
type tunnelReader struct {
	net.Conn
	last *atomic.Int64 // nil until watchIdle
	idle time.Duration // 0: no idle timeout
	hold bool
}

func (r *tunnelReader) Read(p []byte) (int, error) {
	for {
		n, err := r.Conn.Read(p)
		if n > 0 && r.last != nil {
			r.last.Store(time.Now().UnixNano())
		}
		if n > 0 || !r.hold || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		d := r.idleDeadline()
		if d.IsZero() || !time.Now().Before(d) {
			return n, err
		}
		_ = r.Conn.SetReadDeadline(d)
	}
}

// idleDeadline is when the connection will have been idle for idle, as of
// its last activity; zero without an idle timeout.
func (r *tunnelReader) idleDeadline() time.Time {
	if r.idle <= 0 || r.last == nil {
		return time.Time{}
	}
	return time.Unix(0, r.last.Load()).Add(r.idle)
}

// isHeadError reports whether err is net/http's complaint about a
// malformed response head (textproto or a bad status line).
func isHeadError(err error) bool {
	var pe *net.OpError
	if errors.As(err, &pe) {
		return false
	}
	var ne net.Error
	return !errors.As(err, &ne)
}
