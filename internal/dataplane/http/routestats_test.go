package http_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/loom-mesh/loom/internal/dataplane/admin"
	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// scrapeRouteStats GETs the proxy's /stats/prometheus over a loopback
// socket and returns its envoy_vhost_route_* sample lines, sorted.
func scrapeRouteStats(t *testing.T, p *proxy) []string {
	t.Helper()
	srv := httptest.NewServer(admin.StatsHandler(p.metrics.Registry))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "envoy_vhost_route_") && !strings.Contains(l, "_bucket{") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// A route with a stat_prefix emits Envoy's route-level stats,
// vhost.<virtual host name>.route.<stat_prefix>.* (served as
// envoy_vhost_route_* with the envoy_virtual_host and envoy_route labels):
// upstream_rq_total per attempt, upstream_rq_completed and the response
// code and class per request, upstream_rq_time, and the retry counters.
// A route without one emits none.
func TestRouteStatPrefix(t *testing.T) {
	var flaky atomic.Int32
	be := startBackend(t, "be", false, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/slow"):
			<-r.Context().Done() // until the route timeout ends the request
		case strings.HasSuffix(r.URL.Path, "/fail"):
			w.WriteHeader(http.StatusServiceUnavailable)
		case strings.HasSuffix(r.URL.Path, "/flaky") && flaky.Add(1) == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			io.WriteString(w, "ok")
		}
	})
	named := withRetry(prefixRoute("named", "/a/", "be"), "5xx", 1)
	named.StatPrefix = "reviews-a"
	slow := withTimeout(prefixRoute("slow", "/slow", "be"), 50*time.Millisecond)
	slow.StatPrefix = "reviews-slow"
	ls := []*listenerv3.Listener{httpListener(t, "l", closedAddr(t), "rt")}
	rcs := []*routev3.RouteConfiguration{routeConfig("rt",
		vhost("reviews.default.svc.cluster.local:9080", []string{"reviews"}, named, slow,
			withRetry(prefixRoute("bare", "/", "be"), "5xx", 1)))}
	cs := []*clusterv3.Cluster{staticCluster(t, "be", false, be.addr)}

	p := startProxy(t, build(t, nil, ls, rcs, cs))
	// The proxy's main builds every generation with its metrics' handles.
	g, err := config.BuildWith(resources(ls, rcs, cs), nil, filter.Deps{RouteStats: p.metrics.RouteStats})
	if err != nil {
		t.Fatal(err)
	}
	p.apply(g)

	for _, path := range []string{"/a/ok", "/a/ok", "/a/fail", "/a/flaky", "/b/ok", "/b/fail", "/slow"} {
		p.do("GET", "reviews", path, nil, nil)
	}

	const l = `{envoy_route="reviews-a",envoy_virtual_host="reviews.default.svc.cluster.local:9080"}`
	lc := func(label, v string) string {
		return `{envoy_response_code` + label + `="` + v + `",envoy_route="reviews-a",envoy_virtual_host="reviews.default.svc.cluster.local:9080"}`
	}
	want := []string{
		// ok, ok, fail twice (one retry, then the limit), flaky twice.
		"envoy_vhost_route_upstream_rq" + lc("", "200") + " 3",
		"envoy_vhost_route_upstream_rq" + lc("", "503") + " 1",
		"envoy_vhost_route_upstream_rq_completed" + l + " 4",
		"envoy_vhost_route_upstream_rq_retry" + l + " 2",
		"envoy_vhost_route_upstream_rq_retry_limit_exceeded" + l + " 1",
		"envoy_vhost_route_upstream_rq_retry_overflow" + l + " 0",
		"envoy_vhost_route_upstream_rq_retry_success" + l + " 1",
		"envoy_vhost_route_upstream_rq_time_count" + l + " 4",
		"envoy_vhost_route_upstream_rq_time_sum" + l,
		"envoy_vhost_route_upstream_rq_timeout" + l + " 0",
		"envoy_vhost_route_upstream_rq_total" + l + " 6",
		"envoy_vhost_route_upstream_rq_xx" + lc("_class", "2xx") + " 3",
		"envoy_vhost_route_upstream_rq_xx" + lc("_class", "5xx") + " 1",
	}
	got := scrapeRouteStats(t, p)
	// upstream_rq_time_sum is a measured duration: compare its name only.
	for i, g := range got {
		if strings.HasPrefix(g, "envoy_vhost_route_upstream_rq_time_sum") {
			got[i], _, _ = strings.Cut(g, "} ")
			got[i] += "}"
		}
	}
	// The route timeout: Envoy's 504 local reply is the completion.
	const sl = `{envoy_route="reviews-slow",envoy_virtual_host="reviews.default.svc.cluster.local:9080"}`
	slc := func(label, v string) string {
		return `{envoy_response_code` + label + `="` + v + `",envoy_route="reviews-slow",envoy_virtual_host="reviews.default.svc.cluster.local:9080"}`
	}
	want = append(want,
		"envoy_vhost_route_upstream_rq"+slc("", "504")+" 1",
		"envoy_vhost_route_upstream_rq_completed"+sl+" 1",
		"envoy_vhost_route_upstream_rq_retry"+sl+" 0",
		"envoy_vhost_route_upstream_rq_retry_limit_exceeded"+sl+" 0",
		"envoy_vhost_route_upstream_rq_retry_overflow"+sl+" 0",
		"envoy_vhost_route_upstream_rq_retry_success"+sl+" 0",
		"envoy_vhost_route_upstream_rq_timeout"+sl+" 1",
		"envoy_vhost_route_upstream_rq_total"+sl+" 1",
		"envoy_vhost_route_upstream_rq_xx"+slc("_class", "5xx")+" 1",
	)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("/stats/prometheus route stats:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}
