package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil/promtest"
)

// nameApp answers every request with its own name after delay, and can be
// told to fail with status.
type nameApp struct {
	name   string
	delay  atomic.Int64 // time.Duration
	status atomic.Int32 // 0: 200
	hits   atomic.Int64
	// hosts records the Host of every request, for mirroring.
	mu    sync.Mutex
	hosts []string
}

func (a *nameApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.hits.Add(1)
	a.mu.Lock()
	a.hosts = append(a.hosts, r.Host)
	a.mu.Unlock()
	if d := time.Duration(a.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if s := a.status.Load(); s != 0 {
		http.Error(w, a.name+" failing on purpose", int(s))
		return
	}
	fmt.Fprintln(w, a.name)
}

func (a *nameApp) seenHosts() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.hosts...)
}

// getBody does one GET through hc and returns the status, body and
// headers; a transport error fails the test.
func getBody(t *testing.T, hc *http.Client, url string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), resp.Header
}

// TestCircuitBreaking follows Istio's circuit-breaking task: the httpbin
// DestinationRule with maxConnections 1 and http1MaxPendingRequests 1,
// loaded by 3 concurrent connections making 30 requests. Some calls fail
// with 503 and response flag UO; the client sidecar's stats count them.
// httpbin's sidecar applies the same pool to its inbound cluster: the
// burst sent to it directly overflows there too.
func TestCircuitBreaking(t *testing.T) {
	app := &nameApp{name: "httpbin-v1"}
	app.delay.Store(int64(20 * time.Millisecond))
	m := startAppMesh(t, "127.47.0", []appWorkload{{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: app}}, "")
	// The task's DestinationRule, unchanged.
	m.apply(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
`)
	ok, overflow, other := circuitBurst(t, func() *http.Client { return m.client(10 * time.Second) }, "http://httpbin:9080/get",
		func(resp *http.Response) bool { return resp.StatusCode == http.StatusOK })
	t.Logf("30 requests on 3 connections: %d 200, %d 503 overflow, %d other", ok, overflow, other)
	if ok == 0 || overflow == 0 || other != 0 {
		t.Fatalf("want some 200s, some 503s marked x-envoy-overloaded, and nothing else")
	}
	// The access log says UO for each, and the stats count them.
	if !poll(5*time.Second, func() bool { return countLogFlag(t, m.logPath("client-proxy"), "503 UO") == int(overflow) }) {
		t.Errorf("the client sidecar's access log has %d lines with 503 UO, want %d", countLogFlag(t, m.logPath("client-proxy"), "503 UO"), overflow)
	}
	if n := statValue(t, m.ip(clientOctet), "envoy_cluster_upstream_rq_pending_overflow", "outbound|9080||httpbin.default.svc.cluster.local"); n != float64(overflow) {
		t.Errorf("envoy_cluster_upstream_rq_pending_overflow = %v, want %d", n, overflow)
	}

	// The server side has the same limits, as in Istio (buildInboundCluster
	// applies the service's DestinationRule pool to the inbound cluster):
	// the same burst sent straight to httpbin's sidecar, past the client's
	// limits, overflows there.
	const inbound = "inbound|9080||"
	before := max(statValue(t, m.ip(11), "envoy_cluster_upstream_rq_pending_overflow", inbound), 0)
	direct := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: hostTransport{host: "httpbin.default.svc.cluster.local:9080", rt: &http.Transport{}}}
	}
	ok, overflow, other = circuitBurst(t, direct, "http://"+m.ip(11)+":15006/get", func(resp *http.Response) bool { return resp.StatusCode == http.StatusOK })
	t.Logf("30 requests on 3 connections to httpbin's sidecar: %d 200, %d 503 overflow, %d other", ok, overflow, other)
	if ok == 0 || overflow == 0 || other != 0 {
		t.Fatalf("want some 200s, some 503s marked x-envoy-overloaded by httpbin's sidecar, and nothing else")
	}
	if n := statValue(t, m.ip(11), "envoy_cluster_upstream_rq_pending_overflow", inbound) - before; n != float64(overflow) {
		t.Errorf("httpbin's sidecar: envoy_cluster_upstream_rq_pending_overflow{%s} grew by %v, want %d", inbound, n, overflow)
	}
}

// hostTransport sends every request through rt with Host host.
type hostTransport struct {
	host string
	rt   http.RoundTripper
}

func (h hostTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = h.host
	return h.rt.RoundTrip(r)
}

// circuitBurst is the load of Istio's circuit-breaking task: 3 clients
// (client makes each) send 10 GETs to url each, at once. A response is ok
// when isOK says so, an overflow when it is a 503 marked
// x-envoy-overloaded, other otherwise (logged, as are errors).
func circuitBurst(t *testing.T, client func() *http.Client, url string, isOK func(*http.Response) bool) (ok, overflow, other int32) {
	var okN, overflowN, otherN atomic.Int32
	var wg sync.WaitGroup
	for range 3 {
		hc := client()
		wg.Go(func() {
			for range 10 {
				resp, err := hc.Get(url)
				if err != nil {
					t.Logf("GET %s: %v", url, err)
					otherN.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case isOK(resp):
					okN.Add(1)
				case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("x-envoy-overloaded") == "true":
					overflowN.Add(1)
				default:
					t.Logf("GET %s: %d %s, x-envoy-overloaded %q", url, resp.StatusCode, resp.Proto, resp.Header.Get("x-envoy-overloaded"))
					otherN.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return okN.Load(), overflowN.Load(), otherN.Load()
}

// TestMirroring follows Istio's mirroring task: v1 serves, v2 receives a
// copy of every request with the Host suffixed "-shadow", and v2 being
// slow or failing changes nothing for the caller.
func TestMirroring(t *testing.T) {
	v1 := &nameApp{name: "httpbin-v1"}
	v2 := &nameApp{name: "httpbin-v2"}
	m := startAppMesh(t, "127.48.0", []appWorkload{
		{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: v1},
		{Name: "httpbin-v2", App: "httpbin", Version: "v2", Octet: 12, Handler: v2},
	}, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`)
	// The task's VirtualService, unchanged.
	m.apply(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
      weight: 100
    mirror:
      host: httpbin
      subset: v2
    mirrorPercentage:
      value: 100.0
`)
	hc := m.client(10 * time.Second)
	for i := range 20 {
		if code, body, _ := getBody(t, hc, "http://httpbin:9080/headers", nil); code != 200 || body != "httpbin-v1" {
			t.Fatalf("request %d: %d %q, want 200 from httpbin-v1", i+1, code, body)
		}
	}
	if !poll(5*time.Second, func() bool { return v2.hits.Load() == 20 }) {
		t.Fatalf("v2 received %d mirrored copies of 20 requests", v2.hits.Load())
	}
	for _, h := range v2.seenHosts() {
		if h != "httpbin-shadow:9080" {
			t.Fatalf("a mirrored copy had Host %q, want httpbin-shadow:9080", h)
		}
	}

	// v2 slow: the primary does not wait for the copy.
	v2.delay.Store(int64(2 * time.Second))
	for i := range 5 {
		start := time.Now()
		code, body, _ := getBody(t, hc, "http://httpbin:9080/headers", nil)
		if d := time.Since(start); code != 200 || body != "httpbin-v1" || d > 500*time.Millisecond {
			t.Errorf("request %d with a 2 s mirror: %d %q in %v, want 200 from v1 well under 2 s", i+1, code, body, d)
		}
	}
	// v2 failing: the primary's status is v1's.
	v2.delay.Store(0)
	v2.status.Store(http.StatusInternalServerError)
	for i := range 5 {
		if code, body, _ := getBody(t, hc, "http://httpbin:9080/headers", nil); code != 200 || body != "httpbin-v1" {
			t.Errorf("request %d with a failing mirror: %d %q, want 200 from httpbin-v1", i+1, code, body)
		}
	}
}

// TestOutlierDetection: of three endpoints one answers 500. Outlier
// detection ejects it, after which at least 99 % of calls succeed; once it
// is healthy again it gets traffic back after baseEjectionTime.
func TestOutlierDetection(t *testing.T) {
	apps := []*nameApp{{name: "echo-a"}, {name: "echo-b"}, {name: "echo-c"}}
	var ws []appWorkload
	for i, a := range apps {
		ws = append(ws, appWorkload{Name: a.name, App: "echo", Version: "v1", Octet: 11 + i, Handler: a})
	}
	bad := apps[2]
	bad.status.Store(http.StatusInternalServerError)
	m := startAppMesh(t, "127.49.0", ws, "")
	m.apply(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
spec:
  host: echo
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 3s
      maxEjectionPercent: 100
`)
	hc := m.client(10 * time.Second)
	// Until the bad endpoint has failed 3 times in a row it is picked in
	// turn; 30 calls are plenty.
	for range 30 {
		getBody(t, hc, "http://echo:9080/", nil)
	}
	hitsAtEjection := bad.hits.Load()
	okCount := 0
	for range 200 {
		if code, _, _ := getBody(t, hc, "http://echo:9080/", nil); code == 200 {
			okCount++
		}
	}
	if okCount < 198 {
		t.Errorf("after ejection %d of 200 calls succeeded, want ≥ 99 %%", okCount)
	}
	if n := bad.hits.Load() - hitsAtEjection; n > 2 {
		t.Errorf("the ejected endpoint got %d of 200 calls", n)
	}
	// The client's proxy says so on its Prometheus endpoint, in Envoy's
	// cluster stats: one host ejected now, at least one ejection so far.
	statsURL := fmt.Sprintf("http://%s:15090/stats/prometheus", m.ip(clientOctet))
	echoCluster := map[string]string{"cluster_name": "outbound|9080||echo.default.svc.cluster.local"}
	ejections := func() (active, enforced float64) {
		fams, err := promtest.Scrape(statsURL)
		if err != nil {
			t.Fatal(err)
		}
		active, _ = fams.Value("envoy_cluster_outlier_detection_ejections_active", echoCluster)
		enforced, _ = fams.Value("envoy_cluster_outlier_detection_ejections_enforced_total", echoCluster)
		return active, enforced
	}
	if active, enforced := ejections(); active != 1 || enforced < 1 {
		t.Errorf("while the bad endpoint is out: ejections_active %v, ejections_enforced_total %v; want 1 and at least 1", active, enforced)
	}
	// Healthy again: it is back within baseEjectionTime (3 s) plus an
	// interval.
	bad.status.Store(0)
	before := bad.hits.Load()
	if !poll(8*time.Second, func() bool {
		getBody(t, hc, "http://echo:9080/", nil)
		return bad.hits.Load() > before
	}) {
		t.Fatal("the ejected endpoint got no traffic 8 s after it became healthy (baseEjectionTime 3 s)")
	}
	if active, _ := ejections(); active != 0 {
		t.Errorf("the endpoint is back but ejections_active is %v", active)
	}
}

// TestConsistentHash: with consistentHash on a header, one header value
// always reaches the same endpoint; with an httpCookie policy with a ttl,
// the proxy sets the cookie, with the policy's attributes, and the cookie
// keeps the client on one endpoint.
func TestConsistentHash(t *testing.T) {
	apps := []*nameApp{{name: "echo-a"}, {name: "echo-b"}, {name: "echo-c"}}
	var ws []appWorkload
	for i, a := range apps {
		ws = append(ws, appWorkload{Name: a.name, App: "echo", Version: "v1", Octet: 11 + i, Handler: a})
	}
	m := startAppMesh(t, "127.50.0", ws, "")
	hc := m.client(10 * time.Second)
	m.apply(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
spec:
  host: echo
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
`)
	seen := map[string]bool{}
	for u := range 10 {
		user := "user-" + strconv.Itoa(u)
		first := ""
		for i := range 100 {
			code, body, _ := getBody(t, hc, "http://echo:9080/", map[string]string{"x-user": user})
			if code != 200 {
				t.Fatalf("%s request %d: %d", user, i, code)
			}
			if first == "" {
				first = body
			} else if body != first {
				t.Fatalf("%s reached %s and then %s: want one endpoint for one header value", user, first, body)
			}
		}
		seen[first] = true
	}
	if len(seen) < 2 {
		t.Errorf("10 header values all reached %v: the hash does not spread", seen)
	}

	m.apply(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
spec:
  host: echo
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: loom-affinity
          ttl: 60s
          attributes: [{name: SameSite, value: Strict}]
`)
	code, first, hdr := getBody(t, hc, "http://echo:9080/", nil)
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: hdr}).Cookies() {
		if c.Name == "loom-affinity" {
			cookie = c
		}
	}
	if code != 200 || cookie == nil || cookie.Value == "" || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("first request: %d, Set-Cookie %q: want 200 and a loom-affinity cookie with SameSite=Strict", code, hdr.Values("Set-Cookie"))
	}
	for i := range 50 {
		_, body, _ := getBody(t, hc, "http://echo:9080/", map[string]string{"Cookie": "loom-affinity=" + cookie.Value})
		if body != first {
			t.Fatalf("request %d with the cookie reached %s, want %s", i+1, body, first)
		}
	}
}

// logPath is the log file of the named process of the mesh.
func (m *appMesh) logPath(name string) string { return filepath.Join(m.logsDir, name+".log") }

// countLogFlag counts the lines of a proxy's log that contain s.
func countLogFlag(t *testing.T, path, s string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// statValue reads one metric of a proxy's /stats/prometheus (admin on
// IP:15000) for a cluster; -1 when it is not there.
func statValue(t *testing.T, ip, name, cluster string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":15000/stats/prometheus", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{[^}]*cluster_name="` + regexp.QuoteMeta(cluster) + `"[^}]*\} (\S+)$`)
	sm := re.FindSubmatch(body)
	if sm == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(sm[1]), 64)
	return v
}
