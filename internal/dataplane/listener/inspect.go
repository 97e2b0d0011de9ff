package listener

import (
	"bytes"
	"crypto/tls"
	"errors"
)

// tlsHello is what tls_inspector found in a ClientHello.
type tlsHello struct {
	serverName string
	alpn       []string
}

// errHelloRead stops crypto/tls once it has parsed the ClientHello.
var errHelloRead = errors.New("client hello read")

// inspectTLS is Envoy's tls_inspector: it peeks at c's first bytes and,
// when they are a TLS handshake record, has crypto/tls parse the
// ClientHello (without consuming it, and writing nothing back) for its
// server name and ALPN list. It returns nil, nil for a connection that is
// not TLS (its first byte is not a handshake record, or crypto/tls finds
// no ClientHello in it), and the read error when the bytes stop short
// (EOF, or the listener filters' deadline).
func inspectTLS(c *peekConn) (*tlsHello, error) {
	b, err := c.fill(1)
	if err != nil {
		return nil, err
	}
	const recordTypeHandshake = 0x16
	if b[0] != recordTypeHandshake {
		return nil, nil
	}
	var hello *tlsHello
	cfg := &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		hello = &tlsHello{serverName: chi.ServerName, alpn: append([]string(nil), chi.SupportedProtos...)}
		return nil, errHelloRead
	}}
	r := &replayConn{Conn: c.Conn, pc: c}
	_ = tls.Server(r, cfg).Handshake() // fails: errHelloRead, or not a ClientHello
	if hello != nil {
		return hello, nil
	}
	// A read that stopped short is the connection's failure, not a sign
	// it is plaintext; anything else crypto/tls refused is no ClientHello.
	return nil, r.err
}

// HTTP protocols http_inspector detects.
const (
	protoHTTP10 = "http/1.0"
	protoHTTP11 = "http/1.1"
	protoH2C    = "h2c"
)

// h2Preface is the HTTP/2 connection preface (RFC 9113 section 3.4).
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// maxRequestLine bounds the bytes http_inspector reads for a request line.
const maxRequestLine = 8 << 10

// inspectHTTP is Envoy's http_inspector: it peeks at a plaintext
// connection's first line and returns "h2c" for the HTTP/2 preface,
// "http/1.0" or "http/1.1" for an HTTP/1 request line, and "" as soon as
// the bytes cannot be either. It returns the read error when the bytes
// stop short of a decision.
func inspectHTTP(c *peekConn) (string, error) {
	for n := 1; ; n++ {
		b, err := c.fill(n)
		if err != nil {
			return "", err
		}
		proto, decided := classifyHTTP(b)
		if decided {
			return proto, nil
		}
		n = len(b)
		if n >= maxRequestLine {
			return "", nil
		}
	}
}

// classifyHTTP decides what the first bytes b of a connection are, when
// it can; decided is false when more bytes are needed.
func classifyHTTP(b []byte) (proto string, decided bool) {
	if k := min(len(b), len(h2Preface)); bytes.Equal(b[:k], h2Preface[:k]) {
		if len(b) >= len(h2Preface) {
			return protoH2C, true
		}
		return "", false
	}
	// METHOD SP request-target SP HTTP/1.x CRLF
	sp := bytes.IndexByte(b, ' ')
	method := b
	if sp >= 0 {
		method = b[:sp]
	}
	for _, ch := range method {
		if !isTokenChar(ch) {
			return "", true
		}
	}
	if sp < 0 {
		return "", len(method) > 32 // no method is that long
	}
	if sp == 0 {
		return "", true
	}
	rest := b[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	target := rest
	if sp2 >= 0 {
		target = rest[:sp2]
	}
	for _, ch := range target {
		if ch <= ' ' || ch == 0x7f {
			return "", true
		}
	}
	if sp2 < 0 {
		return "", false
	}
	version := rest[sp2+1:]
	for i, want := range []byte("HTTP/1.") {
		if i >= len(version) {
			return "", false
		}
		if version[i] != want {
			return "", true
		}
	}
	if len(version) < 8 {
		return "", false
	}
	switch version[7] {
	case '0':
		return protoHTTP10, true
	case '1':
		return protoHTTP11, true
	}
	return "", true
}

func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !bytes.ContainsRune([]byte("\"(),/:;<=>?@[\\]{}"), rune(c))
}
