package translate

import (
	"os"
	"path/filepath"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/xdsapi"
)

func TestInsertHTTPFilter(t *testing.T) {
	base := []string{"envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"}
	tests := []struct {
		name string
		op   networking.EnvoyFilter_Patch_Operation
		sub  string
		want []string
	}{
		{"first", networking.EnvoyFilter_Patch_INSERT_FIRST, "envoy.filters.http.cors", []string{"x", "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"}},
		{"before without subFilter is first", networking.EnvoyFilter_Patch_INSERT_BEFORE, "", []string{"x", "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"}},
		{"before router", networking.EnvoyFilter_Patch_INSERT_BEFORE, "envoy.filters.http.router", []string{"envoy.filters.http.fault", "envoy.filters.http.cors", "x", "envoy.filters.http.router"}},
		{"after fault", networking.EnvoyFilter_Patch_INSERT_AFTER, "envoy.filters.http.fault", []string{"envoy.filters.http.fault", "x", "envoy.filters.http.cors", "envoy.filters.http.router"}},
		{"subFilter matches nothing", networking.EnvoyFilter_Patch_INSERT_BEFORE, "envoy.filters.http.jwt_authn", base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fs []*hcmv3.HttpFilter
			for _, n := range base {
				fs = append(fs, &hcmv3.HttpFilter{Name: n})
			}
			var got []string
			for _, f := range insertHTTPFilter(fs, tt.op, tt.sub, &hcmv3.HttpFilter{Name: "x"}) {
				got = append(got, f.GetName())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("filters (-want +got):\n%s", diff)
			}
		})
	}
}

const localRateLimitEnvoyFilter = `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: istio-system}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: http_local_rate_limiter
          token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
          filter_enabled: {runtime_key: e, default_value: {numerator: 100, denominator: HUNDRED}}
          filter_enforced: {runtime_key: f, default_value: {numerator: 100, denominator: HUNDRED}}
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: MERGE
      value:
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            stat_prefix: vh
            token_bucket: {max_tokens: 1, fill_interval: 1s}
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND}
    patch:
      operation: ADD
      value: {name: rate_limit_cluster, type: STRICT_DNS, connect_timeout: 1s}
`

func hcmFilters(t *testing.T, r *Resources, listener string) []string {
	t.Helper()
	for _, l := range r.Listeners {
		if l.GetName() != listener {
			continue
		}
		var h hcmv3.HttpConnectionManager
		nf := l.GetFilterChains()[0].GetFilters()[0]
		if err := nf.GetTypedConfig().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range h.GetHttpFilters() {
			out = append(out, f.GetName())
		}
		return out
	}
	t.Fatalf("no listener %q", listener)
	return nil
}

// TestEnvoyFilterLocalRateLimit: the root namespace EnvoyFilter selecting
// app=productpage inserts the local rate limit filter first in the
// sidecar's inbound HCM only, merges its virtual host override into the
// inbound route table and adds the cluster; the ingress gateway, not
// selected, is unchanged.
func TestEnvoyFilterLocalRateLimit(t *testing.T) {
	ef := filepath.Join(t.TempDir(), "ef.yaml")
	if err := os.WriteFile(ef, []byte(localRateLimitEnvoyFilter), 0o600); err != nil {
		t.Fatal(err)
	}
	pc := loadPushContext(t, meshFile, ef)
	r := mustGenerate(t, pc, productpageSidecar())
	want := []string{"envoy.filters.http.local_ratelimit", "envoy.filters.http.fault", "envoy.filters.http.cors", "istio.stats", "envoy.filters.http.router"}
	if diff := cmp.Diff(want, hcmFilters(t, r, xdsapi.VirtualInboundListener)); diff != "" {
		t.Errorf("inbound filters (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(append([]string{"istio.alpn"}, want[1:]...), hcmFilters(t, r, xdsapi.VirtualOutboundListener)); diff != "" {
		t.Errorf("outbound filters (-want +got):\n%s", diff)
	}
	for _, rc := range r.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			_, has := vh.GetTypedPerFilterConfig()["envoy.filters.http.local_ratelimit"]
			if has != (rc.GetName() == xdsapi.InboundRoute) {
				t.Errorf("route %q vhost %q: has override = %v", rc.GetName(), vh.GetName(), has)
			}
		}
	}
	found := false
	for _, c := range r.Clusters {
		found = found || c.GetName() == "rate_limit_cluster"
	}
	if !found {
		t.Error("cluster rate_limit_cluster not added")
	}

	plain := mustGenerate(t, loadPushContext(t, meshFile), ingressRouter())
	gw := mustGenerate(t, pc, ingressRouter())
	if diff := cmp.Diff(len(plain.Clusters), len(gw.Clusters)); diff != "" {
		t.Errorf("gateway clusters changed: %s", diff)
	}
	for _, l := range gw.Listeners {
		if got := hcmFilters(t, gw, l.GetName()); len(got) > 0 && got[0] == "envoy.filters.http.local_ratelimit" {
			t.Errorf("gateway listener %q got the sidecar's filter", l.GetName())
		}
	}
}

func TestEnvoyFiltersForProxyOrder(t *testing.T) {
	docs := ""
	for _, d := range []struct{ ns, name, prio, sel string }{
		{"default", "b", "0", "app: productpage"}, {"default", "a", "0", ""}, {"default", "z", "-1", ""},
		{"istio-system", "root", "10", ""}, {"default", "other", "0", "app: reviews"}, {"prod", "elsewhere", "0", ""},
	} {
		sel := ""
		if d.sel != "" {
			sel = "  workloadSelector: {labels: {" + d.sel + "}}\n"
		}
		docs += "---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: " + d.name + ", namespace: " + d.ns + "}\nspec:\n  priority: " + d.prio + "\n" + sel +
			"  configPatches:\n  - applyTo: CLUSTER\n    patch: {operation: ADD, value: {name: " + d.name + "}}\n"
	}
	f := filepath.Join(t.TempDir(), "efs.yaml")
	if err := os.WriteFile(f, []byte(docs), 0o600); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ef := range loadPushContext(t, meshFile, f).EnvoyFiltersForProxy(productpageSidecar()) {
		got = append(got, ef.Namespace+"/"+ef.Name)
	}
	want := []string{"istio-system/root", "default/z", "default/a", "default/b"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

// TestEnvoyFilterRateLimitClusterMissing: a ratelimit filter whose
// CLUSTER patch does not apply to the proxy (another context) fails the
// proxy's generation instead of being sent for the proxy to NACK; with the
// cluster present it is generated.
func TestEnvoyFilterRateLimitClusterMissing(t *testing.T) {
	doc := func(clusterContext string) string {
		return `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: d
          rate_limit_service: {grpc_service: {envoy_grpc: {cluster_name: rls}}}
  - applyTo: CLUSTER
    match: {context: ` + clusterContext + `}
    patch: {operation: ADD, value: {name: rls, type: STATIC, connect_timeout: 1s}}
`
	}
	for ctx, wantErr := range map[string]bool{"GATEWAY": true, "SIDECAR_INBOUND": false} {
		f := filepath.Join(t.TempDir(), "ef.yaml")
		if err := os.WriteFile(f, []byte(doc(ctx)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Generate(loadPushContext(t, meshFile, f), productpageSidecar())
		if (err != nil) != wantErr {
			t.Errorf("cluster patch in context %s: Generate error %v, want error %v", ctx, err, wantErr)
		}
	}
}
