package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/secret"
)

// Options configures a Server.
type Options struct {
	// Addr is the listen address, "IP:15000". Required for Run.
	Addr string
	// Generation is the published config. Required.
	Generation *atomic.Pointer[config.Generation]
	// Gatherer is served on /stats/prometheus; nil serves no metrics.
	Gatherer prometheus.Gatherer
	// Secrets are listed on /certs (Envoy's admin /certs: certificates and
	// trust bundles, never keys) and at the end of /config_dump
	// (SecretsConfigDump, private keys redacted); nil lists none.
	Secrets *secret.Store
	// AgentStatus, when set, is served as JSON on /agent: the certificate
	// agent's state (serial, expiry, last rotation, last error). It must
	// return a value encoding/json can encode, and hold no secret.
	AgentStatus func() any
	Logger      *slog.Logger
}

// Server is the admin HTTP server. Its handler is safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
}

// New makes a Server. It fails when Generation is nil.
func New(opts Options) (*Server, error) {
	if opts.Generation == nil {
		return nil, errors.New("admin: Generation is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "admin"), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /config_dump", s.configDump)
	s.mux.HandleFunc("GET /ready", s.ready)
	s.mux.HandleFunc("GET /clusters", s.clusters)
	s.mux.HandleFunc("GET /certs", s.certs)
	if opts.AgentStatus != nil {
		s.mux.HandleFunc("GET /agent", s.agent)
	}
	// Go's profiler, the counterpart of Envoy's /cpuprofiler and
	// /heapprofiler: `go tool pprof http://ADMIN/debug/pprof/profile`.
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	if opts.Gatherer != nil {
		s.mux.Handle("GET /stats/prometheus", promhttpHandler(opts.Gatherer))
	}
	return s, nil
}

// Handler returns the admin routes.
func (s *Server) Handler() http.Handler { return s.mux }

// Run listens on Options.Addr and serves until ctx ends, then shuts down
// (1s grace). It returns the listen or serve error, nil after ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", s.opts.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener, which it closes.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

// configDump serves Envoy's /config_dump JSON of the current generation.
func (s *Server) configDump(w http.ResponseWriter, _ *http.Request) {
	g := s.opts.Generation.Load()
	if g == nil {
		http.Error(w, "no configuration applied yet", http.StatusServiceUnavailable)
		return
	}
	var (
		b   []byte
		err error
	)
	if s.opts.Secrets != nil {
		names := s.opts.Secrets.Names()
		slices.Sort(names)
		secs := make([]*secret.Secret, 0, len(names))
		for _, n := range names {
			if sec := s.opts.Secrets.Get(n); sec != nil {
				secs = append(secs, sec)
			}
		}
		b, err = g.ConfigDumpWithSecrets(secs)
	} else {
		b, err = g.ConfigDump()
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("config dump: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// ready answers 200 LIVE once a generation is applied, 503 before
// (Envoy's /ready).
func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.opts.Generation.Load() == nil {
		http.Error(w, "PRE_INITIALIZING", http.StatusServiceUnavailable)
		return
	}
	_, _ = fmt.Fprintln(w, "LIVE")
}

// clusters prints one line per endpoint, as Envoy's /clusters does:
// "CLUSTER::ADDRESS::health_flags::healthy|/failed_eds_health".
func (s *Server) clusters(w http.ResponseWriter, _ *http.Request) {
	g := s.opts.Generation.Load()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if g == nil {
		return
	}
	names := make([]string, 0, len(g.Clusters))
	for n := range g.Clusters {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		c := g.Clusters[n]
		if len(c.Endpoints) == 0 {
			fmt.Fprintf(&b, "%s::no_endpoints\n", n)
			continue
		}
		for _, e := range c.Endpoints {
			health := "healthy"
			if e.Health != config.Healthy {
				health = "/failed_eds_health"
			}
			fmt.Fprintf(&b, "%s::%s::health_flags::%s\n", n, e.Address, health)
			fmt.Fprintf(&b, "%s::%s::weight::%d\n", n, e.Address, e.Weight)
		}
	}
	_, _ = w.Write([]byte(b.String()))
}
