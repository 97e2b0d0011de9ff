package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
)

// Envoy's response flags (%RESPONSE_FLAGS%) the TCP proxy sets.
const (
	FlagNoClusterFound    = "NC"
	FlagNoHealthyUpstream = "UH"
	FlagUpstreamConnFail  = "UF"
	FlagUpstreamOverflow  = "UO"
	// FlagDurationTimeout: the connection was closed when
	// max_downstream_connection_duration passed (Envoy's DT).
	FlagDurationTimeout = "DT"
)

// errMaxDuration is the cause of a connection's context ending at
// max_downstream_connection_duration.
var errMaxDuration = errors.New("max_downstream_connection_duration reached")

// minIdleTick bounds how often an idle check wakes a connection up.
const minIdleTick = 10 * time.Millisecond

// Options configures a Proxy.
type Options struct {
	// Generation is the published config; each connection loads it once.
	// Required.
	Generation *atomic.Pointer[config.Generation]
	// Clusters picks endpoints (load balancer, circuit breakers, outlier
	// detection). Required.
	Clusters *upstream.ClusterManager
	// AccessLog is the proxy's stdout access log (access_log entries with
	// path /dev/stdout); ignored when Sinks is set.
	AccessLog *telemetry.AccessLog
	// IstioStats, if non-nil, counts Istio's TCP metrics of the
	// connections of chains with an istio.stats network filter
	// (config.FilterChain.TCPStats); Self is the proxy's own identity for
	// their labels (nil: unknown).
	IstioStats *istiostats.Metrics
	Self       *istiostats.Peer
	// Sinks resolves every access log path; nil: only /dev/stdout, to
	// AccessLog. A connection is logged only by its chain's tcp_proxy
	// access_log entries, as in Envoy.
	Sinks  *telemetry.Sinks
	Logger *slog.Logger
}

// Proxy serves connections of listeners whose filter chain is a
// tcp_proxy. It is safe for concurrent use and keeps no per-connection
// state once ServeConn returns.
type Proxy struct {
	opts Options
	log  *slog.Logger
	// tunnelH2Warned names the clusters whose refused HTTP/2 tunnel was
	// logged at Warn, so that it is logged once per cluster rather than
	// per connection.
	tunnelH2Warned warnedClusters
}

// warnedClusters is a set of cluster names that forgets the clusters gone
// from the config: it holds only names of the latest generation it was
// asked under, so it never outgrows one config's clusters, and a cluster
// that leaves and comes back is warned of again. Safe for concurrent use.
type warnedClusters struct {
	mu sync.Mutex // guards the fields below
	// gen is the Number of the generation names was last pruned against.
	gen   uint64
	names map[string]struct{}
}

// first reports whether name (a cluster of gen) is not in the set yet, and
// adds it. Names gen no longer has are dropped first, once per generation.
func (w *warnedClusters) first(gen *config.Generation, name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen.Number != w.gen {
		for n := range w.names {
			if gen.Clusters[n] == nil {
				delete(w.names, n)
			}
		}
		w.gen = gen.Number
	}
	if _, ok := w.names[name]; ok {
		return false
	}
	if w.names == nil {
		w.names = make(map[string]struct{})
	}
	w.names[name] = struct{}{}
	return true
}

// New makes a Proxy; it fails when Generation or Clusters is nil.
func New(opts Options) (*Proxy, error) {
	if opts.Generation == nil || opts.Clusters == nil {
		return nil, errors.New("tcp proxy: Generation and Clusters are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Sinks == nil {
		opts.Sinks = telemetry.NewSinks(opts.AccessLog, nil, opts.Logger)
	}
	return &Proxy{opts: opts, log: opts.Logger.With("component", "tcp")}, nil
}

// ServeConn proxies down, accepted on the listener named listener and
// matched to filter chain fc (whose TCPProxy is set): it picks a cluster
// and one of its endpoints, connects to it within the cluster's
// connect_timeout over the endpoint's transport socket (TLS origination
// when the cluster's transport_socket_matches say so) and copies bytes
// both ways. ctx carries the connection's facts (filter.ConnectionFrom):
// an ORIGINAL_DST cluster connects to its original destination. With
// hash_policy source_ip, a RING_HASH or MAGLEV cluster picks the endpoint
// by the hash of down's remote IP (TCPProxy.ConnectionHash). When one
// side ends its stream the other side is half-closed (CloseWrite) and the
// copy the other way goes on; the connection ends when both are done, on
// an error of either side, when idle_timeout passes with no byte moved
// either way, when max_downstream_connection_duration passes since
// ServeConn began (both sides closed, flag DT, as Envoy's timer armed when
// the tcp_proxy gets the connection), or when ctx ends.
//
// With tunneling_config the endpoint is an HTTP proxy: the connection
// first asks it for a tunnel (openTunnel, HTTP/1.1 CONNECT or POST) and
// its bytes flow once the proxy answers 2xx.
//
// Without a usable upstream (no such cluster NC, no endpoint UH, a full
// circuit breaker UO, a failed connect or TLS handshake UF, a tunnel the
// proxy refused or a cluster that speaks HTTP/2 under tunneling_config
// UF) down is closed at once. It blocks until the connection is over, always closes
// down, and writes one access log line.
func (p *Proxy) ServeConn(ctx context.Context, listener string, fc *config.FilterChain, down net.Conn) {
	start := time.Now()
	e := telemetry.Entry{StartTime: start, UpstreamServiceTime: -1,
		DownstreamLocalAddress: down.LocalAddr().String(), DownstreamRemoteAddress: down.RemoteAddr().String()}
	conn := filter.ConnectionFrom(ctx)
	if conn != nil && conn.Destination.IsValid() { // else a pipe listener's path, from down
		e.DownstreamLocalAddress = conn.Destination.String()
	}
	if config.IsPipe(e.DownstreamLocalAddress) {
		e.DownstreamRemoteAddress = config.PipePeer(e.DownstreamRemoteAddress, e.DownstreamLocalAddress)
	}
	if conn != nil {
		e.RequestedServerName = conn.ServerName
		e.ConnectionID, e.DownstreamHandshakeDuration = conn.ID, conn.HandshakeDuration
		e.DownstreamTLS, e.FilterChainName = conn.TLS, conn.FilterChain
	}
	var rep *istioReport
	if fc != nil && fc.TCPStats != nil && p.opts.IstioStats != nil {
		rep = p.newIstioReport(fc.TCPStats, conn, &e, down)
	}
	defer func() {
		_ = down.Close()
		e.Duration = time.Since(start)
		rep.finish()
		if fc != nil && len(fc.AccessLogs) > 0 {
			e.DownstreamPeerURISAN, e.DownstreamLocalURISAN = conn.URISANs()
			p.opts.Sinks.Log(fc.AccessLogs, &e)
		}
	}()

	var tp *config.TCPProxy
	if fc != nil {
		tp = fc.TCPProxy
	}
	gen := p.opts.Generation.Load()
	if tp == nil || gen == nil {
		e.ResponseFlags = FlagNoClusterFound
		return
	}
	if d := tp.MaxDownstreamConnectionDuration; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, d, errMaxDuration)
		defer cancel()
		defer func() {
			if errors.Is(context.Cause(ctx), errMaxDuration) {
				e.ResponseFlags = FlagDurationTimeout
			}
		}()
	}
	name := tp.Pick()
	e.UpstreamCluster = name
	c := gen.Clusters[name]
	if c == nil {
		e.ResponseFlags = FlagNoClusterFound
		return
	}
	var pick upstream.PickOptions
	if conn != nil && conn.OriginalDst {
		pick.Destination = conn.Destination
	}
	if tp.HashSourceIP {
		pick.Hash, pick.HasHash = tp.ConnectionHash(remoteIP(down))
	}
	h, err := p.opts.Clusters.Pick(c, pick)
	switch {
	case errors.Is(err, upstream.ErrOverflow):
		e.ResponseFlags = FlagUpstreamOverflow
		return
	case err != nil:
		e.ResponseFlags = FlagNoHealthyUpstream
		return
	}
	e.UpstreamHost, e.UpstreamWorkload = h.Addr, h.Workload
	if tp.Tunneling != nil && h.HTTP2 {
		// Refused before any connection: the config, not the host, is
		// at fault, so outlier detection hears nothing.
		h.Done(upstream.Result{})
		e.ResponseFlags, e.UpstreamFailureReason = FlagUpstreamConnFail, errTunnelHTTP2.Error()
		// loomd refuses such a DestinationRule when it knows the port's
		// protocol; a NACK here would hold back every later update, so
		// the connection fails instead, and the operator hears it once.
		if p.tunnelH2Warned.first(gen, name) {
			p.log.Warn("tunneling_config on a cluster that speaks HTTP/2: every connection fails with UF (loom-proxy tunnels over HTTP/1.1 only)", "cluster", name)
		} else {
			p.log.Debug("upstream tunnel refused", "cluster", name, "error", errTunnelHTTP2)
		}
		return
	}
	e.UpstreamRequestAttemptCount = 1 // tcp_proxy's connect attempts; Loom makes one
	up, release, err := h.DialCounted(ctx)
	if errors.Is(err, upstream.ErrOverflow) {
		// max_connections in use and max_pending_requests waiting:
		// Envoy's tcp_proxy closes the downstream with UO.
		h.Done(upstream.Result{})
		e.ResponseFlags = FlagUpstreamOverflow
		return
	}
	if err != nil {
		h.Done(upstream.Result{LocalOrigin: true})
		e.ResponseFlags = FlagUpstreamConnFail
		e.UpstreamFailureReason = "connection_failure"
		if r := upstream.TransportFailureReason(err); r != "" {
			e.UpstreamFailureReason = r
		}
		p.log.Debug("upstream connect failed", "cluster", name, "host", h.Addr, "error", err)
		return
	}
	var rest []byte // bytes of the upstream proxy's after its response head
	side := up      // the bridge's upstream side: up, or the POST tunnel over it
	if tp.Tunneling != nil {
		side, rest, err = openTunnel(ctx, up, tp.Tunneling, c.ConnectTimeout)
		if err != nil {
			_ = up.Close()
			release()
			var te *tunnelError
			if errors.As(err, &te) {
				// The proxy answered: outlier detection hears its status
				// (a malformed answer counts as a 502).
				h.Done(upstream.Result{Status: te.status})
				e.UpstreamFailureReason = err.Error()
			} else {
				h.Done(upstream.Result{LocalOrigin: true})
				e.UpstreamFailureReason = "connection_failure"
			}
			e.ResponseFlags = FlagUpstreamConnFail
			p.log.Debug("upstream tunnel failed", "cluster", name, "host", h.Addr, "error", err)
			return
		}
	}
	// A connection carried is a success for outlier detection: it resets
	// the host's consecutive failures as a 2xx does.
	defer h.Done(upstream.Result{Status: http.StatusOK})
	defer release()
	defer up.Close()
	e.UpstreamConnectionID = filter.NewConnectionID()
	e.UpstreamLocalAddress = up.LocalAddr().String()
	if rep != nil && rep.c.Reporter == istiostats.ReporterSource {
		// Istio's client-side principals and peer, which only the
		// source reporter reads: the upstream's certificate, the one
		// the proxy presented, and the upstream's metadata exchange.
		if tc, ok := up.(interface{ ConnectionState() tls.ConnectionState }); ok {
			cs := tc.ConnectionState()
			e.UpstreamTLS, e.UpstreamLocalPrincipal = &cs, h.LocalPrincipal()
		}
		rep.mx, _ = up.(*istiostats.MXConn)
	}

	stop := context.AfterFunc(ctx, func() {
		_ = down.Close()
		_ = up.Close()
	})
	defer stop()
	b := newBridge(down, side, tp.IdleTimeout, rep.interval())
	if len(rest) > 0 {
		n, err := down.Write(rest)
		b.sent.Add(int64(n))
		if err != nil {
			e.BytesSent = int64(n)
			return
		}
	}
	rep.start(b)
	rx, tx := b.run()
	rep.stop() // before e changes under a tick's feet
	e.BytesReceived, e.BytesSent = rx, tx
}

// bridge copies bytes between the two sides of one connection.
type bridge struct {
	down, up net.Conn
	idle     time.Duration // 0: no idle timeout
	// wake is how often a copy returns to note its bytes and check the
	// idle timeout; 0: never (no idle timeout, no interim reports).
	wake time.Duration
	// last is when a byte last moved either way, in Unix nanoseconds; it
	// is updated at most once per wake.
	last atomic.Int64
	// received and sent count the bytes read from and written to down,
	// as of each copy's last wake.
	received, sent atomic.Int64
}

// newBridge makes the bridge of down and up, with idle_timeout idle (0:
// none) and interim byte counts at least every report (0: none).
func newBridge(down, up net.Conn, idle, report time.Duration) *bridge {
	b := &bridge{down: down, up: up, idle: idle}
	if idle > 0 {
		b.wake = max(idle/4, minIdleTick)
	}
	if report > 0 && (b.wake == 0 || report < b.wake) {
		b.wake = report
	}
	b.last.Store(time.Now().UnixNano())
	if pt, ok := up.(*postTunnel); ok {
		pt.watchIdle(&b.last, idle)
	}
	return b
}

// run copies both ways until both are done or one fails, and returns the
// bytes read from down (received) and written to down (sent).
func (b *bridge) run() (received, sent int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.pipe(b.up, b.down, &b.received)
	}()
	b.pipe(b.down, b.up, &b.sent)
	wg.Wait()
	return b.received.Load(), b.sent.Load()
}

// pipe copies src to dst until src's stream ends, then half-closes dst.
// On any other end (reset, idle timeout, a closed side) it closes both
// sides, which stops the copy the other way too. It adds the bytes copied
// to total as it goes.
//
// io.Copy between two *net.TCPConn moves the bytes with splice(2) on
// Linux. For the idle timeout and the interim reports, src gets a read
// deadline wake ahead; when it passes, pipe notes the bytes moved and
// goes on, unless no byte moved either way for idle_timeout. The copy is
// thus never read through a user-space buffer, at the cost of closing an
// idle connection up to a quarter of idle_timeout late, and of counts up
// to one wake old.
func (b *bridge) pipe(dst, src net.Conn, total *atomic.Int64) {
	// A copy that cannot splice (TLS on either side) goes through one
	// buffer for the connection's life: io.Copy would allocate 32 KiB at
	// every wake.
	var buf []byte
	if !spliceable(dst) || !spliceable(src) {
		buf = make([]byte, 32<<10)
	}
	for {
		if b.wake > 0 {
			_ = src.SetReadDeadline(time.Now().Add(b.wake))
		}
		var n int64
		var err error
		if buf == nil {
			n, err = io.Copy(dst, src)
		} else {
			n, err = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
		}
		total.Add(n)
		now := time.Now().UnixNano()
		if n > 0 {
			b.last.Store(now)
		}
		if err == nil { // src sent FIN: pass it on, keep the other way open
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return
			}
			b.closeBoth()
			return
		}
		if b.wake > 0 && errors.Is(err, os.ErrDeadlineExceeded) && (b.idle == 0 || now-b.last.Load() < int64(b.idle)) {
			continue
		}
		b.closeBoth()
		return
	}
}

// spliceable reports whether c's bytes are the socket's (no TLS), so
// that io.Copy between two such connections splices.
func spliceable(c net.Conn) bool {
	switch c.(type) {
	case *tls.Conn, *istiostats.MXConn, *postTunnel:
		return false
	}
	return true
}

// writerOnly and readerOnly hide ReadFrom and WriteTo, so that
// io.CopyBuffer uses the buffer it is given.
type (
	writerOnly struct{ io.Writer }
	readerOnly struct{ io.Reader }
)

func (b *bridge) closeBoth() {
	_ = b.down.Close()
	_ = b.up.Close()
}

// remoteIP is the IP of down's peer as text without port (the key of
// hash_policy source_ip, as the HTTP connection manager takes it from
// RemoteAddr), or "" when the address has none.
func remoteIP(down net.Conn) string {
	a := down.RemoteAddr()
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return ""
	}
	return host
}
