package http

import (
	"errors"
	"io"
	"sync"

	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
)

// DefaultBufferLimit is the bytes of a request body kept so that the
// request can be retried: Envoy's router keeps what it forwarded up to its
// retry_shadow_buffer_limit, which is the connection's buffer limit
// (Listener.per_connection_buffer_limit_bytes, 1 MiB by default; loom
// refuses that field, so the default always applies).
const DefaultBufferLimit = 1 << 20

// mirrorBacklogBytes is how far a mirrored (shadow) request's body may
// fall behind the primary's: past it the shadow is dropped rather than
// let it hold the primary (Envoy would push back on the downstream).
const mirrorBacklogBytes = 256 << 10

var (
	// errAttemptEnded is what the body of an attempt the router gave up
	// (a retry took over, or the request ended) reads: its transport
	// resets the stream.
	errAttemptEnded = errors.New("request body: the attempt was superseded")
	// errBodyNotReplayable is GetBody's error once the kept copy of the
	// body was abandoned.
	errBodyNotReplayable = errors.New("request body: outgrew the retry buffer, cannot be sent again")
	// errShadowDropped ends a shadow's body that fell mirrorBacklogBytes
	// behind.
	errShadowDropped = errors.New("mirror: dropped, its upstream was slower than the primary")
	// errPrimaryEnded ends a shadow's body when the primary request ended
	// before its body did (Envoy cancels its shadow streams then).
	errPrimaryEnded = errors.New("mirror: the primary request ended before its body")
)

// requestBody is a downstream request body as the router's attempts and
// mirrors read it, as Envoy's router streams it: every attempt gets the
// body as it arrives, while a copy of up to limit bytes is kept so that a
// retry replays the kept prefix and then goes on with the live body (a
// request still streaming, such as a client-streaming gRPC call, can be
// retried); once the body outgrows limit the copy is dropped, no further
// attempt is made and retry_or_shadow_abandoned is counted on the
// cluster. Each mirror (shadow) gets the bytes as they are first read,
// through a shadowPipe that never blocks the primary.
//
// Only the current attempt's reader gets bytes; the reader of an attempt
// the router gave up reads errAttemptEnded, and bytes it had already
// pulled from the downstream are kept for the current attempt, so none
// is lost when a transport still reads an old attempt's body after
// RoundTrip returned. It is safe for concurrent use.
//
// With pump set, src is read by a goroutine of rb's own, on demand, and
// an attempt's reader only waits for it, so that Close ends a blocked
// Read at once: the HTTP/2 transport reads the body on a goroutine of its
// own and its RoundTrip waits, once the stream is reset, for that read to
// end, which could otherwise be as long as the client keeps its stream
// open without sending. Without pump (the HTTP/1.1 transport, which reads
// the body on RoundTrip's goroutine) readers read src themselves.
type requestBody struct {
	src     io.Reader
	length  int64 // the body's length; -1: unknown
	limit   int   // bytes kept for a retry; 0: none (one attempt)
	metrics *telemetry.Metrics
	cluster string // the primary's, for retry_or_shadow_abandoned

	// readMu is held across src.Read: one reader of src at a time, so a
	// superseded attempt's blocked read hands its bytes to the current one.
	readMu sync.Mutex
	pump   bool

	mu sync.Mutex
	// cond wakes readers waiting for the pump; pumpCond wakes the pump
	// when a reader wants bytes (want) or the request ended.
	cond, pumpCond sync.Cond
	want, pumping  bool
	ended          bool
	// buf holds src's bytes from stream offset base on: the whole body
	// read so far while it fits limit (base 0), afterwards only the bytes
	// the current attempt has not read yet.
	buf        []byte
	base       int64
	pos        int64  // stream offset the current attempt read up to
	read       int64  // bytes read from src
	cur        uint32 // the current attempt; other readers are superseded
	overflowed bool   // buf no longer holds the whole prefix: no replay
	srcErr     error  // src's final error, io.EOF at its end
	shadows    []*shadowPipe
}

// newRequestBody wraps src, of length bytes (-1: unknown), keeping up to
// limit bytes of it for retries of the request to cluster (0: none);
// pump: src is read on a goroutine of rb's own (see requestBody).
func newRequestBody(src io.Reader, length int64, limit int, pump bool, m *telemetry.Metrics, cluster string) *requestBody {
	rb := &requestBody{src: src, length: length, limit: limit, pump: pump, metrics: m, cluster: cluster, overflowed: limit <= 0}
	rb.cond.L, rb.pumpCond.L = &rb.mu, &rb.mu
	if limit > 0 && length > 0 {
		rb.buf = make([]byte, 0, min(length, int64(limit)))
	}
	return rb
}

// attempt returns the body of attempt n of the request: attempt 0 reads
// the body from its start; a later one replays the kept prefix, then the
// live body. ok is false when the body can no longer be replayed.
func (rb *requestBody) attempt(n int) (body io.ReadCloser, ok bool) {
	if n == 0 {
		return &attemptBody{rb: rb}, true
	}
	return rb.next()
}

// next supersedes the current attempt's reader and returns a new one
// that starts over, unless the kept copy was abandoned.
func (rb *requestBody) next() (io.ReadCloser, bool) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.overflowed {
		return nil, false
	}
	rb.cur++
	rb.pos = 0
	return &attemptBody{rb: rb, n: rb.cur}, true
}

// getBody is http.Request.GetBody: a transport that sends the request
// again itself (a dead keep-alive connection, a refused stream) gets a
// reader that starts over.
func (rb *requestBody) getBody() (io.ReadCloser, error) {
	b, ok := rb.next()
	if !ok {
		return nil, errBodyNotReplayable
	}
	return b, nil
}

// replayable reports whether a next attempt may send the body again: rb
// is nil (there is no body, or it goes to one attempt only) or its whole
// prefix is still kept.
func (rb *requestBody) replayable() bool {
	if rb == nil {
		return true
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return !rb.overflowed
}

// addShadow makes s receive the body's bytes from now on. Call it before
// the first attempt reads.
func (rb *requestBody) addShadow(s *shadowPipe) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.shadows = append(rb.shadows, s)
}

// end is called when the router is done with the request: readers still
// held by transports are superseded and shadows whose body had not ended
// are cancelled.
func (rb *requestBody) end() {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.cur++
	rb.overflowed, rb.buf = true, nil
	rb.ended = true
	rb.cond.Broadcast()
	rb.pumpCond.Signal()
	for _, s := range rb.shadows {
		s.finish(errPrimaryEnded)
	}
	rb.shadows = nil
}

// fromKept serves attempt n from the kept bytes or src's end; done is
// false when src must be read.
func (rb *requestBody) fromKept(n uint32, p []byte) (k int, done bool, err error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.fromKeptLocked(n, p)
}

// fromKeptLocked is fromKept with rb.mu held.
func (rb *requestBody) fromKeptLocked(n uint32, p []byte) (k int, done bool, err error) {
	if n != rb.cur {
		return 0, true, errAttemptEnded
	}
	if end := rb.base + int64(len(rb.buf)); rb.pos < end {
		k = copy(p, rb.buf[rb.pos-rb.base:])
		rb.pos += int64(k)
		if rb.overflowed && rb.pos == end {
			// Consumed and never replayed. A pump passes every read
			// through buf: keep one read's worth of capacity for the
			// next (readers copy out of buf, nothing aliases it).
			if cap(rb.buf) <= 32<<10 {
				rb.buf = rb.buf[:0]
			} else {
				rb.buf = nil
			}
			rb.base = rb.pos
		}
		return k, true, nil
	}
	if rb.srcErr != nil {
		return 0, true, rb.srcErr
	}
	return 0, false, nil
}

// record takes p, just read from src by the current attempt or by a
// superseded one, and src's error; rb.mu is held.
func (rb *requestBody) record(p []byte, err error, current bool) {
	rb.read += int64(len(p))
	for _, s := range rb.shadows {
		s.write(p)
	}
	switch {
	case len(p) == 0:
	case !rb.overflowed && len(rb.buf)+len(p) <= rb.limit:
		rb.buf = append(rb.buf, p...)
	case current:
		// The current attempt had read all that was kept (it reads src
		// only then): the copy goes, its bytes go on to the attempt.
		rb.abandon()
		rb.buf, rb.base = nil, rb.pos+int64(len(p))
	default:
		// A superseded reader's bytes are kept for the current attempt,
		// past the limit if need be (at most one read's worth).
		if len(rb.buf)+len(p) > rb.limit {
			rb.abandon()
		}
		rb.buf = append(rb.buf, p...)
	}
	if err != nil && rb.srcErr == nil {
		rb.srcErr = err
	}
	if rb.srcErr != nil || (rb.length >= 0 && rb.read >= rb.length) {
		end := rb.srcErr
		if end == nil {
			end = io.EOF
		}
		for _, s := range rb.shadows {
			s.finish(end)
		}
		rb.shadows = nil
	}
}

// abandon gives up replaying the body: Envoy's retry_or_shadow_abandoned.
func (rb *requestBody) abandon() {
	if !rb.overflowed {
		rb.overflowed = true
		rb.metrics.RetryOrShadowAbandoned(rb.cluster)
	}
}

// runPump reads src whenever a reader wants bytes, until src ends or
// the request does; the bytes are kept for the current attempt.
func (rb *requestBody) runPump() {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	for {
		rb.mu.Lock()
		for !rb.want && !rb.ended {
			rb.pumpCond.Wait()
		}
		if rb.ended {
			rb.mu.Unlock()
			return
		}
		rb.want = false
		rb.mu.Unlock()
		k, err := rb.src.Read(*bp)
		rb.mu.Lock()
		rb.record((*bp)[:k], err, false)
		rb.cond.Broadcast()
		rb.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// attemptBody is the body one attempt's transport reads.
type attemptBody struct {
	rb     *requestBody
	n      uint32
	closed bool // by its transport; guarded by rb.mu (pump mode)
}

func (a *attemptBody) Read(p []byte) (int, error) {
	rb := a.rb
	if rb.pump {
		return a.pumpRead(p)
	}
	if k, done, err := rb.fromKept(a.n, p); done {
		return k, err
	}
	rb.readMu.Lock()
	defer rb.readMu.Unlock()
	// A superseded reader may have kept bytes while this one waited.
	if k, done, err := rb.fromKept(a.n, p); done {
		return k, err
	}
	k, err := rb.src.Read(p)
	rb.mu.Lock()
	defer rb.mu.Unlock()
	current := a.n == rb.cur
	rb.record(p[:k], err, current)
	if !current {
		return 0, errAttemptEnded
	}
	rb.pos += int64(k)
	return k, err
}

// pumpRead is Read in pump mode: it waits for the pump's bytes, or for
// the attempt to be closed or superseded.
func (a *attemptBody) pumpRead(p []byte) (int, error) {
	rb := a.rb
	rb.mu.Lock()
	defer rb.mu.Unlock()
	for {
		if a.closed {
			return 0, errAttemptEnded
		}
		if k, done, err := rb.fromKeptLocked(a.n, p); done {
			return k, err
		}
		if !rb.pumping {
			rb.pumping = true
			go rb.runPump()
		}
		rb.want = true
		rb.pumpCond.Signal()
		rb.cond.Wait()
	}
}

// Close does not close the downstream body: a later attempt may still
// read it (the server closes it when the handler returns). In pump mode
// it ends a Read under way.
func (a *attemptBody) Close() error {
	if a.rb.pump {
		a.rb.mu.Lock()
		a.closed = true
		a.rb.cond.Broadcast()
		a.rb.mu.Unlock()
	}
	return nil
}

// shadowPipe is a mirrored request's body: the primary's reads write to
// it without ever blocking, the shadow's transport reads it. A shadow that
// falls more than limit bytes behind is dropped (its reads fail with
// errShadowDropped). It is safe for concurrent use.
type shadowPipe struct {
	mu      sync.Mutex
	cond    sync.Cond
	buf     []byte // unread bytes are buf[r:]
	r       int
	limit   int
	err     error // the end of the body once buf is read
	closed  bool  // the shadow's transport closed the body
	dropped bool
	// cancel ends the shadow request when it is dropped: its transport
	// may be waiting for flow control, not reading the body.
	cancel func()
}

func newShadowPipe(limit int) *shadowPipe {
	s := &shadowPipe{limit: limit}
	s.cond.L = &s.mu
	return s
}

// write appends p for the shadow, or drops the shadow when its backlog
// would pass the limit.
func (s *shadowPipe) write(p []byte) {
	if len(p) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.closed {
		return
	}
	if len(s.buf)-s.r+len(p) > s.limit {
		s.dropped, s.err, s.buf, s.r = true, errShadowDropped, nil, 0
		s.cond.Broadcast()
		if s.cancel != nil {
			s.cancel()
		}
		return
	}
	if s.r > 0 && len(s.buf)+len(p) > cap(s.buf) {
		s.buf = s.buf[:copy(s.buf, s.buf[s.r:])]
		s.r = 0
	}
	s.buf = append(s.buf, p...)
	s.cond.Signal()
}

// finish ends the body with err (io.EOF: it is whole) once the shadow
// read what was written.
func (s *shadowPipe) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
		if err != io.EOF {
			s.buf, s.r = nil, 0
		}
	}
	s.cond.Broadcast()
}

// setCancel makes cancel end the shadow request when it is dropped, at
// once if it was already.
func (s *shadowPipe) setCancel(cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel = cancel
	if s.dropped {
		cancel()
	}
}

// wasDropped reports whether the shadow fell too far behind.
func (s *shadowPipe) wasDropped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

func (s *shadowPipe) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.r == len(s.buf) && s.err == nil && !s.closed {
		s.cond.Wait()
	}
	if s.closed {
		return 0, io.ErrClosedPipe
	}
	if s.r < len(s.buf) {
		n := copy(p, s.buf[s.r:])
		s.r += n
		if s.r == len(s.buf) {
			s.buf, s.r = s.buf[:0], 0
		}
		return n, nil
	}
	return 0, s.err
}

// Close is the shadow's transport done with the body: later writes are
// discarded.
func (s *shadowPipe) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed, s.buf, s.r = true, nil, 0
	s.cond.Broadcast()
	return nil
}
