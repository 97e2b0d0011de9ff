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

// Options configures a Manager.
type Options struct {
	// Handler makes the handler of a listener, once per socket. Required.
	Handler func(l *config.Listener) http.Handler
	Logger  *slog.Logger
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

	// mu guards active and closed.
	mu     sync.Mutex
	active map[key]*served
	closed bool

	wg sync.WaitGroup // serve and drain goroutines
}

type key struct{ name, addr string }

type served struct {
	key key
	ln  net.Listener
	srv *http.Server
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
// rest in the background. It returns the bind errors, joined; listeners
// that bound keep serving.
func (m *Manager) Update(gen *config.Generation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("listener manager: closed")
	}
	want := make(map[key]*config.Listener, len(gen.Listeners))
	for _, l := range gen.Listeners {
		want[key{l.Name, l.Address}] = l
	}
	for k, s := range m.active {
		if _, ok := want[k]; !ok {
			delete(m.active, k)
			m.log.Info("drain listener", "listener", k.name, "address", k.addr)
			m.drain(s)
		}
	}
	var errs []error
	keys := make([]key, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].name < keys[j].name })
	for _, k := range keys {
		if _, ok := m.active[k]; ok {
			continue
		}
		s, err := m.bind(want[k])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.active[k] = s
		m.log.Info("listening", "listener", k.name, "address", s.ln.Addr().String())
	}
	return errors.Join(errs...)
}

// bind listens on l.Address and serves it. Called with mu held.
func (m *Manager) bind(l *config.Listener) (*served, error) {
	ln, err := net.Listen("tcp", l.Address)
	if err != nil {
		return nil, fmt.Errorf("bind listener %q on %s: %w", l.Name, l.Address, err)
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
	s := &served{key: key{l.Name, l.Address}, ln: ln, srv: srv}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("listener stopped", "listener", l.Name, "error", err)
		}
	}()
	return s, nil
}

// drain stops s accepting and waits, in the background, up to
// DrainTimeout for its requests; then closes what is left. Called with mu
// held.
func (m *Manager) drain(s *served) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), m.opts.DrainTimeout)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
		}
	}()
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
			if err := s.srv.Shutdown(ctx); err != nil {
				errs[i] = err
				_ = s.srv.Close()
			}
		}()
	}
	wg.Wait()
	m.wg.Wait()
	return errors.Join(errs...)
}
