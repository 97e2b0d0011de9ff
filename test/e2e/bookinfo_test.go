package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil"

	"github.com/loom-mesh/loom/internal/local"
)

const (
	subnet    = "127.42.0.0/24"
	loomdAddr = "127.42.0.1:15014"
	// samplesDir is Istio's samples/bookinfo/networking, used unchanged.
	samplesDir = "../../../shared/istio-samples/bookinfo/networking"
)

// mesh is a running `loomctl demo`.
type mesh struct {
	t       *testing.T
	cmd     *exec.Cmd
	pageURL string
	out     *testutil.SyncBuffer // demo's stdout and stderr
	logsDir string               // the processes' logs
	done    chan struct{}
	waitErr error
}

func TestBookinfo(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if _, err := os.Stat(samplesDir); err != nil {
		t.Fatalf("Istio's Bookinfo samples are missing (%v): check out shared/istio-samples beside the module", err)
	}
	m := startDemo(t, subnet)
	anon := newClient(t)

	t.Run("destination rules", func(t *testing.T) {
		apply(t, sample("destination-rule-all.yaml"), "destinationrule.networking.istio.io/reviews ")
	})

	t.Run("all v1", func(t *testing.T) {
		apply(t, sample("virtual-service-all-v1.yaml"), "virtualservice.networking.istio.io/reviews ")
		pollUntil(t, "10 requests in a row served by reviews-v1", func() bool { return allServedBy(t, anon, m.pageURL, 10, "v1") })
		counts := countVersions(t, anon, m.pageURL, 300)
		if counts["v1"] != 300 {
			t.Errorf("300 requests with all traffic on v1 were served by %v", counts)
		}
	})

	t.Run("jason sees v2", func(t *testing.T) {
		apply(t, sample("virtual-service-reviews-test-v2.yaml"), "virtualservice.networking.istio.io/reviews ")
		jason := newClient(t)
		login(t, jason, m.pageURL, "jason")
		pollUntil(t, "jason's requests served by reviews-v2", func() bool { return allServedBy(t, jason, m.pageURL, 5, "v2") })
		if counts := countVersions(t, jason, m.pageURL, 50); counts["v2"] != 50 {
			t.Errorf("50 requests as jason were served by %v, want all v2", counts)
		}
		if counts := countVersions(t, anon, m.pageURL, 50); counts["v1"] != 50 {
			t.Errorf("50 anonymous requests were served by %v, want all v1", counts)
		}
	})

	t.Run("50 percent v3", func(t *testing.T) {
		apply(t, sample("virtual-service-reviews-50-v3.yaml"), "virtualservice.networking.istio.io/reviews ")
		pollUntil(t, "a request served by reviews-v3", func() bool { return countVersions(t, anon, m.pageURL, 10)["v3"] > 0 })
		// The sidecar's weighted picks hold their shares over any window
		// (config.Route.Pick), so 1000 requests land within a few of 500.
		counts := countVersions(t, anon, m.pageURL, 1000)
		if counts["v1"]+counts["v3"] != 1000 || counts["v3"] < 450 || counts["v3"] > 550 {
			t.Errorf("1000 requests split 50/50 between v1 and v3 were served by %v, want v3 within 45..55%%", counts)
		}
	})

	// Istio's traffic-shifting task: 1000 requests within ±5 % of each share.
	for _, tc := range []struct {
		file string
		v1   int // per cent; v2 gets the rest
	}{{"virtual-service-reviews-80-20.yaml", 80}, {"virtual-service-reviews-90-10.yaml", 90}} {
		t.Run(tc.file, func(t *testing.T) {
			apply(t, sample(tc.file), "virtualservice.networking.istio.io/reviews ")
			pollUntil(t, "a request served by reviews-v2", func() bool { return countVersions(t, anon, m.pageURL, 20)["v2"] > 0 })
			counts := countVersions(t, anon, m.pageURL, 1000)
			lo, hi := (tc.v1-5)*10, (tc.v1+5)*10
			if counts["v1"]+counts["v2"] != 1000 || counts["v1"] < lo || counts["v1"] > hi {
				t.Errorf("1000 requests split %d/%d between v1 and v2 were served by %v, want v1 within %d..%d", tc.v1, 100-tc.v1, counts, lo, hi)
			}
		})
	}

	t.Run("all v3", func(t *testing.T) {
		apply(t, sample("virtual-service-reviews-v3.yaml"), "virtualservice.networking.istio.io/reviews ")
		pollUntil(t, "10 requests in a row served by reviews-v3", func() bool { return allServedBy(t, anon, m.pageURL, 10, "v3") })
		if counts := countVersions(t, anon, m.pageURL, 100); counts["v3"] != 100 {
			t.Errorf("100 requests with all traffic on v3 were served by %v", counts)
		}
	})

	t.Run("invalid config is rejected and the last good keeps serving", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad-reviews.yaml")
		if err := os.WriteFile(bad, []byte(badReviewsVS), 0o644); err != nil {
			t.Fatal(err)
		}
		want := bad + ":1: VirtualService default/reviews: spec."

		stdout, stderr, code := loomctl(t, "apply", "-f", bad)
		if code != 1 {
			t.Errorf("apply of an invalid VirtualService: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if !strings.Contains(stderr, want) {
			t.Errorf("apply stderr does not contain %q:\n%s", want, stderr)
		}
		for _, field := range []string{"regex", "weight"} {
			if !strings.Contains(stderr, field) {
				t.Errorf("apply stderr does not mention %q:\n%s", field, stderr)
			}
		}

		// With the DestinationRules beside it, only the two errors remain.
		stdout, stderr, code = loomctl(t, "validate", "-f", sample("destination-rule-all.yaml"), "-f", bad)
		if code == 0 {
			t.Errorf("validate of an invalid VirtualService exited 0\nstdout:\n%s", stdout)
		}
		for _, w := range []string{want, "regex", "weight"} {
			if !strings.Contains(stdout+stderr, w) {
				t.Errorf("validate output does not contain %q:\nstdout:\n%s\nstderr:\n%s", w, stdout, stderr)
			}
		}

		if counts := countVersions(t, anon, m.pageURL, 50); counts["v3"] != 50 {
			t.Errorf("after the rejected apply, 50 requests were served by %v, want all v3 (the last good rule)", counts)
		}
	})

	t.Run("proxy-status", func(t *testing.T) {
		var last string
		ok := poll(5*time.Second, func() bool {
			stdout, stderr, code := loomctl(t, "proxy-status")
			last = fmt.Sprintf("exit %d\n%s%s", code, stdout, stderr)
			return code == 0 && allSynced(stdout, 7)
		})
		if !ok {
			t.Errorf("proxy-status does not show 7 proxies all SYNCED:\n%s", last)
		}
	})
}

// badReviewsVS has two errors: a regex that does not compile and a
// negative weight.
const badReviewsVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - uri:
        regex: "/productpage[("
    route:
    - destination:
        host: reviews
        subset: v1
      weight: 60
    - destination:
        host: reviews
        subset: v3
      weight: -30
`

func sample(name string) string { return filepath.Join(samplesDir, name) }

// startDemo runs `loomctl demo` on subnet and waits for its ready line.
// The demo is stopped by PID at the end of the test, and none of its
// children may outlive it.
func startDemo(t *testing.T, subnet string) *mesh {
	t.Helper()
	return startDemoArgs(t, "--subnet", subnet)
}

// startDemoArgs runs `loomctl demo` with the extra flags args and waits
// for its ready line, as startDemo.
func startDemoArgs(t *testing.T, args ...string) *mesh {
	t.Helper()
	port := freePort(t)
	logsDir := filepath.Join(t.TempDir(), "logs")
	out := &testutil.SyncBuffer{}
	ready := make(chan string, 1)
	cmd := exec.Command(filepath.Join(binDir, "loomctl"), append([]string{"demo",
		"--ingress-port", strconv.Itoa(port), "--bin-dir", binDir,
		"--config-dir", filepath.Join(t.TempDir(), "config"), "--logs-dir", logsDir}, args...)...)
	cmd.Env = envWithout("LOOMD_ADDR")
	cmd.SysProcAttr = demoSysProcAttr()
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &mesh{t: t, cmd: cmd, out: out, logsDir: logsDir, done: make(chan struct{})}
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			out.Write([]byte(line + "\n"))
			if rest, ok := strings.CutPrefix(line, local.ReadyPrefix); ok {
				select {
				case ready <- strings.TrimSpace(rest):
				default:
				}
			}
		}
	}()
	go func() {
		<-scanDone // Wait must not run before the pipe is drained
		m.waitErr = cmd.Wait()
		close(m.done)
	}()

	var children []int
	t.Cleanup(func() { m.stop(children) })
	select {
	case m.pageURL = <-ready:
	case <-m.done:
		t.Fatalf("loomctl demo exited before the mesh was ready (%v):\n%s", m.waitErr, out.String())
	case <-time.After(120 * time.Second):
		t.Fatalf("loomctl demo not ready after 120 s:\n%s", out.String())
	}
	children = childPIDs(cmd.Process.Pid)
	if runtime.GOOS == "linux" && len(children) != 14 {
		t.Errorf("loomctl demo has %d child processes %v, want 14 (loomd, 6 apps, 6 sidecars, 1 gateway)", len(children), children)
	}
	t.Logf("mesh ready at %s", m.pageURL)
	return m
}

// stop sends SIGTERM to the demo, waits for it to exit 0, and checks that
// none of its children remain.
func (m *mesh) stop(children []int) {
	t := m.t
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		t.Errorf("loomctl demo did not stop within 20 s of SIGTERM; killing it")
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	if m.waitErr != nil {
		t.Errorf("loomctl demo exited with %v after SIGTERM, want 0", m.waitErr)
	}
	var left []int
	poll(5*time.Second, func() bool {
		left = left[:0]
		for _, pid := range children {
			if syscall.Kill(pid, 0) == nil {
				left = append(left, pid)
			}
		}
		return len(left) == 0
	})
	if len(left) > 0 {
		t.Errorf("child processes %v outlived loomctl demo", left)
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	outputs := logFiles(t, m.logsDir)
	outputs["loomctl demo"] = m.out.String()
	checkNoSecrets(t, outputs)
	if t.Failed() {
		t.Logf("loomctl demo output:\n%s", m.out.String())
	}
}

// childPIDs lists the processes whose parent is pid (Linux /proc).
func childPIDs(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// loomctl runs the real loomctl against TestBookinfo's loomd.
func loomctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return loomctlAt(t, loomdAddr, args...)
}

// loomctlAt runs the real loomctl against the loomd at addr.
func loomctlAt(t *testing.T, addr string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "loomctl"), append([]string{"--loomd", addr}, args...)...)
	cmd.Env = envWithout("LOOMD_ADDR")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("loomctl %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// apply runs `loomctl apply -f file` against TestBookinfo's loomd; see applyAt.
func apply(t *testing.T, file, wantLine string) {
	t.Helper()
	applyAt(t, loomdAddr, file, wantLine)
}

// applyAt runs `loomctl --loomd addr apply -f file` and checks it
// succeeded and printed a line starting with wantLine.
func applyAt(t *testing.T, addr, file, wantLine string) {
	t.Helper()
	stdout, stderr, code := loomctlAt(t, addr, "apply", "-f", file)
	if code != 0 {
		t.Fatalf("loomctl apply -f %s: exit %d\nstdout:\n%s\nstderr:\n%s", file, code, stdout, stderr)
	}
	if !strings.Contains(stdout, wantLine) {
		t.Fatalf("loomctl apply -f %s printed no line starting %q:\n%s", file, wantLine, stdout)
	}
}

func newClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:       jar,
		Timeout:   10 * time.Second,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second},
	}
}

// login posts the login form as productpage's page does; the session
// cookie stays in c's jar.
func login(t *testing.T, c *http.Client, pageURL, user string) {
	t.Helper()
	loginURL := strings.TrimSuffix(pageURL, "/productpage") + "/login"
	resp, err := c.PostForm(loginURL, url.Values{"username": {user}, "passwd": {"password"}})
	if err != nil {
		t.Fatalf("login as %s: %v", user, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login as %s: %s\n%s", user, resp.Status, body)
	}
	u, _ := url.Parse(pageURL)
	if len(c.Jar.Cookies(u)) == 0 {
		t.Fatalf("login as %s set no cookie", user)
	}
}

var servedBy = regexp.MustCompile(`Reviews served by:\s*reviews-(v\d)-`)

// version fetches the product page and says which reviews version served
// it: "v1", "v2", "v3", or "none" when the page has no reviews.
func version(c *http.Client, pageURL string) (string, error) {
	resp, err := c.Get(pageURL)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %.300s", pageURL, resp.Status, body)
	}
	m := servedBy.FindSubmatch(body)
	if m == nil {
		return "none", nil
	}
	return string(m[1]), nil
}

// countVersions makes n requests and counts the reviews versions; any
// failed request fails the test.
func countVersions(t *testing.T, c *http.Client, pageURL string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		v, err := version(c, pageURL)
		if err != nil {
			t.Fatalf("request %d of %d: %v", i+1, n, err)
		}
		counts[v]++
	}
	return counts
}

// allServedBy reports whether n requests in a row were served by want.
func allServedBy(t *testing.T, c *http.Client, pageURL string, n int, want string) bool {
	t.Helper()
	for i := 0; i < n; i++ {
		v, err := version(c, pageURL)
		if err != nil || v != want {
			return false
		}
	}
	return true
}

// pollUntil polls cond every 50 ms for up to 5 s: a new rule must show
// within that.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll(5*time.Second, cond) {
		t.Fatalf("not seen within 5 s: %s", what)
	}
}

func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// allSynced reports whether the proxy-status table has want rows, each
// with its four xDS columns SYNCED.
func allSynced(table string, want int) bool {
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 1 || !strings.HasPrefix(lines[0], "NAME") {
		return false
	}
	rows := 0
	for _, l := range lines[1:] {
		if strings.TrimSpace(l) == "" {
			return false // a NACK list follows the table
		}
		if strings.Count(l, "SYNCED") != 4 {
			return false
		}
		rows++
	}
	return rows == want
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func envWithout(key string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, key+"=") {
			env = append(env, kv)
		}
	}
	return env
}
