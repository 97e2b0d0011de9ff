package translate

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
)

// TestSampleGoldens translates every file of Istio's bookinfo networking
// samples (with destination-rule-all.yaml, as Istio's tasks apply it
// first, unless the file has its own DestinationRules) and of Istio's own pilot test data, each on top of the bookinfo
// mesh, for the productpage sidecar and the ingress gateway, and compares
// a digest of the result with testdata/samples/<dir>/<file>.txt. A file
// Loom refuses has its errors as its golden instead, so that a change in
// what is accepted shows in review as well as a change in translation.
//
// The digest keeps what decides where traffic goes (listeners, virtual
// hosts, each route's match and action, clusters' type, LB and breakers)
// and leaves out the rest, so the goldens stay readable: HTTP filters are
// listed only when a listener's chain is not the default, and rate limits
// as a count where there are some.
func TestSampleGoldens(t *testing.T) {
	for _, set := range []struct {
		dir, glob string
		// golden names a file's golden within testdata/samples.
		golden func(f string) string
	}{
		{"bookinfo/networking", "*.yaml", baseGolden("networking")},
		{"bookinfo/policy", "*.yaml", baseGolden("policy")},
		{"pilot-testdata/config", "*.yaml", baseGolden("config")},
		// Pilot's networking cases are one configs.yaml per directory,
		// named by the directory.
		{"pilot-testdata/networking", "*/configs.yaml", func(f string) string {
			return filepath.Join("pilot-networking", filepath.Base(filepath.Dir(f))+".txt")
		}},
	} {
		dir := set.dir
		files, err := filepath.Glob(filepath.Join(sharedSamples, dir, set.glob))
		if err != nil || len(files) == 0 {
			t.Fatalf("no samples in %s (%v): shared/istio-samples must be beside the module", dir, err)
		}
		for _, f := range files {
			golden := set.golden(f)
			t.Run(dir+"/"+strings.TrimSuffix(golden[strings.Index(golden, "/")+1:], ".txt"), func(t *testing.T) {
				inputs := []string{meshFile, f}
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if dir == "bookinfo/networking" && !strings.Contains(string(data), "kind: DestinationRule") {
					inputs = []string{meshFile, filepath.Join(sharedSamples, dir, "destination-rule-all.yaml"), f}
				}
				if dir == "bookinfo/policy" {
					// The policy tasks act on the ingress gateway of Bookinfo.
					nw := filepath.Join(sharedSamples, "bookinfo/networking")
					inputs = []string{meshFile, filepath.Join(nw, "bookinfo-gateway.yaml"), filepath.Join(nw, "destination-rule-all.yaml"), f}
				}
				got := sampleDigest(t, inputs...)
				want := filepath.Join("testdata", "samples", golden)
				if *update {
					if err := os.MkdirAll(filepath.Dir(want), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(want, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				golden, err := os.ReadFile(want)
				if err != nil {
					t.Fatalf("%v (run with -update to create it)", err)
				}
				if diff := cmp.Diff(string(golden), got); diff != "" {
					t.Errorf("%s mismatch (-want +got; run with -update if intended):\n%s", want, diff)
				}
			})
		}
	}
}

// baseGolden names a file's golden dir/<file name without .yaml>.txt.
func baseGolden(dir string) func(f string) string {
	return func(f string) string {
		return filepath.Join(dir, strings.TrimSuffix(filepath.Base(f), ".yaml")+".txt")
	}
}

// sampleDigest decodes and validates files as one config set, and
// returns either the errors or the digest of both proxies' resources.
func sampleDigest(t *testing.T, files ...string) string {
	t.Helper()
	var rs []*config.Resource
	var errs config.Errors
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, derrs := config.Decode(filepath.Base(f), data)
		rs = append(rs, got...)
		errs = append(errs, derrs...)
	}
	if len(errs) == 0 {
		errs = validation.ValidateAll(rs)
	}
	var b strings.Builder
	if len(errs) > 0 {
		b.WriteString("refused:\n")
		for _, e := range errs {
			fmt.Fprintf(&b, "  %s\n", e.Error())
		}
		return b.String()
	}
	pc := model.NewPushContext(config.NewSnapshot(1, rs))
	proxies := []*model.Proxy{productpageSidecar(), ingressRouter()}
	// A Gateway that does not select the ingress gateway gets a router of
	// its own, labelled with its selector, so its servers show too.
	for _, g := range pc.Gateways() {
		sel := g.Spec.GetSelector()
		if registry.LabelsContain(ingressRouter().Labels, sel) {
			continue
		}
		r := ingressRouter()
		r.Name = g.Name
		r.ID = "router~127.0.0.10~" + g.Name + "." + g.Namespace + "~" + g.Namespace + ".svc.cluster.local"
		r.Labels = sel
		proxies = append(proxies, r)
	}
	// Likewise a Sidecar whose workloadSelector does not select the
	// productpage sidecar gets a sidecar of its own in its namespace, so
	// its ingress and egress listeners show too.
	for _, res := range rs {
		sc, ok := res.Spec.(*networking.Sidecar)
		sel := sc.GetWorkloadSelector().GetLabels()
		if !ok || len(sel) == 0 || (res.Namespace == "default" && registry.LabelsContain(productpageSidecar().Labels, sel)) {
			continue
		}
		p := productpageSidecar()
		p.IP = "127.0.0.20"
		p.Name = res.Name
		p.Namespace = res.Namespace
		p.ID = "sidecar~127.0.0.20~" + res.Name + "." + res.Namespace + "~" + res.Namespace + ".svc.cluster.local"
		p.Labels = sel
		p.ServiceAccount = res.Name
		proxies = append(proxies, p)
	}
	for _, p := range proxies {
		r, err := Generate(pc, p)
		if err != nil {
			fmt.Fprintf(&b, "%s: generate: %v\n", p.ID, err)
			continue
		}
		fmt.Fprintf(&b, "== %s\n", p.ID)
		digestResources(&b, r)
	}
	return b.String()
}

func digestResources(b *strings.Builder, r *Resources) {
	for _, l := range r.Listeners {
		fmt.Fprintf(b, "listener %s %s:%d\n", l.GetName(), l.GetAddress().GetSocketAddress().GetAddress(), l.GetAddress().GetSocketAddress().GetPortValue())
		for _, lf := range l.GetListenerFilters() {
			fmt.Fprintf(b, "  listener filter %s\n", lf.GetName())
		}
		for _, fc := range l.GetFilterChains() {
			if fc.GetFilterChainMatch() != nil || fc.GetTransportSocket() != nil {
				fmt.Fprintf(b, "  chain %q%s%s\n", fc.GetName(), digestChainMatch(fc.GetFilterChainMatch()), digestTLS(fc.GetTransportSocket()))
			}
			for _, f := range fc.GetFilters() {
				var tp tcpv3.TcpProxy
				if f.GetTypedConfig().UnmarshalTo(&tp) == nil {
					fmt.Fprintf(b, "  filter %s -> %s\n", f.GetName(), digestTCPProxy(&tp))
					continue
				}
				fmt.Fprintf(b, "  filter %s\n", f.GetName())
				var h hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&h) != nil {
					continue
				}
				if rds := h.GetRds().GetRouteConfigName(); rds != "" && fc.GetTransportSocket() != nil {
					fmt.Fprintf(b, "    rds %s\n", rds)
				}
				var names []string
				for _, hf := range h.GetHttpFilters() {
					names = append(names, hf.GetName())
				}
				if chain := strings.Join(names, ","); chain != "envoy.filters.http.fault,envoy.filters.http.cors,envoy.filters.http.router" {
					fmt.Fprintf(b, "    http_filters %s\n", chain)
				}
			}
		}
	}
	for _, rc := range r.Routes {
		fmt.Fprintf(b, "route config %s\n", rc.GetName())
		for _, vh := range rc.GetVirtualHosts() {
			rl := ""
			if n := len(vh.GetRateLimits()); n > 0 {
				rl = fmt.Sprintf(" rate_limits=%d", n)
			}
			if vh.GetRequireTls() != routev3.VirtualHost_NONE {
				rl += " require_tls=" + vh.GetRequireTls().String()
			}
			fmt.Fprintf(b, "  vhost %s (%d domains)%s\n", vh.GetName(), len(vh.GetDomains()), rl)
			for _, rt := range vh.GetRoutes() {
				fmt.Fprintf(b, "    %s: %s -> %s\n", rt.GetName(), digestMatch(rt.GetMatch()), digestAction(rt))
			}
		}
	}
	for _, c := range r.Clusters {
		fmt.Fprintf(b, "cluster %s %s %s%s\n", c.GetName(), digestClusterType(c), c.GetLbPolicy(), digestBreakers(c))
	}
	for _, e := range r.Endpoints {
		var addrs []string
		for _, le := range e.GetEndpoints() {
			for _, lb := range le.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				addrs = append(addrs, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
			}
		}
		sort.Strings(addrs)
		fmt.Fprintf(b, "endpoints %s [%s]\n", e.GetClusterName(), strings.Join(addrs, " "))
	}
}

func digestMatch(m *routev3.RouteMatch) string {
	var parts []string
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		parts = append(parts, "prefix "+p.Prefix)
	case *routev3.RouteMatch_Path:
		parts = append(parts, "path "+p.Path)
	case *routev3.RouteMatch_SafeRegex:
		parts = append(parts, "regex "+p.SafeRegex.GetRegex())
	}
	for _, h := range m.GetHeaders() {
		parts = append(parts, "header "+h.GetName())
	}
	for _, q := range m.GetQueryParameters() {
		parts = append(parts, "query "+q.GetName())
	}
	return strings.Join(parts, ", ")
}

func digestAction(rt *routev3.Route) string {
	var s string
	switch a := rt.GetAction().(type) {
	case *routev3.Route_Redirect:
		s = fmt.Sprintf("redirect %s", a.Redirect.GetResponseCode())
	case *routev3.Route_DirectResponse:
		s = fmt.Sprintf("direct %d", a.DirectResponse.GetStatus())
	case *routev3.Route_Route:
		ra := a.Route
		switch cs := ra.GetClusterSpecifier().(type) {
		case *routev3.RouteAction_Cluster:
			s = cs.Cluster
		case *routev3.RouteAction_WeightedClusters:
			var ws []string
			for _, c := range cs.WeightedClusters.GetClusters() {
				ws = append(ws, fmt.Sprintf("%s=%d", c.GetName(), c.GetWeight().GetValue()))
			}
			s = "[" + strings.Join(ws, " ") + "]"
		}
		if rp := ra.GetRetryPolicy(); rp != nil {
			s += fmt.Sprintf(" retries=%d", rp.GetNumRetries().GetValue())
		}
		if t := ra.GetTimeout(); t != nil && t.AsDuration() != 0 {
			s += " timeout=" + t.AsDuration().String()
		}
		if len(ra.GetRequestMirrorPolicies()) > 0 {
			s += fmt.Sprintf(" mirrors=%d", len(ra.GetRequestMirrorPolicies()))
		}
		if len(ra.GetHashPolicy()) > 0 {
			s += fmt.Sprintf(" hash=%d", len(ra.GetHashPolicy()))
		}
		if len(ra.GetRateLimits()) > 0 {
			s += fmt.Sprintf(" rate_limits=%d", len(ra.GetRateLimits()))
		}
	}
	if fs := rt.GetTypedPerFilterConfig(); len(fs) > 0 {
		names := make([]string, 0, len(fs))
		for k := range fs {
			names = append(names, k)
		}
		slices.Sort(names)
		s += " filters=" + strings.Join(names, ",")
	}
	return s
}

func digestClusterType(c *clusterv3.Cluster) string {
	if t, ok := c.GetClusterDiscoveryType().(*clusterv3.Cluster_Type); ok {
		return t.Type.String()
	}
	return "custom"
}

func digestBreakers(c *clusterv3.Cluster) string {
	var s string
	if th := c.GetCircuitBreakers().GetThresholds(); len(th) > 0 && th[0].GetMaxConnections().GetValue() != 4294967295 {
		s += fmt.Sprintf(" max_connections=%d", th[0].GetMaxConnections().GetValue())
	}
	if c.GetOutlierDetection() != nil {
		s += " outlier"
	}
	return s
}

func digestChainMatch(m *listenerv3.FilterChainMatch) string {
	var s string
	if n := m.GetServerNames(); len(n) > 0 {
		s += " sni=" + strings.Join(n, ",")
	}
	if p := m.GetDestinationPort(); p != nil {
		s += fmt.Sprintf(" port=%d", p.GetValue())
	}
	for _, r := range m.GetPrefixRanges() {
		s += fmt.Sprintf(" dst=%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue())
	}
	if t := m.GetTransportProtocol(); t != "" {
		s += " transport=" + t
	}
	return s
}

// digestTLS names a downstream TLS context's secrets and whether it
// requires a client certificate.
func digestTLS(ts *corev3.TransportSocket) string {
	if ts == nil {
		return ""
	}
	var dc tlsv3.DownstreamTlsContext
	if ts.GetTypedConfig().UnmarshalTo(&dc) != nil {
		return " tls=?"
	}
	var names []string
	for _, sc := range dc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
		names = append(names, sc.GetName())
	}
	s := " tls cert=" + strings.Join(names, ",")
	if ca := dc.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName(); ca != "" {
		s += " ca=" + ca
	}
	if dc.GetRequireClientCertificate().GetValue() {
		s += " require_client_cert"
	}
	if a := dc.GetCommonTlsContext().GetAlpnProtocols(); len(a) > 0 {
		s += " alpn=" + strings.Join(a, ",")
	}
	return s
}

func digestTCPProxy(tp *tcpv3.TcpProxy) string {
	s := tp.GetCluster()
	if s == "" {
		var ws []string
		for _, c := range tp.GetWeightedClusters().GetClusters() {
			ws = append(ws, fmt.Sprintf("%s=%d", c.GetName(), c.GetWeight()))
		}
		s = "[" + strings.Join(ws, " ") + "]"
	}
	if len(tp.GetHashPolicy()) > 0 {
		s += fmt.Sprintf(" hash=%d", len(tp.GetHashPolicy()))
	}
	return s
}
