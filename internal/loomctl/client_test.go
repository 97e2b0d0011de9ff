package loomctl

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/api"
	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/xds"
)

type noSync struct{}

func (noSync) Syncz() []xds.ProxyStatus { return nil }

// TestClientAgainstAPI drives loomd's real API handler and config store:
// the client's requests pass its checks (a YAML Content-Type, no foreign
// Origin) for validate, apply and delete.
func TestClientAgainstAPI(t *testing.T) {
	store, err := config.NewStore(config.StoreOptions{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Load(); err != nil {
		t.Fatal(err)
	}
	as, err := api.New(api.Options{Addr: "127.0.0.1:0", Store: store, Sync: noSync{}})
	if err != nil {
		t.Fatal(err)
	}
	as.Close() // served by httptest instead
	srv := httptest.NewServer(as.Handler())
	t.Cleanup(srv.Close)
	c := NewClient(strings.TrimPrefix(srv.URL, "http://"), nil)

	const se = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
`
	ctx := context.Background()
	steps := []struct {
		name string
		op   func(context.Context, string, []byte) ([]Result, error)
		want string
	}{
		{"validate", c.Validate, "created"},
		{"apply", c.Apply, "created"},
		{"apply again", c.Apply, "unchanged"},
		{"delete", c.Delete, "deleted"},
	}
	for _, st := range steps {
		got, err := st.op(ctx, "se.yaml", []byte(se))
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want := []Result{{Key: "ServiceEntry default/reviews", Action: st.want}}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("%s (-want +got)\n%s", st.name, d)
		}
	}
}

// TestDashboard: `loomctl dashboard` prints the URL loomd's API gives and
// opens it only when asked; a loomd without a dashboard is an error that
// says so.
func TestDashboard(t *testing.T) {
	serve := func(url string) *Client {
		t.Helper()
		store, err := config.NewStore(config.StoreOptions{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		as, err := api.New(api.Options{Addr: "127.0.0.1:0", Store: store, Sync: noSync{}, DashboardURL: url})
		if err != nil {
			t.Fatal(err)
		}
		as.Close()
		srv := httptest.NewServer(as.Handler())
		t.Cleanup(srv.Close)
		return NewClient(strings.TrimPrefix(srv.URL, "http://"), nil)
	}
	const url = "http://127.0.0.1:20001/"
	for _, open := range []bool{false, true} {
		var opened []string
		var out strings.Builder
		err := Dashboard(context.Background(), serve(url), open, func(u string) error { opened = append(opened, u); return nil }, &out)
		if err != nil {
			t.Fatal(err)
		}
		if out.String() != "Loom dashboard: "+url+"\n" {
			t.Errorf("open=%v printed %q", open, out.String())
		}
		if want := map[bool]int{false: 0, true: 1}[open]; len(opened) != want {
			t.Errorf("open=%v opened %v", open, opened)
		}
	}
	err := Dashboard(context.Background(), serve(""), false, nil, &strings.Builder{})
	if err == nil || !strings.Contains(err.Error(), "serves no dashboard") {
		t.Errorf("without a dashboard: %v", err)
	}
}
