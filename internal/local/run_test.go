package local

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil"

	"github.com/loom-mesh/loom/internal/loomctl"
)

// TestMain lets the test binary stand in for loomd, loom-proxy and
// bookinfo: TestRun links it under those names, and it then plays a fake
// of each, enough for Run to see a serving mesh.
func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case "loomd", "loom-proxy", "bookinfo":
		os.Exit(fakeMain(filepath.Base(os.Args[0]), os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeMain(name string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	sub := ""
	if name != "loomd" && len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	monitoring := fs.String("monitoring-addr", "", "")
	ip := fs.String("ip", "", "")
	listen := fs.String("listen", "", "")
	for _, f := range []string{"config-dir", "xds-addr", "name", "namespace", "labels", "service-account", "version", "instance",
		"data-dir", "secure-xds-addr", "ca-addr", "token-file", "root-cert", "dashboard-addr"} {
		fs.String(f, "", "")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if crash := os.Getenv("LOOM_FAKE_CRASH"); name == "bookinfo" && crash != "" && strings.HasPrefix(*listen, crash) {
		fmt.Println("listen " + *listen + ": boom")
		return 3
	}
	var addr string
	mux := http.NewServeMux()
	switch {
	case name == "loomd":
		addr = *monitoring
		prefix := strings.TrimSuffix(strings.Split(addr, ":")[0], ".1")
		_, _, proxies, _ := plan(prefix, "", "", randomSuffix)
		var ss []loomctl.SyncStatus
		for _, p := range proxies {
			s := loomctl.SyncStatus{ID: p.NodeID}
			for _, t := range []string{"CDS", "EDS", "LDS", "RDS"} {
				s.Types = append(s.Types, loomctl.TypeStatus{Short: t, Sent: "1", Acked: "1"})
			}
			ss = append(ss, s)
		}
		mux.HandleFunc("GET /ready", func(http.ResponseWriter, *http.Request) {})
		mux.HandleFunc("GET /debug/syncz", func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(ss) })
	case sub == "router":
		addr = *ip + ":8080"
		mux.HandleFunc("GET /productpage", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "Reviews served by: reviews-v1-x") })
	}
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		srv := &http.Server{Handler: mux}
		go srv.Serve(ln)
		defer srv.Close()
	}
	<-ctx.Done()
	return 0
}

// fakeBinDir links the test binary as the three binaries.
func fakeBinDir(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range []string{"loomd", "loom-proxy", "bookinfo"} {
		if err := os.Symlink(exe, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newTestRuntime(t *testing.T, out *testutil.SyncBuffer) *Runtime {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r, err := New(Options{
		BinDir:       fakeBinDir(t),
		ConfigDir:    filepath.Join(t.TempDir(), "config"),
		LogsDir:      filepath.Join(t.TempDir(), "logs"),
		Subnet:       "127.43.0.0/24",
		IngressPort:  port,
		ReadyTimeout: 30 * time.Second,
		StopTimeout:  2 * time.Second,
		Out:          out,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRunUntilCancelled(t *testing.T) {
	out := &testutil.SyncBuffer{}
	r := newTestRuntime(t, out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), ReadyPrefix) {
		select {
		case err := <-errc:
			t.Fatalf("Run returned %v before ready; output:\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond): // poll interval
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30 s; output:\n%s", out.String())
		}
	}
	for _, want := range []string{ReadyPrefix + "http://127.0.0.1:", "--loomd 127.43.0.1:15014 proxy-status"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not contain %q:\n%s", want, out.String())
		}
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunChildExitsEarly(t *testing.T) {
	t.Setenv("LOOM_FAKE_CRASH", "127.43.0.13:")
	out := &testutil.SyncBuffer{}
	r := newTestRuntime(t, out)
	errc := make(chan error, 1)
	go func() { errc <- r.Run(context.Background()) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Run = nil with a crashing child")
		}
		for _, want := range []string{"reviews-v1 stopped early", "exit status 3", "boom"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Run error %q does not contain %q", err, want)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after a child crashed")
	}
}
