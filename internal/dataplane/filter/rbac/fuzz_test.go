package rbac

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// fuzzPolicies are Istio-shaped DENY, ALLOW and AUDIT rule sets that use
// every matcher kind the fuzzer's requests can hit.
func fuzzPolicies() (deny, allow, audit *rbacv3.RBAC) {
	or := func(ps ...*rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
	}
	and := func(ps ...*rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
	}
	not := func(p *rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
	}
	ids := func(ps ...*rbacv3.Principal) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
	}
	path := func(m *matcherv3.StringMatcher) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
	}
	prefix := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
	}
	deny = &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"deny-admin": {Permissions: []*rbacv3.Permission{and(or(path(prefix("/admin"))), not(or(permHeader(":method", exact("OPTIONS")))))},
			Principals: []*rbacv3.Principal{ids(princAny())}},
		"deny-evil": {Permissions: []*rbacv3.Permission{and(permAny())},
			Principals: []*rbacv3.Principal{ids(principalName(regex(".*/ns/evil/.*"))), ids(claim("iss", exact("evil")))}},
		"deny-template": {Permissions: []*rbacv3.Permission{and(or(uriTemplate("/secret/*/**")))}, Principals: []*rbacv3.Principal{princAny()}},
	}}
	allow = &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
		"allow-get": {Permissions: []*rbacv3.Permission{and(or(permHeader(":method", exact("GET")), permHeader(":method", exact("HEAD"))))},
			Principals: []*rbacv3.Principal{ids(&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.0.0.0", 8)}})}},
		"allow-mtls": {Permissions: []*rbacv3.Permission{and(or(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 9080}}))},
			Principals: []*rbacv3.Principal{ids(principalName(exact("spiffe://cluster.local/ns/default/sa/productpage")))}},
	}}
	audit = &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{"audit": {
		Permissions: []*rbacv3.Permission{path(prefix("/"))}, Principals: []*rbacv3.Principal{princAny()}}}}
	return deny, allow, audit
}

// FuzzPolicyMatching drives Istio's filter order (AUDIT, DENY, ALLOW)
// with arbitrary requests and checks the invariants of Istio's
// semantics: nothing panics; a request a DENY policy matches is never let
// through, whatever the ALLOW policies say; a request let through matched
// an ALLOW policy; AUDIT never denies; normalizing a path twice changes
// nothing and leaves no dot segment.
func FuzzPolicyMatching(f *testing.F) {
	f.Add("GET", "/productpage", "10.1.2.3", uint16(9080), "", "")
	f.Add("GET", "/admin/x", "10.1.2.3", uint16(9080), "", "")
	f.Add("GET", "/public/../admin", "10.0.0.1", uint16(80), "", "")
	f.Add("GET", "/%61dmin", "10.0.0.1", uint16(80), "", "")
	f.Add("OPTIONS", "/admin", "10.0.0.1", uint16(80), "", "")
	f.Add("POST", "/reviews/0", "192.168.0.1", uint16(9080), "spiffe://cluster.local/ns/default/sa/productpage", "")
	f.Add("GET", "/x", "10.0.0.1", uint16(9080), "spiffe://cluster.local/ns/evil/sa/x", "")
	f.Add("GET", "/x", "10.0.0.1", uint16(9080), "", "evil")
	f.Add("GET", "/secret/a/b/c", "10.0.0.1", uint16(9080), "", "")
	f.Add("HEAD", "//..\\admin?x", "::ffff:10.0.0.7", uint16(1), "", "")
	deny, allow, audit := fuzzPolicies()
	fs := []filter.Filter{
		buildHTTP(f, &rbachttpv3.RBAC{Rules: audit}),
		buildHTTP(f, &rbachttpv3.RBAC{Rules: deny}),
		buildHTTP(f, &rbachttpv3.RBAC{Rules: allow}),
	}
	denyEngine, _ := NewEngine(deny)
	allowEngine, _ := NewEngine(allow)
	f.Fuzz(func(t *testing.T, method, target, src string, port uint16, spiffe, iss string) {
		if method == "" || strings.ContainsAny(method, " \t\r\n") || !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n#") {
			return // not a request line net/http would serve
		}
		srcAddr, err := netip.ParseAddr(src)
		if err != nil {
			return
		}
		r, err := http.NewRequest(method, "http://httpbin"+target, nil)
		if err != nil {
			return
		}
		r.RequestURI = target
		r.RemoteAddr = netip.AddrPortFrom(srcAddr, 4000).String()
		q := HTTPRequest(r, nil)
		q.Destination = netip.AddrPortFrom(netip.MustParseAddr("10.9.9.9"), port)
		if spiffe != "" {
			q.TLS = peerTLS(spiffe)
		}
		if iss != "" {
			q.Metadata = map[string]map[string]any{"envoy.filters.http.jwt_authn": {"payload": map[string]any{"iss": iss}}}
		}
		_, denied := denyEngine.Match(&q)
		_, allowed := allowEngine.Match(&q)

		// The chain sees the same facts through the connection and State.
		r = r.WithContext(filter.WithConnection(r.Context(), &filter.Connection{Source: q.Source, Destination: q.Destination, TLS: q.TLS}))
		w, st, passed := serveWith(fs, r, nil, &filter.State{Metadata: q.Metadata})

		if denied && passed {
			t.Fatalf("%s %s from %s: a DENY policy matched and the request went through", method, target, src)
		}
		if passed != (!denied && allowed) {
			t.Fatalf("%s %s from %s: passed %v, want deny %v / allow %v", method, target, src, passed, denied, allowed)
		}
		if !passed && (w.Code != http.StatusForbidden || w.Body.String() != DeniedBody) {
			t.Fatalf("denied with %d %q", w.Code, w.Body.String())
		}
		if _, ok := st.Metadata["envoy.common"]["access_log_hint"]; !ok {
			t.Fatal("the AUDIT filter did not run first")
		}
		n := NormalizePath(q.Path)
		if n != q.Path {
			t.Fatalf("NormalizePath is not idempotent: %q -> %q", q.Path, n)
		}
		p := "/" + strings.TrimPrefix(strings.SplitN(n, "?", 2)[0], "/") + "/"
		if strings.Contains(p, "/./") || strings.Contains(p, "/../") {
			t.Fatalf("normalized path %q keeps a dot segment", n)
		}
	})
}

// peerTLS is a TLS session whose peer certificate has URI SAN uri (none
// when uri does not parse).
func peerTLS(uri string) *tls.ConnectionState {
	cert := &x509.Certificate{}
	if u, err := url.Parse(uri); err == nil {
		cert.URIs = []*url.URL{u}
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
}
