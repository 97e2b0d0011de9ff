package integration

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
	"github.com/loom-mesh/loom/internal/dataplane/accesslog"
	dpconfig "github.com/loom-mesh/loom/internal/dataplane/config"
)

const bookinfoMesh = "../../internal/controlplane/translate/testdata/bookinfo/mesh.yaml"

func productpage() *model.Proxy {
	return &model.Proxy{Type: model.SidecarProxy, ID: "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local",
		IP: "127.0.0.11", Name: "productpage-v1", Namespace: "default", InterceptionMode: "NONE",
		Labels: map[string]string{"app": "productpage", "version": "v1"}}
}

// buildFor translates the bookinfo mesh plus extra for productpage's
// sidecar under the mesh config meshYAML and builds what the proxy would
// from it; a NACK fails the test.
func buildFor(t *testing.T, meshYAML, extra string) *dpconfig.Generation {
	t.Helper()
	data, err := os.ReadFile(bookinfoMesh)
	if err != nil {
		t.Fatal(err)
	}
	rs, errs := config.Decode("mesh.yaml", data)
	more, errs2 := config.Decode("extra.yaml", []byte(extra))
	if len(errs)+len(errs2) > 0 {
		t.Fatal(errs, errs2)
	}
	rs = append(rs, more...)
	mc, err := meshconfig.Parse("meshconfig.yaml", []byte(meshYAML))
	if err != nil {
		t.Fatal(err)
	}
	if errs := append(validation.ValidateAll(rs), validation.TelemetryProviders(rs, mc)...); len(errs) > 0 {
		t.Fatal(errs)
	}
	r, err := translate.GenerateWith(model.NewPushContext(config.NewSnapshot(1, rs)), productpage(), translate.Options{Mesh: mc})
	if err != nil {
		t.Fatal(err)
	}
	var res dpconfig.Resources
	for _, l := range r.Listeners {
		res.Listeners = append(res.Listeners, proto.Message(l))
	}
	for _, c := range r.Routes {
		res.Routes = append(res.Routes, c)
	}
	for _, c := range r.Clusters {
		res.Clusters = append(res.Clusters, c)
	}
	for _, c := range r.Endpoints {
		res.Endpoints = append(res.Endpoints, c)
	}
	g, err := dpconfig.Build(res, nil)
	if err != nil {
		t.Fatalf("the proxy refuses what loomd sent: %v", err)
	}
	return g
}

func chainLogs(g *dpconfig.Generation, listener string) [][]*accesslog.AccessLogger {
	var out [][]*accesslog.AccessLogger
	for _, fc := range g.Listeners[listener].FilterChains {
		out = append(out, fc.AccessLogs)
	}
	return out
}

var sample = &accesslog.Entry{StartTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Method: "GET", Path: "/reviews/0",
	RequestURI: "/reviews/0", Protocol: "HTTP/1.1", ResponseCode: 503, ResponseFlags: "UF,URX", UpstreamServiceTime: -1,
	UpstreamHost: "127.0.0.13:9080", UpstreamCluster: "outbound|9080||reviews.default.svc.cluster.local", Duration: 3 * time.Millisecond}

// TestAccessLogMeshConfig: loomd's default mesh config logs every request
// of every listener to /dev/stdout in Istio's text format; accessLogEncoding
// JSON gives Istio's JSON labels, whose lines parse; accessLogFile "" logs
// nothing.
func TestAccessLogMeshConfig(t *testing.T) {
	g := buildFor(t, "", "")
	for _, name := range []string{"virtualOutbound", "virtualInbound"} {
		for _, ls := range chainLogs(g, name) {
			if len(ls) != 1 || ls[0].Path != "/dev/stdout" {
				t.Fatalf("%s: access logs %+v, want one to /dev/stdout", name, ls)
			}
			line := string(ls[0].Format.Append(nil, sample))
			if want := `[2026-01-02T03:04:05.000Z] "GET /reviews/0 HTTP/1.1" 503 UF,URX - - "-" 0 0 3 - "-" "-" "-" "-" "127.0.0.13:9080" outbound|9080||reviews.default.svc.cluster.local - - - - -` + "\n"; line != want {
				t.Errorf("%s line\n%q, want\n%q", name, line, want)
			}
		}
	}
	g = buildFor(t, "accessLogEncoding: JSON\n", "")
	ls := chainLogs(g, "virtualOutbound")[0]
	var obj map[string]any
	if err := json.Unmarshal(ls[0].Format.Append(nil, sample), &obj); err != nil {
		t.Fatal(err)
	}
	if obj["response_flags"] != "UF,URX" || obj["upstream_host"] != "127.0.0.13:9080" || obj["response_code"] != float64(503) || obj["user_agent"] != nil {
		t.Errorf("JSON line %v", obj)
	}
	g = buildFor(t, "accessLogFile: \"\"\n", "")
	for _, ls := range chainLogs(g, "virtualOutbound") {
		if len(ls) != 0 {
			t.Errorf("accessLogFile empty: %v", ls)
		}
	}
}

// TestAccessLogTelemetry: a workload Telemetry turns productpage's server
// side off and gives its client side a JSON provider with a CEL filter
// that the proxy compiles and evaluates.
func TestAccessLogTelemetry(t *testing.T) {
	mesh := `extensionProviders:
- name: json
  envoyFileAccessLog: {path: /dev/stdout, logFormat: {labels: {flags: "%RESPONSE_FLAGS%", host: "%UPSTREAM_HOST%", code: "%RESPONSE_CODE%"}}}
`
	g := buildFor(t, mesh, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: pp, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  accessLogging:
  - providers: [{name: json}]
    filter: {expression: "response.code >= 500"}
    match: {mode: CLIENT}
  - match: {mode: SERVER}
    disabled: true
`)
	for _, ls := range chainLogs(g, "virtualInbound") {
		if len(ls) != 0 {
			t.Errorf("server side disabled, got %v", ls)
		}
	}
	ls := chainLogs(g, "virtualOutbound")[0]
	if len(ls) != 1 || ls[0].Filter == nil {
		t.Fatalf("client side: %+v", ls)
	}
	if got := strings.TrimSpace(string(ls[0].Format.Append(nil, sample))); got != `{"code":503,"flags":"UF,URX","host":"127.0.0.13:9080"}` {
		t.Errorf("line %s", got)
	}
	if !ls[0].Filter.Match(sample) {
		t.Error("a 503 does not match response.code >= 500")
	}
	ok := *sample
	ok.ResponseCode = 200
	if ls[0].Filter.Match(&ok) {
		t.Error("a 200 matches response.code >= 500")
	}
}
