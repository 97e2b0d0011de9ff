package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

var update = flag.Bool("update", false, "rewrite testdata/*/want.json from the current output")

// TestGolden compares the resources of one proxy per case with
// testdata/<case>/want.json. Each case reads the bookinfo mesh and its own
// input.yaml.
func TestGolden(t *testing.T) {
	tests := []struct {
		name  string
		proxy *model.Proxy
		opts  Options
	}{
		{"bookinfo", productpageSidecar(), Options{}},
		{"gateway", ingressRouter(), Options{}},
		{"jwt-route", ingressRouter(), Options{}},
		{"reviews-50-v3", productpageSidecar(), Options{}},
		{"fault", productpageSidecar(), Options{}},
		{"kube-service", productpageSidecar(), Options{}},
		{"route-actions", productpageSidecar(), Options{}},
		{"gateway-redirect", ingressRouter(), Options{}},
		{"gateway-tls", ingressRouter(), Options{}},
		{"authz", productpageSidecar(), Options{}},
		{"authz-gateway", ingressRouter(), Options{}},
		{"redirect", redirectSidecar(productpageSidecar()), Options{}},
		{"redirect-tcp", redirectSidecar(tcpEchoSidecar()), Options{}},
		{"redirect-sniff", redirectSidecar(tcpEchoSidecar()), Options{}},
		{"ratelimitpolicy-sidecar", productpageSidecar(), Options{RateLimitService: "127.0.0.1:8081"}},
		{"ratelimitpolicy-gateway", ingressRouter(), Options{RateLimitService: "127.0.0.1:8081"}},
		{"sidecar-egress-port", productpageSidecar(), Options{}},
		{"sidecar-egress-port-redirect", redirectSidecar(productpageSidecar()), Options{}},
		{"dr-tunnel", productpageSidecar(), Options{}},
		{"sidecar-egress-mixed-redirect", redirectSidecar(productpageSidecar()), Options{}},
		{"sidecar-egress-http-proxy", productpageSidecar(), Options{}},
		{"sidecar-ingress-unix", redirectSidecar(productpageSidecar()), Options{}},
		{"sidecar-egress-unix", redirectSidecar(productpageSidecar()), Options{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join("testdata", tt.name)
			pc := loadPushContext(t, meshFile, filepath.Join(dir, "input.yaml"))
			r, err := GenerateWith(pc, tt.proxy, tt.opts)
			if err != nil {
				t.Fatalf("GenerateWith: %v", err)
			}
			got := marshalResources(t, r)
			wantFile := filepath.Join(dir, "want.json")
			if *update {
				if err := os.WriteFile(wantFile, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantFile)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got; run with -update if intended):\n%s", wantFile, diff)
			}
		})
	}
}

// marshalResources renders r as stable, indented JSON: protojson output
// (whose spacing is deliberately unstable) re-indented by encoding/json.
func marshalResources(t *testing.T, r *Resources) []byte {
	t.Helper()
	list := func(ms []proto.Message) []json.RawMessage {
		out := []json.RawMessage{}
		for _, m := range ms {
			b, err := protojson.Marshal(m)
			if err != nil {
				t.Fatalf("marshal %T: %v", m, err)
			}
			out = append(out, b)
		}
		return out
	}
	doc := map[string][]json.RawMessage{
		"listeners": list(toMessages(r.Listeners)),
		"routes":    list(toMessages(r.Routes)),
		"clusters":  list(toMessages(r.Clusters)),
		"endpoints": list(toMessages(r.Endpoints)),
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func toMessages[M proto.Message](in []M) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}
