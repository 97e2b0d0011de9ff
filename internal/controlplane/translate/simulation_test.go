package translate

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// request is what the simulated proxy routes on.
type request struct {
	authority string
	path      string
	headers   map[string]string // lowercase names
}

// outcome is where a request goes: "NR" when no route matches, else the
// cluster, or "name=weight,..." for weighted clusters; a redirect is
// "redirect CODE LOCATION" with the parts Envoy would change (scheme,
// host, port, path) and a direct response "direct STATUS BODY".
// It fails t on any match field it does not model.
func simulate(t *testing.T, rc *routev3.RouteConfiguration, req request) string {
	t.Helper()
	vh := selectVirtualHost(rc, req.authority)
	if vh == nil {
		return "NR"
	}
	for _, r := range vh.GetRoutes() {
		if !routeMatches(t, r.GetMatch(), req) {
			continue
		}
		switch act := r.GetAction().(type) {
		case *routev3.Route_Redirect:
			return redirectOutcome(t, r.GetMatch(), act.Redirect, req)
		case *routev3.Route_DirectResponse:
			return fmt.Sprintf("direct %d %s", act.DirectResponse.GetStatus(), act.DirectResponse.GetBody().GetInlineString())
		}
		a := r.GetRoute()
		if c := a.GetCluster(); c != "" {
			return c
		}
		var parts []string
		for _, wc := range a.GetWeightedClusters().GetClusters() {
			parts = append(parts, fmt.Sprintf("%s=%d", wc.GetName(), wc.GetWeight().GetValue()))
		}
		return strings.Join(parts, ",")
	}
	return "NR"
}

// redirectOutcome applies an Envoy RedirectAction to req, as Envoy's
// RouteEntryImpl::newUri: scheme, host and port replaced when set (the
// request's authority keeps its port unless port_redirect is set), and the
// path replaced by path_redirect or its matched prefix by prefix_rewrite.
func redirectOutcome(t *testing.T, m *routev3.RouteMatch, ra *routev3.RedirectAction, req request) string {
	t.Helper()
	onlyFields(t, ra, "host_redirect", "port_redirect", "scheme_redirect", "path_redirect", "prefix_rewrite", "response_code")
	scheme := "http"
	if s := ra.GetSchemeRedirect(); s != "" {
		scheme = s
	}
	// As Envoy's newUri: host_redirect replaces the authority, port and
	// all; port_redirect replaces the port; the query is kept.
	host, port, hasPort := strings.Cut(req.authority, ":")
	if h := ra.GetHostRedirect(); h != "" {
		host, hasPort = h, false
	}
	if p := ra.GetPortRedirect(); p != 0 {
		port, hasPort = fmt.Sprint(p), true
	}
	if hasPort {
		host += ":" + port
	}
	path, query, hasQuery := strings.Cut(req.path, "?")
	switch {
	case ra.GetPathRedirect() != "":
		path = ra.GetPathRedirect()
	case ra.GetPrefixRewrite() != "":
		path = ra.GetPrefixRewrite() + strings.TrimPrefix(path, m.GetPrefix())
	}
	if hasQuery {
		path += "?" + query
	}
	code := map[routev3.RedirectAction_RedirectResponseCode]int{
		routev3.RedirectAction_MOVED_PERMANENTLY: 301, routev3.RedirectAction_FOUND: 302, routev3.RedirectAction_SEE_OTHER: 303,
		routev3.RedirectAction_TEMPORARY_REDIRECT: 307, routev3.RedirectAction_PERMANENT_REDIRECT: 308,
	}[ra.GetResponseCode()]
	return fmt.Sprintf("redirect %d %s://%s%s", code, scheme, host, path)
}

// selectVirtualHost follows Envoy's order: exact domain, then the longest
// "*.suffix", then the longest "prefix.*", then "*".
func selectVirtualHost(rc *routev3.RouteConfiguration, authority string) *routev3.VirtualHost {
	host := strings.ToLower(authority)
	var best *routev3.VirtualHost
	bestRank, bestLen := 0, -1
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			rank, l := 0, len(d)
			switch {
			case d == host:
				rank = 4
			case d == "*":
				rank = 1
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && len(host) > len(d)-1:
				rank = 3
			case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]) && len(host) > len(d)-1:
				rank = 2
			}
			if rank > bestRank || (rank == bestRank && rank > 0 && l > bestLen) {
				best, bestRank, bestLen = vh, rank, l
			}
		}
	}
	return best
}

// onlyFields fails t when m sets a field not in modelled: a match the
// simulation cannot evaluate must not pass silently.
func onlyFields(t *testing.T, m proto.Message, modelled ...string) {
	t.Helper()
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(modelled, string(fd.Name())) {
			t.Fatalf("simulation does not model %s.%s in %v", m.ProtoReflect().Descriptor().Name(), fd.Name(), m)
		}
		return true
	})
}

// stringMatches applies an envoy StringMatcher: exact, prefix, suffix or
// safe_regex, case-sensitive.
func stringMatches(t *testing.T, sm *matcherv3.StringMatcher, v string) bool {
	t.Helper()
	onlyFields(t, sm, "exact", "prefix", "suffix", "safe_regex")
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == p.Exact
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, p.Prefix)
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, p.Suffix)
	case *matcherv3.StringMatcher_SafeRegex:
		onlyFields(t, p.SafeRegex, "regex")
		return regexp.MustCompile("^(?:" + p.SafeRegex.GetRegex() + ")$").MatchString(v)
	}
	t.Fatalf("string matcher %v has no pattern", sm)
	return false
}

// headerMatches follows Envoy's HeaderUtility::matchHeaders: a missing
// header (unless treat_missing_header_as_empty) matches only
// present_match false, or inverted only present_match true; otherwise the
// result of present_match or string_match is inverted by invert_match.
func headerMatches(t *testing.T, h *routev3.HeaderMatcher, req request) bool {
	t.Helper()
	onlyFields(t, h, "name", "present_match", "string_match", "invert_match", "treat_missing_header_as_empty")
	v, ok := req.headers[h.GetName()]
	if h.GetName() == ":authority" {
		v, ok = req.authority, true
	}
	_, isPresent := h.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_PresentMatch)
	if !ok && !h.GetTreatMissingHeaderAsEmpty() {
		if h.GetInvertMatch() {
			return isPresent && h.GetPresentMatch()
		}
		return isPresent && !h.GetPresentMatch()
	}
	var match bool
	switch {
	case isPresent:
		match = h.GetPresentMatch()
	case h.GetStringMatch() != nil:
		match = stringMatches(t, h.GetStringMatch(), v)
	default:
		t.Fatalf("header matcher %v: no present_match or string_match", h)
	}
	return match != h.GetInvertMatch()
}

// queryMatches follows Envoy's QueryParameterMatcher: the parameter's
// first value must be present and, with string_match, match it.
func queryMatches(t *testing.T, q *routev3.QueryParameterMatcher, query url.Values) bool {
	t.Helper()
	onlyFields(t, q, "name", "present_match", "string_match")
	vs, ok := query[q.GetName()]
	if !ok || len(vs) == 0 {
		return false
	}
	if sm := q.GetStringMatch(); sm != nil {
		return stringMatches(t, sm, vs[0])
	}
	if !q.GetPresentMatch() {
		t.Fatalf("query matcher %v: present_match false is not modelled", q)
	}
	return true
}

func routeMatches(t *testing.T, m *routev3.RouteMatch, req request) bool {
	t.Helper()
	onlyFields(t, m, "prefix", "path", "safe_regex", "case_sensitive", "headers", "query_parameters")
	path, rawQuery, _ := strings.Cut(req.path, "?")
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		t.Fatalf("request query %q: %v", rawQuery, err)
	}
	caseSensitive := m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	norm := func(s string) string {
		if caseSensitive {
			return s
		}
		return strings.ToLower(s)
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		if !strings.HasPrefix(norm(path), norm(ps.Prefix)) {
			return false
		}
	case *routev3.RouteMatch_Path:
		if norm(path) != norm(ps.Path) {
			return false
		}
	case *routev3.RouteMatch_SafeRegex:
		onlyFields(t, ps.SafeRegex, "regex")
		if !regexp.MustCompile("^(?:" + ps.SafeRegex.GetRegex() + ")$").MatchString(path) {
			return false
		}
	default:
		t.Fatalf("route match %v: no prefix, path or safe_regex", m)
	}
	for _, h := range m.GetHeaders() {
		if !headerMatches(t, h, req) {
			return false
		}
	}
	for _, q := range m.GetQueryParameters() {
		if !queryMatches(t, q, query) {
			return false
		}
	}
	return true
}

func routeConfig(t *testing.T, r *Resources, name string) *routev3.RouteConfiguration {
	t.Helper()
	for _, rc := range r.Routes {
		if rc.GetName() == name {
			return rc
		}
	}
	t.Fatalf("no route configuration %q", name)
	return nil
}

// endpointsOf lists the "ip:port" endpoints of cluster name: from its CLA
// for EDS clusters, from its load_assignment for static ones.
func endpointsOf(t *testing.T, r *Resources, name string) []string {
	t.Helper()
	var c *clusterv3.Cluster
	for _, cl := range r.Clusters {
		if cl.GetName() == name {
			c = cl
		}
	}
	if c == nil {
		t.Fatalf("no cluster %q", name)
	}
	cla := c.GetLoadAssignment()
	if c.GetType() == clusterv3.Cluster_EDS {
		cla = nil
		for _, e := range r.Endpoints {
			if e.GetClusterName() == name {
				cla = e
			}
		}
		if cla == nil {
			t.Fatalf("EDS cluster %q has no ClusterLoadAssignment", name)
		}
	}
	out := []string{}
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if e.GetHealthStatus() != corev3.HealthStatus_HEALTHY {
				t.Errorf("cluster %q endpoint %v: health %v, want HEALTHY", name, e, e.GetHealthStatus())
			}
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	return out
}

const (
	reviewsV1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
	reviewsV2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
	reviewsV3 = "outbound|9080|v3|reviews.default.svc.cluster.local"

	ratings     = "outbound|9080|"
	ratingsHost = "ratings.default.svc.cluster.local"
)

func TestSimulateRoutes(t *testing.T) {
	jason := map[string]string{"end-user": "jason"}
	tests := []struct {
		name   string
		input  string // case directory under testdata, "" for the mesh alone
		proxy  *model.Proxy
		route  string
		req    request
		wantTo string
	}{
		{"jason reaches v2", "bookinfo", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/reviews/0", jason}, reviewsV2},
		{"anonymous reaches v1", "bookinfo", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/reviews/0", nil}, reviewsV1},
		{"other user reaches v1", "bookinfo", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/", map[string]string{"end-user": "jasonx"}}, reviewsV1},
		{"fqdn with jason reaches v2", "bookinfo", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews.default.svc.cluster.local:9080", "/", jason}, reviewsV2},
		{"short name without port", "bookinfo", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews.default", "/", nil}, reviewsV1},
		{"no VirtualService goes to the service", "bookinfo", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0", nil}, "outbound|9080||ratings.default.svc.cluster.local"},
		{"no DestinationRule, no VirtualService", "", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/", jason}, "outbound|9080||reviews.default.svc.cluster.local"},
		{"unknown host goes out (ALLOW_ANY)", "bookinfo", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"example.com", "/", nil}, PassthroughCluster},
		{"50-50 split", "reviews-50-v3", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/", nil}, reviewsV1 + "=50," + reviewsV3 + "=50"},
		{"inbound by service name", "bookinfo", productpageSidecar(), xdsapi.InboundRoute,
			request{"productpage:9080", "/productpage", nil}, "inbound|9080||"},
		{"inbound by any authority", "bookinfo", productpageSidecar(), xdsapi.InboundRoute,
			request{"127.0.0.11:15006", "/productpage", nil}, "inbound|9080||"},
		{"gateway exact path", "gateway", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/productpage", nil}, "outbound|9080||productpage.default.svc.cluster.local"},
		{"gateway prefix", "gateway", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"127.0.0.10:8080", "/static/tailwind.css", nil}, "outbound|9080||productpage.default.svc.cluster.local"},
		{"gateway exact path is exact", "gateway", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/productpage/x", nil}, "NR"},
		{"gateway unrouted path", "gateway", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/reviews/0", nil}, "NR"},
		{"query param matches", "match-features", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0?debug=1", jason}, ratings + "v2|" + ratingsHost},
		{"query param other value", "match-features", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0?debug=2", jason}, ratings + "|" + ratingsHost},
		{"query param absent", "match-features", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0?other=1", jason}, ratings + "|" + ratingsHost},
		{"withoutHeaders, header absent", "match-features", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0", nil}, ratings + "v1|" + ratingsHost},
		{"withoutHeaders, other value", "match-features", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0", map[string]string{"end-user": "bob"}}, ratings + "v1|" + ratingsHost},
		{"withoutHeaders, excluded value", "match-features", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"ratings:9080", "/ratings/0", jason}, ratings + "|" + ratingsHost},
		{"sourceNamespace of another namespace", "match-features", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"details:9080", "/details/0", nil}, "outbound|9080||details.default.svc.cluster.local"},
		{"sourceNamespace of the proxy's namespace", "match-features", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"details:9080", "/v1/details", nil}, "outbound|9080|v1|details.default.svc.cluster.local"},
		{"second gateway's match applies", "two-gateways", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/b", nil}, "outbound|9080||productpage.default.svc.cluster.local"},
		{"first gateway's match applies", "two-gateways", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/a", nil}, "outbound|9080||reviews.default.svc.cluster.local"},
		{"sourceNamespace never applies on a router", "two-gateways", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/ns", nil}, "NR"},
		{"sourceLabels never apply on a router", "two-gateways", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/labels", nil}, "NR"},
		{"exact uri redirects", "route-actions", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/old", nil}, "redirect 302 http://reviews.example.com/new"},
		{"exact uri redirect is exact", "route-actions", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/old/x", nil}, reviewsV1},
		{"prefix answers directly", "route-actions", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/teapot/pour", nil}, "direct 418 short and stout"},
		{"jason's api call reaches v2", "route-actions", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/api/x", jason}, reviewsV2},
		{"anonymous api call reaches v1", "route-actions", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/api/x", nil}, reviewsV1},
		{"regex uri splits", "route-actions", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"reviews:9080", "/r/42", nil}, reviewsV1 + "=50," + reviewsV3 + "=50"},
		{"match on another port never applies", "route-actions", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"details:9080", "/", nil}, "outbound|9080||details.default.svc.cluster.local"},
		{"match on the listener port applies", "route-actions", productpageSidecar(), xdsapi.HTTPProxyRoute,
			request{"details:9080", "/v1/x", nil}, "outbound|9080|v1|details.default.svc.cluster.local"},
		{"gateway redirect to https on another port", "gateway-redirect", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/login", nil}, "redirect 301 https://localhost:8443/login"},
		{"gateway prefix redirect", "gateway-redirect", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/old/page?x=1", nil}, "redirect 308 http://localhost:8080/new/page?x=1"},
		{"gateway match of another gateway never applies", "gateway-redirect", ingressRouter(), xdsapi.GatewayRouteName(8080),
			request{"localhost:8080", "/other", nil}, "NR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := []string{meshFile}
			if tt.input != "" {
				files = append(files, filepath.Join("testdata", tt.input, "input.yaml"))
			}
			r := mustGenerate(t, loadPushContext(t, files...), tt.proxy)
			if got := simulate(t, routeConfig(t, r, tt.route), tt.req); got != tt.wantTo {
				t.Errorf("%s %s%s %v: routed to %q, want %q", tt.route, tt.req.authority, tt.req.path, tt.req.headers, got, tt.wantTo)
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	r := mustGenerate(t, loadPushContext(t, meshFile, filepath.Join("testdata", "bookinfo", "input.yaml")), productpageSidecar())
	tests := []struct {
		cluster string
		want    []string
	}{
		{reviewsV1, []string{"127.0.0.13:15006"}},
		{reviewsV2, []string{"127.0.0.14:15006"}},
		{reviewsV3, []string{"127.0.0.15:15006"}},
		{"outbound|9080||reviews.default.svc.cluster.local", []string{"127.0.0.13:15006", "127.0.0.14:15006", "127.0.0.15:15006"}},
		{"outbound|9080|v2|ratings.default.svc.cluster.local", []string{}},
		{"inbound|9080||", []string{"127.0.0.11:9080"}},
		{xdsapi.BlackHoleCluster, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.cluster, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, endpointsOf(t, r, tt.cluster)); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEveryRoutedClusterExists checks that each cluster a route names is
// served with its endpoints, for every proxy of the bookinfo mesh.
func TestEveryRoutedClusterExists(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "bookinfo", "input.yaml"), filepath.Join("testdata", "gateway", "input.yaml"))
	for _, p := range []*model.Proxy{productpageSidecar(), ingressRouter()} {
		r := mustGenerate(t, pc, p)
		clusters := map[string]bool{}
		for _, c := range r.Clusters {
			clusters[c.GetName()] = true
		}
		eds := map[string]bool{}
		for _, e := range r.Endpoints {
			eds[e.GetClusterName()] = true
		}
		for _, c := range r.Clusters {
			if c.GetType() == clusterv3.Cluster_EDS && !eds[c.GetName()] {
				t.Errorf("%s: EDS cluster %q has no ClusterLoadAssignment", p.ID, c.GetName())
			}
		}
		for _, rc := range r.Routes {
			for _, vh := range rc.GetVirtualHosts() {
				for _, rt := range vh.GetRoutes() {
					names := []string{rt.GetRoute().GetCluster()}
					for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
						names = append(names, wc.GetName())
					}
					for _, n := range names {
						if n != "" && !clusters[n] {
							t.Errorf("%s: route %s/%s names unknown cluster %q", p.ID, rc.GetName(), vh.GetName(), n)
						}
					}
				}
			}
		}
	}
}

// TestDomainsUnique checks that no domain is in two virtual hosts of one
// table: Envoy rejects such a table.
func TestDomainsUnique(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "bookinfo", "input.yaml"))
	r := mustGenerate(t, pc, productpageSidecar())
	for _, rc := range r.Routes {
		seen := map[string]string{}
		for _, vh := range rc.GetVirtualHosts() {
			for _, d := range vh.GetDomains() {
				if other, dup := seen[d]; dup {
					t.Errorf("%s: domain %q in %q and %q", rc.GetName(), d, other, vh.GetName())
				}
				seen[d] = vh.GetName()
			}
		}
	}
}

func TestDeterministic(t *testing.T) {
	files := []string{meshFile, filepath.Join("testdata", "bookinfo", "input.yaml"), filepath.Join("testdata", "gateway", "input.yaml")}
	for _, p := range []*model.Proxy{productpageSidecar(), ingressRouter()} {
		var first [][]byte
		for i := range 5 {
			r := mustGenerate(t, loadPushContext(t, files...), p)
			var got [][]byte
			for _, m := range slices.Concat(toMessages(r.Listeners), toMessages(r.Routes), toMessages(r.Clusters), toMessages(r.Endpoints)) {
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b)
			}
			if i == 0 {
				first = got
				continue
			}
			if !slices.EqualFunc(first, got, func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatalf("%s: run %d differs from run 0", p.ID, i)
			}
		}
	}
}
