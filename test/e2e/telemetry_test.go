package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sleepOctet is a second caller beside the client, with its own sidecar.
const sleepOctet = 12

// callThrough sends GET path to httpbin through the sidecar at octet and
// fails t unless it answers 200.
func callThrough(t *testing.T, m *appMesh, octet int, path string) {
	t.Helper()
	proxy := &url.URL{Scheme: "http", Host: m.ip(octet) + ":15001"}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy), DisableKeepAlives: true}}
	resp, err := hc.Get("http://httpbin:9080" + path)
	if err != nil {
		t.Fatalf("GET %s via %s: %v", path, m.ip(octet), err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s via %s: %d", path, m.ip(octet), resp.StatusCode)
	}
}

func logHas(t *testing.T, m *appMesh, proxy, s string) bool {
	t.Helper()
	b, err := os.ReadFile(m.logPath(proxy))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), s)
}

// fileHasLine reports whether a line of the file at path contains every
// one of subs; false when the file cannot be read (yet).
func fileHasLine(path string, subs ...string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(l, s) }) {
			return true
		}
	}
	return false
}

// requestsTotal sums the source reporter's istio_requests_total on the
// proxy at ip (-1: the family is absent).
func requestsTotal(t *testing.T, ip string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":15090/stats/prometheus", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum, seen := 0.0, false
	for _, sm := range regexp.MustCompile(`(?m)^istio_requests_total\{[^}]*reporter="source"[^}]*\} (\S+)$`).FindAllSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(string(sm[1]), 64)
		sum, seen = sum+v, true
	}
	if !seen {
		return -1
	}
	return sum
}

// TestTelemetryPerWorkload: with the real binaries, access logs are JSON
// lines that parse and carry the response flags and the upstream host;
// a Telemetry that disables access logging and a metric for the client
// workload takes effect within seconds there, and only there: the sleep
// workload keeps logging and reporting.
func TestTelemetryPerWorkload(t *testing.T) {
	m := startAppMesh(t, "127.58.0", []appWorkload{
		{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: &nameApp{name: "httpbin-v1"}},
		{Name: "sleep", App: "sleep", Version: "v1", Octet: sleepOctet},
	}, "")
	m.setMeshConfig("accessLogEncoding: JSON\n")

	// JSON lines that parse, with the flags and the upstream host.
	callThrough(t, m, clientOctet, "/json-probe")
	var line map[string]any
	pollUntil(t, "a JSON access log line for /json-probe", func() bool {
		b, _ := os.ReadFile(m.logPath("client-proxy"))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "/json-probe") && json.Unmarshal([]byte(l), &line) == nil {
				return true
			}
		}
		return false
	})
	if line["response_code"] != float64(200) || line["upstream_host"] != m.ip(11)+":15006" || line["response_flags"] != "-" || line["path"] != "/json-probe" {
		t.Errorf("access log line %v: want response_code 200, upstream_host %s:15006 (httpbin's sidecar), response_flags \"-\" (Envoy's none)", line, m.ip(11))
	}

	before := requestsTotal(t, m.ip(clientOctet))
	if before < 0 {
		t.Fatalf("the client's proxy serves no istio_requests_total on 15090: the metric half would check nothing\n%s", m.tails())
	}
	applied := time.Now()
	m.applyFor(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: client-quiet, namespace: default}
spec:
  selector: {matchLabels: {app: client}}
  accessLogging: [{disabled: true}]
  metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]
`, "client")
	t.Logf("Telemetry applied and pushed in %v", time.Since(applied).Round(time.Millisecond))

	// Within seconds: a request from the client is no longer logged.
	var n int
	pollUntil(t, "the client's access log to stop", func() bool {
		n++
		p := fmt.Sprintf("/quiet-%d", n)
		callThrough(t, m, clientOctet, p)
		time.Sleep(300 * time.Millisecond) // the log flushes every 100ms; a line would be there
		return !logHas(t, m, "client-proxy", p)
	})
	t.Logf("access log off after %v", time.Since(applied).Round(time.Millisecond))
	base := requestsTotal(t, m.ip(clientOctet))
	sleepBase := requestsTotal(t, m.ip(sleepOctet))
	for i := range 5 {
		callThrough(t, m, clientOctet, fmt.Sprintf("/after-%d", i))
		callThrough(t, m, sleepOctet, fmt.Sprintf("/sleep-%d", i))
	}
	// Only there: sleep logs and counts its five; the client neither.
	pollUntil(t, "sleep's access log lines", func() bool {
		for i := range 5 {
			if !logHas(t, m, "sleep-proxy", fmt.Sprintf("/sleep-%d", i)) {
				return false
			}
		}
		return true
	})
	pollUntil(t, "sleep's istio_requests_total to count 5 more", func() bool {
		return requestsTotal(t, m.ip(sleepOctet)) == max(sleepBase, 0)+5
	})
	for i := range 5 {
		if logHas(t, m, "client-proxy", fmt.Sprintf("/after-%d", i)) {
			t.Errorf("the client's access log has /after-%d after the Telemetry disabled it", i)
		}
	}
	// Dropped: the series stops moving (or is no longer served).
	if got := requestsTotal(t, m.ip(clientOctet)); got > base {
		t.Errorf("the client's istio_requests_total moved from %v to %v after REQUEST_COUNT was disabled", base, got)
	}
}
