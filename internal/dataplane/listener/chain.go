package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
	"github.com/loom-mesh/loom/internal/dataplane/transport"
)

// chainServer serves the connections matched to one filter chain of one
// listener: it terminates TLS when the chain has a transport socket, runs
// the chain's network filters, then hands the connection to the chain's
// http.Server (HCM) or TCP handler (tcp_proxy). It lives while the chain's
// Key and Hash stay in the config; draining it touches no other chain.
type chainServer struct {
	m        *Manager
	listener string
	fc       *config.FilterChain
	tlsConf  *tls.Config // nil: plaintext
	// netFilters are fc's network filters, run before the terminal one.
	netFilters []filter.NetworkFilter

	// ctx ends when the drain is over: TCP handlers and handshakes stop.
	ctx    context.Context
	cancel context.CancelFunc

	srv *http.Server  // HCM chains
	ln  *chanListener // srv's listener
	tcp ConnHandler   // tcp_proxy chains; nil closes their connections

	// mu guards draining; conns counts connections between serve and
	// their hand-off (handshake, network filters) and TCP connections.
	mu       sync.Mutex
	draining bool
	conns    sync.WaitGroup
}

// newChainServer makes the server of chain fc of l; startChain starts it.
// Called with m.mu held: it does no I/O.
func (m *Manager) newChainServer(l *config.Listener, fc *config.FilterChain) *chainServer {
	ctx, cancel := context.WithCancel(context.Background())
	cs := &chainServer{m: m, listener: l.Name, fc: fc, ctx: ctx, cancel: cancel}
	for _, nf := range fc.NetworkFilters {
		cs.netFilters = append(cs.netFilters, nf.Filter)
	}
	if fc.TLS != nil {
		secrets := m.opts.Secrets
		if secrets == nil {
			secrets = noSecrets{}
		}
		cs.tlsConf = transport.ServerConfig(fc.TLS, secrets)
	}
	if fc.TCPProxy != nil {
		if m.opts.TCP != nil {
			cs.tcp = m.opts.TCP(l, fc)
		}
		return cs
	}
	var addr net.Addr = &net.UnixAddr{Name: l.Address, Net: "unix"}
	if !config.IsPipe(l.Address) {
		addr, _ = net.ResolveTCPAddr("tcp", l.Address)
	}
	cs.ln = newChanListener(addr)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)            // h2 over TLS (ALPN)
	p.SetUnencryptedHTTP2(true) // h2c with prior knowledge (HCM codec_type AUTO)
	h := m.opts.Handler(l, fc)
	if fc.TLS != nil {
		h = withTLSState{h}
	}
	cs.srv = &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: 30 * time.Second,
		// net/http answers 431 itself past this (plus its 4 KiB of slack);
		// the connection manager checks Envoy's exact count below it.
		MaxHeaderBytes: fc.MaxRequestHeaderBytes,
		IdleTimeout:    m.opts.IdleTimeout,
		ErrorLog:       slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		// Every request's context carries its connection's facts.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if info := connectionOf(c); info != nil {
				return filter.WithConnection(ctx, info)
			}
			return ctx
		},
	}
	return cs
}

// noALPNConn is a TLS connection of an HCM chain that negotiated no ALPN
// (a sidecar client offers istio-h2 or istio-http/1.1 to a server that
// lists h2 and http/1.1). It reaches the chain's http.Server as no
// *tls.Conn, so that net/http looks for the HTTP/2 client preface as it
// does on plaintext (Protocols.UnencryptedHTTP2) and serves HTTP/2 when
// it is there, else HTTP/1.x: Envoy's codec_type AUTO, which goes by the
// negotiated ALPN and, when there is none, by the preface
// (ConnectionManagerUtility::determineNextProtocol). It has no
// ConnectionState method, which would stop net/http from looking;
// withTLSState gives its requests r.TLS.
type noALPNConn struct {
	net.Conn // tc
	tc       *tls.Conn
}

// CloseWrite half-closes the TLS stream (an upgraded connection's end).
func (c *noALPNConn) CloseWrite() error { return c.tc.CloseWrite() }

// withTLSState is the handler of a TLS chain: a request net/http served
// over a noALPNConn, which has r.TLS nil, gets its connection's TLS state
// from the chain's connection facts; others pass as they are.
type withTLSState struct{ next http.Handler }

func (h withTLSState) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		if c := filter.RequestConnection(r); c != nil {
			r.TLS = c.TLS
		}
	}
	h.next.ServeHTTP(w, r)
}

// noSecrets resolves nothing.
type noSecrets struct{}

func (noSecrets) Get(string) *secret.Secret { return nil }

// startChain starts cs's http.Server. Called with m.mu held, before
// Shutdown: the goroutine is counted in wg.
func (m *Manager) startChain(cs *chainServer) {
	if cs.srv == nil {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := cs.srv.Serve(cs.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			m.log.Error("filter chain server stopped", "listener", cs.listener, "filter_chain", cs.fc.Key, "error", err)
		}
	}()
}

// serve takes over a connection matched to cs. It returns false, leaving
// the connection to the caller, when cs is draining. Otherwise it owns
// the connection: it terminates TLS, runs the network filters and hands
// the connection on; for a TCP chain it returns when the connection is
// over.
func (cs *chainServer) serve(pc *peekConn, info *filter.Connection) bool {
	cs.mu.Lock()
	if cs.draining {
		cs.mu.Unlock()
		return false
	}
	cs.conns.Add(1)
	cs.mu.Unlock()
	defer cs.conns.Done()

	info.FilterChain = cs.fc.Name
	var nc net.Conn = &acceptedConn{peekConn: pc, info: info}
	if cs.tlsConf != nil {
		tc := tls.Server(nc, cs.tlsConf)
		timeout := cs.fc.HandshakeTimeout
		if timeout <= 0 {
			timeout = config.DefaultHandshakeTimeout
		}
		ctx, cancel := context.WithTimeout(cs.ctx, timeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			cs.m.handshakeErrors.Add(1)
			cs.m.log.Debug("tls handshake failed", "listener", cs.listener, "filter_chain", cs.fc.Key, "peer", pc.RemoteAddr(), "error", err)
			_ = tc.Close()
			return true
		}
		info.HandshakeDuration = time.Since(pc.accepted)
		st := tc.ConnectionState()
		info.TLS = &st
		if info.ServerName == "" {
			info.ServerName = st.ServerName
		}
		nc = tc
		if p := cs.fc.MetadataExchange; p != "" && st.NegotiatedProtocol == p {
			// Istio's TCP metadata exchange: the TCP proxy reads the
			// peer from the connection (istiostats.MXConn.Peer).
			nc = cs.m.opts.Exchange.Conn(tc)
		} else if cs.srv != nil && st.NegotiatedProtocol == "" {
			nc = &noALPNConn{Conn: tc, tc: tc}
		}
	}
	ctx := filter.WithConnection(cs.ctx, info)
	if len(cs.netFilters) > 0 {
		// One State for the chain's filters (rbac's shadow result reaches
		// ext_authz), with the cluster manager for side calls; the TCP
		// handler gets it too.
		st, err := filter.NetworkChain(ctx, info, cs.m.opts.Upstreams, cs.netFilters)
		if err != nil {
			cs.m.log.Debug("connection refused by a network filter", "listener", cs.listener, "filter_chain", cs.fc.Key,
				"peer", pc.RemoteAddr(), "details", err.Error())
			_ = nc.Close()
			return true
		}
		ctx = filter.NewContext(ctx, st)
	}
	switch {
	case cs.srv != nil:
		if !cs.ln.push(nc) {
			_ = nc.Close()
		}
	case cs.tcp != nil:
		cs.tcp(ctx, nc)
	default:
		_ = nc.Close()
	}
	return true
}

// shutdown stops cs taking connections and waits until its requests and
// connections are over or ctx ends, then closes what is left; it returns
// ctx's error when cut short.
func (cs *chainServer) shutdown(ctx context.Context) error {
	cs.mu.Lock()
	cs.draining = true
	cs.mu.Unlock()
	var err error
	if cs.srv != nil {
		if err = cs.srv.Shutdown(ctx); err != nil {
			_ = cs.srv.Close()
		}
	}
	done := make(chan struct{})
	go func() { cs.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	cs.cancel() // TCP handlers and handshakes close their connections
	<-done
	return err
}
