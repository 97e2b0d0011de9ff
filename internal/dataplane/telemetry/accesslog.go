package telemetry

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
)

// Entry is one request (or TCP connection) as the access log sees it;
// see accesslog.Entry.
type Entry = accesslog.Entry

// AppendEntry appends e to b in Istio's default access log format; see
// accesslog.AppendEntry.
func AppendEntry(b []byte, e *Entry) []byte { return accesslog.AppendEntry(b, e) }

// AccessLogOptions configures an AccessLog.
type AccessLogOptions struct {
	// Writer receives the lines; typically os.Stdout. nil disables the log.
	Writer io.Writer
	// FlushInterval bounds how long a line stays buffered. Default 100ms.
	FlushInterval time.Duration
	// BufferSize bounds the bytes of lines waiting for the writer. A line
	// that does not fit is dropped and counted (Dropped). Default 1 MiB.
	BufferSize int
}

// AccessLog writes Istio's default text access log. It is safe for
// concurrent use. Log never waits for the writer: it appends the line to a
// bounded buffer under a short lock, and drops it (counted by Dropped) when
// the buffer is full because the writer is slow. Run and Flush swap the
// buffer out and write it without holding that lock. A nil *AccessLog (or
// one without a Writer) logs nothing.
type AccessLog struct {
	flushEvery time.Duration
	maxBuf     int
	w          io.Writer
	kick       chan struct{} // asks Run for an early flush; capacity 1
	dropped    atomic.Uint64

	// wmu serializes writes to w (Run's and Flush's); it is never taken
	// by Log.
	wmu sync.Mutex

	// mu guards buf and spare. No I/O happens while it is held.
	mu    sync.Mutex
	buf   []byte // lines waiting for the writer
	spare []byte // the other buffer, empty, to swap in
}

// NewAccessLog makes an AccessLog. Run must be running for lines to be
// flushed on time; Flush writes them out at once.
func NewAccessLog(opts AccessLogOptions) *AccessLog {
	if opts.Writer == nil {
		return nil
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 100 * time.Millisecond
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = 1 << 20
	}
	return &AccessLog{flushEvery: opts.FlushInterval, maxBuf: opts.BufferSize, w: opts.Writer, kick: make(chan struct{}, 1)}
}

// Enabled says whether Log writes anything; the caller can skip filling
// fields that only the access log reads.
func (a *AccessLog) Enabled() bool { return a != nil }

// Dropped returns how many lines were dropped because the buffer was full
// (the writer too slow). It is the value of loom_access_log_dropped_total.
func (a *AccessLog) Dropped() uint64 {
	if a == nil {
		return 0
	}
	return a.dropped.Load()
}

// Run flushes the buffer every FlushInterval, and early when it is half
// full, until ctx is done, then flushes once more and returns nil.
func (a *AccessLog) Run(ctx context.Context) error {
	if a == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(a.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.Flush()
			return nil
		case <-t.C:
			a.Flush()
		case <-a.kick:
			a.Flush()
		}
	}
}

// Flush writes buffered lines to the writer; it blocks while the writer
// does, but Log does not. Write errors are dropped: the access log never
// fails a request.
func (a *AccessLog) Flush() {
	if a == nil {
		return
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.mu.Lock()
	out := a.buf
	a.buf, a.spare = a.spare[:0], nil
	a.mu.Unlock()
	if len(out) > 0 {
		_, _ = a.w.Write(out)
	}
	a.mu.Lock()
	a.spare = out[:0]
	a.mu.Unlock()
}

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Log formats e in Istio's default format and appends it to the buffer,
// or drops it when the buffer is full. It does not block on the writer.
func (a *AccessLog) Log(e *Entry) { a.LogWith(nil, e) }

// LogWith is Log with formatter f (nil: Istio's default format).
func (a *AccessLog) LogWith(f *accesslog.Formatter, e *Entry) {
	if a == nil {
		return
	}
	bp := linePool.Get().(*[]byte)
	var b []byte
	if f == nil {
		b = accesslog.AppendEntry((*bp)[:0], e)
	} else {
		b = f.Append((*bp)[:0], e)
	}
	a.mu.Lock()
	n := len(a.buf) + len(b)
	ok := n <= a.maxBuf
	if ok {
		a.buf = append(a.buf, b...)
	}
	a.mu.Unlock()
	if !ok {
		a.dropped.Add(1)
	} else if n > a.maxBuf/2 {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	*bp = b
	linePool.Put(bp)
}
