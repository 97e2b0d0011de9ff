package http

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"strings"
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

// isGRPC reports whether h's Content-Type is gRPC's (application/grpc,
// application/grpc+proto, application/grpc-web...).
func isGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}
