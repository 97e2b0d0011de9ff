package config

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/structpb"
	alpnpb "istio.io/api/envoy/config/filter/http/alpn/v2alpha1"

	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// istioALPN is istiod's istio.alpn filter (xdsfilters.Alpn).
func istioALPN(t testing.TB) *alpnpb.FilterConfig {
	t.Helper()
	return &alpnpb.FilterConfig{AlpnOverride: []*alpnpb.FilterConfig_AlpnOverride{
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP10, AlpnOverride: []string{"istio-http/1.0"}},
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP11, AlpnOverride: []string{"istio-http/1.1"}},
		{UpstreamProtocol: alpnpb.FilterConfig_HTTP2, AlpnOverride: []string{"istio-h2"}},
	}}
}

func TestBuildALPNFilter(t *testing.T) {
	const hcmPath = `listener "virtualOutbound": filter_chains[0].filters[0].typed_config.`
	alpnFilter := func(t testing.TB, c *alpnpb.FilterConfig) *hcmv3.HttpFilter {
		return &hcmv3.HttpFilter{Name: ALPNFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, c)}}
	}
	tests := []struct {
		name    string
		filters func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter
		want    *ALPNOverride
		wantErr string
	}{
		{name: "none", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{router}
		}},
		{name: "istiod's", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{alpnFilter(t, istioALPN(t)), faultFilter(t, nil), router}
		}, want: &ALPNOverride{HTTP10: []string{"istio-http/1.0"}, HTTP11: []string{"istio-http/1.1"}, HTTP2: []string{"istio-h2"}}},
		{name: "by name without config", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{{Name: ALPNFilterName}, router}
		}, want: &ALPNOverride{}},
		{name: "two", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{alpnFilter(t, istioALPN(t)), alpnFilter(t, istioALPN(t)), router}
		}, wantErr: hcmPath + `http_filters[1].name = "istio.alpn": a second istio.alpn filter`},
		{name: "bad protocol", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{alpnFilter(t, &alpnpb.FilterConfig{AlpnOverride: []*alpnpb.FilterConfig_AlpnOverride{
				{UpstreamProtocol: 7, AlpnOverride: []string{"x"}}}}), router}
		}, wantErr: hcmPath + `http_filters[0].typed_config.alpn_override[0].upstream_protocol = "7": must be HTTP10, HTTP11 or HTTP2`},
		{name: "empty protocol id", filters: func(t testing.TB, router *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			return []*hcmv3.HttpFilter{alpnFilter(t, &alpnpb.FilterConfig{AlpnOverride: []*alpnpb.FilterConfig_AlpnOverride{
				{UpstreamProtocol: alpnpb.FilterConfig_HTTP11, AlpnOverride: []string{""}}}}), router}
		}, wantErr: hcmPath + `http_filters[0].typed_config.alpn_override[0].alpn_override[0] = "": must be 1 to 255 bytes (an ALPN protocol id)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := testResources(t)
			h := testHCM(t)
			h.HttpFilters = tt.filters(t, h.HttpFilters[0])
			res.Listeners[0] = testListener(t, h)
			g, err := Build(res, nil)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Build error:\n got %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			fc := g.Listeners["virtualOutbound"].FilterChains[0]
			if diff := cmp.Diff(tt.want, fc.ALPNOverride, cmpopts.IgnoreUnexported(ALPNOverride{})); diff != "" {
				t.Errorf("ALPNOverride (-want +got):\n%s", diff)
			}
			if tt.want != nil {
				// The pool keys are made once, at build.
				if _, key := fc.ALPNOverride.For(false, false); key != strings.Join(tt.want.HTTP11, ",") || fc.ALPNOverride.keys[1] != key {
					t.Errorf("HTTP/1.1 key %q (stored %q), want %q", key, fc.ALPNOverride.keys[1], strings.Join(tt.want.HTTP11, ","))
				}
			}
			for _, f := range fc.HTTPFilters {
				if f.Name == ALPNFilterName {
					t.Errorf("istio.alpn compiled into the chain")
				}
			}
		})
	}
}

func TestALPNOverrideFor(t *testing.T) {
	o := NewALPNOverride([]string{"a"}, []string{"b"}, []string{"c"})
	for _, tc := range []struct {
		o       *ALPNOverride
		h2, h10 bool
		want    []string
	}{
		{o: o, want: []string{"b"}},
		{o: o, h10: true, want: []string{"a"}},
		{o: o, h2: true, want: []string{"c"}},
		{o: nil, want: nil},
	} {
		if got, key := tc.o.For(tc.h2, tc.h10); !cmp.Equal(got, tc.want) || key != strings.Join(tc.want, ",") {
			t.Errorf("For(h2 %v, h10 %v) = %v %q, want %v", tc.h2, tc.h10, got, key, tc.want)
		}
	}
}

// TestClusterNoALPNOverride: istiod's metadata istio.alpn_override
// "false" (DestinationRule SIMPLE or MUTUAL TLS) opts the cluster out.
func TestClusterNoALPNOverride(t *testing.T) {
	for _, tc := range []struct {
		name string
		md   *corev3.Metadata
		want bool
	}{
		{name: "none"},
		{name: "false", md: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
			"alpn_override": structpb.NewStringValue("false")}}}}, want: true},
		{name: "true", md: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
			"alpn_override": structpb.NewStringValue("true")}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := buildCluster(&clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}, Metadata: tc.md}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.NoALPNOverride != tc.want {
				t.Errorf("NoALPNOverride = %v, want %v", c.NoALPNOverride, tc.want)
			}
		})
	}
}
