package tcp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
// connect_timeout) and ctx. Any 2xx opens the tunnel: the bytes of up
// that came after the head are returned (rest), to go downstream first.
// Anything else is a *tunnelError; a failed write or read is returned as
// it is. The caller closes up on error.
func openTunnel(ctx context.Context, up net.Conn, tc *config.Tunneling, timeout time.Duration) (rest []byte, err error) {
	if timeout <= 0 {
		timeout = config.DefaultConnectTimeout
	}
	_ = up.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = up.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	method, target := http.MethodConnect, tc.Hostname
	if tc.UsePost {
		method, target = http.MethodPost, tc.PostPath
	}
	// Written by hand rather than by http.Request.Write, which would add a
	// User-Agent, and a Content-Length: 0 to the POST: the request is
	// exactly Envoy's, and a POST's body is the raw byte stream that
	// follows.
	if _, err := io.WriteString(up, method+" "+target+" HTTP/1.1\r\nHost: "+tc.Hostname+"\r\n\r\n"); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(&io.LimitedReader{R: up, N: maxTunnelHead}, 4<<10)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || isHeadError(err) {
			return nil, &tunnelError{status: http.StatusBadGateway, reason: "tunnel: no valid response from the upstream proxy: " + err.Error()}
		}
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &tunnelError{status: resp.StatusCode, reason: fmt.Sprintf("tunnel: the upstream proxy answered %s", resp.Status)}
	}
	// RFC 9110 9.3.6: a 2xx to CONNECT has no content; Content-Length and
	// Transfer-Encoding are ignored, so whatever the reader took past
	// the head is the tunnel's.
	if n := br.Buffered(); n > 0 {
		rest, _ = br.Peek(n)
	}
	if err := up.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return rest, nil
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
