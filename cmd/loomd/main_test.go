package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loom-mesh/loom/internal/metricnames"
	"github.com/loom-mesh/loom/internal/testutil"
	"github.com/loom-mesh/loom/internal/testutil/promtest"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var servingRE = regexp.MustCompile(`msg="loomd serving" xds=(\S+) monitoring=(\S+) config-dir=\S+ resources=(\d+)`)

// start runs loomd in-process on free ports and returns its monitoring
// address and the log line it printed when serving.
func start(t *testing.T, dir string) (monitoring string, logs *testutil.SyncBuffer) {
	t.Helper()
	return startWith(t, testOptions(dir))
}

// testOptions are loomd's options for a test: config dir dir, free ports,
// short debounce, no dashboard.
func testOptions(dir string) options {
	return options{configDir: dir, xdsAddr: "127.0.0.1:0", monitoringAddr: "127.0.0.1:0",
		debounceAfter: 10 * time.Millisecond, debounceMax: 100 * time.Millisecond}
}

// startWith runs loomd in-process with o until the test ends, and returns
// its monitoring address and its logs once it printed its serving line.
func startWith(t *testing.T, o options) (monitoring string, logs *testutil.SyncBuffer) {
	t.Helper()
	logs = &testutil.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := servingRE.FindStringSubmatch(logs.String()); m != nil {
			return m[2], logs
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no serving line:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const serviceEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: reviews}
`

func TestServesValidConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "se.yaml"), []byte(serviceEntry), 0o644); err != nil {
		t.Fatal(err)
	}
	mon, logs := start(t, dir)
	if m := servingRE.FindStringSubmatch(logs.String()); m[3] != "1" {
		t.Fatalf("serving line says %s resources, want 1:\n%s", m[3], logs)
	}
	waitReady(t, mon)
	code, body := get(t, "http://"+mon+"/api/v1/config")
	if code != 200 || !strings.Contains(body, `"name": "reviews"`) {
		t.Fatalf("/api/v1/config: %d %s", code, body)
	}
}

func waitReady(t *testing.T, mon string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := get(t, "http://"+mon+"/ready")
		if code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready stayed %d", code)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

func TestInvalidConfigServesEmpty(t *testing.T) {
	dir := t.TempDir()
	bad := strings.Replace(serviceEntry, "number: 9080", "number: 0", 1)
	if err := os.WriteFile(filepath.Join(dir, "se.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	mon, logs := start(t, dir)
	waitReady(t, mon)
	code, body := get(t, "http://"+mon+"/debug/configz")
	var cz struct {
		Version   uint64   `json:"version"`
		Resources int      `json:"resources"`
		Errors    []string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &cz); err != nil || code != 200 {
		t.Fatalf("/debug/configz: %d %v %s", code, err, body)
	}
	if cz.Resources != 0 || len(cz.Errors) == 0 || !strings.Contains(cz.Errors[0], "se.yaml:1: ServiceEntry default/reviews: spec.ports") {
		t.Fatalf("/debug/configz = %+v, want no resources and the se.yaml error", cz)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"config error\"") {
		t.Fatalf("config errors not logged:\n%s", logs)
	}
}

func TestPortInUseFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	o := options{configDir: t.TempDir(), xdsAddr: "127.0.0.1:0", monitoringAddr: l.Addr().String(),
		debounceAfter: time.Millisecond, debounceMax: time.Second}
	err = run(context.Background(), o, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("run with monitoring port in use: %v, want address already in use", err)
	}
}

func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no config dir", nil, `required flag(s) "config-dir" not set`},
		{"bad log level", []string{"--config-dir", t.TempDir(), "--log-level", "loud"}, `--log-level "loud"`},
		{"bad debounce", []string{"--config-dir", t.TempDir(), "--debounce-after", "2s", "--debounce-max", "1s"}, "--debounce-after"},
		{"extra arg", []string{"--config-dir", t.TempDir(), "extra"}, "unknown command"},
		{"ratelimit on 0.0.0.0", []string{"--config-dir", t.TempDir(), "--ratelimit-addr", "0.0.0.0:8081", "--ratelimit-redis", "127.0.0.1:6379"},
			"must be an IP address proxies can dial"},
		{"ratelimit without redis", []string{"--config-dir", t.TempDir(), "--ratelimit-addr", "127.0.0.1:8081"}, "needs --ratelimit-redis"},
		{"redis without ratelimit", []string{"--config-dir", t.TempDir(), "--ratelimit-redis", "127.0.0.1:6379"}, "need --ratelimit-addr"},
		{"bad ratelimit config", []string{"--config-dir", t.TempDir(), "--ratelimit-addr", "127.0.0.1:0", "--ratelimit-redis", "127.0.0.1:6379",
			"--ratelimit-config", "/nonexistent.yaml"}, "--ratelimit-config"},
		{"prometheus url without scheme", []string{"--config-dir", t.TempDir(), "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0",
			"--dashboard-addr", "127.0.0.1:0", "--prometheus-url", "prometheus:9090"}, `--prometheus-url: dashboard: prometheus URL "prometheus:9090"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := newCommand(&stderr)
			cmd.SetArgs(tt.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

const ratingsServiceEntry = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings
  namespace: default
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: ratings}
`

// TestPipeline drives the whole control plane: a proxy's ADS stream gets
// clusters from the config dir, its ACK shows in /debug/syncz, and a
// resource applied through the API is pushed to it.
func TestPipeline(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "se.yaml"), []byte(serviceEntry), 0o644); err != nil {
		t.Fatal(err)
	}
	mon, logs := start(t, dir)
	xdsAddr := servingRE.FindStringSubmatch(logs.String())[1]

	a := dialADS(t, xdsAddr, "127.0.0.16", "ratings-v1", "ratings")
	r1, names := a.recvCDS()
	if !slices.Contains(names, "outbound|9080||reviews.default.svc.cluster.local") ||
		slices.Contains(names, "outbound|9080||ratings.default.svc.cluster.local") {
		t.Fatalf("first clusters %v", names)
	}
	a.ack(r1)
	wantSyncz := `"acked": "` + r1.GetVersionInfo() + `"`
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, "http://"+mon+"/debug/syncz")
		if strings.Contains(body, a.node.GetId()) && strings.Contains(body, wantSyncz) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/debug/syncz never showed the ACK of %s:\n%s", r1.GetVersionInfo(), body)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}

	resp, err := http.Post("http://"+mon+"/api/v1/apply?source=ratings.yaml", "application/yaml", strings.NewReader(ratingsServiceEntry))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"action": "created"`) {
		t.Fatalf("apply: %d %s", resp.StatusCode, body)
	}
	r2, names := a.recvCDS()
	if r2.GetVersionInfo() == r1.GetVersionInfo() || !slices.Contains(names, "outbound|9080||ratings.default.svc.cluster.local") {
		t.Fatalf("after apply: version %s (was %s), clusters %v", r2.GetVersionInfo(), r1.GetVersionInfo(), names)
	}
}

// adsStream is one proxy's ADS stream to loomd, asking for clusters.
type adsStream struct {
	t      *testing.T
	node   *corev3.Node
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

// dialADS opens an ADS stream as sidecar name (app label app) at ip and
// subscribes to clusters. The stream ends with the test, or after 20 s.
func dialADS(t *testing.T, xdsAddr, ip, name, app string) *adsStream {
	t.Helper()
	conn, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(func() { cancel(); conn.Close() })
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node, err := xdsapi.BuildNode(
		xdsapi.NodeID{Type: xdsapi.Sidecar, IP: ip, Name: name, Namespace: "default", Domain: "default.svc.cluster.local"},
		xdsapi.NodeMeta{Labels: map[string]string{"app": app, "version": "v1"}, Namespace: "default", InterceptionMode: xdsapi.InterceptionNone})
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: xdsapi.ClusterType}); err != nil {
		t.Fatal(err)
	}
	return &adsStream{t: t, node: node, stream: stream}
}

// recvCDS waits for the next CDS response and returns it with its
// clusters' names.
func (a *adsStream) recvCDS() (*discoverygrpc.DiscoveryResponse, []string) {
	t := a.t
	t.Helper()
	for {
		r, err := a.stream.Recv() // bounded by the stream's timeout
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if r.GetTypeUrl() != xdsapi.ClusterType {
			continue
		}
		var names []string
		for _, any := range r.GetResources() {
			var c clusterv3.Cluster
			if err := any.UnmarshalTo(&c); err != nil {
				t.Fatal(err)
			}
			names = append(names, c.GetName())
		}
		return r, names
	}
}

// ack ACKs r.
func (a *adsStream) ack(r *discoverygrpc.DiscoveryResponse) {
	a.t.Helper()
	if err := a.stream.Send(&discoverygrpc.DiscoveryRequest{Node: a.node, TypeUrl: r.GetTypeUrl(),
		VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}); err != nil {
		a.t.Fatal(err)
	}
}

type fakeLoaded bool

func (f fakeLoaded) Loaded() bool { return bool(f) }

type fakeServing bool

func (f fakeServing) Serving() bool { return bool(f) }

// TestReady: /ready needs the config directory read once and xDS serving,
// as api.Options.Ready documents.
func TestReady(t *testing.T) {
	tests := []struct {
		name            string
		loaded, serving bool
		want            bool
	}{
		{name: "starting", want: false},
		{name: "loaded, xds not serving", loaded: true, want: false},
		{name: "xds serving, not loaded", serving: true, want: false},
		{name: "both", loaded: true, serving: true, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ready(fakeLoaded(tt.loaded), fakeServing(tt.serving))(); got != tt.want {
				t.Fatalf("ready = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCARefusesCorruptKey: loomd does not start on a data directory whose
// root key is corrupt, and names the file; the file is left as it was.
func TestCARefusesCorruptKey(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(data, "ca-key.pem")
	corrupt := "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
	os.WriteFile(key, []byte(corrupt), 0o600)
	os.WriteFile(filepath.Join(data, "ca-cert.pem"), []byte("x"), 0o600)
	o := options{configDir: t.TempDir(), xdsAddr: "127.0.0.1:0", monitoringAddr: "127.0.0.1:0",
		debounceAfter: time.Millisecond, debounceMax: time.Second, dataDir: data, secureXDSAddr: "127.0.0.1:0"}
	err := run(context.Background(), o, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("run with a corrupt CA key: %v, want an error naming %s", err, key)
	}
	if b, _ := os.ReadFile(key); string(b) != corrupt {
		t.Fatal("the corrupt key was replaced")
	}
}

// TestServesTLSPort: with --data-dir, loomd serves xDS and the CSR API
// over TLS with a certificate of its CA for istiod.istio-system.svc.
func TestServesTLSPort(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	data := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o := options{configDir: t.TempDir(), xdsAddr: "127.0.0.1:0", monitoringAddr: "127.0.0.1:0",
		debounceAfter: time.Millisecond, debounceMax: time.Second, dataDir: data, secureXDSAddr: "127.0.0.1:0",
		trustDomain: "cluster.local", workloadCertTTL: time.Hour, maxWorkloadCertTTL: 24 * time.Hour}
	go func() { done <- run(ctx, o, slog.New(slog.NewTextHandler(logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	re := regexp.MustCompile(`msg="loomd serving" .* secure-xds=(\S+)`)
	var addr string
	deadline := time.Now().Add(10 * time.Second)
	for addr == "" {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no serving line with secure-xds:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	roots, err := os.ReadFile(filepath.Join(data, "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatal("root-cert.pem holds no certificate")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "istiod.istio-system.svc", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	conn.Close()
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Errorf("a key reached the logs:\n%s", logs)
	}
}

// badVirtualService fails validation: a negative weight.
const badVirtualService = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: -60}
`

// TestControlPlaneMetrics: after real xDS activity, config admissions
// through the API and a bad file in the config directory, loomd's
// /metrics on the monitoring port parses with Prometheus's text parser
// and carries istiod's pilot_*, galley_* and citadel_server_* metrics.
func TestControlPlaneMetrics(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "se.yaml"), []byte(serviceEntry), 0o644); err != nil {
		t.Fatal(err)
	}
	o := testOptions(dir)
	o.dataDir, o.secureXDSAddr = filepath.Join(t.TempDir(), "data"), "127.0.0.1:0"
	o.trustDomain, o.workloadCertTTL, o.maxWorkloadCertTTL = "cluster.local", time.Hour, 24*time.Hour
	mon, logs := startWith(t, o)
	xdsAddr := servingRE.FindStringSubmatch(logs.String())[1]

	a := dialADS(t, xdsAddr, "127.0.0.16", "ratings-v1", "ratings")
	r1, _ := a.recvCDS()
	a.ack(r1)

	post := func(path, body string, want int) {
		t.Helper()
		resp, err := http.Post("http://"+mon+path, "application/yaml", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %d %s, want %d", path, resp.StatusCode, b, want)
		}
	}
	post("/api/v1/apply", badVirtualService, http.StatusBadRequest)
	post("/api/v1/validate", "apiVersion: networking.istio.io/v1\nkind: Nonsense\nmetadata: {name: x}\nspec: {}\n", http.StatusBadRequest)
	post("/api/v1/apply", ratingsServiceEntry, http.StatusOK)
	r2, _ := a.recvCDS() // the applied ServiceEntry's push
	a.ack(r2)
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(badVirtualService), 0o644); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		name   string
		labels map[string]string
		value  float64 // -1: present with any positive value
	}{
		{"pilot_xds", nil, 1},
		{"pilot_xds_pushes", map[string]string{"type": "cds"}, 2},
		{"pilot_proxy_convergence_time", nil, 1},
		{"pilot_services", nil, 2},
		{"galley_validation_failed", map[string]string{"group": "networking.istio.io", "version": "v1",
			"resource": "virtualservices", "reason": "invalid_resource"}, 1},
		{"galley_validation_failed", map[string]string{"reason": "unknown_type"}, 1},
		{"galley_validation_passed", map[string]string{"group": "networking.istio.io", "version": "v1",
			"resource": "serviceentries"}, 1},
		{"loom_config_errors", nil, -1},
		{"citadel_server_csr_count", nil, 0},
		{"citadel_server_root_cert_expiry_timestamp", nil, -1},
		{"go_goroutines", nil, -1},
	}
	var fams promtest.Families
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if fams, err = promtest.Scrape("http://" + mon + "/metrics"); err != nil {
			t.Fatal(err)
		}
		missing := 0
		for _, w := range want {
			v, ok := fams.Value(w.name, w.labels)
			if !ok || (w.value >= 0 && v != w.value) || (w.value < 0 && v <= 0) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, w := range want {
				v, ok := fams.Value(w.name, w.labels)
				t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, v, ok, w.value)
			}
			t.Fatalf("metrics: %v", fams.Names())
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	// Everything loomd exports under istiod's prefixes and Loom's is in
	// the one list the Grafana dashboards are checked against, with its
	// type; the runtime metrics the dashboards use are there too.
	for name, fam := range fams {
		if !strings.HasPrefix(name, "pilot_") && !strings.HasPrefix(name, "galley_") &&
			!strings.HasPrefix(name, "citadel_") && !strings.HasPrefix(name, "loom_") {
			continue
		}
		typ, ok := metricnames.ControlPlane[name]
		if got := strings.ToLower(fam.GetType().String()); !ok || string(typ) != got {
			t.Errorf("loomd exports %s (%s), which internal/metricnames.ControlPlane lists as %q", name, got, typ)
		}
	}
	for name := range metricnames.Runtime {
		if _, ok := fams[name]; !ok {
			t.Errorf("loomd does not export %s, which internal/metricnames.Runtime lists", name)
		}
	}
	if exp, _ := fams.Value("citadel_server_root_cert_expiry_timestamp", nil); exp < float64(time.Now().Add(9*365*24*time.Hour).Unix()) {
		t.Errorf("root expiry %v: a new self-signed root lives 10 years", exp)
	}
}

// TestPrometheusURLFlag: with --prometheus-url the dashboard's graph is
// Prometheus's, queried at that URL with Istio's request metric.
func TestPrometheusURLFlag(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		queries = append(queries, r.URL.Path+" "+r.Form.Get("query"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	}))
	t.Cleanup(prom.Close)

	logs := &testutil.SyncBuffer{}
	cmd := newCommand(logs)
	cmd.SetArgs([]string{"--config-dir", t.TempDir(), "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0",
		"--dashboard-addr", "127.0.0.1:0", "--prometheus-url", prom.URL + "/prom"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("loomd: %v", err)
		}
	})
	dashRE := regexp.MustCompile(`msg="loomd serving" .* dashboard=(http://\S+)`)
	var dash string
	for deadline := time.Now().Add(10 * time.Second); dash == ""; {
		if m := dashRE.FindStringSubmatch(logs.String()); m != nil {
			dash = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("loomd returned early: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no serving line:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}

	code, body := get(t, dash+"api/graph")
	var g struct {
		Source   string   `json:"source"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(body), &g); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/graph: %d %v\n%s", code, err, body)
	}
	if g.Source != "prometheus" || len(g.Warnings) != 0 {
		t.Errorf("graph source %q, warnings %q; want prometheus and none", g.Source, g.Warnings)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(queries) == 0 || !strings.HasPrefix(queries[0], "/prom/api/v1/query sum(rate(istio_requests_total{") {
		t.Errorf("prometheus got %q, want Istio's request rate at /prom/api/v1/query", queries)
	}
}
