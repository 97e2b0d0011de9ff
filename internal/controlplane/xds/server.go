package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/grpcgen"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
)

// Defaults of Options.
const (
	DefaultDebounceAfter = 100 * time.Millisecond
	DefaultDebounceMax   = time.Second
	// gracefulStopTimeout bounds how long Run waits for streams to end
	// before it closes them hard.
	gracefulStopTimeout = 5 * time.Second
)

// ConfigSource gives the current validated config. The config Store
// implements it. Snapshot must be safe for concurrent use and never block
// for long; a nil snapshot is served as an empty config.
type ConfigSource interface {
	Snapshot() *config.Snapshot
}

// Generator builds the xDS resources of one proxy from a push context;
// translate.Generate is the default.
type Generator func(pc *model.PushContext, p *model.Proxy) (*translate.Resources, error)

// Options configures a Server.
type Options struct {
	// Addr is the gRPC listen address, "127.0.0.1:15010". Port 0 picks a
	// free port; Server.Addr tells which.
	Addr string
	// Config is where the push context's config comes from. Required.
	Config ConfigSource
	// Generate builds one proxy's resources. Nil means translate.Generate.
	Generate Generator
	// GenerateGRPC builds the resources of a proxyless gRPC client: a node
	// whose metadata GENERATOR is "grpc", as Istio's agent writes in a
	// grpc-go bootstrap. Nil means grpcgen.Generate.
	GenerateGRPC Generator
	// DebounceAfter is the quiet period after a trigger before a push
	// (Istio's PILOT_DEBOUNCE_AFTER). Zero means DefaultDebounceAfter.
	DebounceAfter time.Duration
	// DebounceMax is the longest a push waits after the first trigger of a
	// burst (Istio's PILOT_DEBOUNCE_MAX). Zero means DefaultDebounceMax.
	DebounceMax time.Duration
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// Secure, when set, serves the same ADS over TLS on a second address
	// (Istio's 15012), beside the plaintext Addr.
	Secure *SecureOptions
	// Registerer, when set, gets the server's metrics: istiod's pilot_*
	// (see metrics). Nil keeps them unregistered.
	Registerer prometheus.Registerer
}

// SecureOptions configure the TLS port. Everything served on Addr is
// served there too, with the same proxies and snapshots.
type SecureOptions struct {
	// Addr is the TLS listen address, "127.0.0.1:15012". Port 0 picks a free
	// port; Server.SecureAddr tells which. Required.
	Addr string
	// TLS is the server's TLS config (loomd's: ca.ServerTLS). A client
	// certificate it verified is handed to Authorize. Required.
	TLS *tls.Config
	// Register, when set, adds more services to the TLS port's gRPC
	// server (loomd's CA: IstioCertificateService).
	Register func(*grpc.Server)
	// Authorize, when set, is called when a stream on the TLS port whose
	// client presented a verified certificate (leaf, the first of its
	// verified chain) sends its first request, with the node's namespace
	// and service account (node metadata). An error ends the stream with
	// codes.PermissionDenied. A stream without a client certificate is
	// served as on the plaintext port. (loomd: ca.CheckNodeIdentity.)
	Authorize func(leaf *x509.Certificate, namespace, serviceAccount string) error
}

// Server is the ADS server. Create it with New, serve with Run. Its methods
// are safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger
	lis  net.Listener
	// secureLis is the TLS port's listener; nil without Options.Secure.
	secureLis net.Listener
	// cache holds the snapshots of Envoy-style proxies (sidecars,
	// routers). It runs in ADS mode: it answers a request only when the
	// request names every resource of its type in the snapshot, which keeps
	// an Envoy from seeing half of an update.
	cache cachev3.SnapshotCache
	// grpcCache holds the snapshots of proxyless gRPC clients (see
	// generatorFor). It is not in ADS mode: a grpc-go client subscribes to
	// resources one by one, by name (LDS "HOST:PORT", then its route
	// configuration, then the clusters the routes name, then their
	// endpoints), never to all of a type, so an ADS-mode cache, seeing
	// snapshot resources the request does not name, would never answer.
	// This cache answers with the requested resources the snapshot has.
	grpcCache cachev3.SnapshotCache

	// trigger holds at most one pending config-change signal (latest wins).
	trigger chan struct{}
	// triggered is when the pending trigger's burst began (Unix
	// nanoseconds; 0 when none is pending): the config change a push's
	// convergence is measured from.
	triggered atomic.Int64
	serving   atomic.Bool
	metrics   *metrics
	pushes    atomic.Uint64 // number of completed pushes, for tests and logs

	// versionPrefix starts every resource version: the time New ran, in
	// Unix nanoseconds, base 36. Versions restart their counter with each
	// loomd process; the prefix keeps a proxy that reconnects to a new
	// process from holding a version equal to a new one, which the cache
	// would take as already sent and not answer.
	versionPrefix string

	// mu guards the fields below and every proxyState's typed. It is held
	// only for bookkeeping: generation and cache writes run outside it, so
	// ACKs, new streams and Syncz never wait for a push.
	mu sync.Mutex
	pc *model.PushContext
	// version is the sequence number of the latest push, which pc is
	// built for; resource versions are versionPrefix-version.
	version uint64
	proxies map[string]*proxyState // by node ID
	streams map[int64]string       // stream ID -> node ID, set on its first request
	// peers holds the verified client certificate (leaf) of each open
	// stream of the TLS port whose client presented one, from the stream's
	// opening to its close.
	peers map[int64]*x509.Certificate
	// writes holds the pending snapshot cache writes, by node ID; see
	// queueWriteLocked.
	writes map[string]*cacheWrite
}

// New checks opts and binds opts.Addr, so that a port in use is reported
// before anything is served. The listener is closed by Run; a Server whose
// Run is never called must be closed with Close.
func New(opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("xds: options: Config is required")
	}
	if opts.Generate == nil {
		opts.Generate = translate.Generate
	}
	if opts.GenerateGRPC == nil {
		opts.GenerateGRPC = grpcgen.Generate
	}
	if opts.DebounceAfter <= 0 {
		opts.DebounceAfter = DefaultDebounceAfter
	}
	if opts.DebounceMax <= 0 {
		opts.DebounceMax = DefaultDebounceMax
	}
	if opts.DebounceMax < opts.DebounceAfter {
		opts.DebounceMax = opts.DebounceAfter
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "xds")
	if sec := opts.Secure; sec != nil && (sec.Addr == "" || sec.TLS == nil) {
		return nil, errors.New("xds: options: Secure needs Addr and TLS")
	}
	lis, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("xds: listen %s: %w", opts.Addr, err)
	}
	var secureLis net.Listener
	if opts.Secure != nil {
		if secureLis, err = net.Listen("tcp", opts.Secure.Addr); err != nil {
			lis.Close()
			return nil, fmt.Errorf("xds: listen %s: %w", opts.Secure.Addr, err)
		}
	}
	s := &Server{
		opts:      opts,
		log:       log,
		lis:       lis,
		secureLis: secureLis,
		cache:     cachev3.NewSnapshotCache(true, cachev3.IDHash{}, gcpLogger{log}),
		grpcCache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, gcpLogger{log}),
		trigger:   make(chan struct{}, 1),
		// Unix nanoseconds differ between two processes of one host, and
		// base 36 keeps them short: "1b9dzl3k0xs0".
		versionPrefix: strconv.FormatInt(time.Now().UnixNano(), 36),
		version:       1,
		proxies:       map[string]*proxyState{},
		streams:       map[int64]string{},
		peers:         map[int64]*x509.Certificate{},
		writes:        map[string]*cacheWrite{},
		metrics:       newMetrics(),
	}
	if opts.Registerer != nil {
		for _, c := range append(s.metrics.collectors(), s) {
			if err := opts.Registerer.Register(c); err != nil {
				s.Close()
				return nil, fmt.Errorf("xds: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// SecureAddr is the address of the TLS port; "" without Options.Secure.
func (s *Server) SecureAddr() string {
	if s.secureLis == nil {
		return ""
	}
	return s.secureLis.Addr().String()
}

// Serving reports whether Run is serving.
func (s *Server) Serving() bool { return s.serving.Load() }

// Close releases the listeners of a Server whose Run was never called.
func (s *Server) Close() error {
	if s.secureLis != nil {
		s.secureLis.Close()
	}
	return s.lis.Close()
}

// Trigger signals a config change. It never blocks: triggers coalesce into
// one pending push, which happens after DebounceAfter of quiet and at most
// DebounceMax after the first trigger.
func (s *Server) Trigger() {
	s.triggered.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run serves ADS until ctx is done, then stops gracefully and returns nil.
// It returns an error when serving fails. Run must be called once.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The sotw server ends every stream when ctx is done, which lets
	// GracefulStop finish.
	xs := serverv3.NewServer(ctx, s.muxCache(), s.callbacks(), sotw.WithOrderedADS(), sotw.WithLogger(gcpLogger{s.log}))
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	servers := []*grpc.Server{gs}

	var wg sync.WaitGroup
	wg.Go(func() { s.debounce(ctx) })
	serveErr := make(chan error, 2)
	wg.Go(func() { serveErr <- gs.Serve(s.lis) })
	if sec := s.opts.Secure; sec != nil {
		tgs := grpc.NewServer(grpc.Creds(credentials.NewTLS(sec.TLS)))
		discoverygrpc.RegisterAggregatedDiscoveryServiceServer(tgs, xs)
		if sec.Register != nil {
			sec.Register(tgs)
		}
		servers = append(servers, tgs)
		wg.Go(func() { serveErr <- tgs.Serve(s.secureLis) })
	}
	s.serving.Store(true)
	s.log.Debug("xds serving", "addr", s.Addr(), "secure_addr", s.SecureAddr())

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("xds: serve: %w", err)
	}
	s.serving.Store(false)
	cancel()
	stopped := make(chan struct{})
	wg.Go(func() {
		defer close(stopped)
		var stops sync.WaitGroup
		for _, g := range servers {
			stops.Go(g.GracefulStop)
		}
		stops.Wait()
	})
	t := time.NewTimer(gracefulStopTimeout)
	select {
	case <-stopped:
	case <-t.C:
		for _, g := range servers {
			g.Stop()
		}
	}
	t.Stop()
	wg.Wait()
	return err
}

// debounce runs pushes: after a trigger it waits for DebounceAfter of
// quiet, at most DebounceMax in all, then pushes. Pushes run on this
// goroutine, so at most one is in flight; triggers during a push make one
// more.
func (s *Server) debounce(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
		}
		start := time.Now()
		quiet := time.NewTimer(s.opts.DebounceAfter)
	wait:
		for {
			select {
			case <-ctx.Done():
				quiet.Stop()
				return
			case <-s.trigger:
				left := s.opts.DebounceMax - time.Since(start)
				if left <= 0 {
					break wait
				}
				quiet.Reset(min(s.opts.DebounceAfter, left))
			case <-quiet.C:
				break wait
			}
		}
		quiet.Stop()
		// The config change is the first trigger since the last push,
		// which may have come while that push ran.
		changed := start
		if t := s.triggered.Swap(0); t != 0 && t < start.UnixNano() {
			changed = time.Unix(0, t)
		}
		s.push(changed, time.Since(start))
	}
}

// push rebuilds the push context and regenerates every connected proxy,
// for the config change at changed. It holds s.mu only to publish the push
// context, take the push's sequence number and copy the proxy list; each
// proxy is generated and its snapshot set without it. A proxy connecting
// meanwhile is generated from the new push context by connect.
func (s *Server) push(changed time.Time, debounced time.Duration) {
	start := time.Now()
	s.metrics.debounce.Observe(start.Sub(changed).Seconds())
	snap := s.snapshot()
	pc := model.NewPushContext(snap)
	s.metrics.pcInit.Observe(time.Since(start).Seconds())
	s.mu.Lock()
	s.pc = pc
	s.version++
	seq := s.version
	proxies := make([]*proxyState, 0, len(s.proxies))
	for _, p := range s.proxies {
		proxies = append(proxies, p)
	}
	s.mu.Unlock()
	for _, p := range proxies {
		if err := s.update(p, pc, seq, &convergence{changed: changed, pushStart: start}); err != nil {
			s.log.Error("xds generate failed; proxy keeps its last config", "node", p.proxy.ID, "err", err)
		}
	}
	s.pushes.Add(1)
	s.log.Debug("xds push", "version", s.versionOf(seq), "config_version", snap.Version, "proxies", len(proxies),
		"debounced", debounced, "took", time.Since(start))
}

// snapshot is the current config; an empty one when the source has none.
func (s *Server) snapshot() *config.Snapshot {
	if snap := s.opts.Config.Snapshot(); snap != nil {
		return snap
	}
	return config.NewSnapshot(0, nil)
}
