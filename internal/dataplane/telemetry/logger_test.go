package telemetry

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	"github.com/loom-mesh/loom/internal/testutil"
)

// TestSinksWriteEveryPath: a line logged to /dev/stderr or to a file
// reaches its writer while Sinks.Run runs, and the last lines are
// flushed when it stops.
func TestSinksWriteEveryPath(t *testing.T) {
	stderr := &testutil.SyncBuffer{}
	s := NewSinks(nil, NewAccessLog(AccessLogOptions{Writer: stderr}), nil)
	file := filepath.Join(t.TempDir(), "access.log")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()

	log := func(path, p string) {
		s.Log([]*accesslog.AccessLogger{{Path: path}}, &Entry{StartTime: time.Now(), Method: "GET", Path: p, Protocol: "HTTP/1.1", ResponseCode: 200})
	}
	log("/dev/stderr", "/to-stderr")
	log(file, "/to-file")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "/to-stderr") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "/to-stderr") {
		t.Fatalf("the stderr log never wrote its line while Run ran: %q", stderr.String())
	}
	log("/dev/stderr", "/last-stderr")
	log(file, "/last-file")
	cancel()
	<-done
	if !strings.Contains(stderr.String(), "/last-stderr") {
		t.Errorf("the stderr log's last line was not flushed when Run stopped: %q", stderr.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "/to-file") || !strings.Contains(string(b), "/last-file") {
		t.Errorf("file log: %q, want both lines", b)
	}
}
