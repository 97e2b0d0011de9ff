package accesslog

import (
	"net/http"
	"testing"
	"time"
)

func filterEntry() *Entry {
	return &Entry{StartTime: time.Unix(1700000000, 0), Method: "POST", RequestURI: "/a/b?x=1", Authority: "svc:80",
		Protocol: "HTTP/1.1", ResponseCode: 503, ResponseFlags: "UF,URX", ResponseCodeDetails: "upstream_reset",
		BytesReceived: 10, BytesSent: 20, Duration: 1500 * time.Millisecond, UserAgent: "curl", RequestID: "rid",
		UpstreamHost: "10.0.0.1:8080", UpstreamCluster: "outbound|80||svc", RouteName: "default",
		DownstreamRemoteAddress: "10.0.0.2:5555", DownstreamLocalAddress: "10.0.0.3:80", RequestedServerName: "svc.example",
		RequestHeader: http.Header{"X-User": {"u1"}}, ResponseHeader: http.Header{"X-Cache": {"hit"}}}
}

// TestFilterAttributes: every attribute the filter environment declares,
// with Envoy's names and types, reads the entry's value.
func TestFilterAttributes(t *testing.T) {
	e := filterEntry()
	for _, expr := range []string{
		`request.path == "/a/b?x=1" && request.url_path == "/a/b" && request.host == "svc:80"`,
		`request.scheme == "https" && request.method == "POST" && request.headers["x-user"] == "u1"`,
		`request.useragent == "curl" && request.id == "rid" && request.protocol == "HTTP/1.1"`,
		`request.duration == duration("1.5s") && request.size == 10 && request.time == timestamp("2023-11-14T22:13:20Z")`,
		`response.code == 503 && response.code_details == "upstream_reset" && response.flags == "UF,URX"`,
		`response.headers["x-cache"] == "hit" && response.size == 20`,
		`source.address == "10.0.0.2:5555" && source.port == 5555 && destination.port == 80`,
		`upstream.address == "10.0.0.1:8080" && upstream.port == 8080`,
		`connection.requested_server_name == "svc.example"`,
		`xds.cluster_name == "outbound|80||svc" && xds.route_name == "default"`,
	} {
		f, err := CompileFilter(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if !f.Match(e) {
			t.Errorf("%s: no match", expr)
		}
	}
	for _, expr := range []string{`response.code == 200`, `request.headers["x-none"] == "a"`, `response.code`} {
		f, err := CompileFilter(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if f.Match(e) {
			t.Errorf("%s: matches", expr)
		}
	}
}

// TestActivationSharedAndLazy: filters of one request share one
// Activation; a variable's map is built only when an expression reads it,
// once.
func TestActivationSharedAndLazy(t *testing.T) {
	e := filterEntry()
	code, _ := CompileFilter(`response.code >= 500`)
	hdr, _ := CompileFilter(`request.headers["x-user"] == "u1"`)
	a := NewActivation(e)
	if !code.MatchIn(a) {
		t.Fatal("response.code >= 500 does not match")
	}
	if a.vars[varRequest] != nil || a.vars[varResponse] == nil {
		t.Fatalf("after a response-only filter: request built %v, response built %v", a.vars[varRequest] != nil, a.vars[varResponse] != nil)
	}
	resp := a.vars[varResponse]
	if !hdr.MatchIn(a) || !code.MatchIn(a) {
		t.Fatal("filters on a shared activation do not match")
	}
	if a.vars[varRequest] == nil {
		t.Fatal("request not built by a filter reading it")
	}
	resp["code"] = int64(200) // the kept map is what the next filter reads
	if code.MatchIn(a) {
		t.Fatal("the response map was rebuilt instead of shared")
	}
}

// BenchmarkFilters: one request through the filters of three access
// loggers (Sinks.Log's loop), each reading other attributes.
func BenchmarkFilters(b *testing.B) {
	e := filterEntry()
	var fs []*Filter
	for _, expr := range []string{`response.code >= 400`, `request.headers["x-user"] == "u1"`, `xds.cluster_name != ""`} {
		f, err := CompileFilter(expr)
		if err != nil {
			b.Fatal(err)
		}
		fs = append(fs, f)
	}
	b.ReportAllocs()
	for b.Loop() {
		a := NewActivation(e)
		for _, f := range fs {
			if !f.MatchIn(a) {
				b.Fatal("no match")
			}
		}
	}
}

// BenchmarkFormatJSON: one line of Istio's default JSON access log
// format (translate.IstioJSONLogFormat's fields).
func BenchmarkFormatJSON(b *testing.B) {
	f, err := ParseJSONFormat(map[string]string{
		"start_time": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"protocol": "%PROTOCOL%", "response_code": "%RESPONSE_CODE%", "response_flags": "%RESPONSE_FLAGS%",
		"response_code_details": "%RESPONSE_CODE_DETAILS%", "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
		"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%", "bytes_received": "%BYTES_RECEIVED%",
		"bytes_sent": "%BYTES_SENT%", "duration": "%DURATION%", "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
		"x_forwarded_for": "%REQ(X-FORWARDED-FOR)%", "user_agent": "%REQ(USER-AGENT)%", "request_id": "%REQ(X-REQUEST-ID)%",
		"authority": "%REQ(:AUTHORITY)%", "upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
		"upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%", "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
		"downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%", "requested_server_name": "%REQUESTED_SERVER_NAME%",
		"route_name": "%ROUTE_NAME%",
	}, FormatOptions{})
	if err != nil {
		b.Fatal(err)
	}
	e := filterEntry()
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0], e)
	}
}
