package http_test

import (
	"testing"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	"github.com/loom-mesh/loom/internal/dataplane/config"
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
			benchProxyGET(b, func(g *config.Generation) {
				if tc.loggers == nil {
					return
				}
				for _, fc := range g.Listeners["l"].FilterChains {
					fc.AccessLogs = tc.loggers()
				}
			})
		})
	}
}
