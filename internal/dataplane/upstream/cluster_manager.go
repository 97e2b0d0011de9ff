package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/transport"
)

// Defaults of the per-cluster connection pool.
const (
	DefaultMaxIdleConnsPerHost = 64
	DefaultIdleConnTimeout     = 90 * time.Second
	DefaultConnectTimeout      = 10 * time.Second
	// forgetAfter is how many generations a cluster may be absent before
	// its state (pools, round-robin counter) is dropped.
	forgetAfter = 2
)

// ErrNoHealthyUpstream is returned by Pick when a cluster has no healthy
// endpoint (Envoy's response flag UH).
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// ConnectError is returned (wrapped) by a round trip whose connection
// could not be established (Envoy's response flag UF).
type ConnectError struct {
	Addr string
	Err  error
}

func (e *ConnectError) Error() string { return fmt.Sprintf("connect %s: %v", e.Addr, e.Err) }
func (e *ConnectError) Unwrap() error { return e.Err }

// Options configures a ClusterManager.
type Options struct {
	Logger *slog.Logger
	// MaxIdleConnsPerHost is the idle keep-alive connections kept per
	// endpoint. Default DefaultMaxIdleConnsPerHost.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes keep-alive connections idle this long.
	// Default DefaultIdleConnTimeout.
	IdleConnTimeout time.Duration
	// OnForget, if set, is called with the name of each cluster whose
	// state is dropped (to drop its metrics too). It must not block.
	OnForget func(cluster string)
	// Secrets resolves the client certificates and trust bundles of TLS
	// transport sockets at each handshake. When nil, a handshake that
	// names a secret fails (UF).
	Secrets transport.Secrets
	// Exchange is the proxy's side of Istio's TCP metadata exchange, run
	// on TLS connections of clusters with an istio.metadata_exchange
	// filter that negotiate its protocol; nil sends no frame but still
	// takes the peer's.
	Exchange *istiostats.Exchange
}

// ClusterManager keeps per-cluster upstream state across generations.
// Pick is safe for concurrent use and takes no lock on its fast path;
// Update must not be called concurrently with itself.
type ClusterManager struct {
	opts Options
	log  *slog.Logger
	// rng, if set, replaces math/rand/v2 in the balancers of clusters
	// made from now on (tests).
	rng func() uint64

	states atomic.Pointer[map[string]*clusterState]
	// names are the mesh's service names of the latest Update (meshnames.go).
	names atomic.Pointer[meshNames]

	// mu guards epoch and writes of states.
	mu    sync.Mutex
	epoch uint64
}

// clusterState is what survives generations for one cluster name.
type clusterState struct {
	name           string
	rr             atomic.Uint64
	connectTimeout atomic.Int64 // time.Duration
	// bind is the source address of the cluster's connections, its
	// upstream_bind_config; nil for the kernel's choice.
	bind     atomic.Pointer[net.TCPAddr]
	lastSeen uint64 // epoch; guarded by ClusterManager.mu

	lb     lbState     // lb.go
	pol    policyState // policy.go
	egress egressState // egress.go

	h1 *h1Transport
	// h2cPool is the cluster's pool of h2c connections (h2.go); h2c makes
	// them, built on first use.
	h2cPool *h2Pool
	h2c     atomic.Pointer[http.Transport]
	// pp are the round trippers of plaintext endpoints whose transport
	// socket writes a PROXY protocol header of version i+1, HTTP/1.1 and
	// h2c, made once (proxyproto.go).
	pp   [2]struct{ h1, h2 proxyProtocolRT }
	tls  atomic.Pointer[map[tlsTransportKey]*tlsTransport] // tls.go
	opts *Options
	mgr  *ClusterManager // resolves mesh service names (meshnames.go)

	// cfg is the cluster's config as of the latest Update, for filters'
	// own calls (sidecalls.go).
	cfg atomic.Pointer[config.Cluster]
	// grpcMu guards grpc, the cluster's gRPC connection for filters'
	// calls (made on first use), and grpcClosed.
	grpcMu     sync.Mutex
	grpc       *grpc.ClientConn
	grpcClosed bool
}

// New makes an empty ClusterManager.
func New(opts Options) *ClusterManager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxIdleConnsPerHost <= 0 {
		opts.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if opts.IdleConnTimeout <= 0 {
		opts.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if opts.Secrets == nil {
		opts.Secrets = noSecrets{}
	}
	m := &ClusterManager{opts: opts, log: opts.Logger.With("component", "upstream")}
	empty := map[string]*clusterState{}
	m.states.Store(&empty)
	return m
}

// Update makes state for every cluster of gen, keeps the state of clusters
// it already knows (pools and round-robin position survive) and drops
// clusters absent from the last 2 generations, closing their idle
// connections. Call it before publishing gen.
func (m *ClusterManager) Update(gen *config.Generation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch++
	old := *m.states.Load()
	next := make(map[string]*clusterState, len(gen.Clusters))
	for name, c := range gen.Clusters {
		st := old[name]
		if st == nil {
			st = m.newState(name)
		}
		st.setConnectTimeout(c.ConnectTimeout)
		st.setBind(c.UpstreamBind)
		st.updateLB(c)
		st.updatePolicy(c)
		st.updateEgress(c)
		st.cfg.Store(c)
		st.updateTransports(c)
		st.lastSeen = m.epoch
		next[name] = st
	}
	m.updateMeshNames(gen)
	for name, st := range old {
		if _, ok := next[name]; ok {
			continue
		}
		if m.epoch-st.lastSeen < forgetAfter {
			next[name] = st
			continue
		}
		st.close()
		m.log.Debug("forget cluster", "cluster", name)
		if m.opts.OnForget != nil {
			m.opts.OnForget(name)
		}
	}
	m.states.Store(&next)
}

// Close closes every idle connection of every cluster.
func (m *ClusterManager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range *m.states.Load() {
		st.close()
	}
	return nil
}

func (m *ClusterManager) newState(name string) *clusterState {
	st := &clusterState{name: name, opts: &m.opts, mgr: m}
	st.lb.rng = m.rng
	st.h1 = newH1Transport(st.dial, m.opts.MaxIdleConnsPerHost, m.opts.IdleConnTimeout)
	st.h2cPool = newH2Pool(st.h1, nil, st.h2cTransport)
	for i := range st.pp {
		v := uint8(i + 1)
		st.pp[i].h1 = proxyProtocolRT{version: v, h1: st.h1}
		st.pp[i].h2 = proxyProtocolRT{version: v, h2: st.h2cPool}
	}
	return st
}

func (m *ClusterManager) state(name string) *clusterState {
	if st := (*m.states.Load())[name]; st != nil {
		return st
	}
	// A cluster of a generation that was published without Update (tests,
	// or a race with forgetting): make its state under the lock.
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.states.Load()
	if st := old[name]; st != nil {
		return st
	}
	next := make(map[string]*clusterState, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	st := m.newState(name)
	st.lastSeen = m.epoch
	next[name] = st
	m.states.Store(&next)
	return st
}

// Pick chooses an endpoint of c with c's lb_policy (ROUND_ROBIN weighted
// by load_balancing_weight, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV on
// opts.Hash), over the usable endpoints (healthy and not ejected by outlier
// detection) or, in panic mode, over all of them. It picks a host not in
// opts.Avoid when one can be picked. The endpoints are those of c's latest
// Update. It fails with ErrNoHealthyUpstream when there is no endpoint to
// pick, and with ErrOverflow when c's max_requests circuit breaker is
// full. Round-trip errors of connection failures wrap *ConnectError.
//
// For an ORIGINAL_DST cluster the request names the host: the returned
// Host's RT dials what c.OriginalDst's header says, and its Addr is
// opts.Authority's destination when that is the header (egress.go). A host name endpoint of a DNS cluster is resolved when a
// connection to it is dialed.
//
// Pick is safe for concurrent use, takes no lock and allocates only the
// returned Host; the caller must call Host.Done.
func (m *ClusterManager) Pick(c *config.Cluster, opts PickOptions) (*Host, error) {
	st := m.state(c.Name)
	if c.OriginalDst != nil {
		return st.pickOriginalDst(c, opts)
	}
	t := st.tableFor(c)
	i := st.choose(t, &opts)
	if i < 0 {
		return nil, ErrNoHealthyUpstream
	}
	if err := st.admit(); err != nil {
		return nil, err
	}
	t.active[i].Add(1)
	h := &Host{Addr: t.eps[i].Address, Priority: opts.level, Workload: t.eps[i].Workload, st: st, idx: int(i)}
	st.setTransport(h, t.src, t.src.Transport(&t.eps[i]), &opts)
	return h, nil
}

// setTransport sets h's round tripper for transport ut of cluster c:
// the HTTP/1.1 pool or h2c for plaintext, the same over TLS otherwise.
// HTTP/2 is used when c speaks it, or when c follows the downstream's
// protocol and opts.DownstreamHTTP2 says the request came over HTTP/2
// (over TLS: when the connection offers istio.alpn's HTTP/2 override or
// the socket offers h2). Over TLS, opts.ALPN (istio.alpn) picks the ALPN
// by that protocol, as Envoy's filter picks it by upstreamHttpProtocol;
// a transport with an override has its own pools, as Envoy keys its
// connection pools by it.
//
// Over a transport with a PROXY protocol header (ut.ProxyProtocol), each
// request's connection starts with the header of the request's downstream
// connection and is pooled by it (proxyProtocolRT, made once per cluster
// or TLS transport); the TCP proxy's Dial writes it too.
func (st *clusterState) setTransport(h *Host, c *config.Cluster, ut *config.UpstreamTransport, opts *PickOptions) {
	downstreamH2 := c.DownstreamHTTP2 && opts.DownstreamHTTP2
	h.pp = ut.ProxyProtocol
	if ut.TLS == nil {
		h.HTTP2 = c.HTTP2 || downstreamH2
		switch {
		case h.pp != 0 && h.HTTP2:
			h.RT = &st.pp[h.pp-1].h2
		case h.pp != 0:
			h.RT = &st.pp[h.pp-1].h1
		case h.HTTP2:
			h.RT = st.h2cPool
		default:
			h.RT = st.h1
		}
		return
	}
	override := opts.ALPN
	if c.NoALPNOverride {
		override = nil
	}
	h2 := c.HTTP2 || (downstreamH2 && ((override != nil && override.HTTP2 != nil) || slices.Contains(ut.TLS.ALPN, "h2")))
	h.HTTP2 = h2
	alpn, alpnKey := override.For(h2, c.DownstreamHTTP2 && opts.DownstreamHTTP10)
	h.tls = st.tlsTransport(ut, alpn, alpnKey)
	h.RT = &h.tls.h1
	if h2 {
		h.RT = h.tls.h2
	}
	if h.pp != 0 {
		h.RT = &h.tls.ppH1
		if h2 {
			h.RT = &h.tls.ppH2
		}
	}
}

func (st *clusterState) setConnectTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultConnectTimeout
	}
	st.connectTimeout.Store(int64(d))
}

// setBind makes addr (config.Cluster.UpstreamBind, validated) the source
// of the cluster's new connections; "" leaves it to the kernel.
func (st *clusterState) setBind(addr string) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		st.bind.Store(nil)
		return
	}
	st.bind.Store(&net.TCPAddr{IP: a.AsSlice()})
}

func (st *clusterState) h2cTransport() *http.Transport {
	if t := st.h2c.Load(); t != nil {
		return t
	}
	// Two first requests may race: the loser's transport has no
	// connections yet and is dropped.
	st.h2c.CompareAndSwap(nil, st.newH2CTransport())
	return st.h2c.Load()
}

func (st *clusterState) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if p := pipeFrom(ctx); p != "" {
		addr = p // an h2 connection to a pipe endpoint (withPipe)
	}
	d := net.Dialer{Timeout: time.Duration(st.connectTimeout.Load()), KeepAlive: 30 * time.Second}
	done := func(error) {}
	if st.mgr != nil {
		addr, done = st.mgr.meshEndpoint(addr)
	}
	// After meshEndpoint: a mesh name may stand for a pipe endpoint.
	if b := st.bind.Load(); b != nil && !config.IsPipe(addr) {
		// upstream_bind_config is a source IP; a unix socket has none.
		d.LocalAddr = b
	}
	c, err := d.DialContext(ctx, st.dialNetwork(network, addr), addr)
	done(err)
	if err != nil {
		return nil, &ConnectError{Addr: addr, Err: err}
	}
	// upstream_connection_options.tcp_keepalive, for HTTP/1.1 and h2c
	// alike. Best effort, as the dialer's own keep-alive: a socket that
	// refuses the options still carries the request.
	if ka := st.h1.connOpts.Load().TCPKeepalive; ka != nil {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetKeepAliveConfig(keepAliveConfig(ka))
		}
	}
	// The PROXY protocol header goes first, before any TLS handshake, as
	// Envoy's upstream_proxy_protocol socket wraps the TLS one.
	if hdr := proxyHeaderFrom(ctx); hdr != nil {
		if err := hdr.write(c); err != nil {
			_ = c.Close()
			return nil, &ConnectError{Addr: addr, Err: err}
		}
	}
	return c, nil
}

// newH2CTransport makes the net/http transport that makes the connections
// of the cluster's h2c pool: HTTP/2 with prior knowledge over cleartext
// (Envoy's http2_protocol_options on a plaintext cluster). HTTP/1.1
// clusters use h1Transport instead.
func (st *clusterState) newH2CTransport() *http.Transport {
	t := st.newH2Transport()
	t.DialContext = st.dial
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}

// newH2Transport is the net/http transport an h2Pool makes its
// connections with (Transport.NewClientConn), without its dialer and
// protocol: the settings the h2c and TLS pools share. Its connections live
// in the pool, not in the transport's idle pool, so it has no idle limit.
//
// The cluster's connection_keepalive becomes net/http's HTTP/2 health
// check: a PING after SendPingTimeout without a frame, the connection
// closed when its answer takes longer than PingTimeout.
func (st *clusterState) newH2Transport() *http.Transport {
	h2 := &http.HTTP2Config{}
	if ka := st.h1.connOpts.Load().H2Keepalive; ka != nil {
		h2.SendPingTimeout, h2.PingTimeout = ka.Interval, ka.Timeout
	}
	return &http.Transport{
		IdleConnTimeout:        st.idleTimeout(),
		DisableCompression:     true, // the proxy forwards bytes as they are
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         32 << 10,
		MaxResponseHeaderBytes: 1 << 20,
		Protocols:              new(http.Protocols),
		HTTP2:                  h2,
	}
}

// idleTimeout is how long an idle upstream connection of the cluster's
// net/http transports lives: the cluster's idle_timeout
// (common_http_protocol_options, Istio's connectionPool idleTimeout), else
// the proxy's default.
func (st *clusterState) idleTimeout() time.Duration {
	if d := st.h1.connOpts.Load().IdleTimeout; d > 0 {
		return d
	}
	return st.opts.IdleConnTimeout
}

// renewH2C replaces the cluster's HTTP/2 transports (h2c, and each TLS
// transport socket's) whose idle timeout or HTTP/2 keepalive changed by
// ones built with the current connection options; their pools' idle
// connections close, those in use finish their streams. A net/http
// transport's settings cannot change once it is in use. A TLS socket's
// transport is built again on its next use.
func (st *clusterState) renewH2C() {
	stale := func(t *http.Transport) bool {
		var ping, pingTimeout time.Duration
		if ka := st.h1.connOpts.Load().H2Keepalive; ka != nil {
			ping, pingTimeout = ka.Interval, ka.Timeout
		}
		return t.IdleConnTimeout != st.idleTimeout() || t.HTTP2.SendPingTimeout != ping || t.HTTP2.PingTimeout != pingTimeout
	}
	if old := st.h2c.Load(); old != nil && stale(old) && st.h2c.CompareAndSwap(old, st.newH2CTransport()) {
		st.h2cPool.drainAll()
	}
	if m := st.tls.Load(); m != nil {
		for _, tt := range *m {
			if old := tt.h2t.Load(); old != nil && stale(old) && tt.h2t.CompareAndSwap(old, nil) {
				tt.h2.drainAll()
			}
		}
	}
}

func (st *clusterState) close() {
	st.closeGRPC()
	st.h1.close()
	st.h2cPool.drainAll()
	if m := st.tls.Load(); m != nil {
		for _, tt := range *m {
			tt.close()
		}
	}
}
