package telemetry

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
)

// Sinks owns the writers of access log paths: the proxy's stdout and
// stderr logs, and files opened on first use (append, created 0644) and
// kept for the process's life, so that a generation swap never reopens
// them. Its methods are safe for concurrent use.
type Sinks struct {
	stdout, stderr *AccessLog
	log            *slog.Logger
	// otel exports OpenTelemetry access logs; nil until ExportOTel.
	otel atomic.Pointer[otelLogs]

	// open is the files: path -> *AccessLog, nil for a file that could
	// not be opened; read on every request without a lock. mu serializes
	// opening.
	open sync.Map
	mu   sync.Mutex
}

// NewSinks makes Sinks over the proxy's stdout and stderr logs (either
// nil: those paths log nothing, as `loom-proxy --access-log=false`).
func NewSinks(stdout, stderr *AccessLog, log *slog.Logger) *Sinks {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sinks{stdout: stdout, stderr: stderr, log: log}
}

// ExportOTel makes OpenTelemetry access loggers export through
// o.Collectors; until then they log nothing. Call it once, before Run.
func (s *Sinks) ExportOTel(o OTelLogOptions) {
	s.otel.Store(newOTelLogs(o))
}

// Get returns path's writer, opening the file the first time; nil when
// it cannot be opened (logged once: the failure is kept too).
func (s *Sinks) Get(path string) *AccessLog {
	if s == nil {
		return nil
	}
	switch path {
	case "/dev/stdout":
		return s.stdout
	case "/dev/stderr":
		return s.stderr
	}
	if a, ok := s.open.Load(path); ok {
		return a.(*AccessLog)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.open.Load(path); ok {
		return a.(*AccessLog)
	}
	var a *AccessLog
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		s.log.Error("access log file cannot be opened", "path", path, "err", err)
	} else {
		a = NewAccessLog(AccessLogOptions{Writer: f})
	}
	s.open.Store(path, a)
	return a
}

// Enabled reports whether any logger of ls writes somewhere: false when
// ls is empty or every path is one that logs nothing (stdout with
// `--access-log=false`, a file that cannot be opened). The connection
// manager fills the fields only access logs read when it is true.
func (s *Sinks) Enabled(ls []*accesslog.AccessLogger) bool {
	if s == nil {
		return false
	}
	for _, l := range ls {
		if l.OTel != nil {
			if s.otel.Load() != nil {
				return true
			}
			continue
		}
		if s.Get(l.Path) != nil {
			return true
		}
	}
	return false
}

// Run flushes the file logs every 100ms and runs the stderr log until
// ctx is done, then flushes them once more and closes the files. (The
// stdout log is run by its owner, which writes to it too.)
func (s *Sinks) Run(ctx context.Context) {
	stderrDone := make(chan struct{})
	go func() { defer close(stderrDone); _ = s.stderr.Run(ctx) }()
	defer func() { <-stderrDone }()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if o := s.otel.Load(); o != nil {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := o.shutdown(sctx); err != nil {
					s.log.Warn("OpenTelemetry access log: last export failed", "err", err)
				}
				cancel()
			}
			s.each(func(a *AccessLog) {
				a.Flush()
				if c, ok := a.w.(*os.File); ok {
					_ = c.Close()
				}
			})
			return
		case <-t.C:
			s.each((*AccessLog).Flush)
		}
	}
}

func (s *Sinks) each(f func(*AccessLog)) {
	s.open.Range(func(_, v any) bool {
		if a := v.(*AccessLog); a != nil {
			f(a)
		}
		return true
	})
}

// Log writes e to every logger of ls whose filter matches it. It does not
// block on a writer. The filters share one lazy set of attribute maps
// (accesslog.Activation), built only when a logger has a filter.
func (s *Sinks) Log(ls []*accesslog.AccessLogger, e *Entry) {
	if s == nil {
		return
	}
	var act *accesslog.Activation
	for _, l := range ls {
		var a *AccessLog
		var o *otelLogs
		if l.OTel != nil {
			if o = s.otel.Load(); o == nil {
				continue
			}
		} else if a = s.Get(l.Path); a == nil {
			continue
		}
		if l.Filter != nil {
			if act == nil {
				act = accesslog.NewActivation(e)
			}
			if !l.Filter.MatchIn(act) {
				continue
			}
		}
		if o != nil {
			o.log(l.OTel, e)
		} else {
			a.LogWith(l.Format, e)
		}
	}
}
