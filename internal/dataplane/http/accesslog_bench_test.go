package http_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
)

// BenchmarkProxyHTTP1AccessLog is BenchmarkProxyHTTP1 with the chain's
// access logs varied: "none" has no access_log (the cost of the fields
// only access logs read must be gone), "text" Istio's default text line to
// the proxy's stdout log, "json" Istio's JSON line, "json-3filters" three
// JSON loggers, each behind a CEL filter, of which one logs.
func BenchmarkProxyHTTP1AccessLog(b *testing.B) {
	istioJSON := map[string]string{
		"start_time": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"protocol": "%PROTOCOL%", "response_code": "%RESPONSE_CODE%", "response_flags": "%RESPONSE_FLAGS%",
		"bytes_received": "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%", "duration": "%DURATION%",
		"upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
		"user_agent": "%REQ(USER-AGENT)%", "request_id": "%REQ(X-REQUEST-ID)%", "authority": "%REQ(:AUTHORITY)%",
		"upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
		"downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%", "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
		"route_name": "%ROUTE_NAME%",
	}
	jsonFormat := func() *accesslog.Formatter {
		f, err := accesslog.ParseJSONFormat(istioJSON, accesslog.FormatOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return f
	}
	filter := func(expr string) *accesslog.Filter {
		f, err := accesslog.CompileFilter(expr)
		if err != nil {
			b.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name    string
		loggers func() []*accesslog.AccessLogger // nil: logEveryChain's text line
	}{
		{"none", func() []*accesslog.AccessLogger { return []*accesslog.AccessLogger{} }},
		{"text", nil},
		{"json", func() []*accesslog.AccessLogger {
			return []*accesslog.AccessLogger{{Path: "/dev/stdout", Format: jsonFormat()}}
		}},
		{"json-3filters", func() []*accesslog.AccessLogger {
			return []*accesslog.AccessLogger{
				{Path: "/dev/stdout", Format: jsonFormat(), Filter: filter(`response.code >= 400`)},
				{Path: "/dev/stdout", Format: jsonFormat(), Filter: filter(`request.headers["x-debug"] == "1"`)},
				{Path: "/dev/stdout", Format: jsonFormat(), Filter: filter(`xds.cluster_name == "up" && request.url_path == "/bench"`)},
			}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			body := strings.Repeat("x", 1024)
			up := startBackend(b, "up", false, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1024")
				io.WriteString(w, body)
			})
			lAddr := closedAddr(b)
			g := build(b, nil,
				[]*listenerv3.Listener{httpListener(b, "l", lAddr, "rt")},
				[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "up")))},
				[]*clusterv3.Cluster{staticCluster(b, "up", false, up.addr)})
			if tc.loggers != nil {
				for _, fc := range g.Listeners["l"].FilterChains {
					fc.AccessLogs = tc.loggers()
				}
			}
			p := startProxy(b, g)
			req, err := http.NewRequest("GET", "http://"+lAddr+"/bench", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Host = "svc"
			benchGets(b, p.client, req)
		})
	}
}
