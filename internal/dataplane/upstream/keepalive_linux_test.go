package upstream

import (
	"context"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// TestTCPKeepalive reads the keep-alive options back from the pooled
// upstream socket.
func TestTCPKeepalive(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	m := New(Options{})
	defer m.Close()
	c := &config.Cluster{Name: "c", Endpoints: []config.Endpoint{{Address: addrOf(srv)}},
		Conn: config.ConnectionOptions{TCPKeepalive: &config.TCPKeepalive{Probes: 4, Time: 7 * time.Second, Interval: 3 * time.Second}}}
	m.Update(gen(c))
	if _, err := send(context.Background(), m, c); err != nil {
		t.Fatal(err)
	}
	st := m.state("c")
	st.h1.mu.Lock()
	l := st.h1.idle[addrOf(srv)]
	st.h1.mu.Unlock()
	if len(l) != 1 {
		t.Fatalf("%d idle connections, want 1", len(l))
	}
	raw, err := l[0].nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	raw.Control(func(fd uintptr) {
		for name, opt := range map[string][2]int{
			"SO_KEEPALIVE":  {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			"TCP_KEEPIDLE":  {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			"TCP_KEEPINTVL": {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			"TCP_KEEPCNT":   {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
		} {
			v, err := syscall.GetsockoptInt(int(fd), opt[0], opt[1])
			if err != nil {
				t.Errorf("getsockopt %s: %v", name, err)
			}
			got[name] = v
		}
	})
	want := map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 7, "TCP_KEEPINTVL": 3, "TCP_KEEPCNT": 4}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
}
