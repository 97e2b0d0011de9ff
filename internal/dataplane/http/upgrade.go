package http

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
)

// Envoy's response code details of upgrades.
const detailsUpgradeFailed = "upgrade_failed"

// upgradeType returns the protocol an HTTP/1.1 request asks to upgrade to
// (its Upgrade header, when Connection names "upgrade"), or "" when it
// asks none. "h2c" counts as none: as Envoy's HTTP/1 codec, the proxy
// serves such a request as plain HTTP/1.1 (prepareRequestHeaders drops
// the upgrade headers).
func upgradeType(r *http.Request) string {
	up, ok := r.Header["Upgrade"]
	if !ok || r.ProtoMajor != 1 || len(up) == 0 || up[0] == "" {
		return ""
	}
	if strings.EqualFold(up[0], "h2c") || !headerHasToken(r.Header["Connection"], "upgrade") {
		return ""
	}
	return up[0]
}

// headerHasToken reports whether the comma-separated values vv hold token,
// case ignored.
func headerHasToken(vv []string, token string) bool {
	for _, v := range vv {
		for len(v) > 0 {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(textproto.TrimString(tok), token) {
				return true
			}
		}
	}
	return false
}

// upgradeRejected reports whether r asks for an upgrade that filter chain
// l and route do not allow (Envoy answers it 403 upgrade_failed before the
// filter chain runs). A request with no route is left to the router's 404.
func upgradeRejected(r *http.Request, l *config.FilterChain, route *config.Route) bool {
	if _, ok := r.Header["Upgrade"]; !ok || l == nil || route == nil {
		return false
	}
	up := upgradeType(r)
	return up != "" && !config.UpgradeAllowed(l, route, up)
}

// tunnels tracks the upgraded connections being proxied, so that Close
// ends them: a hijacked connection is no longer the http.Server's.
type tunnels struct {
	// mu guards the fields below.
	mu     sync.Mutex
	open   map[*tunnel]struct{}
	closed bool
}

// add registers t; it returns false after close (t must not start).
func (ts *tunnels) add(t *tunnel) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.closed {
		return false
	}
	if ts.open == nil {
		ts.open = map[*tunnel]struct{}{}
	}
	ts.open[t] = struct{}{}
	return true
}

func (ts *tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	delete(ts.open, t)
	ts.mu.Unlock()
}

// close closes every open tunnel's connections; their handlers then end.
func (ts *tunnels) close() {
	ts.mu.Lock()
	ts.closed = true
	open := make([]*tunnel, 0, len(ts.open))
	for t := range ts.open {
		open = append(open, t)
	}
	ts.mu.Unlock()
	for _, t := range open {
		t.closeBoth()
	}
}

// tunnel is one upgraded request: the downstream connection, hijacked, and
// the upstream's, joined byte for byte.
type tunnel struct {
	down net.Conn
	up   io.ReadWriteCloser
	once sync.Once
}

func (t *tunnel) closeBoth() {
	t.once.Do(func() {
		t.down.Close()
		t.up.Close()
	})
}

// closeWrite half-closes c (TCP FIN) when it can, else closes it.
func closeWrite(c any) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	if cl, ok := c.(io.Closer); ok {
		_ = cl.Close()
	}
}

// tunnel completes an upgrade the upstream accepted (resp is its 101
// Switching Protocols, resp.Body the upstream connection): it hijacks the
// downstream connection, sends it the 101 with hdr (end-to-end headers
// already in place) plus Connection and Upgrade, and copies bytes both
// ways until both directions ended. A direction that reaches EOF
// half-closes its destination and the other goes on; an error on either
// closes both. It blocks until then, so that the access log entry, written
// after, has the bytes and the whole duration. Neither direction has a
// timeout (Istio's stream_idle_timeout 0s); ConnectionManager.Close ends
// tunnels under way.
func (cm *ConnectionManager) tunnel(w http.ResponseWriter, resp *http.Response, hdr http.Header, e *telemetry.Entry) {
	up, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		// Only the HTTP/1.1 pool upgrades; h2c clusters never get here.
		resp.Body.Close()
		localReply(w, nil, e, http.StatusServiceUnavailable, FlagUpstreamConnTerm, "upstream_reset_before_response_started{protocol_error}",
			"upstream connect error or disconnect/reset before headers. reset reason: protocol error")
		return
	}
	down, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		cm.logger.Debug("upgrade: hijack", "error", err)
		localReply(w, nil, e, http.StatusInternalServerError, FlagDownstreamProtoErr, detailsUpgradeFailed, "")
		return
	}
	_ = down.SetDeadline(time.Time{}) // the server's timeouts no longer apply
	t := &tunnel{down: down, up: up}
	if !cm.tunnels.add(t) {
		t.closeBoth()
		e.ResponseFlags, e.ResponseCodeDetails = FlagDownstreamConnTerm, "downstream_remote_disconnect"
		return
	}
	defer cm.tunnels.remove(t)
	defer t.closeBoth()

	hdr["Connection"] = []string{"Upgrade"}
	if v, ok := resp.Header["Upgrade"]; ok {
		hdr["Upgrade"] = v
	}
	if err := writeSwitchingProtocols(brw.Writer, hdr); err != nil {
		e.ResponseFlags, e.ResponseCodeDetails = FlagDownstreamConnTerm, "downstream_remote_disconnect"
		return
	}

	var sent atomic.Int64
	downDone := make(chan error, 1)
	go func() {
		// upstream -> downstream
		n, err := io.Copy(down, up)
		sent.Store(n)
		if err == nil {
			closeWrite(down)
		} else {
			t.closeBoth()
		}
		downDone <- err
	}()
	// downstream -> upstream; brw.Reader holds bytes the client sent
	// after its request head.
	received, upErr := io.Copy(up, brw.Reader)
	if upErr == nil {
		closeWrite(up)
	} else {
		t.closeBoth()
	}
	downErr := <-downDone
	e.BytesReceived += received
	e.BytesSent = sent.Load()
	if upErr != nil || downErr != nil {
		cm.logger.Debug("upgrade: tunnel ended", "downstream_error", upErr, "upstream_error", downErr)
	}
}

// writeSwitchingProtocols writes a 101 response head with hdr to bw and
// flushes it.
func writeSwitchingProtocols(bw *bufio.Writer, hdr http.Header) error {
	bw.WriteString("HTTP/1.1 " + strconv.Itoa(http.StatusSwitchingProtocols) + " Switching Protocols\r\n")
	if err := hdr.Write(bw); err != nil {
		return err
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}
