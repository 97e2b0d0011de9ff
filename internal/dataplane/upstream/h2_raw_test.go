package upstream

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// rawH2Server is an h2c upstream written frame by frame, for the
// answers net/http's server never gives: onRequest runs for every
// request's HEADERS, with the request's number (1-based, over all
// connections); returning false closes the connection. It never answers
// a PING, but counts them, and counts the connections that ended.
type rawH2Server struct {
	ln       net.Listener
	requests atomic.Int32
	pings    atomic.Int32
	closed   atomic.Int32
}

func newRawH2Server(t *testing.T, onRequest func(fr *http2.Framer, stream uint32, n int32) bool) *rawH2Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawH2Server{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c, onRequest)
		}
	}()
	return s
}

func (s *rawH2Server) serve(c net.Conn, onRequest func(*http2.Framer, uint32, int32) bool) {
	defer s.closed.Add(1)
	defer c.Close()
	if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	if fr.WriteSettings() != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && fr.WriteSettingsAck() != nil {
				return
			}
		case *http2.HeadersFrame:
			if !onRequest(fr, f.StreamID, s.requests.Add(1)) {
				return
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				s.pings.Add(1)
			}
		}
	}
}

// writeOK answers stream 200 with an empty body.
func writeOK(fr *http2.Framer, stream uint32) bool {
	var b bytes.Buffer
	if hpack.NewEncoder(&b).WriteField(hpack.HeaderField{Name: ":status", Value: "200"}) != nil {
		return false
	}
	return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: b.Bytes(), EndHeaders: true, EndStream: true}) == nil
}

// TestH2RefusedStreamIsRetried: a stream the upstream refuses
// (RST_STREAM REFUSED_STREAM: never processed) is sent again, once, on
// another connection, as net/http's transport does.
func TestH2RefusedStreamIsRetried(t *testing.T) {
	srv := newRawH2Server(t, func(fr *http2.Framer, stream uint32, n int32) bool {
		if n == 1 {
			return fr.WriteRSTStream(stream, http2.ErrCodeRefusedStream) == nil
		}
		return writeOK(fr, stream)
	})
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.ln.Addr().String(), nil, config.ConnectionOptions{})
	m.Update(gen(c))
	if err := sendPath(m, c, "/"); err != nil {
		t.Fatalf("request refused once: %v, want it retried", err)
	}
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("upstream saw %d requests, want 2 (refused, then retried)", n)
	}
}

// TestH2GoAwayAfterStreamIsNotRetried: a GOAWAY whose last stream id
// covers the request means the upstream may have processed it: it is not
// sent again, whatever the GOAWAY's debug data says.
func TestH2GoAwayAfterStreamIsNotRetried(t *testing.T) {
	srv := newRawH2Server(t, func(fr *http2.Framer, stream uint32, _ int32) bool {
		_ = fr.WriteGoAway(stream, http2.ErrCodeRefusedStream, []byte("graceful shutdown GOAWAY"))
		return false
	})
	m := New(Options{})
	defer m.Close()
	c := h2Cluster(srv.ln.Addr().String(), nil, config.ConnectionOptions{})
	m.Update(gen(c))
	if err := sendPath(m, c, "/"); err == nil {
		t.Fatal("request answered by a GOAWAY and a close succeeded")
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1: a processed request must not be resent", n)
	}
}

// TestH2ConnectionKeepalive: with http2_protocol_options.connection_keepalive
// (Istio http.http2KeepAlive) a quiet upstream HTTP/2 connection is sent a
// PING, and closed when the upstream does not answer it within the timeout
// (this upstream never answers PINGs).
func TestH2ConnectionKeepalive(t *testing.T) {
	srv := newRawH2Server(t, func(fr *http2.Framer, stream uint32, _ int32) bool { return writeOK(fr, stream) })
	m := New(Options{})
	defer m.Close()
	ka := &config.H2Keepalive{Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond}
	c := h2Cluster(srv.ln.Addr().String(), nil, config.ConnectionOptions{H2Keepalive: ka})
	m.Update(gen(c))
	if err := sendPath(m, c, "/"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.closed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if srv.closed.Load() == 0 {
		t.Fatalf("the connection is still open 10s after its PING went unanswered (pings seen %d)", srv.pings.Load())
	}
	if srv.pings.Load() == 0 {
		t.Error("the upstream saw no PING before the connection closed")
	}
}

// TestH2KeepaliveUpdateRenewsTLSTransport: a new generation that changes a
// cluster's connection_keepalive (or idle timeout) replaces the HTTP/2
// transport of its TLS transport sockets too, as it does the h2c one, so
// that new connections take the new settings.
func TestH2KeepaliveUpdateRenewsTLSTransport(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", HTTP2: true, Endpoints: endpoints(1),
		Transports: []config.UpstreamTransport{{TLS: &config.UpstreamTLS{CommonTLS: config.CommonTLS{ALPN: []string{"h2"}}}, Key: "tls"}}}
	m.Update(gen(c))
	h, err := m.Pick(c, PickOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.Done(Result{Status: 200})
	if h.tls == nil {
		t.Fatal("the pick has no TLS transport")
	}
	if got := h.tls.h2Transport().HTTP2.SendPingTimeout; got != 0 {
		t.Fatalf("ping interval before the update = %v, want 0", got)
	}
	c2 := *c
	c2.Conn = config.ConnectionOptions{H2Keepalive: &config.H2Keepalive{Interval: 7 * time.Second, Timeout: 3 * time.Second}}
	m.Update(gen(&c2))
	tr := h.tls.h2Transport()
	if tr.HTTP2.SendPingTimeout != 7*time.Second || tr.HTTP2.PingTimeout != 3*time.Second {
		t.Errorf("after the update: ping interval %v, timeout %v; want 7s, 3s", tr.HTTP2.SendPingTimeout, tr.HTTP2.PingTimeout)
	}
}
