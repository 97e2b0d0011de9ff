package listener

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// Environment of the test's second half, run inside the network
// namespace the first half made.
const (
	netnsInnerEnv = "LOOM_LISTENER_NETNS_INNER"
	netnsIPv6Env  = "LOOM_LISTENER_NETNS_IPV6"
)

// TestOriginalDstHandOff is Istio's transparent interception for real: in
// a network namespace of its own, iptables REDIRECTs connections to ports
// 9080 and 9090 to the virtualOutbound listener on 15001, whose
// original_dst filter restores the destination (SO_ORIGINAL_DST, IPv4 and
// IPv6) and whose use_original_dst hands 9080 to the bind_to_port false
// listener 0.0.0.0_9080; 9090, which no listener has, stays on
// virtualOutbound's own chain.
func TestOriginalDstHandOff(t *testing.T) {
	if os.Getenv(netnsInnerEnv) != "" {
		handOffInNetns(t, os.Getenv(netnsIPv6Env) != "")
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates a network namespace and iptables rules")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (make test installs iproute2 and iptables)", tool)
		}
	}
	ns := fmt.Sprintf("loom-listener-%d", os.Getpid())
	run := func(args ...string) error {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("ip", "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", ns) })
	inNS := func(args ...string) error { return run(append([]string{"ip", "netns", "exec", ns}, args...)...) }
	if err := inNS("ip", "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	if err := inNS("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "-m", "multiport",
		"--dports", "9080,9090", "-j", "REDIRECT", "--to-ports", "15001"); err != nil {
		t.Fatal(err)
	}
	ipv6 := "1"
	if err := inNS("ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "::1", "--dport", "9080",
		"-j", "REDIRECT", "--to-ports", "15001"); err != nil {
		t.Logf("IPv6 part skipped: %v", err)
		ipv6 = ""
	}
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestOriginalDstHandOff$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsInnerEnv+"=1", netnsIPv6Env+"="+ipv6)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestOriginalDstHandOff") {
		t.Fatalf("inside the namespace: %v\n%s", err, out)
	}
	t.Logf("inside the namespace:\n%s", out)
}

// handOffInNetns is the test's half that runs in the namespace.
func handOffInNetns(t *testing.T, ipv6 bool) {
	passthrough := func(_ *config.Listener, fc *config.FilterChain) ConnHandler {
		return func(ctx context.Context, c net.Conn) {
			defer c.Close()
			conn := filter.ConnectionFrom(ctx)
			fmt.Fprintf(c, "%s %s %v\n", fc.Name, conn.Destination, conn.OriginalDst)
		}
	}
	handler := func(_ *config.Listener, fc *config.FilterChain) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn := filter.RequestConnection(r)
			fmt.Fprintf(w, "%s %s %v", fc.Name, conn.Destination, conn.OriginalDst)
		})
	}
	m := startManager(t, Options{Handler: handler, TCP: passthrough})
	outbound := func(name, ip string) *listenerv3.Listener {
		return &listenerv3.Listener{Name: name, Address: xdstest.SocketAddress(ip, 15001), UseOriginalDst: wrapperspb.Bool(true),
			ListenerFilters: lf(config.OriginalDstName),
			FilterChains:    []*listenerv3.FilterChain{tcpChain(t, "PassthroughFilterChain", nil)}}
	}
	service := func(name, ip, chain string) *listenerv3.Listener {
		return &listenerv3.Listener{Name: name, Address: xdstest.SocketAddress(ip, 9080), BindToPort: wrapperspb.Bool(false),
			FilterChains: []*listenerv3.FilterChain{hcmChain(t, chain, nil)}}
	}
	ls := []*listenerv3.Listener{outbound("virtualOutbound", "127.0.0.1"), service("0.0.0.0_9080", "0.0.0.0", "http-9080")}
	if ipv6 {
		ls = append(ls, outbound("virtualOutbound6", "::1"), service("[::]_9080", "::", "http-9080-v6"))
	}
	if err := m.Update(buildGen(t, ls...)); err != nil {
		t.Fatal(err)
	}
	if _, bound := m.Addrs()["0.0.0.0_9080"]; bound {
		t.Fatal("a bind_to_port false listener was bound")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if body, _ := get(t, client, "http://127.0.0.1:9080/"); body != "http-9080 127.0.0.1:9080 true" {
		t.Errorf("redirected 127.0.0.1:9080 answered %q, want the 0.0.0.0_9080 listener with the original destination", body)
	}
	if ipv6 {
		if body, _ := get(t, client, "http://[::1]:9080/"); body != "http-9080-v6 [::1]:9080 true" {
			t.Errorf("redirected [::1]:9080 answered %q", body)
		}
	}
	c, err := net.Dial("tcp", "127.0.0.1:9090")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if string(b) != "PassthroughFilterChain 127.0.0.1:9090 true\n" {
		t.Errorf("redirected 127.0.0.1:9090 answered %q, want virtualOutbound's own chain", b)
	}
}
