package istiostats

import "sync/atomic"

// GRPCMessages are the gRPC message counts of one stream, the state
// Envoy's grpc_stats filter emits (FilterObject request_message_count,
// response_message_count) and Istio's stats read for
// istio_request_messages_total and istio_response_messages_total. It is
// allocated per stream, never pooled: a transport may still read the
// request body after the handler returned. Each direction is fed by one
// goroutine at a time; Count may be called from any.
type GRPCMessages struct {
	Request, Response FrameCounter
}

// FrameCounter counts the length-prefixed messages of one direction of a
// gRPC stream (gRPC over HTTP/2: a 1-byte compressed flag, a 4-byte
// big-endian length, then that many bytes) as the bytes stream through:
// a message counts once its 5-byte prefix is complete, as Envoy's
// Grpc::FrameInspector counts frames. It never copies a message and
// costs a few operations per message, not per byte. The zero value is
// ready. Feed must not be called concurrently; Count may be, with Feed.
type FrameCounter struct {
	n atomic.Uint64
	// skip is how many bytes of the current message's payload are still
	// to come; hdr and hn are the prefix bytes seen so far (hn 0-4).
	skip uint64
	hdr  uint32
	hn   uint8
}

// Feed advances c over p, the next bytes of the stream.
func (c *FrameCounter) Feed(p []byte) {
	var n uint64
	for len(p) > 0 {
		if c.skip > 0 {
			if uint64(len(p)) <= c.skip {
				c.skip -= uint64(len(p))
				break
			}
			p = p[c.skip:]
			c.skip = 0
		}
		if c.hn == 0 && len(p) >= 5 {
			// The common case: a whole prefix in one read.
			n++
			c.skip = uint64(p[1])<<24 | uint64(p[2])<<16 | uint64(p[3])<<8 | uint64(p[4])
			p = p[5:]
			continue
		}
		// A prefix split across reads: the flag byte is ignored, the
		// length bytes accumulate.
		if c.hn > 0 {
			c.hdr = c.hdr<<8 | uint32(p[0])
		}
		c.hn++
		p = p[1:]
		if c.hn == 5 {
			n++
			c.skip = uint64(c.hdr)
			c.hdr, c.hn = 0, 0
		}
	}
	if n > 0 {
		c.n.Add(n)
	}
}

// Count is the number of messages whose prefix was seen.
func (c *FrameCounter) Count() uint64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}
