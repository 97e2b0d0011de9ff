package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil"
)

// rateLimitArgs start loomd's rate limit service on the mesh's loomd
// address, port 8081, with the Redis at redisAddr and, when not "", the
// service config file.
func rateLimitArgs(prefix, redisAddr, configFile string) []string {
	args := []string{"--ratelimit-addr", prefix + ".1:8081", "--ratelimit-redis", redisAddr}
	if configFile != "" {
		args = append(args, "--ratelimit-config", configFile)
	}
	return args
}

// awayFromWindowEnd waits, when the current window of unit (a fixed
// window of the rate limit service) ends within margin, until the next
// one starts, so that a test's requests all fall in one window.
func awayFromWindowEnd(t *testing.T, unit, margin time.Duration) {
	t.Helper()
	now := time.Now()
	if left := now.Truncate(unit).Add(unit).Sub(now); left < margin {
		t.Logf("waiting %v for the next rate limit window", left)
		<-time.After(left + 100*time.Millisecond)
	}
}

// globalPolicy limits httpbin to 10 requests per hour, counted by loomd's
// rate limit service for every replica together.
const globalPolicy = `apiVersion: loom.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: httpbin-global, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  limits:
  - requestsPerUnit: 10
    unit: hour
    scope: global
`

// TestGlobalRateLimitTwoReplicas: a RateLimitPolicy of scope global on a
// service with two replicas (two sidecars): 30 requests spread over both
// replicas by the client's sidecar, and exactly 10 pass in the window; each
// replica's sidecar refuses some with 429 and the flag RL, and X-RateLimit
// headers report the shared count.
func TestGlobalRateLimitTwoReplicas(t *testing.T) {
	rd := testutil.StartRedis(t)
	const prefix = "127.66.0"
	v1, v2 := &nameApp{name: "httpbin-v1"}, &nameApp{name: "httpbin-v2"}
	m := startAppMeshArgs(t, prefix, []appWorkload{
		{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: v1},
		{Name: "httpbin-v2", App: "httpbin", Version: "v2", Octet: 12, Handler: v2},
	}, "", rateLimitArgs(prefix, rd.Addr, "")...)
	m.applyFor(globalPolicy, "httpbin-v1", "httpbin-v2")
	awayFromWindowEnd(t, time.Hour, 30*time.Second)

	hc := m.client(10 * time.Second)
	ok, limited := 0, 0
	var lastRemaining string
	for i := range 30 {
		code, _, hdr := getBody(t, hc, "http://httpbin:9080/get", nil)
		switch code {
		case http.StatusOK:
			ok++
			lastRemaining = hdr.Get("X-Ratelimit-Remaining")
		case http.StatusTooManyRequests:
			limited++
			if hdr.Get("X-Envoy-Ratelimited") != "true" {
				t.Errorf("request %d: 429 without x-envoy-ratelimited", i+1)
			}
		default:
			t.Errorf("request %d: status %d, want 200 or 429", i+1, code)
		}
	}
	if ok != 10 || limited != 20 {
		t.Errorf("30 requests against a shared limit of 10: %d passed, %d limited; want 10 and 20", ok, limited)
	}
	if lastRemaining != "0" {
		t.Errorf("the 10th allowed request's X-RateLimit-Remaining = %q, want 0", lastRemaining)
	}
	h1, h2 := v1.hits.Load(), v2.hits.Load()
	if h1+h2 != 10 || h1 == 0 || h2 == 0 {
		t.Errorf("replicas served %d and %d requests, want 10 in all, some on each", h1, h2)
	}
	rl1 := func() int { return countLogFlag(t, m.logPath("httpbin-v1-proxy"), " 429 RL ") }
	rl2 := func() int { return countLogFlag(t, m.logPath("httpbin-v2-proxy"), " 429 RL ") }
	if !poll(5*time.Second, func() bool { return rl1()+rl2() == 20 }) || rl1() == 0 || rl2() == 0 {
		t.Errorf("the replicas' sidecars logged %d and %d requests with 429 RL, want 20 in all, some on each", rl1(), rl2())
	}
}

// localPolicy limits httpbin's /limited to 3 requests per minute in each
// proxy, and /users to 2 per minute for each value of x-user.
const localPolicy = `apiVersion: loom.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: httpbin-local, namespace: default}
spec:
  selector: {matchLabels: {app: httpbin}}
  limits:
  - match: {path: {prefix: /limited}}
    requestsPerUnit: 3
    unit: minute
  - match: {path: {prefix: /users}, header: x-user}
    requestsPerUnit: 2
    unit: minute
`

// TestRateLimitPolicyLocal: a RateLimitPolicy of scope local: a token
// bucket of the path's, one per header value, and other paths and
// requests without the header are not limited.
func TestRateLimitPolicyLocal(t *testing.T) {
	const prefix = "127.67.0"
	m := startAppMesh(t, prefix, []appWorkload{{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: &nameApp{name: "httpbin-v1"}}}, "")
	m.applyFor(localPolicy, "httpbin-v1")
	hc := m.client(10 * time.Second)
	passed := func(path string, n int, hdr map[string]string) int {
		ok := 0
		for range n {
			code, _, _ := getBody(t, hc, "http://httpbin:9080"+path, hdr)
			switch code {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("GET %s: %d, want 200 or 429", path, code)
			}
		}
		return ok
	}
	for _, tc := range []struct {
		path string
		hdr  map[string]string
		n    int
		want int
	}{
		{"/limited/a", nil, 5, 3},
		{"/other", nil, 6, 6},
		{"/users", map[string]string{"x-user": "alice"}, 4, 2},
		{"/users", map[string]string{"x-user": "bob"}, 4, 2},
		{"/users", nil, 5, 5},
	} {
		if got := passed(tc.path, tc.n, tc.hdr); got != tc.want {
			t.Errorf("%d requests to %s %v: %d passed, want %d", tc.n, tc.path, tc.hdr, got, tc.want)
		}
	}
	if !poll(5*time.Second, func() bool { return countLogFlag(t, m.logPath("httpbin-v1-proxy"), " 429 RL ") == 6 }) {
		t.Errorf("httpbin's sidecar logged %d requests with 429 RL, want 6", countLogFlag(t, m.logPath("httpbin-v1-proxy"), " 429 RL "))
	}
}

// istioSampleConfig is the rate limit service config of Istio's global
// rate limit task: 1 request per minute to /productpage, 100 to any other
// path.
const istioSampleConfig = `domain: productpage-ratelimit
descriptors:
  - key: PATH
    value: "/productpage"
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: PATH
    rate_limit:
      unit: minute
      requests_per_unit: 100
`

// sampleGateway routes the ingress gateway to productpage, and registers
// the rate limit service as ratelimit.default.svc.cluster.local:8081 at
// loomd's address (no sidecar), the name the sample's cluster resolves.
func sampleGateway(prefix string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - route: [{destination: {host: productpage.default.svc.cluster.local, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratelimit, namespace: default}
spec:
  hosts: [ratelimit.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8081, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: ratelimit}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratelimit, namespace: default}
spec:
  address: %s.1
  labels: {app: ratelimit}
`, prefix)
}

// TestIstioGlobalRateLimitSample: Istio's productpage_envoy_ratelimit.yaml,
// unchanged, on an ingress gateway, with the task's service config in
// loomd's rate limit service: /productpage passes once per minute, then
// 429 with the flag RL; other paths pass. With Redis down the sample's
// failure_mode_deny answers 500 with the flag RLSE, and limiting resumes
// when Redis is back.
func TestIstioGlobalRateLimitSample(t *testing.T) {
	rd := testutil.StartRedis(t)
	const prefix = "127.68.0"
	cfgFile := filepath.Join(t.TempDir(), "ratelimit.yaml")
	if err := os.WriteFile(cfgFile, []byte(istioSampleConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	pp := &nameApp{name: "productpage-v1"}
	m := startAppMeshArgs(t, prefix, []appWorkload{
		{Name: "productpage-v1", App: "productpage", Version: "v1", Octet: 11, Handler: pp},
		{Name: "istio-ingressgateway", App: "istio-ingressgateway", Octet: 10, Gateway: true},
	}, sampleGateway(prefix), rateLimitArgs(prefix, rd.Addr, cfgFile)...)
	sample, err := os.ReadFile(filepath.Join(samplesDir, "..", "policy", "productpage_envoy_ratelimit.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m.applyFor(string(sample), "istio-ingressgateway")
	awayFromWindowEnd(t, time.Minute, 15*time.Second)

	hc := &http.Client{Timeout: 15 * time.Second}
	gw := "http://" + m.ip(10) + ":8080"
	get := func(path string) int {
		code, _, _ := getBody(t, hc, gw+path, nil)
		return code
	}
	codes := []int{get("/productpage"), get("/productpage"), get("/productpage"), get("/api/v1/products")}
	if want := []int{200, 429, 429, 200}; fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("/productpage x3, /api/v1/products: %v, want %v", codes, want)
	}
	gwLog := m.logPath("istio-ingressgateway-proxy")
	if !poll(5*time.Second, func() bool { return countLogFlag(t, gwLog, " 429 RL request_rate_limited ") == 2 }) {
		t.Errorf("the gateway logged %d requests with 429 RL, want 2", countLogFlag(t, gwLog, " 429 RL request_rate_limited "))
	}

	rd.Stop()
	if code := get("/api/v1/products"); code != http.StatusInternalServerError {
		t.Errorf("with Redis down: %d, want 500 (failure_mode_deny)", code)
	}
	if !poll(5*time.Second, func() bool { return countLogFlag(t, gwLog, " 500 RLSE rate_limiter_error ") == 1 }) {
		t.Errorf("the gateway logged %d requests with 500 RLSE, want 1", countLogFlag(t, gwLog, " 500 RLSE rate_limiter_error "))
	}
	rd.Start()
	if !poll(10*time.Second, func() bool { return get("/api/v1/products") == http.StatusOK }) {
		t.Fatal("requests do not pass again after Redis is back")
	}
	if code := get("/productpage"); code != http.StatusOK {
		t.Errorf("/productpage with fresh counters: %d, want 200", code)
	}
}
