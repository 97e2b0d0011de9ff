package extauthz

import (
	"context"
	"fmt"
	"net/http"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// Envoy's response code details of the filter's local replies.
const (
	DetailsDenied = "ext_authz_denied"
	DetailsError  = "ext_authz_error"
	// failureModeAllowedHeader marks a request let through on a failed
	// check (failure_mode_allow_header_add).
	failureModeAllowedHeader = "X-Envoy-Auth-Failure-Mode-Allowed"
)

// Build implements filter.Factory.
func (Factory) Build(cfg filter.Config, _ filter.Deps) (filter.Filter, error) {
	c, ok := cfg.(*Config)
	if !ok || c.override {
		return nil, fmt.Errorf("ext_authz: config %T", cfg)
	}
	return &httpFilter{cfg: c}, nil
}

// httpFilter is Envoy's HTTP ext_authz filter: when enabled for the
// request (filter_enabled_metadata, the route's ExtAuthzPerRoute), it
// asks the authorization service and lets the request through, with the
// service's header changes, or answers with the service's denial (or
// status_on_error when the check fails and failure is not allowed),
// flagging UAEX. The check is made on the request's goroutine, bounded by
// the service's timeout.
type httpFilter struct{ cfg *Config }

func (f *httpFilter) ServeHTTP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	cfg := f.cfg
	st := filter.StateFrom(r)
	var ext map[string]string
	if st != nil {
		if o, ok := st.Override.(*Config); ok && o.override {
			if o.Disabled {
				next.ServeHTTP(w, r)
				return
			}
			ext = o.ContextExtensions
		}
	}
	var md map[string]map[string]any
	if st != nil {
		md = st.Metadata
	}
	if cfg.EnabledMetadata != nil && !cfg.EnabledMetadata.Match(md) {
		next.ServeHTTP(w, r)
		return
	}

	var body []byte
	var partial bool
	if cfg.Body != nil {
		var tooLarge bool
		var err error
		body, partial, tooLarge, err = readBody(r, cfg.Body)
		switch {
		case err != nil:
			f.reply(w, r, st, cfg.StatusOnError, DetailsError, nil, "")
			return
		case tooLarge:
			f.reply(w, r, st, http.StatusRequestEntityTooLarge, "request_payload_too_large", nil, "Payload Too Large")
			return
		}
	}

	up := filter.UpstreamsFrom(r.Context())
	var d decision
	if cfg.GRPC != nil {
		src, dst := filter.RequestAddresses(r)
		cs := r.TLS
		if c := filter.RequestConnection(r); c != nil {
			cs = c.TLS
		}
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:            peer(src, cs, cfg.IncludePeerCertificate),
			Destination:       peer(dst, nil, false),
			Request:           httpAttributes(cfg, r, body),
			ContextExtensions: ext,
			MetadataContext:   metadataContext(md, cfg.MetadataNamespaces),
		}}
		if cfg.IncludeTLSSession && cs != nil {
			req.Attributes.TlsSession = &authv3.AttributeContext_TLSSession{Sni: cs.ServerName}
		}
		d = checkGRPC(r.Context(), up, cfg.GRPC, req)
	} else {
		d = checkHTTP(r.Context(), up, cfg.HTTP, cfg, r, body, partial)
	}

	switch d.outcome {
	case denied:
		f.reply(w, r, st, d.status, DetailsDenied, d.reply, d.body)
		return
	case failed:
		if !cfg.FailureModeAllow {
			f.reply(w, r, st, cfg.StatusOnError, DetailsError, nil, "")
			return
		}
		if cfg.FailureModeAllowHeaderAdd {
			r.Header.Set(failureModeAllowedHeader, "true")
		}
		next.ServeHTTP(w, r)
		return
	}
	for _, h := range d.set {
		setRequestHeader(r, h.name, h.value)
	}
	for _, h := range d.add {
		r.Header.Add(h.name, h.value)
	}
	for _, k := range d.remove {
		r.Header.Del(k)
	}
	rh := w.Header()
	for _, h := range d.clientOnAllow {
		rh.Set(h.name, h.value)
	}
	for _, h := range d.clientOnAllowA {
		rh.Add(h.name, h.value)
	}
	next.ServeHTTP(w, r)
}

// setRequestHeader replaces a header of r; ":authority" and "host" are
// the request's Host.
func setRequestHeader(r *http.Request, k, v string) {
	switch http.CanonicalHeaderKey(k) {
	case ":authority", "Host":
		r.Host = v
		return
	}
	r.Header.Set(k, v)
}

// reply answers the request itself, flagging UAEX as Envoy does for a
// denial and for a failed check. A gRPC client gets the grpc-status Envoy
// maps code to (filter.LocalReply).
func (f *httpFilter) reply(w http.ResponseWriter, r *http.Request, st *filter.State, code int, details string, hs []header, body string) {
	h := w.Header()
	for _, kv := range hs {
		h.Add(kv.name, kv.value)
	}
	code, n := filter.LocalReply(w, r, code, -1, body)
	if st != nil {
		st.ReplyCode, st.ReplyDetails, st.ReplyBytes = code, details, n
		st.Flags |= filter.FlagUnauthorizedExternal
	}
}

// NetworkFactory builds the network ext_authz filter
// (envoy.filters.network.ext_authz): one gRPC check per connection.
type NetworkFactory struct{}

var _ filter.NetworkFactory = NetworkFactory{}

// Name implements filter.NetworkFactory.
func (NetworkFactory) Name() string { return NetworkName }

// TypeURLs implements filter.NetworkFactory.
func (NetworkFactory) TypeURLs() []string { return []string{NetworkTypeURL} }

// Parse validates an envoy.extensions.filters.network.ext_authz.v3.ExtAuthz
// with an envoy_grpc service.
func (NetworkFactory) Parse(a *anypb.Any) (filter.Config, error) { return parseNetwork(a) }

// Build implements filter.NetworkFactory.
func (NetworkFactory) Build(cfg filter.Config) (filter.NetworkFilter, error) {
	c, ok := cfg.(*NetworkConfig)
	if !ok {
		return nil, fmt.Errorf("network ext_authz: config %T", cfg)
	}
	return &networkFilter{cfg: c}, nil
}

// CheckError is a connection the network ext_authz filter refused: the
// service denied it (Denied) or the check failed without
// failure_mode_allow. Its text is Envoy's termination details.
type CheckError struct {
	Denied bool
	Err    error
}

func (e *CheckError) Error() string {
	if e.Denied {
		return DetailsDenied
	}
	return DetailsError + ": " + e.Err.Error()
}

func (e *CheckError) Unwrap() error { return e.Err }

type networkFilter struct{ cfg *NetworkConfig }

// OnConnection checks c with the authorization service when the
// connection's dynamic metadata (the State of ctx, see
// filter.NetworkChain) enables it, blocking until the answer or the
// service's timeout.
func (f *networkFilter) OnConnection(ctx context.Context, c *filter.Connection) error {
	cfg := f.cfg
	var md map[string]map[string]any
	if st := filter.StateFromContext(ctx); st != nil {
		md = st.Metadata
	}
	if cfg.EnabledMetadata != nil && !cfg.EnabledMetadata.Match(md) {
		return nil
	}
	attrs := &authv3.AttributeContext{MetadataContext: metadataContext(md, cfg.MetadataNamespaces)}
	if c != nil {
		attrs.Source = peer(c.Source, c.TLS, cfg.IncludePeerCertificate)
		attrs.Destination = peer(c.Destination, nil, false)
		if cfg.IncludeTLSSession && c.ServerName != "" {
			attrs.TlsSession = &authv3.AttributeContext_TLSSession{Sni: c.ServerName}
		}
	}
	d := checkGRPC(ctx, filter.UpstreamsFrom(ctx), cfg.GRPC, &authv3.CheckRequest{Attributes: attrs})
	switch d.outcome {
	case denied:
		return &CheckError{Denied: true}
	case failed:
		if !cfg.FailureModeAllow {
			return &CheckError{Err: d.err}
		}
	}
	return nil
}
