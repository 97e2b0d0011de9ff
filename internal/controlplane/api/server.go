package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/xds"
	"github.com/loom-mesh/loom/internal/httpserve"
)

// MaxBodyBytes bounds the YAML body of validate, apply and delete requests.
const MaxBodyBytes = 8 << 20

// DefaultSource names the body in errors when a request has no ?source=.
const DefaultSource = "-"

const shutdownTimeout = 5 * time.Second

// ConfigStore is what the API needs of the config store
// (*config.Store implements it).
type ConfigStore interface {
	// Snapshot is the serving config; it may be nil.
	Snapshot() *config.Snapshot
	// Errors are the errors of the last read of the config directory.
	Errors() config.Errors
	// Validate, Apply and Delete act on a multi-document YAML body; source
	// names it in errors. Their errors are config.Errors or *config.Error
	// for invalid input, or wrap config.ErrDefinedInFile or
	// config.ErrNotFound.
	Validate(source string, data []byte) ([]config.Result, error)
	Apply(source string, data []byte) ([]config.Result, error)
	Delete(source string, data []byte) ([]config.Result, error)
}

// SyncReporter reports the xDS sync status of the connected proxies
// (*xds.Server implements it).
type SyncReporter interface {
	Syncz() []xds.ProxyStatus
}

var (
	_ ConfigStore  = (*config.Store)(nil)
	_ SyncReporter = (*xds.Server)(nil)
)

// Options configures a Server.
type Options struct {
	// Addr is the listen address, "127.0.0.1:15014"; port 0 picks one.
	Addr string
	// Store is the config store. Required.
	Store ConfigStore
	// Sync reports proxy sync status. Required.
	Sync SyncReporter
	// Ready reports whether loomd is ready: config loaded and xDS serving.
	// Nil means always ready.
	Ready func() bool
	// MeshConfigErr reports why the mesh config file's latest version was
	// refused (the last good one keeps serving), or nil. Nil means there
	// is no mesh config to report on.
	MeshConfigErr func() error
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// Metrics, when set, is served on /metrics (Prometheus text format) and
	// gets the server's own metrics: galley_validation_passed and
	// galley_validation_failed (see admissionMetrics), and
	// loom_config_errors, the errors of the config directory's latest
	// read. Nil serves no /metrics.
	Metrics *prometheus.Registry
	// DashboardURL is the dashboard's URL, which /api/v1/dashboard gives
	// (`loomctl dashboard` opens it); "" when loomd serves none.
	DashboardURL string
}

// yamlContentTypes are the Content-Types validate, apply and delete
// accept (parameters such as charset aside); any other answers 415 Unsupported Media Type. None of them is one
// a cross-site HTML form can send, and a cross-site script must ask a CORS
// preflight for them, which loomd never grants.
var yamlContentTypes = []string{"application/yaml", "application/x-yaml", "text/yaml"}

// Server is the monitoring and config API HTTP server.
type Server struct {
	opts    Options
	log     *slog.Logger
	lis     net.Listener
	mux     *http.ServeMux
	handler http.Handler // mux behind sameOrigin
	admit   *admissionMetrics
}

// New checks opts and binds opts.Addr, so that a port in use is reported
// before anything is served. Run closes the listener; a Server whose Run is
// never called must be closed with Close.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Sync == nil {
		return nil, errors.New("api: options: Store and Sync are required")
	}
	if opts.Ready == nil {
		opts.Ready = func() bool { return true }
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lis, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", opts.Addr, err)
	}
	s := &Server{opts: opts, log: log.With("component", "api"), lis: lis, mux: http.NewServeMux(), admit: newAdmissionMetrics()}
	if opts.Metrics != nil {
		for _, c := range []prometheus.Collector{s.admit.passed, s.admit.failed, configErrors(opts.Store)} {
			if err := opts.Metrics.Register(c); err != nil {
				lis.Close()
				return nil, fmt.Errorf("api: register metrics: %w", err)
			}
		}
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}))
	}
	s.mux.HandleFunc("GET /debug/syncz", s.syncz)
	s.mux.HandleFunc("GET /ready", s.ready)
	s.mux.HandleFunc("GET /debug/configz", s.configz)
	s.mux.HandleFunc("GET /api/v1/config", s.listConfig)
	s.mux.HandleFunc("GET /api/v1/dashboard", s.dashboard)
	s.mux.HandleFunc("POST /api/v1/validate", s.change(opts.Store.Validate, true))
	s.mux.HandleFunc("POST /api/v1/apply", s.change(opts.Store.Apply, true))
	s.mux.HandleFunc("POST /api/v1/delete", s.change(opts.Store.Delete, false))
	s.handler = sameOrigin(s.mux)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Handler is the server's HTTP handler, for tests and embedding. It
// rejects cross-origin requests (see sameOrigin).
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the listener of a Server whose Run was never called.
func (s *Server) Close() error { return s.lis.Close() }

// Run serves until ctx is done, then shuts down gracefully (waiting up to
// 5s for requests in flight) and returns nil; it returns an error when
// serving fails. Run must be called once.
func (s *Server) Run(ctx context.Context) error {
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	if err := httpserve.Serve(ctx, hs, s.lis, shutdownTimeout); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

// sameOrigin answers 403 to a request whose Origin header names another
// host than the one the request is addressed to (its Host), so that a web
// page of any site cannot drive the API through the user's browser: the
// API listens on 127.0.0.1 and has no authentication. Browsers send Origin
// on every cross-origin request and on same-origin POSTs; tools such as
// loomctl and curl send none, and pass. "Origin: null" (sandboxed pages,
// file: URLs) is rejected.
func sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		u, err := url.Parse(origin)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			writeText(w, http.StatusForbidden, fmt.Sprintf("origin %q: cross-origin requests are not allowed; loomd answers only requests from %s or without an Origin header", origin, r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// yamlContentType reports whether the request's Content-Type is one of
// yamlContentTypes.
func yamlContentType(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && slices.Contains(yamlContentTypes, mt)
}

func (s *Server) syncz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.opts.Sync.Syncz())
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if !s.opts.Ready() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ready\n")
}

// Configz is the JSON body of /debug/configz.
type Configz struct {
	// Version is the serving snapshot's version; 0 before a valid load.
	Version   uint64 `json:"version"`
	Resources int    `json:"resources"`
	// Errors are the current errors of the config directory, one
	// "FILE:LINE: KIND NS/NAME: FIELD: MSG" each; the last good config keeps
	// serving while there are any.
	Errors []string `json:"errors"`
	// MeshConfigError is why the --mesh-config file's latest version was
	// refused, "" when it was not; the last good mesh config keeps serving.
	MeshConfigError string `json:"mesh_config_error,omitempty"`
}

func (s *Server) configz(w http.ResponseWriter, _ *http.Request) {
	snap := s.opts.Store.Snapshot()
	c := Configz{Errors: []string{}}
	if snap != nil {
		c.Version, c.Resources = snap.Version, snap.Len()
	}
	for _, e := range s.opts.Store.Errors() {
		c.Errors = append(c.Errors, e.Error())
	}
	if s.opts.MeshConfigErr != nil {
		if err := s.opts.MeshConfigErr(); err != nil {
			c.MeshConfigError = err.Error()
		}
	}
	writeJSON(w, http.StatusOK, c)
}

// ConfigItem is one resource of /api/v1/config.
type ConfigItem struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Source    string `json:"source"` // "FILE:LINE"
}

func (s *Server) listConfig(w http.ResponseWriter, _ *http.Request) {
	items := []ConfigItem{}
	for _, r := range s.opts.Store.Snapshot().All() {
		items = append(items, ConfigItem{Kind: string(r.Kind), Namespace: r.Namespace, Name: r.Name, Source: r.Source.String()})
	}
	writeJSON(w, http.StatusOK, items)
}

// Dashboard is the JSON body of /api/v1/dashboard.
type Dashboard struct {
	URL string `json:"url"` // "http://127.0.0.1:20001/"
}

// dashboard answers the dashboard's URL, or 404 when loomd serves none.
func (s *Server) dashboard(w http.ResponseWriter, _ *http.Request) {
	if s.opts.DashboardURL == "" {
		writeText(w, http.StatusNotFound, "loomd serves no dashboard (--dashboard-addr off, or its address was taken)")
		return
	}
	writeJSON(w, http.StatusOK, Dashboard{URL: s.opts.DashboardURL})
}

// ResultItem is one resource of a validate, apply or delete answer.
type ResultItem struct {
	Key    string `json:"key"`    // "VirtualService default/reviews"
	Action string `json:"action"` // created, configured, unchanged or deleted
}

// ChangeResponse is the JSON body of a successful validate, apply or
// delete.
type ChangeResponse struct {
	Results []ResultItem `json:"results"`
}

// change serves validate, apply and delete with op; admit says whether the
// body's resources count in the admission metrics (validate and apply).
func (s *Server) change(op func(source string, data []byte) ([]config.Result, error), admit bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !yamlContentType(r) {
			w.Header().Set("Accept-Post", strings.Join(yamlContentTypes, ", "))
			writeText(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: must be %s",
				r.Header.Get("Content-Type"), strings.Join(yamlContentTypes, ", ")))
			return
		}
		source := r.URL.Query().Get("source")
		if source == "" {
			source = DefaultSource
		}
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeText(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s: body larger than %d bytes", source, MaxBodyBytes))
				return
			}
			writeText(w, http.StatusBadRequest, fmt.Sprintf("%s: read body: %v", source, err))
			return
		}
		results, err := op(source, data)
		if admit {
			s.admit.record(source, data, err)
		}
		if err != nil {
			code := statusOf(err)
			if code == http.StatusInternalServerError {
				s.log.Error("config request failed", "path", r.URL.Path, "source", source, "err", err)
			}
			writeText(w, code, err.Error())
			return
		}
		resp := ChangeResponse{Results: make([]ResultItem, len(results))}
		for i, res := range results {
			resp.Results[i] = ResultItem{Key: res.Key.String(), Action: res.Action}
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// statusOf maps a config store error to its HTTP status: 409 for a
// resource defined in a user file, 404 for an unknown resource, 400 for
// invalid input, 500 for anything else (I/O).
func statusOf(err error) int {
	var errs config.Errors
	var one *config.Error
	switch {
	case errors.Is(err, config.ErrDefinedInFile):
		return http.StatusConflict
	case errors.Is(err, config.ErrNotFound):
		return http.StatusNotFound
	case errors.As(err, &errs), errors.As(err, &one):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	if len(msg) > 0 && msg[len(msg)-1] != '\n' {
		msg += "\n"
	}
	io.WriteString(w, msg)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeText(w, http.StatusInternalServerError, "encode json: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
