package http

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// hopHeaders are the hop-by-hop headers (RFC 9110 section 7.6.1) a proxy
// must not forward, in canonical form, plus Expect: the proxy answers
// 100-continue itself.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
	"Expect",
}

// removeHopHeaders deletes the hop-by-hop headers of h and those the
// Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for len(v) > 0 {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = textproto.TrimString(tok); tok != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

var (
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
	teTrailers = []string{"trailers"}
	emptyValue = []string{""}
	hexDigits  = "0123456789abcdef"
)

// prepareRequestHeaders makes the downstream request's headers fit to send
// upstream, in place: hop-by-hop headers go, "te: trailers" stays (gRPC
// needs it), x-forwarded-proto is set when absent, and an absent
// User-Agent stays absent upstream. x-request-id and trace
// headers (traceparent, b3, x-b3-*) are forwarded unchanged.
func prepareRequestHeaders(h http.Header, tls bool) {
	trailers := false
	for _, v := range h["Te"] {
		if strings.Contains(v, "trailers") {
			trailers = true
		}
	}
	removeHopHeaders(h)
	if trailers {
		h["Te"] = teTrailers
	}
	if _, ok := h["User-Agent"]; !ok {
		// An empty value keeps net/http's transports from adding their
		// default User-Agent (as httputil.ReverseProxy does).
		h["User-Agent"] = emptyValue
	}
	if _, ok := h["X-Forwarded-Proto"]; !ok {
		if tls {
			h["X-Forwarded-Proto"] = protoHTTPS
		} else {
			h["X-Forwarded-Proto"] = protoHTTP
		}
	}
}

// copyResponseHeaders copies an upstream response's end-to-end headers to dst.
func copyResponseHeaders(dst, src http.Header) {
	var conn []string
	if v, ok := src["Connection"]; ok {
		conn = v
	}
	for k, vv := range src {
		if isHop(k) {
			continue
		}
		dst[k] = vv
	}
	for _, v := range conn {
		for len(v) > 0 {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = textproto.TrimString(tok); tok != "" {
				delete(dst, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
}

func isHop(k string) bool {
	for _, h := range hopHeaders {
		if h == k {
			return true
		}
	}
	return false
}

// newRequestID returns a random UUID version 4, as Envoy's x-request-id.
// It uses the runtime's fast random source: request IDs need to be unique,
// not secret.
func newRequestID() string {
	var b [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i] = byte(hi >> (8 * i))
		b[8+i] = byte(lo >> (8 * i))
	}
	b[6] = (b[6] & 0x0f) | 0x40 // version 4
	b[8] = (b[8] & 0x3f) | 0x80 // variant 10
	var s [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j] = hexDigits[c>>4]
		s[j+1] = hexDigits[c&0x0f]
		j += 2
	}
	return string(s[:])
}

// bytesReader is an io.ReadCloser over b.
func bytesReader(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

// isGRPC reports whether h's Content-Type is gRPC's or gRPC-Web's
// (application/grpc, application/grpc+proto, application/grpc-web...), as
// Istio's stats filter classes a request protocol "grpc". Local replies
// use filter.IsGRPC instead, which leaves gRPC-Web out as Envoy's
// hasGrpcContentType does: the two differ on purpose.
func isGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}

// xfccHeader is x-forwarded-client-cert, canonical.
const xfccHeader = "X-Forwarded-Client-Cert"

// applyXFCC is Envoy's XFCC handling (forward_client_cert_details) for a
// request that arrived on c: SANITIZE removes the header; FORWARD_ONLY
// keeps it on an mTLS connection; APPEND_FORWARD and SANITIZE_SET, on an
// mTLS connection, append to it or replace it with the client's element
// ("By=<proxy URI SAN>;Hash=<hex SHA-256 of the client certificate>"
// and the details x asks for, in Envoy's order Subject, URI, Cert,
// Chain, DNS); ALWAYS_FORWARD_ONLY leaves it. Without a client
// certificate, every mode but ALWAYS_FORWARD_ONLY removes it.
func applyXFCC(h http.Header, x *config.XFCC, r *http.Request) {
	switch x.Mode {
	case config.XFCCAlwaysForwardOnly:
		return
	case config.XFCCSanitize:
		delete(h, xfccHeader)
		return
	}
	c := filter.RequestConnection(r)
	if c == nil || c.TLS == nil || len(c.TLS.PeerCertificates) == 0 {
		delete(h, xfccHeader)
		return
	}
	if x.Mode == config.XFCCForwardOnly {
		return
	}
	el := xfccElement(x, c)
	if old := h[xfccHeader]; x.Mode == config.XFCCAppendForward && len(old) > 0 {
		el = strings.Join(old, ",") + "," + el
	}
	h[xfccHeader] = []string{el}
}

func xfccElement(x *config.XFCC, c *filter.Connection) string {
	peer := c.TLS.PeerCertificates[0]
	var parts []string
	if lc := c.LocalCertificate; lc != nil {
		for _, u := range lc.URIs {
			parts = append(parts, "By="+u.String())
		}
	}
	sum := sha256.Sum256(peer.Raw)
	parts = append(parts, "Hash="+hex.EncodeToString(sum[:]))
	if x.Subject {
		parts = append(parts, `Subject="`+peer.Subject.String()+`"`)
	}
	if x.URI {
		for _, u := range peer.URIs {
			parts = append(parts, "URI="+u.String())
		}
	}
	if x.Cert {
		parts = append(parts, `Cert="`+urlEncodePEM(peer)+`"`)
	}
	if x.Chain {
		parts = append(parts, `Chain="`+urlEncodePEM(c.TLS.PeerCertificates...)+`"`)
	}
	if x.DNS {
		for _, d := range peer.DNSNames {
			parts = append(parts, "DNS="+d)
		}
	}
	return strings.Join(parts, ";")
}

// urlEncodePEM is the certificates as PEM, percent-encoded as Envoy's
// XFCC Cert and Chain values.
func urlEncodePEM(certs ...*x509.Certificate) string {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return strings.ReplaceAll(url.QueryEscape(string(b)), "+", "%20")
}
