package tcp

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/loom-mesh/loom/internal/testutil"
)

// TestPipeEndpoint: tcp_proxy to a cluster whose endpoint is a pipe (an
// ingress unix:// defaultEndpoint's inbound cluster) dials the unix
// socket, and the access log's %UPSTREAM_HOST% is its path, as Envoy's
// PipeInstance prints it.
func TestPipeEndpoint(t *testing.T) {
	dir := testutil.SocketDir(t)
	path := filepath.Join(dir, "echo.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		io.WriteString(c, "unix "+string(b))
	}()
	t.Cleanup(func() { ln.Close(); <-done })

	h := start(t, oneCluster("echo"), cluster(t, "echo", func(c *clusterv3.Cluster) {
		c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address =
			&corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
	}, "127.0.0.1:1"))
	c := dial(t, h.addr)
	io.WriteString(c, "hello")
	c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "unix hello" {
		t.Fatalf("read %q, %v; want %q from the unix socket", got, err, "unix hello")
	}
	if line := h.waitLog(t, 1)[0]; !strings.Contains(line, `"`+path+`" echo `) {
		t.Errorf("access log line lacks upstream host %s:\n%s", path, line)
	}
}
