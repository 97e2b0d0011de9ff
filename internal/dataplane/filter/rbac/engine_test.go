package rbac

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/matcher"
)

// Builders of the protos Istio emits.

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

func cidr(a string, bits uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(bits)}
}

func permAny() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func princAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func permHeader(name string, m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}}}
}

func principalName(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

func claim(key string, m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: "envoy.filters.http.jwt_authn",
		Path: []*matcherv3.MetadataMatcher_PathSegment{
			{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "payload"}},
			{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: key}},
		},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}},
	}}}
}

func uriTemplate(t string) *rbacv3.Permission {
	a, err := anypb.New(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: t})
	if err != nil {
		panic(err)
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{Name: "uri-template", TypedConfig: a}}}
}

// facts builds a Request the way the HTTP filter would, plus connection
// facts; an empty method makes it a connection (no HTTP request).
type facts struct {
	method, target string
	headers        map[string]string
	src, dst       string
	remote         string
	sni            string
	spiffe         string // peer URI SAN; "" with tls for a certificate without one
	tls            bool
	claims         map[string]any
}

func (f facts) request() *Request {
	q := &Request{ServerName: f.sni}
	if f.method != "" {
		r := httptest.NewRequest(f.method, f.target, nil)
		for k, v := range f.headers {
			r.Header.Set(k, v)
		}
		q.R = r
		q.Path = NormalizePath(matcher.RequestPath(r))
	}
	if f.src != "" {
		q.Source = netip.MustParseAddrPort(f.src)
		q.Remote = q.Source.Addr()
	}
	if f.remote != "" {
		q.Remote = netip.MustParseAddr(f.remote)
	}
	if f.dst != "" {
		q.Destination = netip.MustParseAddrPort(f.dst)
	}
	if f.tls || f.spiffe != "" {
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: "leaf", Organization: []string{"org"}}, DNSNames: []string{"leaf.example.com"}}
		if f.spiffe != "" {
			cert.URIs = []*url.URL{{Scheme: "spiffe", Host: strings.Split(strings.TrimPrefix(f.spiffe, "spiffe://"), "/")[0],
				Path: "/" + strings.SplitN(strings.TrimPrefix(f.spiffe, "spiffe://"), "/", 2)[1]}}
		}
		q.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	}
	if f.claims != nil {
		q.Metadata = matcher.Metadata{"envoy.filters.http.jwt_authn": {"payload": f.claims}}
	}
	return q
}

// TestMatchers is a table per matcher kind: a one-policy ALLOW engine
// whose single permission or principal is the matcher under test.
func TestMatchers(t *testing.T) {
	base := facts{method: "GET", target: "http://httpbin.foo:8000/status/200?x=1", src: "10.0.0.1:3000", dst: "10.0.0.2:8000"}
	with := func(mod func(*facts)) facts { f := base; mod(&f); return f }
	tests := []struct {
		name    string
		perm    *rbacv3.Permission
		princ   *rbacv3.Principal
		yes, no []facts
	}{
		{name: "any", perm: permAny(), yes: []facts{base, {}}},
		{name: "header :method", perm: permHeader(":method", exact("GET")), yes: []facts{base},
			no: []facts{with(func(f *facts) { f.method = "POST" }), {src: "1.1.1.1:1"}}},
		{name: "header :authority ignore case suffix", perm: permHeader(":authority", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".FOO:8000"}, IgnoreCase: true}),
			yes: []facts{base}, no: []facts{with(func(f *facts) { f.target = "http://httpbin.bar:8000/" })}},
		{name: "header :path is normalized", perm: permHeader(":path", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/admin"}}),
			yes: []facts{with(func(f *facts) { f.target = "/public/../admin?x" }), with(func(f *facts) { f.target = "/%61dmin" })},
			no:  []facts{base}},
		{name: "url_path exact ignores the query", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/status/200")}}}},
			yes: []facts{base}, no: []facts{with(func(f *facts) { f.target = "/status/2000" }), {src: "1.1.1.1:1"}}},
		{name: "url_path presence regex", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: regex(".+")}}}},
			yes: []facts{base}, no: []facts{{src: "1.1.1.1:1"}}},
		{name: "uri_template {*}", perm: uriTemplate("/status/*"),
			yes: []facts{base}, no: []facts{with(func(f *facts) { f.target = "/status/200/x" }), {}}},
		{name: "uri_template {**}", perm: uriTemplate("/**/200"),
			yes: []facts{base, with(func(f *facts) { f.target = "/a/b/200" })}, no: []facts{with(func(f *facts) { f.target = "/200/x" })}},
		{name: "destination_ip", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.0.0.0", 24)}},
			yes: []facts{base, {dst: "10.0.0.9:1"}}, no: []facts{{dst: "10.0.1.2:8000"}, {}}},
		{name: "destination_port", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8000}},
			yes: []facts{base, {dst: "1.1.1.1:8000"}}, no: []facts{{dst: "10.0.0.2:8001"}}},
		{name: "destination_port_range", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 8000, End: 8002}}},
			yes: []facts{base, {dst: "1.1.1.1:8001"}}, no: []facts{{dst: "1.1.1.1:8002"}, {dst: "1.1.1.1:7999"}}},
		{name: "requested_server_name", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: regex(".+")}},
			yes: []facts{{sni: "a.com"}}, no: []facts{base}},
		{name: "metadata permission", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: claim("iss", exact("i")).GetMetadata()}},
			yes: []facts{{claims: map[string]any{"iss": "i"}}}, no: []facts{base, {claims: map[string]any{"iss": "j"}}}},
		{name: "not_rule", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: permHeader(":method", exact("GET"))}},
			yes: []facts{with(func(f *facts) { f.method = "PUT" }), {}}, no: []facts{base}},
		{name: "and_rules", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			permHeader(":method", exact("GET")), {Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8000}}}}}},
			yes: []facts{base}, no: []facts{with(func(f *facts) { f.dst = "10.0.0.2:80" }), with(func(f *facts) { f.method = "HEAD" })}},
		{name: "or_rules", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			permHeader(":method", exact("POST")), {Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8000}}}}}},
			yes: []facts{base, with(func(f *facts) { f.method = "POST"; f.dst = "1.1.1.1:1" })}, no: []facts{with(func(f *facts) { f.dst = "10.0.0.2:80" })}},

		{name: "principal any", princ: princAny(), yes: []facts{base, {}}},
		{name: "authenticated spiffe exact", princ: principalName(exact("spiffe://cluster.local/ns/foo/sa/sleep")),
			yes: []facts{{spiffe: "spiffe://cluster.local/ns/foo/sa/sleep"}},
			no:  []facts{base, {spiffe: "spiffe://cluster.local/ns/foo/sa/other"}}},
		{name: "authenticated namespace regex", princ: principalName(regex(".*/ns/foo/.*")),
			yes: []facts{{spiffe: "spiffe://td/ns/foo/sa/x"}}, no: []facts{{spiffe: "spiffe://td/ns/foox/sa/x"}}},
		{name: "authenticated DNS SAN then subject", princ: principalName(exact("leaf.example.com")),
			yes: []facts{{tls: true}}, no: []facts{base}},
		{name: "authenticated subject", princ: principalName(exact("CN=leaf,O=org")), yes: []facts{{tls: true}}},
		{name: "authenticated any TLS", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}},
			yes: []facts{{tls: true}}, no: []facts{base}},
		{name: "direct_remote_ip", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.0.0.1", 32)}},
			yes: []facts{base, with(func(f *facts) { f.remote = "9.9.9.9" })}, no: []facts{{src: "10.0.0.3:1"}, {}}},
		{name: "source_ip", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("10.0.0.0", 8)}},
			yes: []facts{base}, no: []facts{{src: "11.0.0.3:1"}}},
		{name: "remote_ip", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("9.9.9.0", 24)}},
			yes: []facts{with(func(f *facts) { f.remote = "9.9.9.9" })}, no: []facts{base}},
		{name: "header principal", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-token",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}},
			yes: []facts{with(func(f *facts) { f.headers = map[string]string{"X-Token": "a"} })}, no: []facts{base, {}}},
		{name: "url_path principal", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/status/200")}}}},
			yes: []facts{base}},
		{name: "jwt iss and sub", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			claim("iss", exact("testing@secure.istio.io")), claim("sub", regex(".+"))}}}},
			yes: []facts{{claims: map[string]any{"iss": "testing@secure.istio.io", "sub": "x"}}},
			no:  []facts{{claims: map[string]any{"iss": "testing@secure.istio.io"}}, base}},
		{name: "or_ids and not_id", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			{Identifier: &rbacv3.Principal_NotId{NotId: principalName(regex(".+"))}}, claim("iss", exact("i"))}}}},
			yes: []facts{base, {spiffe: "spiffe://a/b", claims: map[string]any{"iss": "i"}}}, no: []facts{{spiffe: "spiffe://a/b"}}},
		{name: "sourced metadata", princ: &rbacv3.Principal{Identifier: &rbacv3.Principal_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
			MetadataMatcher: claim("iss", exact("i")).GetMetadata()}}},
			yes: []facts{{claims: map[string]any{"iss": "i"}}}, no: []facts{base}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &rbacv3.Policy{Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{princAny()}}
			if tt.perm != nil {
				p.Permissions[0] = tt.perm
			}
			if tt.princ != nil {
				p.Principals[0] = tt.princ
			}
			e, err := NewEngine(&rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": p}})
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range tt.yes {
				if allowed, id := e.Allowed(f.request()); !allowed || id != "p" {
					t.Errorf("yes[%d] %+v: allowed %v by %q", i, f, allowed, id)
				}
			}
			for i, f := range tt.no {
				if allowed, _ := e.Allowed(f.request()); allowed {
					t.Errorf("no[%d] %+v: allowed", i, f)
				}
			}
		})
	}
}

func TestActions(t *testing.T) {
	get := &rbacv3.Policy{Permissions: []*rbacv3.Permission{permHeader(":method", exact("GET"))}, Principals: []*rbacv3.Principal{princAny()}}
	all := &rbacv3.Policy{Permissions: []*rbacv3.Permission{permAny()}, Principals: []*rbacv3.Principal{princAny()}}
	getReq := facts{method: "GET", target: "/"}.request()
	putReq := facts{method: "PUT", target: "/"}.request()
	tests := []struct {
		name     string
		rbac     *rbacv3.RBAC
		q        *Request
		allowed  bool
		policyID string
	}{
		{"allow matched", &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"b": get, "a": all}}, getReq, true, "a"},
		{"allow unmatched", &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"b": get}}, putReq, false, ""},
		{"allow with no policy denies", &rbacv3.RBAC{}, getReq, false, ""},
		{"deny matched", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"get": get}}, getReq, false, "get"},
		{"deny unmatched", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"get": get}}, putReq, true, ""},
		{"log matched", &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{"get": get}}, getReq, true, "get"},
		{"log unmatched", &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{"get": get}}, putReq, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEngine(tt.rbac)
			if err != nil {
				t.Fatal(err)
			}
			allowed, id := e.Allowed(tt.q)
			if allowed != tt.allowed || id != tt.policyID {
				t.Errorf("Allowed = %v, %q; want %v, %q", allowed, id, tt.allowed, tt.policyID)
			}
		})
	}
}

func TestNewEngineRefuses(t *testing.T) {
	pol := func(p *rbacv3.Permission, q *rbacv3.Principal) *rbacv3.RBAC {
		return &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {Permissions: []*rbacv3.Permission{p}, Principals: []*rbacv3.Principal{q}}}}
	}
	tests := []struct {
		rbac *rbacv3.RBAC
		want string
	}{
		{pol(permHeader("", exact("x")), princAny()), `policies["p"].permissions[0].header.name: must not be empty`},
		{pol(permAny(), principalName(regex("("))), `policies["p"].principals[0].authenticated.principal_name.safe_regex.regex = "(": must be RE2`},
		{pol(&rbacv3.Permission{Rule: &rbacv3.Permission_Matcher{Matcher: &corev3.TypedExtensionConfig{}}}, princAny()), "permissions[0].matcher: not supported"},
		{pol(permAny(), &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{}}), "principals[0].filter_state: not supported"},
		{pol(uriTemplate("/a/**/*"), princAny()), "uri_template.typed_config.path_template"},
		{pol(&rbacv3.Permission{}, princAny()), "permissions[0].rule: must be set"},
		{&rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {Permissions: []*rbacv3.Permission{permAny()}}}}, "must have at least one permission and one principal"},
		{pol(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("x", 1)}}, princAny()), "destination_ip.address_prefix"},
	}
	for _, tt := range tests {
		if _, err := NewEngine(tt.rbac); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewEngine error = %v, want %q", err, tt.want)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b":                 "/a/b",
		"/a/./b":               "/a/b",
		"/a/../b?x=/../y":      "/b?x=/../y",
		"/public/../admin":     "/admin",
		"/../../admin":         "/admin",
		"/a/b/..":              "/a/",
		"/a/.":                 "/a/",
		"/%2e%2E/admin":        "/admin",
		"/%61dmin":             "/admin",
		"/a%2fb":               "/a%2Fb",
		"/a\\..\\admin":        "/admin",
		"/caf\xc3\xa9":         "/caf%C3%A9",
		"/a b":                 "/a%20b",
		"/x.y/.hidden/..a":     "/x.y/.hidden/..a",
		"/status/200?a=%2e%2e": "/status/200?a=%2e%2e",
	} {
		if got := NormalizePath(in); got != want {
			t.Errorf("NormalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}
