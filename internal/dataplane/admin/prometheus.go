package admin

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
)

// StatsHandler serves g on /stats/prometheus alone: the proxy's
// Prometheus port (Envoy's 15090 listener, which exposes only that path
// of its admin).
func StatsHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /stats/prometheus", promhttpHandler(g))
	return mux
}

// MergedOptions configures MergedHandler.
type MergedOptions struct {
	// Gatherer is the proxy's own metrics. Required.
	Gatherer prometheus.Gatherer
	// AppURL is the app's metrics endpoint ("http://127.0.0.1:8080/metrics",
	// from prometheus.io/port and prometheus.io/path); "" merges none.
	AppURL string
	// Client fetches AppURL; nil uses a client with a 5s timeout.
	Client *http.Client
	// MaxAppBytes bounds the app's body read; default 16 MiB.
	MaxAppBytes int64
	Logger      *slog.Logger
}

// MergedHandler serves /stats/prometheus as Istio's agent serves 15020:
// the proxy's metrics in the Prometheus text format, then the app's
// metrics as the app returned them when they are in the text format
// (an app answering in another format, failing or timing out is left out
// and logged at Debug; the proxy's part is always served).
func MergedHandler(o MergedOptions) http.Handler {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if o.MaxAppBytes <= 0 {
		o.MaxAppBytes = 16 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats/prometheus", func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		mfs, err := o.Gatherer.Gather()
		if err != nil {
			o.Logger.Debug("gathering the proxy's metrics", "error", err)
		}
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		if o.AppURL != "" {
			if err := appendApp(r.Context(), &buf, o); err != nil {
				o.Logger.Debug("app metrics not merged", "url", o.AppURL, "error", err)
			}
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		_, _ = w.Write(buf.Bytes())
	})
	return mux
}

func appendApp(ctx context.Context, buf *bytes.Buffer, o MergedOptions) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.AppURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := o.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "" && mt != "text/plain" {
		return fmt.Errorf("content type %q is not the Prometheus text format", mt)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, o.MaxAppBytes+1))
	if err != nil {
		return err
	}
	if int64(len(body)) > o.MaxAppBytes {
		return fmt.Errorf("body over %d bytes", o.MaxAppBytes)
	}
	if buf.Len() > 0 && len(body) > 0 {
		buf.WriteByte('\n')
	}
	buf.Write(body)
	return nil
}

func promhttpHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}
