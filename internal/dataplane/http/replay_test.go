package http

import (
	"errors"
	"io"
	"runtime"
	"testing"
	"time"
)

// TestRequestBodyHandOff: bytes a superseded attempt's reader takes in
// after the retry started go to the retry, after the replayed prefix;
// once the body outgrows the limit no further attempt is possible, and a
// shadow gets every byte once, then the end.
func TestRequestBodyHandOff(t *testing.T) {
	pr, pw := io.Pipe()
	rb := newRequestBody(pr, -1, 8, false, nil, "c")
	shadow := newShadowPipe(1 << 10)
	rb.addShadow(shadow)
	stale := readThenBlock(t, rb, pw)
	buf := make([]byte, 16)
	a1, ok := rb.attempt(1)
	if !ok {
		t.Fatal("attempt 1 refused with 3 of 8 bytes kept")
	}
	if n, err := a1.Read(buf); err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("attempt 1 replay %q, %v", buf[:n], err)
	}
	go pw.Write([]byte("def"))
	if n, err := a1.Read(buf); err != nil || string(buf[:n]) != "def" {
		t.Fatalf("attempt 1 live read %q, %v", buf[:n], err)
	}
	if err := <-stale; !errors.Is(err, errAttemptEnded) {
		t.Fatalf("superseded reader: %v, want errAttemptEnded", err)
	}
	if !rb.replayable() {
		t.Fatal("6 of 8 bytes: not replayable")
	}
	go func() { pw.Write([]byte("ghijk")); pw.Close() }()
	if n, err := a1.Read(buf); err != nil || string(buf[:n]) != "ghijk" {
		t.Fatalf("attempt 1 read past the limit %q, %v", buf[:n], err)
	}
	if rb.replayable() {
		t.Fatal("11 bytes of 8: still replayable")
	}
	if _, ok := rb.attempt(2); ok {
		t.Fatal("attempt 2 allowed after the body outgrew the limit")
	}
	if n, err := a1.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("attempt 1 at the end: %d, %v; want EOF", n, err)
	}
	got, err := io.ReadAll(shadow)
	if err != nil || string(got) != "abcdefghijk" {
		t.Fatalf("shadow got %q, %v; want every byte once and EOF", got, err)
	}
	rb.end()
}

// readThenBlock has attempt 0 of rb read "abc" written to pw, then read
// again, as a transport reading on: once that read holds src, blocked in
// the pipe, it returns the channel the read's error comes on. A later
// attempt then supersedes a reader that is really waiting, which is what
// the hand-off tests are for.
func readThenBlock(t *testing.T, rb *requestBody, pw *io.PipeWriter) <-chan error {
	t.Helper()
	a0, _ := rb.attempt(0)
	go pw.Write([]byte("abc"))
	buf := make([]byte, 16)
	if n, err := a0.Read(buf); err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("attempt 0 read %q, %v", buf[:n], err)
	}
	stale := make(chan error, 1)
	go func() {
		_, err := a0.Read(make([]byte, 32))
		stale <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); rb.readMu.TryLock(); {
		rb.readMu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the superseded reader never reached src")
		}
		runtime.Gosched()
	}
	return stale
}

// TestShadowPipeDrops: a shadow that falls more than its limit behind is
// dropped, its reads fail and its cancel runs; a shadow cut short by the
// primary's end reads errPrimaryEnded.
func TestShadowPipeDrops(t *testing.T) {
	s := newShadowPipe(4)
	cancelled := false
	s.setCancel(func() { cancelled = true })
	s.write([]byte("ab"))
	s.write([]byte("cde"))
	if _, err := s.Read(make([]byte, 8)); !errors.Is(err, errShadowDropped) || !s.wasDropped() || !cancelled {
		t.Fatalf("read after overflow: %v (dropped %v, cancelled %v), want errShadowDropped", err, s.wasDropped(), cancelled)
	}
	rb := newRequestBody(io.MultiReader(), 10, 0, false, nil, "c")
	s2 := newShadowPipe(16)
	rb.addShadow(s2)
	rb.end()
	if _, err := s2.Read(make([]byte, 8)); !errors.Is(err, errPrimaryEnded) {
		t.Fatalf("shadow of an ended primary: %v, want errPrimaryEnded", err)
	}
}

// TestRequestBodyPumpClose: in pump mode, closing an attempt's body ends
// a Read waiting for the downstream at once (the HTTP/2 transport waits
// for that read once its stream is reset), and the bytes the pump takes
// in later go to the next attempt after the replayed prefix.
func TestRequestBodyPumpClose(t *testing.T) {
	pr, pw := io.Pipe()
	rb := newRequestBody(pr, -1, 1<<10, true, nil, "c")
	a0, _ := rb.attempt(0)
	go pw.Write([]byte("abc"))
	buf := make([]byte, 16)
	if n, err := a0.Read(buf); err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("attempt 0 read %q, %v", buf[:n], err)
	}
	blocked := make(chan error, 1)
	go func() {
		_, err := a0.Read(make([]byte, 16))
		blocked <- err
	}()
	a0.Close()
	select {
	case err := <-blocked:
		if !errors.Is(err, errAttemptEnded) {
			t.Fatalf("read of a closed attempt: %v, want errAttemptEnded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the blocked Read")
	}
	a1, ok := rb.attempt(1)
	if !ok {
		t.Fatal("attempt 1 refused")
	}
	go func() { pw.Write([]byte("def")); pw.Close() }()
	got, err := io.ReadAll(a1)
	if err != nil || string(got) != "abcdef" {
		t.Fatalf("attempt 1 read %q, %v; want the prefix replayed, then the rest", got, err)
	}
	rb.end()
}

// zeros is an endless body.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestRequestBodyPumpReadsAllocateNothing: a pumped body past its limit
// (or never kept, as a mirrored HTTP/2 request's) passes every read
// through the kept buffer, which is reused rather than made anew per read.
func TestRequestBodyPumpReadsAllocateNothing(t *testing.T) {
	rb := newRequestBody(zeros{}, -1, 0, true, nil, "c")
	defer rb.end()
	a0, _ := rb.attempt(0)
	buf := make([]byte, 32<<10)
	if _, err := io.ReadFull(a0, buf); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := io.ReadFull(a0, buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per 32 KiB read, want 0", n)
	}
}

// TestRequestBodySupersededReaderOverflows: bytes a superseded reader
// takes in after the retry started are kept for the retry even past the
// limit, but then no further attempt is possible (the router answers 507
// request_payload_exceeded_retry_buffer_limit when it wanted one).
func TestRequestBodySupersededReaderOverflows(t *testing.T) {
	pr, pw := io.Pipe()
	rb := newRequestBody(pr, -1, 8, false, nil, "c")
	defer rb.end()
	stale := readThenBlock(t, rb, pw)
	a1, ok := rb.attempt(1)
	if !ok {
		t.Fatal("attempt 1 refused with 3 of 8 bytes kept")
	}
	go func() { pw.Write([]byte("0123456789")); pw.Close() }()
	if err := <-stale; !errors.Is(err, errAttemptEnded) {
		t.Fatalf("superseded reader: %v, want errAttemptEnded", err)
	}
	if rb.replayable() {
		t.Fatal("3 + 10 bytes of 8 kept: still replayable")
	}
	if _, ok := rb.attempt(2); ok {
		t.Fatal("attempt 2 allowed after the kept bytes outgrew the limit")
	}
	got, err := io.ReadAll(a1)
	if err != nil || string(got) != "abc0123456789" {
		t.Fatalf("attempt 1 read %q, %v; want the replay, then the superseded reader's bytes", got, err)
	}
}
