package e2e

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// routeStatLines scrapes the admin /stats/prometheus of the proxy at ip and
// returns its envoy_vhost_route_* counter lines (not upstream_rq_time), sorted.
func routeStatLines(t *testing.T, ip string) []string {
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
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "envoy_vhost_route_") && !strings.HasPrefix(l, "envoy_vhost_route_upstream_rq_time_") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// TestVirtualServiceStatPrefix: a VirtualService match's statPrefix names
// the route-level stats (Envoy's vhost.<vhost>.route.<statPrefix>.*) the
// client's sidecar emits for the route that match became, and only for
// it: its sibling match and the next http route have none. Once the
// statPrefix is gone from the config, so are its series.
func TestVirtualServiceStatPrefix(t *testing.T) {
	app := &nameApp{name: "httpbin-v1"}
	m := startAppMesh(t, "127.95.0", []appWorkload{{Name: "httpbin-v1", App: "httpbin", Version: "v1", Octet: 11, Handler: app}}, "")
	m.apply(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - httpbin
  http:
  - match:
    - uri:
        prefix: /status
      statPrefix: httpbin-status
    - uri:
        prefix: /headers
    route:
    - destination:
        host: httpbin
  - route:
    - destination:
        host: httpbin
`)
	hc := m.client(10 * time.Second)
	for _, path := range []string{"/status/1", "/status/2", "/status/3", "/headers", "/get"} {
		if code, body, _ := getBody(t, hc, "http://httpbin:9080"+path, nil); code != http.StatusOK {
			t.Fatalf("GET %s: %d %s\n%s", path, code, body, m.tails())
		}
	}
	const l = `envoy_route="httpbin-status",envoy_virtual_host="httpbin.default.svc.cluster.local:9080"}`
	want := []string{
		`envoy_vhost_route_upstream_rq_completed{` + l + ` 3`,
		`envoy_vhost_route_upstream_rq_retry_limit_exceeded{` + l + ` 0`,
		`envoy_vhost_route_upstream_rq_retry_overflow{` + l + ` 0`,
		`envoy_vhost_route_upstream_rq_retry_success{` + l + ` 0`,
		`envoy_vhost_route_upstream_rq_retry{` + l + ` 0`,
		`envoy_vhost_route_upstream_rq_timeout{` + l + ` 0`,
		`envoy_vhost_route_upstream_rq_total{` + l + ` 3`,
		`envoy_vhost_route_upstream_rq_xx{envoy_response_code_class="2xx",` + l + ` 3`,
		`envoy_vhost_route_upstream_rq{envoy_response_code="200",` + l + ` 3`,
	}
	slices.Sort(want)
	// The counts are made before the response is written: no wait needed.
	if got := routeStatLines(t, m.ip(clientOctet)); !slices.Equal(got, want) {
		t.Errorf("client sidecar's route stats:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// The statPrefix removed, its route's series go with it.
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
`)
	if got := routeStatLines(t, m.ip(clientOctet)); len(got) != 0 {
		t.Errorf("route stats after the statPrefix was removed:\n%s", strings.Join(got, "\n"))
	}
}
