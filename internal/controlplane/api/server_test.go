package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStore records calls and answers with what the test set.
type fakeStore struct {
	snap    *config.Snapshot
	errs    config.Errors
	results []config.Result
	err     error

	gotOp, gotSource, gotData string
}

func (f *fakeStore) Snapshot() *config.Snapshot { return f.snap }
func (f *fakeStore) Errors() config.Errors      { return f.errs }
func (f *fakeStore) op(name string) func(string, []byte) ([]config.Result, error) {
	return func(source string, data []byte) ([]config.Result, error) {
		f.gotOp, f.gotSource, f.gotData = name, source, string(data)
		return f.results, f.err
	}
}
func (f *fakeStore) Validate(s string, d []byte) ([]config.Result, error) {
	return f.op("validate")(s, d)
}
func (f *fakeStore) Apply(s string, d []byte) ([]config.Result, error)  { return f.op("apply")(s, d) }
func (f *fakeStore) Delete(s string, d []byte) ([]config.Result, error) { return f.op("delete")(s, d) }

type fakeSync []xds.ProxyStatus

func (f fakeSync) Syncz() []xds.ProxyStatus { return f }

func newTestServer(t *testing.T, st *fakeStore, sync fakeSync, ready func() bool) *httptest.Server {
	t.Helper()
	s, err := New(Options{Addr: "127.0.0.1:0", Store: st, Sync: sync, Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // the test serves the handler with httptest instead
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

// do sends a request, as loomctl does: POSTs with Content-Type
// application/yaml.
func do(t *testing.T, method, url, body string) (int, string, string) {
	t.Helper()
	h := http.Header{}
	if method == http.MethodPost {
		h.Set("Content-Type", "application/yaml")
	}
	return doHeader(t, method, url, body, h)
}

// doHeader sends a request with header h and returns the status,
// Content-Type and body of the answer.
func doHeader(t *testing.T, method, url, body string, h http.Header) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

var vsKey = config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "reviews"}

func TestChangeEndpoints(t *testing.T) {
	invalid := config.Errors{
		{Source: config.Source{File: "vs.yaml", Line: 3}, Key: vsKey, Field: "spec.http[0].route[0].weight", Msg: "must be 0-100"},
		{Source: config.Source{File: "vs.yaml", Line: 20}, Key: vsKey, Field: "spec.hosts", Msg: "must not be empty"},
	}
	tests := []struct {
		name       string
		path       string
		results    []config.Result
		err        error
		wantCode   int
		wantType   string
		wantBody   string
		wantOp     string
		wantSource string
	}{
		{name: "apply created", path: "/api/v1/apply?source=vs.yaml",
			results:  []config.Result{{Key: vsKey, Action: config.ActionCreated}},
			wantCode: 200, wantType: "application/json", wantOp: "apply", wantSource: "vs.yaml",
			wantBody: `{"results":[{"key":"VirtualService default/reviews","action":"created"}]}`},
		{name: "validate unchanged", path: "/api/v1/validate?source=vs.yaml",
			results:  []config.Result{{Key: vsKey, Action: config.ActionUnchanged}},
			wantCode: 200, wantType: "application/json", wantOp: "validate", wantSource: "vs.yaml",
			wantBody: `{"results":[{"key":"VirtualService default/reviews","action":"unchanged"}]}`},
		{name: "delete deleted, default source", path: "/api/v1/delete",
			results:  []config.Result{{Key: vsKey, Action: config.ActionDeleted}},
			wantCode: 200, wantType: "application/json", wantOp: "delete", wantSource: DefaultSource,
			wantBody: `{"results":[{"key":"VirtualService default/reviews","action":"deleted"}]}`},
		{name: "apply invalid", path: "/api/v1/apply?source=vs.yaml", err: invalid,
			wantCode: 400, wantType: "text/plain; charset=utf-8", wantOp: "apply", wantSource: "vs.yaml",
			wantBody: "vs.yaml:3: VirtualService default/reviews: spec.http[0].route[0].weight: must be 0-100\n" +
				"vs.yaml:20: VirtualService default/reviews: spec.hosts: must not be empty\n"},
		{name: "validate single error", path: "/api/v1/validate?source=vs.yaml",
			err:      &config.Error{Source: config.Source{File: "vs.yaml", Line: 1}, Msg: "malformed YAML: x"},
			wantCode: 400, wantType: "text/plain; charset=utf-8", wantOp: "validate", wantSource: "vs.yaml",
			wantBody: "vs.yaml:1: malformed YAML: x\n"},
		{name: "delete unknown", path: "/api/v1/delete?source=vs.yaml",
			err:      fmt.Errorf("%w: %w", config.ErrNotFound, config.Errors{{Source: config.Source{File: "vs.yaml", Line: 1}, Key: vsKey, Msg: "not found"}}),
			wantCode: 404, wantType: "text/plain; charset=utf-8", wantOp: "delete", wantSource: "vs.yaml",
			wantBody: "resource not found: vs.yaml:1: VirtualService default/reviews: not found\n"},
		{name: "delete defined in file", path: "/api/v1/delete?source=vs.yaml",
			err:      fmt.Errorf("%w: %w", config.ErrDefinedInFile, config.Errors{{Key: vsKey, Msg: "defined in dir/vs.yaml; edit that file"}}),
			wantCode: 409, wantType: "text/plain; charset=utf-8", wantOp: "delete", wantSource: "vs.yaml",
			wantBody: "resource is defined in a user file: VirtualService default/reviews: defined in dir/vs.yaml; edit that file\n"},
		{name: "apply io error", path: "/api/v1/apply?source=vs.yaml", err: errors.New("apply: disk full"),
			wantCode: 500, wantType: "text/plain; charset=utf-8", wantOp: "apply", wantSource: "vs.yaml",
			wantBody: "apply: disk full\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &fakeStore{results: tt.results, err: tt.err}
			ts := newTestServer(t, st, nil, nil)
			code, ctype, body := do(t, http.MethodPost, ts.URL+tt.path, "kind: VirtualService\n")
			if code != tt.wantCode || ctype != tt.wantType {
				t.Errorf("status %d %q, want %d %q; body %s", code, ctype, tt.wantCode, tt.wantType, body)
			}
			want := tt.wantBody
			if tt.wantType == "application/json" {
				want, body = compactJSON(t, want), compactJSON(t, body)
			}
			if d := cmp.Diff(want, body); d != "" {
				t.Errorf("body (-want +got)\n%s", d)
			}
			got := []string{st.gotOp, st.gotSource, st.gotData}
			if d := cmp.Diff([]string{tt.wantOp, tt.wantSource, "kind: VirtualService\n"}, got); d != "" {
				t.Errorf("store call (-want +got)\n%s", d)
			}
		})
	}
}

func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, s)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestChangeNeedsPOST(t *testing.T) {
	st := &fakeStore{}
	ts := newTestServer(t, st, nil, nil)
	if code, _, _ := do(t, http.MethodGet, ts.URL+"/api/v1/apply", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET apply: status %d, want 405", code)
	}
	if st.gotOp != "" {
		t.Fatalf("store called: %s", st.gotOp)
	}
}

// TestCrossSiteRequestsRejected: a web page of another site cannot make
// the user's browser change loomd's config: requests with a foreign
// Origin get 403, and bodies a form can send (no YAML Content-Type) 415.
func TestCrossSiteRequestsRejected(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		path     string
		header   map[string]string
		wantCode int
		wantBody string // prefix
		wantOp   string
	}{
		{name: "form post from another site", method: http.MethodPost, path: "/api/v1/apply",
			header:   map[string]string{"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
			wantCode: 403, wantBody: `origin "https://evil.example": cross-origin requests are not allowed`},
		{name: "yaml post from another site", method: http.MethodPost, path: "/api/v1/delete",
			header:   map[string]string{"Origin": "http://localhost:8080", "Content-Type": "application/yaml"},
			wantCode: 403, wantBody: `origin "http://localhost:8080": cross-origin requests are not allowed`},
		{name: "null origin", method: http.MethodPost, path: "/api/v1/apply",
			header:   map[string]string{"Origin": "null", "Content-Type": "application/yaml"},
			wantCode: 403, wantBody: `origin "null": cross-origin requests are not allowed`},
		{name: "read from another site", method: http.MethodGet, path: "/api/v1/config",
			header: map[string]string{"Origin": "https://evil.example"}, wantCode: 403},
		{name: "same origin", method: http.MethodPost, path: "/api/v1/apply",
			header:   map[string]string{"Origin": "SELF", "Content-Type": "application/yaml"},
			wantCode: 200, wantOp: "apply"},
		{name: "text/plain body", method: http.MethodPost, path: "/api/v1/apply",
			header:   map[string]string{"Content-Type": "text/plain"},
			wantCode: 415, wantBody: `Content-Type "text/plain": must be application/yaml, application/x-yaml, text/yaml`},
		{name: "multipart form", method: http.MethodPost, path: "/api/v1/validate",
			header:   map[string]string{"Content-Type": "multipart/form-data; boundary=x"},
			wantCode: 415, wantBody: `Content-Type "multipart/form-data; boundary=x": must be`},
		{name: "no content type", method: http.MethodPost, path: "/api/v1/delete",
			wantCode: 415, wantBody: `Content-Type "": must be`},
		{name: "application/x-yaml", method: http.MethodPost, path: "/api/v1/validate",
			header: map[string]string{"Content-Type": "application/x-yaml"}, wantCode: 200, wantOp: "validate"},
		{name: "text/yaml with charset", method: http.MethodPost, path: "/api/v1/delete",
			header: map[string]string{"Content-Type": "text/yaml; charset=utf-8"}, wantCode: 200, wantOp: "delete"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &fakeStore{}
			ts := newTestServer(t, st, fakeSync{}, nil)
			h := http.Header{}
			for k, v := range tt.header {
				if v == "SELF" {
					v = ts.URL
				}
				h.Set(k, v)
			}
			code, _, body := doHeader(t, tt.method, ts.URL+tt.path, "kind: VirtualService\n", h)
			if code != tt.wantCode || !strings.HasPrefix(body, tt.wantBody) {
				t.Errorf("got %d %q, want %d %q...", code, body, tt.wantCode, tt.wantBody)
			}
			if st.gotOp != tt.wantOp {
				t.Errorf("store op %q, want %q", st.gotOp, tt.wantOp)
			}
		})
	}
}

func TestReadOnlyEndpoints(t *testing.T) {
	snap := config.NewSnapshot(7, []*config.Resource{
		{Kind: config.KindVirtualService, Namespace: "default", Name: "reviews", Source: config.Source{File: "dir/vs.yaml", Line: 1}},
		{Kind: config.KindDestinationRule, Namespace: "default", Name: "reviews", Source: config.Source{File: "dir/dr.yaml", Line: 5}},
	})
	st := &fakeStore{snap: snap, errs: config.Errors{{Source: config.Source{File: "dir/bad.yaml", Line: 2}, Key: vsKey, Field: "spec.hosts", Msg: "must not be empty"}}}
	sync := fakeSync{{ID: "sidecar~127.0.0.13~reviews-v1.default~default.svc.cluster.local", Types: []xds.TypeStatus{
		{TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Short: "CDS", Sent: "7", Acked: "7"},
	}}}
	ts := newTestServer(t, st, sync, nil)
	tests := []struct {
		path string
		want string
	}{
		{"/debug/syncz", `[{"id":"sidecar~127.0.0.13~reviews-v1.default~default.svc.cluster.local","types":[` +
			`{"acked":"7","nack_error":"","nacked":"","sent":"7","short":"CDS","type_url":"type.googleapis.com/envoy.config.cluster.v3.Cluster"}]}]`},
		{"/debug/configz", `{"errors":["dir/bad.yaml:2: VirtualService default/reviews: spec.hosts: must not be empty"],"resources":2,"version":7}`},
		{"/api/v1/config", `[{"kind":"DestinationRule","name":"reviews","namespace":"default","source":"dir/dr.yaml:5"},` +
			`{"kind":"VirtualService","name":"reviews","namespace":"default","source":"dir/vs.yaml:1"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, ctype, body := do(t, http.MethodGet, ts.URL+tt.path, "")
			if code != 200 || ctype != "application/json" {
				t.Fatalf("status %d %q: %s", code, ctype, body)
			}
			if d := cmp.Diff(tt.want, compactJSON(t, body)); d != "" {
				t.Errorf("body (-want +got)\n%s", d)
			}
		})
	}
}

func TestEmptyListsAreJSONArrays(t *testing.T) {
	ts := newTestServer(t, &fakeStore{}, fakeSync{}, nil)
	for path, want := range map[string]string{
		"/debug/syncz":   `[]`,
		"/api/v1/config": `[]`,
		"/debug/configz": `{"errors":[],"resources":0,"version":0}`,
	} {
		_, _, body := do(t, http.MethodGet, ts.URL+path, "")
		if got := compactJSON(t, body); got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
}

func TestReady(t *testing.T) {
	ready := false
	ts := newTestServer(t, &fakeStore{}, nil, func() bool { return ready })
	if code, _, _ := do(t, http.MethodGet, ts.URL+"/ready", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("not ready: status %d, want 503", code)
	}
	ready = true
	if code, _, _ := do(t, http.MethodGet, ts.URL+"/ready", ""); code != http.StatusOK {
		t.Fatalf("ready: status %d, want 200", code)
	}
}

func TestRunServesAndStops(t *testing.T) {
	s, err := New(Options{Addr: "127.0.0.1:0", Store: &fakeStore{}, Sync: fakeSync{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Addr: s.Addr(), Store: &fakeStore{}, Sync: fakeSync{}}); err == nil {
		t.Fatal("New on a port in use succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	code, _, _ := do(t, http.MethodGet, "http://"+s.Addr()+"/ready", "")
	if code != http.StatusOK {
		t.Errorf("/ready status %d", code)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestConfigzMeshConfigError: a refused mesh config file shows in
// /debug/configz beside the config directory's errors.
func TestConfigzMeshConfigError(t *testing.T) {
	var meshErr error
	s, err := New(Options{Addr: "127.0.0.1:0", Store: &fakeStore{}, Sync: fakeSync{},
		MeshConfigErr: func() error { return meshErr }})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	if _, _, body := do(t, http.MethodGet, ts.URL+"/debug/configz", ""); compactJSON(t, body) != `{"errors":[],"resources":0,"version":0}` {
		t.Errorf("with a good mesh config: %s", body)
	}
	meshErr = errors.New(`mesh.yaml: outboundTrafficPolicy.mode: invalid value "SOMETIMES"`)
	want := `{"errors":[],"mesh_config_error":"mesh.yaml: outboundTrafficPolicy.mode: invalid value \"SOMETIMES\"","resources":0,"version":0}`
	if _, _, body := do(t, http.MethodGet, ts.URL+"/debug/configz", ""); compactJSON(t, body) != want {
		t.Errorf("with a refused mesh config: %s, want %s", compactJSON(t, body), want)
	}
}
