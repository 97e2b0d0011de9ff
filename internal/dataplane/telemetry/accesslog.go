package telemetry

import (
	"context"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Entry is one request as the access log sees it. Empty strings and
// negative numbers print as "-".
type Entry struct {
	StartTime     time.Time
	Method        string
	Path          string // X-Envoy-Original-Path, else :path
	Protocol      string // "HTTP/1.1", "HTTP/2"
	ResponseCode  int
	ResponseFlags string // "NR", "UH", "UF,URX", ...; "" for none
	// ResponseCodeDetails is Envoy's %RESPONSE_CODE_DETAILS%: "via_upstream",
	// "route_not_found", ...
	ResponseCodeDetails     string
	UpstreamFailureReason   string
	BytesReceived           int64
	BytesSent               int64
	Duration                time.Duration
	UpstreamServiceTime     time.Duration // < 0: no upstream response
	ForwardedFor            string
	UserAgent               string
	RequestID               string
	Authority               string
	UpstreamHost            string
	UpstreamCluster         string
	UpstreamLocalAddress    string
	DownstreamLocalAddress  string
	DownstreamRemoteAddress string
	RequestedServerName     string
	RouteName               string
	// UpstreamPeer is the upstream's sidecar identity its response
	// carried (Istio's metadata exchange); nil when none.
	UpstreamPeer *istiostats.Peer
}

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

// Log formats e and appends it to the buffer, or drops it when the buffer
// is full. It does not block on the writer.
func (a *AccessLog) Log(e *Entry) {
	if a == nil {
		return
	}
	bp := linePool.Get().(*[]byte)
	b := AppendEntry((*bp)[:0], e)
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

// AppendEntry appends e to b in Istio's default access log format, with a
// trailing newline:
//
//	[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
func AppendEntry(b []byte, e *Entry) []byte {
	b = append(b, '[')
	b = e.StartTime.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, "] \""...)
	b = appendStr(b, e.Method)
	b = append(b, ' ')
	b = appendStr(b, e.Path)
	b = append(b, ' ')
	b = appendStr(b, e.Protocol)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(e.ResponseCode), 10)
	b = append(b, ' ')
	b = appendStr(b, e.ResponseFlags)
	b = append(b, ' ')
	b = appendStr(b, e.ResponseCodeDetails)
	b = append(b, " - \""...) // CONNECTION_TERMINATION_DETAILS: none in this version
	b = appendStr(b, e.UpstreamFailureReason)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, e.BytesReceived, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.BytesSent, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Duration.Milliseconds(), 10)
	b = append(b, ' ')
	if e.UpstreamServiceTime >= 0 {
		b = strconv.AppendInt(b, e.UpstreamServiceTime.Milliseconds(), 10)
	} else {
		b = append(b, '-')
	}
	b = append(b, " \""...)
	b = appendStr(b, e.ForwardedFor)
	b = append(b, "\" \""...)
	b = appendStr(b, e.UserAgent)
	b = append(b, "\" \""...)
	b = appendStr(b, e.RequestID)
	b = append(b, "\" \""...)
	b = appendStr(b, e.Authority)
	b = append(b, "\" \""...)
	b = appendStr(b, e.UpstreamHost)
	b = append(b, "\" "...)
	b = appendStr(b, e.UpstreamCluster)
	b = append(b, ' ')
	b = appendStr(b, e.UpstreamLocalAddress)
	b = append(b, ' ')
	b = appendStr(b, e.DownstreamLocalAddress)
	b = append(b, ' ')
	b = appendStr(b, e.DownstreamRemoteAddress)
	b = append(b, ' ')
	b = appendStr(b, e.RequestedServerName)
	b = append(b, ' ')
	b = appendStr(b, e.RouteName)
	return append(b, '\n')
}

// appendStr appends s, or "-" when empty. Control characters and quotes
// are replaced so that a header cannot forge a line or a field.
func appendStr(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == 0x7f {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}
