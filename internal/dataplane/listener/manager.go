package listener

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/transport"
)

// DefaultDrainTimeout bounds how long a removed listener or filter chain
// waits for its in-flight requests before closing their connections.
const DefaultDrainTimeout = 5 * time.Second

// ConnHandler serves one connection a tcp_proxy filter chain accepted: it
// owns c, must close it, and returns when the connection is over. ctx
// carries the connection's facts (filter.ConnectionFrom) and ends when the
// chain's drain is over (or the manager's shutdown is cut short): the
// handler must then close c and return.
type ConnHandler func(ctx context.Context, c net.Conn)

// Options configures a Manager.
type Options struct {
	// Handler makes the handler of a filter chain whose terminal filter
	// is the HTTP connection manager, once per chain (a chain that keeps
	// its Key and Hash across generations keeps its handler). Required.
	Handler func(l *config.Listener, fc *config.FilterChain) http.Handler
	// TCP makes the handler of a tcp_proxy filter chain, once per chain.
	// When nil, connections to such a chain are closed.
	TCP func(l *config.Listener, fc *config.FilterChain) ConnHandler
	// Secrets resolves the certificates and trust bundles of TLS filter
	// chains at each handshake. When nil, TLS handshakes that name a
	// secret fail.
	Secrets transport.Secrets
	// Upstreams lets network filters call clusters (ext_authz); nil
	// gives them none.
	Upstreams filter.Upstreams
	Logger    *slog.Logger
	// DrainTimeout bounds the drain of a removed listener or filter
	// chain. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// IdleTimeout closes downstream keep-alive connections idle this long.
	// Default 5 minutes.
	IdleTimeout time.Duration
	// Exchange is the proxy's side of Istio's TCP metadata exchange, run
	// on the connections of chains with an istio.metadata_exchange
	// filter (config.FilterChain.MetadataExchange); nil sends no frame
	// but still takes the peer's.
	Exchange *istiostats.Exchange
	// OriginalDst reads a redirected connection's original destination;
	// nil uses SO_ORIGINAL_DST (Linux). Tests replace it.
	OriginalDst func(c net.Conn) (netip.AddrPort, bool)
}

// Manager owns the listening sockets and the filter chains behind them.
// A socket is keyed by listener name and address and survives
// generations; a filter chain is keyed by listener name and chain Key and
// survives generations while its Hash is unchanged (Envoy's
// filter-chain-only update): a changed or removed chain drains only its
// own connections. Its methods are safe for concurrent use; Update and
// Shutdown block while sockets are bound or drained.
type Manager struct {
	opts Options
	log  *slog.Logger

	// view is what accepted connections are matched with.
	view atomic.Pointer[view]

	// updateMu serializes Update; it is held across binds, never by a
	// connection.
	updateMu sync.Mutex

	// mu guards sockets, chains and closed. No I/O happens while it is
	// held.
	mu      sync.Mutex
	sockets map[sockKey]*socket
	chains  map[chainKey]*chainServer
	closed  bool

	// ctx ends at Shutdown: connections still in their listener filters
	// are closed.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loops, connection setup, chain servers and drains

	handshakeErrors atomic.Uint64
	noChain         atomic.Uint64
}

// view is one generation's listeners and the chain servers of their
// filter chains.
type view struct {
	gen    *config.Generation
	chains map[chainKey]*chainServer
}

// sockKey keys a bound socket: a listener keeps its socket while its name,
// address and (for a pipe) mode are unchanged.
type sockKey struct {
	name, addr string
	mode       fs.FileMode
}

type chainKey struct{ listener, key string }

type socket struct {
	key sockKey
	ln  net.Listener
}

// New makes a Manager with no listener.
func New(opts Options) (*Manager, error) {
	if opts.Handler == nil {
		return nil, errors.New("listener manager: Handler is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.OriginalDst == nil {
		opts.OriginalDst = originalDst
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{opts: opts, log: opts.Logger.With("component", "listener"), sockets: map[sockKey]*socket{},
		chains: map[chainKey]*chainServer{}, ctx: ctx, cancel: cancel}
	m.view.Store(&view{gen: &config.Generation{}, chains: map[chainKey]*chainServer{}})
	return m, nil
}

// Stats are the manager's connection counters.
type Stats struct {
	// HandshakeErrors counts downstream TLS handshakes that failed
	// (Envoy's ssl.connection_error).
	HandshakeErrors uint64
	// NoFilterChain counts connections closed because no filter chain
	// matched (Envoy's no_filter_chain_match).
	NoFilterChain uint64
}

// Stats returns the counters. Safe for concurrent use.
func (m *Manager) Stats() Stats {
	return Stats{HandshakeErrors: m.handshakeErrors.Load(), NoFilterChain: m.noChain.Load()}
}

// Update makes gen's listeners the ones served. Filter chains new to gen,
// or whose Hash changed, get a new server; the servers of removed or
// changed chains drain in the background (their connections finish, up to
// DrainTimeout). Listeners with bind_to_port are bound: a socket whose
// listener name and address are unchanged is kept; removed ones stop
// accepting first, so that a listener renamed on the same address binds.
// It returns the bind errors, joined; listeners that bound keep serving.
// Concurrent calls are serialized.
func (m *Manager) Update(gen *config.Generation) error {
	m.updateMu.Lock()
	defer m.updateMu.Unlock()

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("listener manager: closed")
	}
	next := map[chainKey]*chainServer{}
	var fresh []*chainServer
	for _, l := range gen.Listeners {
		for _, fc := range l.AllChains() {
			k := chainKey{l.Name, fc.Key}
			if cs := m.chains[k]; cs != nil && cs.fc.Hash == fc.Hash {
				next[k] = cs
				continue
			}
			cs := m.newChainServer(l, fc)
			next[k] = cs
			fresh = append(fresh, cs)
		}
	}
	var staleChains []*chainServer
	for k, cs := range m.chains {
		if next[k] != cs {
			staleChains = append(staleChains, cs)
		}
	}
	m.chains = next
	for _, cs := range fresh {
		m.startChain(cs)
	}
	want := map[sockKey]*config.Listener{}
	for _, l := range gen.Listeners {
		if l.BindToPort {
			want[sockKey{l.Name, l.Address, l.PipeMode}] = l
		}
	}
	var staleSockets []*socket
	for k, s := range m.sockets {
		if _, ok := want[k]; !ok {
			delete(m.sockets, k)
			staleSockets = append(staleSockets, s)
		}
	}
	var keys []sockKey
	for k := range want {
		if _, ok := m.sockets[k]; !ok {
			keys = append(keys, k)
		}
	}
	m.wg.Add(len(staleChains)) // their drains, counted before Shutdown can wait
	m.mu.Unlock()

	// Connections accepted from now on see gen; then the replaced chains
	// drain (a connection that raced onto one is matched again).
	m.view.Store(&view{gen: gen, chains: next})
	for _, cs := range staleChains {
		m.log.Debug("drain filter chain", "listener", cs.listener, "filter_chain", cs.fc.Key)
		go func() {
			defer m.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), m.opts.DrainTimeout)
			defer cancel()
			_ = cs.shutdown(ctx)
		}()
	}
	for _, s := range staleSockets {
		m.log.Info("stop listener", "listener", s.key.name, "address", s.key.addr)
		_ = s.ln.Close()
	}

	var errs []error
	sort.Slice(keys, func(i, j int) bool { return keys[i].name < keys[j].name })
	var bound []*socket
	for _, k := range keys {
		nl, err := listen(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("bind listener %q on %s: %w", k.name, k.addr, err))
			continue
		}
		bound = append(bound, &socket{key: k, ln: &onceCloseListener{Listener: nl}})
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed { // Shutdown ran meanwhile
		for _, s := range bound {
			_ = s.ln.Close()
		}
		return errors.Join(append(errs, errors.New("listener manager: closed"))...)
	}
	for _, s := range bound {
		m.sockets[s.key] = s
		m.wg.Add(1)
		go m.accept(s)
		m.log.Info("listening", "listener", s.key.name, "address", s.ln.Addr().String())
	}
	return errors.Join(errs...)
}

// accept accepts connections on s until its socket is closed, each set up
// on its own goroutine. The caller has counted this goroutine in wg.
func (m *Manager) accept(s *socket) {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as
			// net/http's Serve does, up to 1s.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.Warn("accept failed", "listener", s.key.name, "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-m.ctx.Done():
				return
			}
		}
		backoff = 0
		m.wg.Add(1) // this goroutine is counted: wg is not zero
		go m.handle(s.key.name, c)
	}
}

// handle runs the listener filters of the listener named name on c, hands
// it to another listener when use_original_dst says so, selects its filter
// chain and gives it to the chain's server. The caller has counted this
// goroutine in wg.
func (m *Manager) handle(name string, c net.Conn) {
	defer m.wg.Done()
	stop := context.AfterFunc(m.ctx, func() { _ = c.Close() })
	pc := &peekConn{Conn: c, accepted: time.Now()}
	info := &filter.Connection{ID: filter.NewConnectionID()}
	info.Source, info.Destination = addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	in := &config.MatchInput{Source: info.Source, Destination: info.Destination, TransportProtocol: config.TransportRawBuffer}
	var d detected

	for attempt := 0; attempt < 3; attempt++ {
		v := m.view.Load()
		l := v.gen.Listeners[name]
		if l == nil {
			break
		}
		if err := m.listenerFilters(l, pc, info, in, &d); err != nil {
			m.log.Debug("connection closed by listener filters", "listener", l.Name, "peer", c.RemoteAddr(), "error", err)
			break
		}
		if l.UseOriginalDst && info.OriginalDst {
			if t := v.gen.HandOffTarget(info.Destination); t != nil && t != l {
				l = t
				if err := m.listenerFilters(l, pc, info, in, &d); err != nil {
					m.log.Debug("connection closed by listener filters", "listener", l.Name, "peer", c.RemoteAddr(), "error", err)
					break
				}
			}
		}
		fc := l.Select(in)
		if fc == nil {
			m.noChain.Add(1)
			m.log.Debug("no filter chain matched; closing (NR)", "listener", l.Name, "peer", c.RemoteAddr(),
				"destination", info.Destination, "server_name", in.ServerName, "transport", in.TransportProtocol)
			break
		}
		cs := v.chains[chainKey{l.Name, fc.Key}]
		if cs == nil {
			break
		}
		if !stop() {
			return // Shutdown closed c
		}
		if cs.serve(pc, info) {
			return
		}
		// The chain drains: match again with the newest view.
		stop = context.AfterFunc(m.ctx, func() { _ = c.Close() })
	}
	stop()
	_ = c.Close()
}

// detected remembers which listener filters ran on a connection, so that
// a hand-off target's filters do not inspect it twice.
type detected struct {
	tls, http, origDst bool
}

// listenerFilters runs l's listener filters on c within l's
// listener_filters_timeout, filling info and in. It returns an error when
// the connection must be closed.
func (m *Manager) listenerFilters(l *config.Listener, pc *peekConn, info *filter.Connection, in *config.MatchInput, d *detected) error {
	if len(l.ListenerFilters) == 0 {
		return nil
	}
	if l.ListenerFiltersTimeout > 0 {
		_ = pc.SetReadDeadline(time.Now().Add(l.ListenerFiltersTimeout))
		defer pc.SetReadDeadline(time.Time{})
	}
	for _, f := range l.ListenerFilters {
		if f.Disabled != nil && f.Disabled.Matches(info.Destination.Port()) {
			continue
		}
		var err error
		switch f.Kind {
		case config.OriginalDst:
			if d.origDst {
				continue
			}
			d.origDst = true
			if dst, ok := m.opts.OriginalDst(pc.Conn); ok {
				info.Destination, info.OriginalDst = dst, true
				in.Destination = dst
			}
		case config.TLSInspector:
			if d.tls {
				continue
			}
			d.tls = true
			var hello *tlsHello
			if hello, err = inspectTLS(pc); hello != nil {
				in.TransportProtocol = config.TransportTLS
				in.ServerName, info.ServerName = hello.serverName, hello.serverName
				in.ApplicationProtocols = hello.alpn
			}
		case config.HTTPInspector:
			if d.http || in.TransportProtocol == config.TransportTLS {
				continue // Envoy's http_inspector skips TLS
			}
			d.http = true
			var proto string
			if proto, err = inspectHTTP(pc); proto != "" {
				in.ApplicationProtocols = []string{proto}
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && l.ContinueOnListenerFiltersTimeout {
				return nil // Envoy: go on with what was found
			}
			return err
		}
	}
	return nil
}

// Addrs returns the bound address of each bound listener by name (useful
// when a listener's address has port 0).
func (m *Manager) Addrs() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.sockets))
	for k, s := range m.sockets {
		out[k.name] = s.ln.Addr().String()
	}
	return out
}

// Shutdown stops every listener accepting, closes connections still in
// their listener filters, waits for in-flight requests and connections
// until ctx ends, then closes the remaining ones. It returns ctx's error
// when the drain was cut short. Update fails after Shutdown.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	socks := m.sockets
	chains := m.chains
	m.sockets, m.chains = map[sockKey]*socket{}, map[chainKey]*chainServer{}
	m.mu.Unlock()

	for _, s := range socks {
		_ = s.ln.Close()
	}
	m.cancel()
	var wg sync.WaitGroup
	errs := make([]error, 0, len(chains))
	var emu sync.Mutex
	for _, cs := range chains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cs.shutdown(ctx); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	m.wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}
