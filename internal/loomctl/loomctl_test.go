package loomctl

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFormatResult(t *testing.T) {
	tests := []struct {
		in   Result
		want string
	}{
		{Result{Key: "VirtualService default/reviews", Action: "configured"}, "virtualservice.networking.istio.io/reviews configured"},
		{Result{Key: "DestinationRule default/ratings", Action: "created"}, "destinationrule.networking.istio.io/ratings created"},
		{Result{Key: "Gateway istio-system/gw", Action: "deleted"}, "gateway.networking.istio.io/gw deleted"},
		{Result{Key: "AuthorizationPolicy default/allow-nothing", Action: "created"}, "authorizationpolicy.security.istio.io/allow-nothing created"},
		{Result{Key: "Service default/web", Action: "created"}, "service/web created"},
		{Result{Key: "Secret istio-system/cred", Action: "configured"}, "secret/cred configured"},
		{Result{Key: "weird", Action: "unchanged"}, "weird unchanged"},
	}
	for _, tt := range tests {
		if got := FormatResult(tt.in); got != tt.want {
			t.Errorf("FormatResult(%+v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestTypeState(t *testing.T) {
	tests := []struct {
		name string
		in   TypeStatus
		want string
	}{
		{"synced", TypeStatus{Sent: "3", Acked: "3"}, StateSynced},
		{"not sent", TypeStatus{}, StateNotSent},
		{"stale", TypeStatus{Sent: "4", Acked: "3"}, StateStale},
		{"nacked", TypeStatus{Sent: "4", Acked: "3", Nacked: "4", NackError: "bad"}, StateNacked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TypeState(tt.in); got != tt.want {
				t.Errorf("TypeState = %q, want %q", got, tt.want)
			}
		})
	}
}

func allTypes(sent, acked string) []TypeStatus {
	var ts []TypeStatus
	for _, s := range []string{"CDS", "EDS", "LDS", "RDS"} {
		ts = append(ts, TypeStatus{Short: s, Sent: sent, Acked: acked})
	}
	return ts
}

func TestWriteProxyStatus(t *testing.T) {
	nacked := allTypes("5", "5")
	nacked[3] = TypeStatus{Short: "RDS", Sent: "6", Acked: "5", Nacked: "6", NackError: "route x: bad regex"}
	ss := []SyncStatus{
		{ID: "router~127.0.0.10~istio-ingressgateway.istio-system~istio-system.svc.cluster.local", Types: allTypes("5", "5")},
		{ID: "sidecar~127.0.0.13~reviews-v1.default~default.svc.cluster.local", Types: nacked},
		{ID: "sidecar~127.0.0.14~reviews-v2.default~default.svc.cluster.local", Types: allTypes("", "")},
	}
	var b bytes.Buffer
	if err := WriteProxyStatus(&b, ss, "127.0.0.1:15014"); err != nil {
		t.Fatal(err)
	}
	want := `NAME                                CLUSTER   CDS        LDS        EDS        RDS        ISTIOD            VERSION
istio-ingressgateway.istio-system   -         SYNCED     SYNCED     SYNCED     SYNCED     127.0.0.1:15014   -
reviews-v1.default                  -         SYNCED     SYNCED     SYNCED     NACKED     127.0.0.1:15014   -
reviews-v2.default                  -         NOT SENT   NOT SENT   NOT SENT   NOT SENT   127.0.0.1:15014   -

reviews-v1.default RDS NACKED version 6: route x: bad regex
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("proxy-status (-want +got):\n%s", diff)
	}
	if AllSynced(ss) {
		t.Error("AllSynced = true with a NACK and an unsent proxy")
	}
	if !AllSynced(ss[:1]) {
		t.Error("AllSynced = false for a synced proxy")
	}
	if AllSynced(nil) {
		t.Error("AllSynced(nil) = true")
	}
}

// fakeLoomd answers apply with results, or 400 for bodies containing "bad".
func fakeLoomd(t *testing.T) (*httptest.Server, *[]string) {
	t.Helper()
	var sources []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/apply", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		src := r.URL.Query().Get("source")
		sources = append(sources, src)
		if strings.Contains(string(body), "bad") {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, src+":3: VirtualService default/reviews: spec.http[0].route[1].weight: Invalid value: -30: must not be negative\n")
			return
		}
		io.WriteString(w, `{"results":[{"key":"VirtualService default/reviews","action":"configured"},{"key":"DestinationRule default/reviews","action":"created"}]}`)
	})
	mux.HandleFunc("GET /debug/syncz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `[{"id":"sidecar~127.0.0.13~reviews-v1.default~default.svc.cluster.local","types":[{"type_url":"type.googleapis.com/envoy.config.cluster.v3.Cluster","short":"CDS","sent":"7","acked":"7","nacked":"","nack_error":""}]}]`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &sources
}

func TestApplyFiles(t *testing.T) {
	srv, sources := fakeLoomd(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "a-good.yaml")
	bad := filepath.Join(dir, "b-bad.yaml")
	os.WriteFile(good, []byte("kind: VirtualService\n"), 0o644)
	os.WriteFile(bad, []byte("kind: bad\n"), 0o644)
	c := NewClient(strings.TrimPrefix(srv.URL, "http://"), nil)

	var out, errOut bytes.Buffer
	err := ApplyFiles(context.Background(), c, OpApply, []string{bad, good}, &out, &errOut)
	if !errors.Is(err, ErrReported) {
		t.Fatalf("ApplyFiles err = %v, want ErrReported", err)
	}
	wantOut := "virtualservice.networking.istio.io/reviews configured\ndestinationrule.networking.istio.io/reviews created\n"
	if diff := cmp.Diff(wantOut, out.String()); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	wantErr := bad + ":3: VirtualService default/reviews: spec.http[0].route[1].weight: Invalid value: -30: must not be negative\n"
	if diff := cmp.Diff(wantErr, errOut.String()); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{bad, good}, *sources); diff != "" {
		t.Errorf("sources (-want +got):\n%s", diff)
	}

	// A directory expands to its YAML files; all good -> nil.
	out.Reset()
	os.Remove(bad)
	if err := ApplyFiles(context.Background(), c, OpApply, []string{dir}, &out, &errOut); err != nil {
		t.Fatalf("ApplyFiles(dir) = %v", err)
	}
}

func TestClientUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := NewClient(addr, nil)
	_, err = c.Apply(context.Background(), "x.yaml", []byte("x"))
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("Apply err = %v, want *UnreachableError", err)
	}
	for _, want := range []string{addr, "loomctl demo", "LOOMD_ADDR"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSyncz(t *testing.T) {
	srv, _ := fakeLoomd(t)
	ss, err := NewClient(strings.TrimPrefix(srv.URL, "http://"), nil).Syncz(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []SyncStatus{{ID: "sidecar~127.0.0.13~reviews-v1.default~default.svc.cluster.local", Types: []TypeStatus{
		{TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Short: "CDS", Sent: "7", Acked: "7"}}}}
	if diff := cmp.Diff(want, ss); diff != "" {
		t.Errorf("Syncz (-want +got):\n%s", diff)
	}
}

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	dr := filepath.Join(dir, "dr.yaml")
	vs := filepath.Join(dir, "vs.yaml")
	os.WriteFile(dr, []byte(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
`), 0o644)
	os.WriteFile(vs, []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
`), 0o644)
	var out bytes.Buffer
	if err := ValidateCommand([]string{dr, vs}, &out); err != nil {
		t.Fatalf("ValidateCommand(valid) = %v, output:\n%s", err, out.String())
	}
	if got, want := out.String(), "✔ 2 resources valid\n"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 60
    - destination:
        host: reviews
        subset: v1
      weight: 30
`), 0o644)
	out.Reset()
	if err := ValidateCommand([]string{bad}, &out); !errors.Is(err, ErrReported) {
		t.Fatalf("ValidateCommand(bad) = %v, want ErrReported", err)
	}
	if want := bad + ":1: VirtualService default/reviews: spec.http[0]"; !strings.HasPrefix(out.String(), want) {
		t.Errorf("output = %q, want it to start with %q", out.String(), want)
	}
}
