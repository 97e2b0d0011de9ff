package istiostats

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Istio's TCP metadata exchange (the istio.metadata_exchange network and
// upstream filter, envoy.tcp.metadataexchange.config.MetadataExchange).
// On a TLS connection whose ALPN negotiated the filter's protocol, each
// side writes one frame before its first byte of stream and strips the
// peer's frame from the start of what it reads. A frame is an 8-byte
// header, MXMagic then the payload's length (big-endian uint32s), and a
// serialized google.protobuf.Any of a Struct holding the node metadata
// under "x-envoy-peer-metadata" and the node ID under
// "x-envoy-peer-metadata-id".
const (
	// MXProtocol is the ALPN protocol Istio configures the filter with.
	MXProtocol = "istio-peer-exchange"
	// MXMagic starts every frame.
	MXMagic = 0x3D230467
	// MXFilterName is the filter's name on listeners and clusters.
	MXFilterName = "istio.metadata_exchange"
	// MXTypeURL is its typed_config's type.
	MXTypeURL = "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"

	mxHeaderLen = 8
	// maxMXPayload bounds a frame: a header announcing more is taken
	// for stream bytes (a node's metadata is a few KiB).
	maxMXPayload = 64 << 10
	// maxCachedMXPayload bounds the frames kept in the peer cache.
	maxCachedMXPayload = 8 << 10
	mxKeyMetadata      = "x-envoy-peer-metadata"
	mxKeyMetadataID    = "x-envoy-peer-metadata-id"
	structTypeURL      = "type.googleapis.com/google.protobuf.Struct"
)

// mxFrame is the frame x sends: the same exchanged keys as the HTTP
// header, and the node ID.
func (x *Exchange) mxFrame(md *structpb.Struct, id string) []byte {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{mxKeyMetadata: structpb.NewStructValue(md)}}
	if id != "" {
		s.Fields[mxKeyMetadataID] = structpb.NewStringValue(id)
	}
	var a anypb.Any
	if err := anypb.MarshalFrom(&a, s, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&a)
	if err != nil {
		return nil
	}
	frame := make([]byte, mxHeaderLen, mxHeaderLen+len(b))
	binary.BigEndian.PutUint32(frame, MXMagic)
	binary.BigEndian.PutUint32(frame[4:], uint32(len(b)))
	return append(frame, b...)
}

// decodeMXPayload returns the peer a frame's payload describes, nil when
// it is no Any of a Struct with node metadata. A good payload of at most
// maxCachedMXPayload bytes seen before costs a map lookup.
func (x *Exchange) decodeMXPayload(b []byte) *Peer {
	decode := func() *Peer {
		var a anypb.Any
		if proto.Unmarshal(b, &a) != nil || a.GetTypeUrl() != structTypeURL {
			return nil
		}
		var s structpb.Struct
		if proto.Unmarshal(a.GetValue(), &s) != nil {
			return nil
		}
		md := s.GetFields()[mxKeyMetadata].GetStructValue()
		if md == nil {
			return nil
		}
		p := peerOf(md)
		return &p
	}
	// Only plausible frames are cached, and only good ones: a peer
	// sending large or junk frames must not fill the cache (nor evict the
	// HTTP exchange's peers).
	if x == nil || len(b) > maxCachedMXPayload {
		return decode()
	}
	if p, ok := x.lookup(string(b)); ok {
		return p
	}
	p := decode()
	if p != nil {
		x.store(string(b), p)
	}
	return p
}

// MXConn runs the TCP metadata exchange on a connection that negotiated
// MXProtocol: its first Read or Write (whichever comes first, so that
// server-first protocols work too) sends the proxy's frame, and its first
// Reads take the peer's frame off the stream. Bytes that are no frame (a
// peer without the filter) are read as stream bytes, as Envoy's filter
// lets them through. Peer tells the outcome. One goroutine may read while
// another writes; reads must not be concurrent.
type MXConn struct {
	net.Conn
	frame []byte
	x     *Exchange

	sendOnce sync.Once
	sendErr  error

	// Read side, until the frame is taken: got is what was read of it so
	// far (a read deadline may cut it), pending what was read but is no
	// frame, rerr the error to give after pending.
	taken   atomic.Bool
	got     []byte
	pending []byte
	rerr    error

	peer atomic.Pointer[Peer]
}

// Conn wraps c, a connection whose ALPN negotiated MXProtocol, to run
// the exchange on it. A nil x sends no frame but still takes the peer's.
func (x *Exchange) Conn(c net.Conn) *MXConn {
	m := &MXConn{Conn: c, x: x}
	if x != nil {
		m.frame = x.frame
	}
	return m
}

// Peer returns the peer's identity from its frame (nil when its frame was
// missing or malformed) and whether the exchange is over: done is false
// until a Read has found the frame or its absence.
func (c *MXConn) Peer() (p *Peer, done bool) {
	return c.peer.Load(), c.taken.Load()
}

func (c *MXConn) send() error {
	c.sendOnce.Do(func() {
		if len(c.frame) > 0 {
			_, c.sendErr = c.Conn.Write(c.frame)
		}
	})
	return c.sendErr
}

// Write sends the proxy's frame first, once.
func (c *MXConn) Write(b []byte) (int, error) {
	if err := c.send(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// Read sends the proxy's frame if not yet sent, takes the peer's frame,
// then reads the stream.
func (c *MXConn) Read(b []byte) (int, error) {
	if err := c.send(); err != nil {
		return 0, err
	}
	if !c.taken.Load() {
		if err := c.take(); err != nil {
			return 0, err
		}
	}
	if c.pending != nil {
		n := copy(b, c.pending)
		if c.pending = c.pending[n:]; len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	if c.rerr != nil {
		return 0, c.rerr
	}
	return c.Conn.Read(b)
}

// take reads the peer's frame. It returns only a timeout, after which the
// next Read goes on where it stopped.
func (c *MXConn) take() error {
	if err := c.fill(mxHeaderLen); err != nil {
		return c.fail(err)
	}
	size := binary.BigEndian.Uint32(c.got[4:])
	if binary.BigEndian.Uint32(c.got) != MXMagic || size > maxMXPayload {
		c.finish(nil, c.got, nil)
		return nil
	}
	if err := c.fill(mxHeaderLen + int(size)); err != nil {
		return c.fail(err)
	}
	payload := c.got[mxHeaderLen:]
	if p := c.x.decodeMXPayload(payload); p != nil {
		c.finish(p, nil, nil)
	} else {
		c.finish(nil, payload, nil) // as Envoy: the header is dropped, the rest is stream
	}
	return nil
}

// fill reads until got holds n bytes.
func (c *MXConn) fill(n int) error {
	if cap(c.got) < n {
		c.got = append(make([]byte, 0, n), c.got...)
	}
	for len(c.got) < n {
		m, err := c.Conn.Read(c.got[len(c.got):n])
		c.got = c.got[:len(c.got)+m]
		if err != nil {
			return err
		}
	}
	return nil
}

// fail ends the search for the frame on a read error but a timeout: what
// was read is stream (but a whole header with the magic, which Envoy
// drains), then the error.
func (c *MXConn) fail(err error) error {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return err
	}
	rest := c.got
	if len(rest) >= mxHeaderLen && binary.BigEndian.Uint32(rest) == MXMagic {
		rest = rest[mxHeaderLen:]
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	c.finish(nil, rest, err)
	return nil
}

func (c *MXConn) finish(p *Peer, pending []byte, err error) {
	if len(pending) > 0 {
		c.pending = pending
	}
	c.rerr = err
	c.got = nil
	if p != nil {
		c.peer.Store(p)
	}
	c.taken.Store(true)
}

// NetConn is the connection underneath (a *tls.Conn), as tls.Conn's
// NetConn: for socket-level checks such as a pool's liveness peek.
func (c *MXConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection when the one underneath can.
func (c *MXConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// ConnectionState is the TLS state of the connection underneath (zero for
// none).
func (c *MXConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}
