package http_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
)

// TestAccessLogJSONFields: through a real proxy, a JSON access log with
// omit_empty_values writes the fields only access logs read (filled only
// when a logger is attached) as the request arrived: X-Forwarded-For
// before the proxy appends to it, the user agent, X-Envoy-Original-Path
// over :path, the protocol, both downstream addresses; an empty operator
// leaves its key out. Of two CEL-filtered loggers sharing the request's
// attributes, only the one whose filter matches writes.
func TestAccessLogJSONFields(t *testing.T) {
	up := startBackend(t, "up", false, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(201) })
	lAddr := closedAddr(t)
	g := build(t, nil,
		[]*listenerv3.Listener{httpListener(t, "l", lAddr, "rt")},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "up")))},
		[]*clusterv3.Cluster{staticCluster(t, "up", false, up.addr)})
	format, err := accesslog.ParseJSONFormat(map[string]string{
		"xff": "%REQ(X-FORWARDED-FOR)%", "ua": "%REQ(USER-AGENT)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"protocol": "%PROTOCOL%", "local": "%DOWNSTREAM_LOCAL_ADDRESS%", "remote": "%DOWNSTREAM_REMOTE_ADDRESS%",
		"code": "%RESPONSE_CODE%", "id": "%REQ(X-REQUEST-ID)%", "sni": "%REQUESTED_SERVER_NAME%", "marker": "a",
	}, accesslog.FormatOptions{OmitEmptyValues: true})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := accesslog.ParseJSONFormat(map[string]string{"marker": "b", "id": "%REQ(X-REQUEST-ID)%"}, accesslog.FormatOptions{})
	match, _ := accesslog.CompileFilter(`response.code == 201 && request.headers["x-debug"] == "1" && request.url_path == "/rewritten"`)
	miss, _ := accesslog.CompileFilter(`response.code == 500`)
	for _, fc := range g.Listeners["l"].FilterChains {
		fc.AccessLogs = []*accesslog.AccessLogger{
			{Path: "/dev/stdout", Format: other, Filter: miss},
			{Path: "/dev/stdout", Format: format, Filter: match},
		}
	}
	p := startProxy(t, g)
	r := p.do("GET", "svc", "/rewritten?q=1", map[string]string{"X-Forwarded-For": "203.0.113.9", "User-Agent": "ua/1",
		"X-Envoy-Original-Path": "/orig", "X-Debug": "1", "X-Request-Id": "rid-json-1"}, nil)
	if r.code != 201 {
		t.Fatalf("code %d", r.code)
	}
	line := p.logLine("rid-json-1")
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	want := map[string]any{"xff": "203.0.113.9", "ua": "ua/1", "path": "/orig", "protocol": "HTTP/1.1",
		"local": lAddr, "code": float64(201), "id": "rid-json-1", "marker": "a"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (line %s)", k, got[k], v, line)
		}
	}
	if rm, _ := got["remote"].(string); !strings.HasPrefix(rm, "127.0.0.1:") {
		t.Errorf("remote = %v, want 127.0.0.1:port", got["remote"])
	}
	if _, ok := got["sni"]; ok {
		t.Errorf("omit_empty_values: empty sni present in %s", line)
	}
	p.log.Flush()
	if strings.Contains(p.logBuf.String(), `"marker":"b"`) {
		t.Errorf("the logger whose filter does not match wrote:\n%s", p.logBuf.String())
	}
}
