package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// DefaultDrainTimeout bounds how long a removed listener waits for its
// in-flight requests before closing their connections.
const DefaultDrainTimeout = 5 * time.Second

// ConnHandler serves one connection accepted on a TCP listener: it owns c,
// must close it, and returns when the connection is over. ctx ends when
// the listener's drain is over (or the manager's shutdown is cut short):
// the handler must then close c and return.
type ConnHandler func(ctx context.Context, c net.Conn)

// Options configures a Manager.
type Options struct {
	// Handler makes the handler of an HTTP listener, once per socket.
	// Required.
	Handler func(l *config.Listener) http.Handler
	// TCP makes the handler of a listener whose filter chain is a
	// tcp_proxy (Listener.TCPProxy set), once per socket. When nil such a
	// listener fails to bind.
	TCP    func(l *config.Listener) ConnHandler
	Logger *slog.Logger
	// DrainTimeout bounds the drain of a removed listener. Default
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
	// IdleTimeout closes downstream keep-alive connections idle this long.
	// Default 5 minutes.
	IdleTimeout time.Duration
}

// Manager owns the listening sockets. Its methods are safe for concurrent
// use; Update and Shutdown block while sockets are bound or drained.
type Manager struct {
	opts Options
	log  *slog.Logger

	// updateMu serializes Update, so that two updates do not bind the
	// same socket; it is held across binds, never by a request.
	updateMu sync.Mutex

	// mu guards active and closed. No I/O happens while it is held.
	mu     sync.Mutex
	active map[key]*served
	closed bool

	wg sync.WaitGroup // serve and drain goroutines
}

// key identifies a socket; a listener that switches between HTTP and TCP
// gets a new one.
type key struct {
	name, addr string
	tcp        bool
}

type served struct {
	key key
	ln  net.Listener
	srv *http.Server // HTTP listeners
	tcp *tcpServer   // TCP listeners
}

// tcpServer is the accept loop of a TCP listener and its connections.
type tcpServer struct {
	handler ConnHandler
	// ctx ends the connections still open after a drain; cancel ends it.
	ctx    context.Context
	cancel context.CancelFunc
	conns  sync.WaitGroup // accept loop and connection goroutines
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
	return &Manager{opts: opts, log: opts.Logger.With("component", "listener"), active: map[key]*served{}}, nil
}

// Update makes the bound listeners those of gen: it binds new ones, keeps
// those whose name and address are unchanged (same socket), and drains the
// rest in the background. A removed listener's socket is closed before the
// new ones are bound, so a listener renamed on the same address binds. It
// returns the bind errors, joined; listeners that bound keep serving.
// Concurrent calls are serialized.
func (m *Manager) Update(gen *config.Generation) error {
	m.updateMu.Lock()
	defer m.updateMu.Unlock()

	want := make(map[key]*config.Listener, len(gen.Listeners))
	for _, l := range gen.Listeners {
		want[key{l.Name, l.Address, l.TCPProxy != nil}] = l
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("listener manager: closed")
	}
	var stale []*served
	for k, s := range m.active {
		if _, ok := want[k]; !ok {
			delete(m.active, k)
			stale = append(stale, s)
		}
	}
	m.wg.Add(len(stale)) // their drains, counted before Shutdown can wait

	keys := make([]key, 0, len(want))
	for k := range want {
		if _, ok := m.active[k]; !ok {
			keys = append(keys, k)
		}
	}
	m.mu.Unlock()

	// Stop accepting on removed listeners now, so that their addresses are
	// free for this update; their connections drain in the background.
	for _, s := range stale {
		m.log.Info("drain listener", "listener", s.key.name, "address", s.key.addr)
		_ = s.ln.Close()
		m.drain(s)
	}

	var errs []error
	sort.Slice(keys, func(i, j int) bool { return keys[i].name < keys[j].name })
	bound := make([]*served, 0, len(keys))
	for _, k := range keys {
		s, err := m.bind(want[k])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		bound = append(bound, s)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed { // Shutdown ran meanwhile
		for _, s := range bound {
			_ = s.ln.Close()
			if s.tcp != nil {
				s.tcp.cancel()
			}
		}
		return errors.Join(append(errs, errors.New("listener manager: closed"))...)
	}
	for _, s := range bound {
		m.active[s.key] = s
		m.serve(s)
		m.log.Info("listening", "listener", s.key.name, "address", s.ln.Addr().String())
	}
	return errors.Join(errs...)
}

// onceCloseListener is a net.Listener whose Close may be called more than
// once (by Update, then by http.Server.Shutdown) and reports no error on
// the later calls.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// bind listens on l.Address and makes its server; serve starts it. It is
// called without mu held.
func (m *Manager) bind(l *config.Listener) (*served, error) {
	if l.TCPProxy != nil && m.opts.TCP == nil {
		return nil, fmt.Errorf("bind listener %q on %s: no TCP proxy configured", l.Name, l.Address)
	}
	nl, err := net.Listen("tcp", l.Address)
	if err != nil {
		return nil, fmt.Errorf("bind listener %q on %s: %w", l.Name, l.Address, err)
	}
	ln := &onceCloseListener{Listener: nl}
	if l.TCPProxy != nil {
		ctx, cancel := context.WithCancel(context.Background())
		ts := &tcpServer{handler: m.opts.TCP(l), ctx: ctx, cancel: cancel}
		return &served{key: key{l.Name, l.Address, true}, ln: ln, tcp: ts}, nil
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true) // h2c with prior knowledge (HCM codec_type AUTO)
	srv := &http.Server{
		Handler:           m.opts.Handler(l),
		Protocols:         p,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       m.opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
	return &served{key: key{l.Name, l.Address, false}, ln: ln, srv: srv}, nil
}

// serve starts s's accept loop. Called with mu held, before Shutdown: the
// goroutine is counted in wg.
func (m *Manager) serve(s *served) {
	if s.tcp != nil {
		s.tcp.conns.Add(1)
		go m.acceptTCP(s)
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		// Update closes a removed listener before draining it: Serve then
		// returns net.ErrClosed, which is not a failure.
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			m.log.Error("listener stopped", "listener", s.key.name, "error", err)
		}
	}()
}

// drain stops s accepting and waits, in the background, up to
// DrainTimeout for its requests; then closes what is left. The caller has
// counted the goroutine in wg.
func (m *Manager) drain(s *served) {
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), m.opts.DrainTimeout)
		defer cancel()
		_ = s.shutdown(ctx)
	}()
}

// shutdown stops s accepting, waits until its requests or connections are
// over or ctx ends, then closes what is left; it returns ctx's error when
// cut short.
func (s *served) shutdown(ctx context.Context) error {
	if s.tcp == nil {
		err := s.srv.Shutdown(ctx)
		if err != nil {
			_ = s.srv.Close()
		}
		return err
	}
	_ = s.ln.Close()
	done := make(chan struct{})
	go func() { s.tcp.conns.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.tcp.cancel() // handlers close their connections
	<-done
	return err
}

// acceptTCP accepts connections on a TCP listener until its socket is
// closed, each served on its own goroutine counted in s.tcp.conns. The
// caller has counted this goroutine in s.tcp.conns.
func (m *Manager) acceptTCP(s *served) {
	ts := s.tcp
	defer ts.conns.Done()
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
			case <-ts.ctx.Done():
				return
			}
		}
		backoff = 0
		ts.conns.Add(1)
		go func() {
			defer ts.conns.Done()
			ts.handler(ts.ctx, c)
		}()
	}
}

// Addrs returns the bound address of each listener by name (useful when a
// listener's address has port 0).
func (m *Manager) Addrs() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.active))
	for k, s := range m.active {
		out[k.name] = s.ln.Addr().String()
	}
	return out
}

// Shutdown stops every listener accepting, waits for in-flight requests
// until ctx ends, then closes remaining connections. It returns ctx's error
// when the drain was cut short. Update fails after Shutdown.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	all := make([]*served, 0, len(m.active))
	for k, s := range m.active {
		all = append(all, s)
		delete(m.active, k)
	}
	m.mu.Unlock()

	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.shutdown(ctx)
		}()
	}
	wg.Wait()
	m.wg.Wait()
	return errors.Join(errs...)
}
