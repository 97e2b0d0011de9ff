package accesslog

import (
	"net/http"
	"testing"
	"time"
)

func TestFormats(t *testing.T) {
	e := &Entry{StartTime: time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC), Method: "POST", Path: "/orig", RequestURI: "/a?b=1",
		Protocol: "HTTP/2", ResponseCode: 200, BytesReceived: 10, BytesSent: 20, Duration: 7 * time.Millisecond,
		UpstreamServiceTime: 5 * time.Millisecond, UserAgent: "ua", RequestID: "rid", Authority: "h:80",
		UpstreamHost: "10.0.0.1:80", DownstreamRemoteAddress: "10.0.0.2:5555",
		RequestHeader: http.Header{"X-User": {"u1"}, "X-Envoy-Original-Path": {"/orig"}}, ResponseHeader: http.Header{"X-Cache": {"hit"}}}
	tests := []struct{ format, want string }{
		{EnvoyDefaultFormat, `[2026-01-02T03:04:05.678Z] "POST /orig HTTP/2" 200 - 10 20 7 5 "-" "ua" "rid" "h:80" "10.0.0.1:80"` + "\n"},
		{`%REQ(X-USER)% %RESP(x-cache)% %REQ(:PATH)% %REQ(X-NONE?X-USER)% %REQ(USER-AGENT):1% 100%% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`,
			`u1 hit /a?b=1 u1 u 100% 10.0.0.2`},
		{`%START_TIME(%Y/%m/%d %H:%M:%S.%E3S)%`, `2026/01/02 03:04:05.05.678`},
	}
	for _, tt := range tests {
		f, err := ParseTextFormat(tt.format, FormatOptions{})
		if err != nil {
			t.Fatalf("%q: %v", tt.format, err)
		}
		if got := string(f.Append(nil, e)); got != tt.want {
			t.Errorf("%q:\n got %q\nwant %q", tt.format, got, tt.want)
		}
	}
	for _, bad := range []string{"%NOPE%", "%REQ%", "%REQ()%", "%START_TIME(%Q)%", "%DURATION(x)%", "100% done"} {
		if _, err := ParseTextFormat(bad, FormatOptions{}); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	if _, err := CompileFilter("response.code >="); err == nil {
		t.Error("a bad CEL expression compiles")
	}
	f, err := CompileFilter(`request.headers["x-user"] == "u1" && response.code == 200 && upstream.address == "10.0.0.1:80"`)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Match(e) {
		t.Error("filter does not match")
	}
}

// BenchmarkFormatText: one line of a custom text format: Envoy's default
// format with addresses, route and SNI (the parsed path, not AppendEntry).
func BenchmarkFormatText(b *testing.B) {
	f, err := ParseTextFormat(EnvoyDefaultFormat[:len(EnvoyDefaultFormat)-1]+
		` %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQUESTED_SERVER_NAME% %ROUTE_NAME%`+"\n",
		FormatOptions{})
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
