package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRequestTimeout follows Istio's request-timeouts task: with reviews
// v2 calling ratings, a 2 s delay on ratings slows the page to about 2 s;
// a 0.5 s timeout on reviews then makes productpage's call fail after
// 0.5 s, and with its one retry the page returns in about 1 s saying
// reviews are unavailable.
func TestRequestTimeout(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	const subnet, loomd = "127.45.0.0/24", "127.45.0.1:15014"
	m := startDemo(t, subnet)
	anon := newClient(t)
	anon.Timeout = 20 * time.Second
	dir := t.TempDir()
	write := func(name, yaml string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	applyAt(t, loomd, sample("destination-rule-all.yaml"), "destinationrule.networking.istio.io/ratings ")
	applyAt(t, loomd, sample("virtual-service-all-v1.yaml"), "virtualservice.networking.istio.io/ratings ")
	// The task's own YAML, from its page.
	applyAt(t, loomd, write("reviews-v2.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
`), "virtualservice.networking.istio.io/reviews ")
	applyAt(t, loomd, write("ratings-delay.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
`), "virtualservice.networking.istio.io/ratings ")
	if !poll(20*time.Second, func() bool {
		p := fetchPage(t, anon, m.pageURL)
		return p.version == "v2" && p.elapsed >= 2*time.Second
	}) {
		t.Fatal("the page is not served by reviews v2 with the 2 s ratings delay within 20 s")
	}
	if p := fetchPage(t, anon, m.pageURL); p.elapsed < 2*time.Second || p.elapsed > 3*time.Second || strings.Contains(p.body, reviewsUnavailable) {
		t.Errorf("with the 2 s ratings delay the page took %v (want 2 s to 3 s) and must show reviews:\n%.2000s", p.elapsed, p.body)
	}

	applyAt(t, loomd, write("reviews-timeout.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
    timeout: 0.5s
`), "virtualservice.networking.istio.io/reviews ")
	if !poll(20*time.Second, func() bool { return strings.Contains(fetchPage(t, anon, m.pageURL).body, reviewsUnavailable) }) {
		t.Fatalf("the page does not say %q within 20 s of the 0.5 s timeout", reviewsUnavailable)
	}
	for i := range 3 {
		p := fetchPage(t, anon, m.pageURL)
		if !strings.Contains(p.body, reviewsUnavailable) {
			t.Errorf("request %d: the page does not say %q:\n%.2000s", i+1, reviewsUnavailable, p.body)
		}
		// Two tries of 0.5 s each: about 1 s, well under the 2 s delay.
		if p.elapsed < 900*time.Millisecond || p.elapsed > 1600*time.Millisecond {
			t.Errorf("request %d took %v, want about 1 s (two 0.5 s tries)", i+1, p.elapsed)
		}
	}
}

// flakyApp answers 503 to the first fails requests of each x-test-key and
// 200 afterwards, and counts the attempts per key.
type flakyApp struct {
	fails int
	mu    sync.Mutex
	seen  map[string]int
}

func (a *flakyApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("x-test-key")
	a.mu.Lock()
	a.seen[key]++
	n := a.seen[key]
	a.mu.Unlock()
	if n <= a.fails {
		http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ok after %d attempts\n", n)
}

func (a *flakyApp) attempts(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[key]
}

// TestRetries: an upstream that fails 2 of 3 attempts succeeds through the
// mesh with retries.attempts 3, and fails with attempts 1, as Istio's
// HTTPRetry says (attempts counts retries after the first try).
func TestRetries(t *testing.T) {
	app := &flakyApp{fails: 2, seen: map[string]int{}}
	m := startAppMesh(t, "127.46.0", []appWorkload{{Name: "flaky-v1", App: "flaky", Version: "v1", Octet: 11, Handler: app}}, "")
	hc := m.client(10 * time.Second)
	retries := func(attempts int) string {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: default}
spec:
  hosts: [flaky]
  http:
  - route: [{destination: {host: flaky}}]
    retries: {attempts: %d, retryOn: 5xx}
`, attempts)
	}
	get := func(key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://flaky:9080/", nil)
		req.Header.Set("x-test-key", key)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET flaky: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	m.apply(retries(3))
	for i := range 5 {
		key := fmt.Sprintf("three-%d", i)
		if code, body := get(key); code != http.StatusOK || app.attempts(key) != 3 {
			t.Errorf("attempts 3, call %d: %d %q after %d attempts at the app, want 200 after 3", i+1, code, body, app.attempts(key))
		}
	}

	m.apply(retries(1))
	for i := range 5 {
		key := fmt.Sprintf("one-%d", i)
		if code, _ := get(key); code != http.StatusServiceUnavailable || app.attempts(key) != 2 {
			t.Errorf("attempts 1, call %d: %d after %d attempts at the app, want 503 after 2", i+1, code, app.attempts(key))
		}
	}
}
