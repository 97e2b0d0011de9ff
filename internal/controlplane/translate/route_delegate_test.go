package translate

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

var delegateFiles = []string{meshFile, filepath.Join("testdata", "delegate", "input.yaml")}

// TestDelegateGolden compares the ingress router's resources with
// testdata/delegate/want.json (regenerate with -update).
func TestDelegateGolden(t *testing.T) {
	got := marshalResources(t, mustGenerate(t, loadPushContext(t, delegateFiles...), ingressRouter()))
	wantFile := filepath.Join("testdata", "delegate", "want.json")
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
}

func TestSimulateDelegates(t *testing.T) {
	jason := map[string]string{"end-user": "jason"}
	gw := xdsapi.GatewayRouteName(8080)
	tests := []struct {
		name   string
		proxy  *model.Proxy
		route  string
		req    request
		wantTo string
	}{
		{"delegate prefix under the root's", ingressRouter(), gw, request{"localhost:8080", "/reviews/v2/0", nil}, reviewsV2},
		{"delegate header match keeps the root's prefix", ingressRouter(), gw, request{"localhost:8080", "/reviews/0", jason}, reviewsV2},
		{"delegate header match outside the root's prefix", ingressRouter(), gw, request{"localhost:8080", "/other", jason}, "NR"},
		{"delegate catch-all narrowed to the root's prefix", ingressRouter(), gw, request{"localhost:8080", "/reviews/0", nil}, reviewsV1},
		{"delegate short name resolves in the delegate's namespace", ingressRouter(), gw,
			request{"localhost:8080", "/reviews/details", nil}, "outbound|9080||details.team.svc.cluster.local"},
		{"conflicting delegate route dropped", ingressRouter(), gw, request{"localhost:8080", "/ratings/0", nil}, "NR"},
		{"root route after the delegate", ingressRouter(), gw, request{"localhost:8080", "/productpage", nil}, "outbound|9080||productpage.default.svc.cluster.local"},
		{"sidecar: delegate narrowed by the root's header", productpageSidecar(), xdsapi.HTTPProxyRoute, request{"reviews:9080", "/reviews/0", jason}, reviewsV2},
		{"sidecar: delegate catch-all under the root's header", productpageSidecar(), xdsapi.HTTPProxyRoute, request{"reviews:9080", "/x", jason}, reviewsV3},
		{"sidecar: conflicting delegate route dropped", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/x", map[string]string{"end-user": "bob"}}, reviewsV1},
		{"sidecar: root's own route", productpageSidecar(), xdsapi.HTTPProxyRoute, request{"reviews:9080", "/reviews/0", nil}, reviewsV1},
	}
	pc := loadPushContext(t, delegateFiles...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustGenerate(t, pc, tt.proxy)
			if got := simulate(t, routeConfig(t, r, tt.route), tt.req); got != tt.wantTo {
				t.Errorf("%s %s%s %v: routed to %q, want %q", tt.route, tt.req.authority, tt.req.path, tt.req.headers, got, tt.wantTo)
			}
		})
	}
}

// TestDelegateRouteFields checks what a merged route takes from the root:
// its name joined with the delegate's, and its timeout and headers where
// the delegate sets none.
func TestDelegateRouteFields(t *testing.T) {
	r := mustGenerate(t, loadPushContext(t, delegateFiles...), ingressRouter())
	rc := routeConfig(t, r, xdsapi.GatewayRouteName(8080))
	type fields struct {
		Timeout  string
		RootHdr  bool
		NumRoute int
	}
	got := map[string]fields{}
	var names []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			names = append(names, rt.GetName())
			hdr := slices.ContainsFunc(rt.GetRequestHeadersToAdd(), func(h *corev3.HeaderValueOption) bool { return h.GetHeader().GetKey() == "x-root" })
			f := got[rt.GetName()]
			f.Timeout, f.RootHdr = rt.GetRoute().GetTimeout().AsDuration().String(), hdr
			f.NumRoute++
			got[rt.GetName()] = f
		}
	}
	want := map[string]fields{
		"reviews-v2":      {"5s", true, 2}, // one route per merged match
		"reviews-details": {"1s", true, 1},
		"reviews":         {"5s", true, 1},
		"":                {"0s", false, 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes by name (-want +got):\n%s\nnames: %q", diff, names)
	}
}
