package listener

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// scriptConn is a net.Conn whose reads return data in chunks of at most
// chunk bytes, then io.EOF; writes are discarded. It lets the fuzzer
// drive the listener filters without sockets, and vary how the bytes
// arrive.
type scriptConn struct {
	data  []byte
	chunk int
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), c.chunk)
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *scriptConn) Close() error                { return nil }
func (c *scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15006}
}
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000}
}
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// sniffResult is what both listener filters decided about one byte
// stream.
type sniffResult struct {
	tls      bool
	sni      string
	alpn     string
	tlsErr   bool
	httpProt string
	httpErr  bool
}

// sniff runs tls_inspector, then (as a listener with both filters does)
// http_inspector, on data arriving chunk bytes at a time. It fails t
// when the inspection consumed or changed any byte the filter chain
// will read.
func sniff(t *testing.T, data []byte, chunk int) sniffResult {
	t.Helper()
	pc := &peekConn{Conn: &scriptConn{data: bytes.Clone(data), chunk: chunk}}
	var r sniffResult
	hello, err := inspectTLS(pc)
	r.tlsErr = err != nil
	if hello != nil {
		if err != nil {
			t.Fatalf("inspectTLS returned a ClientHello and the error %v", err)
		}
		r.tls, r.sni = true, hello.serverName
		for _, p := range hello.alpn {
			r.alpn += p + ","
		}
	}
	if !r.tls && err == nil {
		r.httpProt, err = inspectHTTP(pc)
		r.httpErr = err != nil
	}
	rest, err := io.ReadAll(pc)
	if err != nil {
		t.Fatalf("reading past the inspected bytes: %v", err)
	}
	if !bytes.Equal(rest, data) {
		t.Fatalf("the filter chain reads %q, the client sent %q", rest, data)
	}
	return r
}

// clientHello records the first flight of a crypto/tls client offering
// serverName and alpn.
func clientHello(f *testing.F, serverName string, alpn ...string) []byte {
	f.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: serverName, NextProtos: alpn, InsecureSkipVerify: true}).Handshake()
	}()
	var out bytes.Buffer
	buf := make([]byte, 4096)
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := b.Read(buf)
		out.Write(buf[:n])
		if err != nil || (out.Len() >= 5 && out.Len() >= 5+(int(out.Bytes()[3])<<8|int(out.Bytes()[4]))) {
			break
		}
	}
	b.Close()
	return out.Bytes()
}

// FuzzSniff is the fuzz target for the inbound listener's protocol
// sniffing (tls_inspector and http_inspector, which PERMISSIVE mTLS and
// protocol detection rely on). For any bytes a client may send:
// nothing panics, no byte is lost, reordered or invented for the filter
// chain, the decision does not depend on how the bytes are split into
// reads, and a decision agrees with the bytes (TLS only from a handshake
// record, h2c only from the full preface, HTTP/1.x only from a request
// line naming that version).
func FuzzSniff(f *testing.F) {
	f.Add(clientHello(f, "reviews.default.svc.cluster.local", "istio-peer-exchange", "istio", "h2", "http/1.1"))
	f.Add(clientHello(f, "", "h2"))
	f.Add(clientHello(f, "outbound_.9080_._.reviews.default.svc.cluster.local"))
	f.Add([]byte("GET /productpage HTTP/1.1\r\nHost: productpage\r\n\r\n"))
	f.Add([]byte("POST /x HTTP/1.0\r\n\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	f.Add([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxPeek+64 {
			return
		}
		whole := sniff(t, data, len(data)+1)
		for _, chunk := range []int{1, 7} {
			if got := sniff(t, data, chunk); got != whole {
				t.Fatalf("read %d bytes at a time: %+v; in one read: %+v", chunk, got, whole)
			}
		}
		if whole.tls && data[0] != 0x16 {
			t.Fatalf("TLS detected in bytes that do not start with a handshake record: %q", data)
		}
		switch whole.httpProt {
		case "":
		case protoH2C:
			if !bytes.HasPrefix(data, h2Preface) {
				t.Fatalf("h2c detected without the connection preface: %q", data)
			}
		case protoHTTP10, protoHTTP11:
			line, _, _ := bytes.Cut(data, []byte("\r\n"))
			want := "HTTP/1.0"
			if whole.httpProt == protoHTTP11 {
				want = "HTTP/1.1"
			}
			if parts := bytes.SplitN(line, []byte(" "), 3); len(parts) != 3 || !bytes.HasPrefix(parts[2], []byte(want)) {
				t.Fatalf("%s detected in the request line %q", whole.httpProt, line)
			}
		default:
			t.Fatalf("unknown protocol %q", whole.httpProt)
		}
	})
}
