package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/loom-mesh/loom/internal/httpserve"
)

// Defaults and bounds of the API's query parameters.
const (
	DefaultAddr   = "127.0.0.1:20001"
	DefaultWindow = time.Minute
	MaxWindow     = time.Hour
	DefaultSpan   = 10 * time.Minute
	DefaultStep   = 15 * time.Second
	// maxPoints bounds the points of one series.
	maxPoints       = 720
	shutdownTimeout = 5 * time.Second
)

// Options configure a Server.
type Options struct {
	// Addr is the listen address, DefaultAddr; port 0 picks one.
	Addr string
	// Config is loomd's config store. Required.
	Config ConfigSource
	// Proxies reports the connected proxies. Required.
	Proxies ProxySource
	// Traffic gives the mesh's traffic. Required.
	Traffic TrafficSource
	// Health, when set, reports the scrape health of each proxy (the
	// embedded source's Scraper.Health), shown in the proxy list.
	Health func() []TargetHealth
	// AllowedHosts are host names (besides IP addresses and "localhost")
	// the server answers to in the Host header; any other gets 421, which
	// keeps a web page from reading the dashboard through DNS rebinding.
	AllowedHosts []string
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
}

// Server is the dashboard's HTTP server: the embedded web page and the
// JSON API it reads (see the package documentation). Create it with New,
// serve with Run.
type Server struct {
	opts    Options
	log     *slog.Logger
	lis     net.Listener
	handler http.Handler
	pcs     pushContexts
}

// New checks opts and binds opts.Addr. Run closes the listener; a Server
// whose Run is never called must be closed with Close.
func New(opts Options) (*Server, error) {
	if opts.Config == nil || opts.Proxies == nil || opts.Traffic == nil {
		return nil, errors.New("dashboard: options: Config, Proxies and Traffic are required")
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lis, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard: listen %s: %w", opts.Addr, err)
	}
	s := &Server{opts: opts, log: log.With("component", "dashboard"), lis: lis}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index)
	static, err := staticHandler()
	if err != nil {
		lis.Close()
		return nil, err
	}
	mux.Handle("GET /dist/", static)
	mux.HandleFunc("GET /api/graph", s.graph)
	mux.HandleFunc("GET /api/services", s.services)
	mux.HandleFunc("GET /api/services/{namespace}/{host}", s.service)
	mux.HandleFunc("GET /api/workloads", s.workloads)
	mux.HandleFunc("GET /api/workloads/{namespace}/{name}", s.workload)
	mux.HandleFunc("GET /api/proxies", s.proxies)
	mux.HandleFunc("GET /api/config", s.config)
	s.handler = s.guard(mux)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// URL is the dashboard's URL, "http://127.0.0.1:20001/".
func (s *Server) URL() string { return "http://" + s.Addr() + "/" }

// Handler is the server's HTTP handler, for tests.
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the listener of a Server whose Run was never called.
func (s *Server) Close() error { return s.lis.Close() }

// Run serves until ctx is done, then shuts down gracefully (up to 5 s)
// and returns nil; it returns an error when serving fails. Run must be
// called once.
func (s *Server) Run(ctx context.Context) error {
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	if err := httpserve.Serve(ctx, hs, s.lis, shutdownTimeout); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	return nil
}

// guard answers 421 to a Host that is not an IP address, "localhost" or
// one of Options.AllowedHosts (DNS rebinding), and sets the security
// headers of every response: the page loads nothing but its own origin.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if net.ParseIP(host) == nil && !strings.EqualFold(host, "localhost") && !slices.Contains(s.opts.AllowedHosts, host) {
			http.Error(w, fmt.Sprintf("host %q is not served: use an IP address or localhost", r.Host), http.StatusMisdirectedRequest)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// view reads the config, the push context and the proxies once.
func (s *Server) view() *meshView {
	snap := s.opts.Config.Snapshot()
	return &meshView{snap: snap, pc: s.pcs.get(snap), errs: s.opts.Config.Errors(), proxies: s.opts.Proxies.Syncz(), now: time.Now()}
}

// durationParam reads a duration query parameter ("90s", "5m") within
// [lo, hi], def when absent.
func durationParam(r *http.Request, name string, def, lo, hi time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if secs, err2 := strconv.ParseFloat(v, 64); err2 == nil {
			d, err = time.Duration(secs*float64(time.Second)), nil
		}
	}
	if err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("%s = %q: must be a duration from %v to %v", name, v, lo, hi)
	}
	return d, nil
}

func (s *Server) graph(w http.ResponseWriter, r *http.Request) {
	window, err := durationParam(r, "window", DefaultWindow, time.Second, MaxWindow)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	g := Graph{Source: s.opts.Traffic.Kind(), WindowSeconds: window.Seconds(), Timestamp: time.Now().UnixMilli(), Warnings: []string{}}
	edges, err := s.opts.Traffic.Edges(r.Context(), window)
	if err != nil {
		g.Warnings = append(g.Warnings, "traffic: "+err.Error())
	}
	v := s.view()
	g.Nodes, g.Edges = buildGraph(edges, v.workloads())
	if s.opts.Health != nil {
		for _, h := range s.opts.Health() {
			if h.Error != "" {
				g.Warnings = append(g.Warnings, fmt.Sprintf("proxy %s: %s", h.ID, h.Error))
			}
		}
	}
	writeJSON(w, http.StatusOK, g)
}

func (s *Server) services(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.view().services())
}

// PointJSON is one point of a traffic series in the API.
type PointJSON struct {
	T      int64    `json:"t"`      // Unix milliseconds
	RPS    float64  `json:"rps"`    // requests per second
	Errors float64  `json:"errors"` // failed requests per second
	P95Ms  *float64 `json:"p95_ms"` // null when unknown
}

// Traffic is the inbound and outbound series of a service or workload.
type Traffic struct {
	SpanSeconds float64     `json:"span_seconds"`
	StepSeconds float64     `json:"step_seconds"`
	Inbound     []PointJSON `json:"inbound"`
	Outbound    []PointJSON `json:"outbound"`
	// Error says why the series are missing, when they are.
	Error string `json:"error,omitempty"`
}

// ServiceDetail is the body of /api/services/{namespace}/{host}.
type ServiceDetail struct {
	ServiceView
	Traffic Traffic `json:"traffic"`
}

// WorkloadDetail is the body of /api/workloads/{namespace}/{name}.
type WorkloadDetail struct {
	WorkloadView
	Traffic Traffic `json:"traffic"`
}

// traffic reads the series of in and out, with span and step from r's
// query parameters.
func (s *Server) traffic(r *http.Request, in, out Query) (Traffic, error) {
	span, err := durationParam(r, "span", DefaultSpan, time.Minute, MaxRetention)
	if err != nil {
		return Traffic{}, err
	}
	step, err := durationParam(r, "step", DefaultStep, time.Second, span)
	if err != nil {
		return Traffic{}, err
	}
	step = max(step, span/maxPoints)
	t := Traffic{SpanSeconds: span.Seconds(), StepSeconds: step.Seconds(), Inbound: []PointJSON{}, Outbound: []PointJSON{}}
	for _, x := range []struct {
		q   Query
		dst *[]PointJSON
	}{{in, &t.Inbound}, {out, &t.Outbound}} {
		if x.q.Service == "" && len(x.q.Workloads) == 0 {
			continue
		}
		pts, err := s.opts.Traffic.Series(r.Context(), x.q, span, step)
		if err != nil {
			t.Error = err.Error()
			break
		}
		for _, p := range pts {
			*x.dst = append(*x.dst, PointJSON{T: p.Time.UnixMilli(), RPS: p.RequestRate, Errors: p.ErrorRate, P95Ms: num(p.P95)})
		}
	}
	return t, nil
}

func (s *Server) service(w http.ResponseWriter, r *http.Request) {
	v := s.view()
	ns, host := r.PathValue("namespace"), r.PathValue("host")
	svc := v.findService(ns, host)
	if svc == nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("no service %s in namespace %s", host, ns))
		return
	}
	d := ServiceDetail{ServiceView: v.service(svc, true)}
	t, err := s.traffic(r, Query{Direction: Inbound, Namespace: ns, Service: host},
		Query{Direction: Outbound, Namespace: ns, Workloads: d.Workloads})
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	d.Traffic = t
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) workloads(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.view().workloads())
}

func (s *Server) workload(w http.ResponseWriter, r *http.Request) {
	v := s.view()
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	if !slices.ContainsFunc(v.workloads(), func(wv WorkloadView) bool { return wv.Namespace == ns && wv.Name == name }) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no workload %s in namespace %s", name, ns))
		return
	}
	d := WorkloadDetail{WorkloadView: v.workload(ns, name, true)}
	if d.Proxy != nil {
		d.Proxy.Scrape = s.health(d.Proxy.ID)
	}
	names := []string{name}
	t, err := s.traffic(r, Query{Direction: Inbound, Namespace: ns, Workloads: names},
		Query{Direction: Outbound, Namespace: ns, Workloads: names})
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	d.Traffic = t
	writeJSON(w, http.StatusOK, d)
}

// health is the scrape health of the proxy id; nil when unknown.
func (s *Server) health(id string) *TargetHealth {
	if s.opts.Health == nil {
		return nil
	}
	for _, h := range s.opts.Health() {
		if h.ID == id {
			return &h
		}
	}
	return nil
}

func (s *Server) proxies(w http.ResponseWriter, _ *http.Request) {
	v := s.view()
	pvs := proxyViews(v.proxies, v.now)
	for i := range pvs {
		pvs[i].Scrape = s.health(pvs[i].ID)
	}
	writeJSON(w, http.StatusOK, pvs)
}

func (s *Server) config(w http.ResponseWriter, _ *http.Request) {
	v := s.view()
	var version uint64
	if v.snap != nil {
		version = v.snap.Version
	}
	writeJSON(w, http.StatusOK, struct {
		Version   uint64       `json:"version"`
		Resources []ConfigItem `json:"resources"`
	}{version, v.configItems()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("encode json: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writeError answers {"error": "..."} with code.
func writeError(w http.ResponseWriter, code int, err error) {
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
