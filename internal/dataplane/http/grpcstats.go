package http

import (
	"io"
	"net/http"

	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
)

// noteUpstreamTLS keeps the TLS state of the connection resp came on, and
// the certificate h presented on it, for Istio's client-side principals.
func noteUpstreamTLS(e *telemetry.Entry, h *upstream.Host, resp *http.Response) {
	if resp.TLS == nil {
		return
	}
	e.UpstreamTLS = resp.TLS
	e.UpstreamLocalPrincipal = h.LocalPrincipal()
}

// startGRPCMessages starts counting the messages of r, a request on a
// chain with istio.stats, when it is gRPC: Envoy's grpc_stats filter with
// emit_filter_state, which Istio's proxies run before istio.stats. The
// request side is counted as the downstream body is read (body, nil for
// none), the response side as it is copied downstream
// (countResponseMessages).
func startGRPCMessages(r *http.Request, body *countingBody, e *telemetry.Entry) {
	if !isGRPC(r.Header) {
		return
	}
	m := new(istiostats.GRPCMessages)
	e.GRPCMessages = m
	if body != nil {
		body.frames = &m.Request
	}
}

// countResponseMessages returns src, a response body about to be copied
// downstream, counting its gRPC messages when e's request counts them.
func countResponseMessages(src io.Reader, e *telemetry.Entry) io.Reader {
	if e.GRPCMessages == nil {
		return src
	}
	return &frameReader{r: src, c: &e.GRPCMessages.Response}
}

// frameReader feeds what is read through it to a FrameCounter.
type frameReader struct {
	r io.Reader
	c *istiostats.FrameCounter
}

func (f *frameReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.c.Feed(p[:n])
	return n, err
}
