package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/xds"
	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/samples/bookinfo"
)

// samplesDir is Istio's samples/bookinfo/networking, used unchanged.
const samplesDir = "../../../shared/istio-samples/bookinfo/networking"

// fakeConfig is a ConfigSource with a fixed snapshot and errors.
type fakeConfig struct {
	snap *config.Snapshot
	errs config.Errors
}

func (f *fakeConfig) Snapshot() *config.Snapshot { return f.snap }
func (f *fakeConfig) Errors() config.Errors      { return f.errs }

// fakeProxies is a ProxySource with fixed statuses.
type fakeProxies []xds.ProxyStatus

func (f fakeProxies) Syncz() []xds.ProxyStatus { return f }

// fakeTraffic is a TrafficSource with fixed edges and series.
type fakeTraffic struct {
	edges  []EdgeStats
	points []Point
	// queries records the Series queries.
	queries []Query
}

func (f *fakeTraffic) Kind() string { return "fake" }
func (f *fakeTraffic) Edges(context.Context, time.Duration) ([]EdgeStats, error) {
	return f.edges, nil
}
func (f *fakeTraffic) Series(_ context.Context, q Query, _, _ time.Duration) ([]Point, error) {
	f.queries = append(f.queries, q)
	return f.points, nil
}

// bookinfoConfig is local mode's Bookinfo mesh (ServiceEntries and
// WorkloadEntries on 127.0.0.0/24) plus Istio's sample files named.
func bookinfoConfig(t testing.TB, samples ...string) *config.Snapshot {
	t.Helper()
	services, err := bookinfo.MeshFS.ReadFile("mesh/services.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"services.yaml": services, "workloads.yaml": bookinfo.WorkloadEntriesYAML("127.0.0.")}
	for _, s := range samples {
		b, err := os.ReadFile(filepath.Join(samplesDir, s))
		if err != nil {
			t.Fatalf("Istio's Bookinfo samples are missing (%v): check out shared/istio-samples beside the module", err)
		}
		files[s] = b
	}
	var rs []*config.Resource
	for name, b := range files {
		got, errs := config.Decode(name, b)
		if len(errs) > 0 {
			t.Fatalf("decode %s: %v", name, errs)
		}
		rs = append(rs, got...)
	}
	return config.NewSnapshot(7, rs)
}

// proxyStatus is a connected bookinfo sidecar, all synced unless nack
// names a type it NACKed.
func proxyStatus(name, ip, nack string) xds.ProxyStatus {
	id := xdsapi.NodeID{Type: xdsapi.Sidecar, IP: ip, Name: name, Namespace: "default", Domain: "default.svc.cluster.local"}.String()
	p := xds.ProxyStatus{ID: id, Version: "loom-proxy/1.0", ConnectedAt: time.Now().Add(-time.Minute), LastACK: time.Now().Add(-30 * time.Second)}
	for _, u := range xdsapi.TypeURLs {
		ts := xds.TypeStatus{TypeURL: u, Short: xdsapi.ShortType(u), Sent: "v-2", Acked: "v-2"}
		if ts.Short == nack {
			ts.Acked, ts.Nacked, ts.NackError = "v-1", "v-2", `listener "x": port = 0: must be 1-65535`
		}
		p.Types = append(p.Types, ts)
	}
	return p
}

// testServer serves a dashboard over cfg, proxies and traffic with
// httptest.
func testServer(t *testing.T, cfg ConfigSource, proxies ProxySource, traffic TrafficSource) *httptest.Server {
	t.Helper()
	s, err := New(Options{Addr: "127.0.0.1:0", Config: cfg, Proxies: proxies, Traffic: traffic})
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // served by httptest instead
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return hs
}

// getJSON GETs path and decodes a 200 answer into v.
func getJSON(t *testing.T, hs *httptest.Server, path string, v any) {
	t.Helper()
	resp, err := hs.Client().Get(hs.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %s %s\n%s", path, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, b)
	}
}

func TestAPI(t *testing.T) {
	snap := bookinfoConfig(t, "destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml")
	cfgErr := &config.Error{Source: config.Source{File: "/cfg/ratings.yaml", Line: 1},
		Key: config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "ratings"}, Field: "spec.http[0].route[0].weight", Msg: "must be 0-100"}
	cfg := &fakeConfig{snap: snap, errs: config.Errors{cfgErr}}
	proxies := fakeProxies{proxyStatus("productpage-v1", "127.0.0.11", ""), proxyStatus("reviews-v1", "127.0.0.13", ""),
		proxyStatus("reviews-v2", "127.0.0.14", "LDS")}
	traffic := &fakeTraffic{
		edges: []EdgeStats{
			{EdgeKey: EdgeKey{Source: wl("productpage-v1"), Dest: wl("reviews-v2"), Service: "reviews.default.svc.cluster.local"},
				Protocol: "http", RequestRate: 4, ErrorRate: 0, P95: 12.5, MTLS: 1},
			{EdgeKey: EdgeKey{Source: wl("reviews-v2"), Dest: wl(unknown), Service: "ratings.default.svc.cluster.local"},
				Protocol: "http", RequestRate: 2, ErrorRate: 2, P95: math.NaN(), MTLS: math.NaN()},
		},
		points: []Point{{Time: time.Unix(1800000000, 0), RequestRate: 4, ErrorRate: 1, P95: math.NaN()}},
	}
	hs := testServer(t, cfg, proxies, traffic)

	t.Run("graph", func(t *testing.T) {
		var g Graph
		getJSON(t, hs, "/api/graph?window=30s", &g)
		if g.Source != "fake" || g.WindowSeconds != 30 {
			t.Errorf("source %q window %v", g.Source, g.WindowSeconds)
		}
		byID := map[string]GraphNode{}
		for _, n := range g.Nodes {
			byID[n.ID] = n
		}
		// Every bookinfo workload is a node, idle or not; the aborted
		// calls go to ratings' service node.
		for id, idle := range map[string]bool{"wl:default/productpage-v1": false, "wl:default/reviews-v2": false,
			"wl:default/reviews-v1": true, "wl:default/ratings-v1": true, "wl:default/details-v1": true,
			"svc:ratings.default.svc.cluster.local": false} {
			n, ok := byID[id]
			if !ok || n.Idle != idle {
				t.Errorf("node %s: %+v (present %v), want idle=%v", id, n, ok, idle)
			}
		}
		if n := byID["wl:default/reviews-v2"]; n.App != "reviews" || n.Version != "v2" || n.Group != "app:default/reviews" {
			t.Errorf("reviews-v2 node %+v: want grouped by app reviews, version v2", n)
		}
		if n := byID["svc:ratings.default.svc.cluster.local"]; n.Group != "app:default/ratings" || n.Kind != "service" {
			t.Errorf("ratings service node %+v", n)
		}
		if len(g.Edges) != 2 {
			t.Fatalf("edges %+v", g.Edges)
		}
		ok, bad := g.Edges[0], g.Edges[1]
		if ok.Source != "wl:default/productpage-v1" || ok.Target != "wl:default/reviews-v2" || ok.RPS != 4 || ok.State != "ok" ||
			ok.P95Ms == nil || *ok.P95Ms != 12.5 || ok.MTLS == nil || *ok.MTLS != 1 {
			t.Errorf("productpage -> reviews-v2 edge %+v", ok)
		}
		if bad.Target != "svc:ratings.default.svc.cluster.local" || bad.State != "error" || bad.ErrorRate != 1 || bad.P95Ms != nil || bad.MTLS != nil {
			t.Errorf("reviews-v2 -> ratings edge %+v", bad)
		}
	})

	t.Run("service", func(t *testing.T) {
		var d ServiceDetail
		getJSON(t, hs, "/api/services/default/reviews.default.svc.cluster.local", &d)
		if d.Name != "reviews" || !slices.Equal(d.Workloads, []string{"reviews-v1", "reviews-v2", "reviews-v3"}) {
			t.Errorf("reviews: %+v", d.ServiceView)
		}
		var refs []string
		for _, r := range d.Config {
			refs = append(refs, r.Kind+" "+r.Namespace+"/"+r.Name+" "+r.Why)
		}
		for _, want := range []string{"ServiceEntry default/reviews defines", "VirtualService default/reviews hosts", "DestinationRule default/reviews host"} {
			if !slices.Contains(refs, want) {
				t.Errorf("reviews config %q lacks %q", refs, want)
			}
		}
		warns := strings.Join(d.Warnings, "\n")
		for _, want := range []string{"proxy reviews-v2.default refused LDS version v-2", "no proxy of workload reviews-v3.default"} {
			if !strings.Contains(warns, want) {
				t.Errorf("reviews warnings lack %q:\n%s", want, warns)
			}
		}
		if len(d.Traffic.Inbound) != 1 || d.Traffic.Inbound[0].RPS != 4 || d.Traffic.Inbound[0].P95Ms != nil {
			t.Errorf("inbound traffic %+v", d.Traffic)
		}
		in, out := traffic.queries[len(traffic.queries)-2], traffic.queries[len(traffic.queries)-1]
		if in.Direction != Inbound || in.Service != "reviews.default.svc.cluster.local" ||
			out.Direction != Outbound || !slices.Equal(out.Workloads, d.Workloads) {
			t.Errorf("series queries %+v, %+v", in, out)
		}
	})

	t.Run("ratings warns of its broken VirtualService", func(t *testing.T) {
		var d ServiceDetail
		getJSON(t, hs, "/api/services/default/ratings.default.svc.cluster.local", &d)
		if !slices.Contains(d.Warnings, cfgErr.Error()) {
			t.Errorf("ratings warnings %q lack %q", d.Warnings, cfgErr.Error())
		}
	})

	t.Run("workload", func(t *testing.T) {
		var d WorkloadDetail
		getJSON(t, hs, "/api/workloads/default/reviews-v2", &d)
		if d.App != "reviews" || d.Version != "v2" || d.Address != "127.0.0.14" || !slices.Equal(d.Services, []string{"reviews.default.svc.cluster.local"}) {
			t.Errorf("reviews-v2: %+v", d.WorkloadView)
		}
		if d.Proxy == nil || d.Proxy.Synced || d.Proxy.Types[2].State != "NACKED" {
			t.Errorf("reviews-v2 proxy %+v: want LDS NACKED", d.Proxy)
		}
	})

	t.Run("proxies", func(t *testing.T) {
		var ps []ProxyView
		getJSON(t, hs, "/api/proxies", &ps)
		if len(ps) != 3 || ps[0].Name != "productpage-v1.default" || !ps[0].Synced || ps[0].ConfigAgeSeconds == nil ||
			*ps[0].ConfigAgeSeconds < 29 || *ps[0].ConfigAgeSeconds > 600 {
			t.Fatalf("proxies %+v", ps)
		}
	})

	t.Run("config", func(t *testing.T) {
		var c struct {
			Version   uint64       `json:"version"`
			Resources []ConfigItem `json:"resources"`
		}
		getJSON(t, hs, "/api/config", &c)
		// One row per resource, and one for the broken ratings
		// VirtualService, which does not serve.
		if c.Version != 7 || len(c.Resources) != snap.Len()+1 {
			t.Fatalf("config version %d, %d rows; want 7 and %d", c.Version, len(c.Resources), snap.Len()+1)
		}
		for _, r := range c.Resources {
			switch {
			case r.Kind == "VirtualService" && r.Name == "ratings":
				if r.Status != "invalid" || r.Serving || len(r.Errors) != 1 {
					t.Errorf("ratings VirtualService row %+v", r)
				}
			case r.Kind == "VirtualService" && r.Name == "reviews":
				if r.Status != "valid" || !r.Serving || r.Source != "virtual-service-reviews-test-v2.yaml:1" {
					t.Errorf("reviews VirtualService row %+v", r)
				}
			}
		}
	})

	t.Run("bad parameters and unknown names", func(t *testing.T) {
		for path, want := range map[string]int{
			"/api/graph?window=2h":                                            400,
			"/api/graph?window=soon":                                          400,
			"/api/services/default/nope.default.svc":                          404,
			"/api/workloads/prod/reviews-v1":                                  404,
			"/api/workloads/default/reviews-v1?step=-1s":                      400,
			"/api/services/default/reviews.default.svc.cluster.local?span=2h": 400,
		} {
			resp, err := hs.Client().Get(hs.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			var e struct {
				Error string `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != want || e.Error == "" {
				t.Errorf("GET %s: %d %q, want %d with an error", path, resp.StatusCode, e.Error, want)
			}
		}
	})

	t.Run("DNS rebinding", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/graph", nil)
		req.Host = "attacker.example:20001"
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("Host attacker.example: %s, want 421", resp.Status)
		}
		req.Host = "localhost:20001"
		resp, err = hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("Host localhost: %s, CSP %q", resp.Status, resp.Header.Get("Content-Security-Policy"))
		}
	})
}

// TestConfigPage: a resource whose file became invalid shows invalid, with
// its error, while its last good version serves; an invalid new resource
// shows invalid and not serving.
func TestConfigPage(t *testing.T) {
	snap := bookinfoConfig(t, "destination-rule-all.yaml")
	drErr := &config.Error{Source: config.Source{File: "destination-rule-all.yaml", Line: 1},
		Key: config.Key{Kind: config.KindDestinationRule, Namespace: "default", Name: "reviews"}, Field: "spec.subsets[0].name", Msg: "required"}
	newErr := &config.Error{Source: config.Source{File: "new.yaml", Line: 3},
		Key: config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "new"}, Msg: "bad"}
	yamlErr := &config.Error{Source: config.Source{File: "broken.yaml"}, Msg: "malformed YAML: line 2"}
	hs := testServer(t, &fakeConfig{snap: snap, errs: config.Errors{drErr, newErr, yamlErr}}, fakeProxies{}, &fakeTraffic{})
	var c struct {
		Resources []ConfigItem `json:"resources"`
	}
	getJSON(t, hs, "/api/config", &c)
	find := func(kind, name string) *ConfigItem {
		for i, r := range c.Resources {
			if r.Kind == kind && r.Name == name {
				return &c.Resources[i]
			}
		}
		return nil
	}
	if r := find("DestinationRule", "reviews"); r == nil || r.Status != "invalid" || !r.Serving || !slices.Equal(r.Errors, []string{drErr.Error()}) {
		t.Errorf("reviews DestinationRule: %+v, want invalid, serving its last good version, with its error", r)
	}
	if r := find("DestinationRule", "ratings"); r == nil || r.Status != "valid" || !r.Serving {
		t.Errorf("ratings DestinationRule: %+v", r)
	}
	if r := find("VirtualService", "new"); r == nil || r.Status != "invalid" || r.Serving {
		t.Errorf("new VirtualService: %+v, want invalid, not serving", r)
	}
	if r := find("", ""); r == nil || r.Source != "broken.yaml" || r.Status != "invalid" {
		t.Errorf("the malformed file: %+v", r)
	}
	if len(c.Resources) != snap.Len()+2 {
		t.Errorf("%d rows, want the %d resources and 2 errors of new resources", len(c.Resources), snap.Len())
	}
}

// TestIndex: / serves the page when the bundle is embedded, and otherwise
// a page saying how to build it; the API answers either way.
func TestIndex(t *testing.T) {
	hs := testServer(t, &fakeConfig{}, fakeProxies{}, &fakeTraffic{})
	resp, err := hs.Client().Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	t.Logf("bundle built: %v", BundleBuilt())
	if BundleBuilt() {
		if !strings.Contains(string(b), `src="dist/app.js"`) {
			t.Errorf("index lacks the bundle:\n%s", b)
		}
		resp, err := hs.Client().Get(hs.URL + "/dist/app.js")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
			t.Errorf("GET /dist/app.js: %s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
	} else if !strings.Contains(string(b), "make build") {
		t.Errorf("without the bundle, / does not say how to build it:\n%s", b)
	}
	// The placeholder keeps go:embed's pattern matching on a fresh clone.
	if _, err := web.Open("web/dist/README.md"); err != nil {
		t.Errorf("the embedded dist/ lacks its committed README.md: %v", err)
	}
	resp, err = hs.Client().Get(hs.URL + "/dist/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /dist/: %s, want no directory listing", resp.Status)
	}
	var g Graph
	getJSON(t, hs, "/api/graph", &g)
	if g.Nodes == nil || g.Edges == nil {
		t.Errorf("an empty mesh's graph has null lists: %+v", g)
	}
}
