package listener

import (
	"bufio"
	"context"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/testutil"
)

// TestPipeListener: a listener whose address is a pipe (Envoy's
// Address.pipe, as loomd gives a Sidecar egress unix:// bind) is a unix
// domain socket at that path with the pipe's mode; TCP and HTTP chains
// serve connections on it; a stale socket file left at the path is
// replaced, and dropping the listener removes the file.
func TestPipeListener(t *testing.T) {
	m, err := New(Options{
		Handler: func(l *config.Listener, _ *config.FilterChain) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "http "+l.Name) })
		},
		TCP:          echoConns,
		DrainTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	dir := testutil.SocketDir(t)
	tcpPath, httpPath := filepath.Join(dir, "tcp.sock"), filepath.Join(dir, "http.sock")

	// A socket file left by a process that is gone.
	stale, err := net.Listen("unix", httpPath)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	tl := tcpL("tcp", tcpPath)
	tl.PipeMode = 0o600
	hl := httpL("http", httpPath)
	if err := m.Update(gen(tl, hl)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(tcpPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a socket with 0600", tcpPath, fi.Mode())
	}

	conn, err := net.Dial("unix", tcpPath)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "hi\n")
	if got, err := bufio.NewReader(conn).ReadString('\n'); err != nil || got != "tcp hi\n" {
		t.Fatalf("TCP chain on the pipe answered %q, %v", got, err)
	}

	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", httpPath)
		},
	}}
	resp, err := client.Get("http://pipe/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "http http" {
		t.Fatalf("HTTP chain on the pipe answered %q", b)
	}

	// Dropping the HTTP listener closes its socket and removes its file.
	if err := m.Update(gen(tl)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(httpPath); !os.IsNotExist(err) {
		t.Errorf("%s after its listener was removed: %v, want no file", httpPath, err)
	}
}

// TestPipeListenerKeepsOthersFiles: a pipe listener never removes what is
// not a stale socket at its path: a regular file, or a socket some process
// still accepts on. The bind fails instead, naming the listener.
func TestPipeListenerKeepsOthersFiles(t *testing.T) {
	m, err := New(Options{Handler: func(*config.Listener, *config.FilterChain) http.Handler { return http.NotFoundHandler() }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	dir := testutil.SocketDir(t)
	file, live := filepath.Join(dir, "file"), filepath.Join(dir, "live.sock")
	if err := os.WriteFile(file, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	err = m.Update(gen(httpL("f", file), httpL("s", live)))
	if err == nil || !strings.Contains(err.Error(), `"f"`) || !strings.Contains(err.Error(), `"s"`) {
		t.Fatalf("Update = %v, want bind errors for both listeners", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "data" {
		t.Errorf("regular file after the failed bind: %q, %v", b, err)
	}
	if c, err := net.Dial("unix", live); err != nil {
		t.Errorf("the live socket no longer accepts: %v", err)
	} else {
		c.Close()
	}
}

// TestPipeListenerCloseKeepsReplacedFile: a pipe listener whose socket
// file was replaced after the bind (a new listener at the same path took
// it over) leaves the new file when it closes; one whose file is still its
// own removes it.
func TestPipeListenerCloseKeepsReplacedFile(t *testing.T) {
	dir := testutil.SocketDir(t)
	path := filepath.Join(dir, "p.sock")
	old, err := listenPipe(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	repl, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close()
	if err := old.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the replacing socket's file after the old listener closed: %v", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Errorf("the replacing socket no longer accepts: %v", err)
	} else {
		c.Close()
	}

	own := filepath.Join(dir, "own.sock")
	ln, err := listenPipe(own, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(own); !os.IsNotExist(err) {
		t.Errorf("%s after its listener closed: %v, want no file", own, err)
	}
}

// TestAbstractPipeListener: a pipe path "@name" is a socket in Linux's
// abstract namespace, as Envoy takes it: no file, nothing to remove.
func TestAbstractPipeListener(t *testing.T) {
	m, err := New(Options{
		Handler: func(*config.Listener, *config.FilterChain) http.Handler { return http.NotFoundHandler() },
		TCP:     echoConns,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	name := "@loom-test-" + filepath.Base(testutil.SocketDir(t))
	l := tcpL("abstract", name)
	l.PipeMode = 0o600 // not applicable: ignored
	if err := m.Update(gen(l)); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", name)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "hi\n")
	if got, err := bufio.NewReader(conn).ReadString('\n'); err != nil || got != "abstract hi\n" {
		t.Fatalf("abstract socket answered %q, %v", got, err)
	}
}
