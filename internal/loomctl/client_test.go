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
