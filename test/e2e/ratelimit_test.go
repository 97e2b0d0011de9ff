package e2e

import (
	"net/http"
	"testing"
	"time"
)

// localRateLimitFilter is the EnvoyFilter of Istio's local rate limit task
// (tasks/policy-enforcement/rate-limit, "Local rate limit"), with its
// selector on the test's httpbin: a token bucket of 4 requests per minute
// on the workload's inbound side, enabled and enforced for every request.
const localRateLimitFilter = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-local-ratelimit-svc
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      app: httpbin
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: SIDECAR_INBOUND
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
              token_bucket:
                max_tokens: 4
                tokens_per_fill: 4
                fill_interval: 60s
              filter_enabled:
                runtime_key: local_rate_limit_enabled
                default_value:
                  numerator: 100
                  denominator: HUNDRED
              filter_enforced:
                runtime_key: local_rate_limit_enforced
                default_value:
                  numerator: 100
                  denominator: HUNDRED
              response_headers_to_add:
                - append: false
                  header:
                    key: x-local-rate-limit
                    value: 'true'
`

// TestLocalRateLimit: with the task's EnvoyFilter on httpbin's sidecar, 10
// quick requests through the client's sidecar give 4 answers from httpbin
// and 6 local 429s marked by the filter, and httpbin's sidecar logs them
// with response flag RL.
func TestLocalRateLimit(t *testing.T) {
	app := &nameApp{name: "httpbin-v1"}
	m := startAppMesh(t, "127.65.0", []appWorkload{{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: app}}, "")
	hc := m.client(10 * time.Second)
	if code, body, _ := getBody(t, hc, "http://httpbin:9080/get", nil); code != http.StatusOK || body != "httpbin-v1" {
		t.Fatalf("before the EnvoyFilter: %d %q, want 200 from httpbin-v1", code, body)
	}
	m.applyFor(localRateLimitFilter, "httpbin-v1")
	before := app.hits.Load()
	ok, limited := 0, 0
	for i := range 10 {
		code, body, hdr := getBody(t, hc, "http://httpbin:9080/get", nil)
		switch {
		case code == http.StatusOK && body == "httpbin-v1":
			ok++
		case code == http.StatusTooManyRequests && hdr.Get("x-local-rate-limit") == "true":
			limited++
		default:
			t.Errorf("request %d: %d %q (x-local-rate-limit %q), want 200 or a marked 429", i+1, code, body, hdr.Get("x-local-rate-limit"))
		}
	}
	if ok != 4 || limited != 6 {
		t.Errorf("10 requests against a bucket of 4: %d answered, %d limited; want 4 and 6", ok, limited)
	}
	if n := app.hits.Load() - before; n != 4 {
		t.Errorf("httpbin saw %d of the 10 requests, want 4", n)
	}
	if !poll(5*time.Second, func() bool { return countLogFlag(t, m.logPath("httpbin-v1-proxy"), "429 RL") == 6 }) {
		t.Errorf("httpbin's sidecar logged %d requests with 429 RL, want 6", countLogFlag(t, m.logPath("httpbin-v1-proxy"), "429 RL"))
	}
}
