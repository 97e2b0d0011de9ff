package extauthz

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/dataplane/matcher"
)

// outcome is how a check ended.
type outcome uint8

const (
	allowed outcome = iota
	denied
	failed
)

// header is one header name and value to apply.
type header struct{ name, value string }

// decision is a check's result as the filter applies it.
type decision struct {
	outcome outcome
	err     error // why a check failed
	// Denied: the reply to the client.
	status int
	body   string
	reply  []header
	// Allowed: changes to the request going upstream, and headers for
	// the client's response.
	set, add       []header
	remove         []string
	clientOnAllow  []header
	clientOnAllowA []header // appended
}

// errNoUpstreams is a check that cannot be made because the proxy gave
// the filter no way to reach a cluster.
var errNoUpstreams = errors.New("ext_authz: no upstreams to call the authorization service")

// checkGRPC calls envoy.service.auth.v3.Authorization/Check.
func checkGRPC(ctx context.Context, up filter.Upstreams, svc *GRPCService, req *authv3.CheckRequest) decision {
	if up == nil {
		return decision{outcome: failed, err: errNoUpstreams}
	}
	cc, err := up.GRPC(svc.Cluster, svc.Authority)
	if err != nil {
		return decision{outcome: failed, err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, svc.Timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(cc).Check(ctx, req)
	if err != nil {
		return decision{outcome: failed, err: err}
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		d := decision{outcome: denied, status: http.StatusForbidden}
		dr := resp.GetDeniedResponse()
		if c := dr.GetStatus().GetCode(); c != 0 {
			d.status = int(c)
		}
		d.body = dr.GetBody()
		for _, h := range dr.GetHeaders() {
			d.reply = append(d.reply, header{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
		}
		return d
	}
	d := decision{outcome: allowed}
	ok := resp.GetOkResponse()
	for _, h := range ok.GetHeaders() {
		hv := header{h.GetHeader().GetKey(), h.GetHeader().GetValue()}
		if appendHeader(h) {
			d.add = append(d.add, hv)
		} else {
			d.set = append(d.set, hv)
		}
	}
	d.remove = ok.GetHeadersToRemove()
	for _, h := range ok.GetResponseHeadersToAdd() {
		hv := header{h.GetHeader().GetKey(), h.GetHeader().GetValue()}
		if appendHeader(h) {
			d.clientOnAllowA = append(d.clientOnAllowA, hv)
		} else {
			d.clientOnAllow = append(d.clientOnAllow, hv)
		}
	}
	return d
}

// appendHeader is how Envoy's ext_authz reads a HeaderValueOption of a
// check response: appended when the (deprecated but still used) append is
// true, set (replacing the request's values) otherwise.
func appendHeader(h *corev3.HeaderValueOption) bool {
	//nolint:staticcheck // append is deprecated but still what servers send.
	return h.GetAppend().GetValue()
}

// alwaysSent are the request headers an HTTP authorization service always
// gets, besides the configured ones (Envoy's defaults).
var alwaysSent = map[string]bool{":authority": true, ":method": true, ":path": true, "content-length": true, "authorization": true}

// checkHTTP sends the check as a plain HTTP request: the original method,
// path_prefix + the original :path, the allowed headers and
// headers_to_add; a 200 allows, a 5xx is a failed check, any other status
// denies with that response.
func checkHTTP(ctx context.Context, up filter.Upstreams, svc *HTTPService, cfg *Config, r *http.Request, body []byte, partial bool) decision {
	if up == nil {
		return decision{outcome: failed, err: errNoUpstreams}
	}
	ctx, cancel := context.WithTimeout(ctx, svc.Timeout)
	defer cancel()
	u := &url.URL{Scheme: "http", Host: svc.Cluster, Opaque: svc.PathPrefix + matcher.RequestPath(r)}
	req := (&http.Request{Method: r.Method, URL: u, Header: http.Header{}, Host: authority(r), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if lk == "content-length" || !sendHeader(cfg, lk, true) {
			continue
		}
		req.Header[k] = vs
	}
	if len(body) > 0 {
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	req.Header["Content-Length"] = []string{strconv.Itoa(len(body))}
	if cfg.Body != nil {
		req.Header["X-Envoy-Auth-Partial-Body"] = []string{strconv.FormatBool(partial)}
	}
	for _, h := range svc.HeadersToAdd {
		req.Header.Set(h[0], h[1])
	}
	resp, err := up.RoundTrip(svc.Cluster, req)
	if err != nil {
		return decision{outcome: failed, err: err}
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return decision{outcome: failed, err: err}
	}
	if resp.StatusCode >= 500 {
		// Istio's failOpen covers "the authorization service has returned
		// a HTTP 5xx error": a failed check, not a denial.
		return decision{outcome: failed, err: fmt.Errorf("authorization service: %s", resp.Status)}
	}
	if resp.StatusCode != http.StatusOK {
		d := decision{outcome: denied, status: resp.StatusCode, body: string(rb)}
		for k, vs := range resp.Header {
			if !clientHeaderOnDeny(svc, k) {
				continue
			}
			for _, v := range vs {
				d.reply = append(d.reply, header{k, v})
			}
		}
		return d
	}
	d := decision{outcome: allowed}
	for k, vs := range resp.Header {
		lk := strings.ToLower(k)
		for _, v := range vs {
			switch {
			case svc.UpstreamHeaders.Match(lk) || svc.UpstreamHeaders.Match(k):
				d.set = append(d.set, header{k, v})
			case svc.UpstreamHeadersToAppend.Match(lk) || svc.UpstreamHeadersToAppend.Match(k):
				d.add = append(d.add, header{k, v})
			}
			if svc.ClientHeadersOnSuccess.Match(lk) || svc.ClientHeadersOnSuccess.Match(k) {
				d.clientOnAllowA = append(d.clientOnAllowA, header{k, v})
			}
		}
	}
	return d
}

// clientHeaderOnDeny reports whether a denying HTTP response's header k
// goes to the client: all but Host when allowed_client_headers is unset;
// else the matched ones and Path, Status, Content-Length,
// WWW-Authenticate and Location, as Envoy adds them.
func clientHeaderOnDeny(svc *HTTPService, k string) bool {
	lk := strings.ToLower(k)
	switch lk {
	case "content-length", "transfer-encoding", "connection":
		return false // the reply sets its own framing
	}
	if svc.ClientHeaders == nil {
		return lk != "host"
	}
	switch lk {
	case ":path", ":status", "www-authenticate", "location":
		return true
	}
	return svc.ClientHeaders.Match(lk) || svc.ClientHeaders.Match(k)
}

// sendHeader reports whether the request header lk (lower case) goes
// with the check: allowed_headers (all when unset, except that an HTTP
// service gets only its defaults) minus disallowed_headers.
func sendHeader(cfg *Config, lk string, httpService bool) bool {
	if cfg.DisallowedHeaders.Match(lk) {
		return false
	}
	if httpService && alwaysSent[lk] {
		return true
	}
	if cfg.AllowedHeaders == nil {
		return !httpService
	}
	return cfg.AllowedHeaders.Match(lk)
}

func authority(r *http.Request) string {
	if r.URL != nil && r.URL.Host != "" {
		return r.URL.Host
	}
	return r.Host
}

// httpAttributes is the request part of a gRPC check (AttributeContext).
func httpAttributes(cfg *Config, r *http.Request, body []byte) *authv3.AttributeContext_Request {
	path := matcher.RequestPath(r)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	h := map[string]string{}
	pseudo := map[string]string{":authority": authority(r), ":method": r.Method, ":path": path, ":scheme": scheme}
	for k, v := range pseudo {
		if sendHeader(cfg, k, false) {
			h[k] = v
		}
	}
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if sendHeader(cfg, lk, false) {
			h[lk] = strings.Join(vs, ",")
		}
	}
	size := r.ContentLength
	if size < 0 || (size == 0 && r.Body != nil && r.Body != http.NoBody && r.Header.Get("Content-Length") == "") {
		size = -1
	}
	hr := &authv3.AttributeContext_HttpRequest{
		Id: r.Header.Get("X-Request-Id"), Method: r.Method, Headers: h, Path: path, Host: authority(r),
		Scheme: scheme, Size: size, Protocol: r.Proto,
	}
	if len(body) > 0 {
		if cfg.Body != nil && cfg.Body.PackAsBytes {
			hr.RawBody = body
		} else {
			hr.Body = string(body)
		}
	}
	return &authv3.AttributeContext_Request{Time: timestamppb.New(time.Now()), Http: hr}
}

// peer is an AttributeContext.Peer: the address, and for a TLS peer its
// principal (URI SAN, else DNS SAN, else subject) and, when asked for,
// its URL-encoded PEM certificate.
func peer(a netip.AddrPort, cs *tls.ConnectionState, withCert bool) *authv3.AttributeContext_Peer {
	p := &authv3.AttributeContext_Peer{}
	if a.IsValid() {
		p.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: a.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(a.Port())}}}}
	}
	if cs != nil && len(cs.PeerCertificates) > 0 {
		leaf := cs.PeerCertificates[0]
		switch {
		case len(leaf.URIs) > 0:
			p.Principal = leaf.URIs[0].String()
		case len(leaf.DNSNames) > 0:
			p.Principal = leaf.DNSNames[0]
		default:
			p.Principal = leaf.Subject.String()
		}
		if withCert {
			p.Certificate = url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})))
		}
	}
	return p
}

// metadataContext is the dynamic metadata of namespaces, as a gRPC check
// carries it; nil when none is asked for or present.
func metadataContext(md map[string]map[string]any, namespaces []string) *corev3.Metadata {
	var out *corev3.Metadata
	for _, ns := range namespaces {
		fields, ok := md[ns]
		if !ok {
			continue
		}
		s, err := structpb.NewStruct(fields)
		if err != nil {
			continue // a value structpb cannot hold; Envoy's metadata is always a Struct
		}
		if out == nil {
			out = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		}
		out.FilterMetadata[ns] = s
	}
	return out
}

// readBody buffers up to b.MaxBytes of r's body for the check and puts
// the whole body back for the upstream. tooLarge is true when the body is
// longer and partial messages are not allowed (Envoy answers 413).
func readBody(r *http.Request, b *Body) (body []byte, partial, tooLarge bool, err error) {
	if r.Body == nil || r.Body == http.NoBody || b.MaxBytes <= 0 {
		return nil, false, false, nil
	}
	buf := make([]byte, b.MaxBytes+1)
	n, err := io.ReadFull(r.Body, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		err = nil
	case err != nil:
		return nil, false, false, fmt.Errorf("read request body: %w", err)
	}
	buf = buf[:n]
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if n > b.MaxBytes {
		if !b.AllowPartial {
			return nil, false, true, nil
		}
		return buf[:b.MaxBytes], true, false, nil
	}
	return buf, false, false, nil
}
