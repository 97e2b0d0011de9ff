package tcp

import (
	"net"
	"sync"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
)

// istioReport counts one connection in Istio's TCP metrics as Istio's
// stats filter does: the connection is opened, with its labels fixed,
// once the peer is known (the metadata exchange is over, or there is
// none) at a tcp_reporting_duration tick or at the end; from then on each
// tick adds the bytes moved since the last; the end adds the rest and
// closes it. The peer is the downstream's for a destination reporter, the
// upstream's for a source reporter, from the metadata exchange on that
// connection; without one it is known only by its mTLS principal.
//
// A nil *istioReport does nothing.
type istioReport struct {
	p    *Proxy
	c    *istiostats.Config
	conn *filter.Connection
	e    *telemetry.Entry
	// mx is the connection whose exchange gives the peer; nil: none.
	// Set before start.
	mx *istiostats.MXConn

	mu        sync.Mutex
	b         *bridge // nil: never bridged
	timer     *time.Timer
	stopped   bool // no more ticks
	opened    bool
	l         istiostats.Labels
	mtls      bool
	sent, rcv int64 // bytes reported so far
}

// newIstioReport starts the report of a connection of a chain whose
// istio.stats filter is c; down is the downstream connection.
func (p *Proxy) newIstioReport(c *istiostats.Config, conn *filter.Connection, e *telemetry.Entry, down net.Conn) *istioReport {
	r := &istioReport{p: p, c: c, conn: conn, e: e}
	if c.Reporter != istiostats.ReporterSource {
		r.mx, _ = down.(*istiostats.MXConn)
	}
	return r
}

// interval is the period of interim reports.
func (r *istioReport) interval() time.Duration {
	if r == nil {
		return 0
	}
	if d := r.c.TCPReportingDuration; d > 0 {
		return d
	}
	return istiostats.DefaultTCPReportingDuration
}

// start arms the ticks of a connection that is now bridged by b. The
// entry must not change until stop.
func (r *istioReport) start(b *bridge) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.b = b
	r.timer = time.AfterFunc(r.interval(), r.tick)
}

func (r *istioReport) tick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	if r.opened || r.peerKnown() {
		r.record(false)
	}
	r.timer.Reset(r.interval())
}

// stop ends the ticks; a tick under way is over when it returns.
func (r *istioReport) stop() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

// finish makes the connection's last report, once it is over.
func (r *istioReport) finish() {
	if r == nil {
		return
	}
	r.stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record(true)
}

func (r *istioReport) peerKnown() bool {
	if r.mx == nil {
		return true
	}
	_, done := r.mx.Peer()
	return done
}

// record reports what is new since the last report. Called with mu held.
func (r *istioReport) record(end bool) {
	var rcv, sent int64
	if r.b != nil {
		rcv, sent = r.b.received.Load(), r.b.sent.Load()
	}
	if end {
		rcv, sent = max(r.e.BytesReceived, rcv), max(r.e.BytesSent, sent)
	}
	ev := istiostats.TCPEvent{Labels: &r.l, Closed: end,
		SentBytes: uint64(max(sent-r.sent, 0)), RecvBytes: uint64(max(rcv-r.rcv, 0))}
	r.sent, r.rcv = max(sent, r.sent), max(rcv, r.rcv)
	if !r.opened {
		r.opened, ev.Opened = true, true
		r.fill()
	}
	if r.c.HasOverrides() {
		ev.Attributes = r.attributes(rcv, sent)
	}
	r.p.opts.IstioStats.RecordTCP(r.c, &ev)
}

// fill computes the connection's labels, once.
func (r *istioReport) fill() {
	e := r.e
	f := istiostats.Facts{Cluster: e.UpstreamCluster, Protocol: "tcp", Flags: e.ResponseFlags}
	f.Service = r.p.opts.Generation.Load().IstioServiceOf(e.UpstreamCluster)
	switch {
	case r.c.Reporter == istiostats.ReporterSource:
		f.PeerPrincipal, f.LocalPrincipal = istiostats.PeerPrincipal(e.UpstreamTLS), e.UpstreamLocalPrincipal
	case r.conn != nil:
		f.PeerPrincipal, f.LocalPrincipal = r.conn.Principals()
	}
	if r.mx != nil {
		f.Peer, _ = r.mx.Peer()
	}
	if f.Peer == nil && r.c.Reporter == istiostats.ReporterSource {
		// Istio's client-side fallback: the endpoint's metadata.
		f.Peer = r.e.UpstreamWorkload
	}
	self := r.p.opts.Self
	if self == nil {
		self = &istiostats.Peer{}
	}
	r.c.Fill(self, &f, &r.l)
	r.mtls = f.PeerPrincipal != "" && f.LocalPrincipal != ""
}

func (r *istioReport) attributes(rcv, sent int64) *istiostats.Attributes {
	e := r.e
	a := &istiostats.Attributes{Flags: e.ResponseFlags, Cluster: e.UpstreamCluster, UpstreamHost: e.UpstreamHost,
		RequestBytes: rcv, ResponseBytes: sent, MTLS: r.mtls,
		// No headers on a TCP stream: Envoy's total sizes are its bytes.
		RequestTotalBytes: rcv, ResponseTotalBytes: sent}
	if r.conn != nil {
		a.Source, a.Destination, a.SNI = r.conn.Source.String(), r.conn.Destination.String(), r.conn.ServerName
	}
	return a
}
