package config

import (
	"context"
	"math/bits"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestXXHash64(t *testing.T) {
	// Reference values of XXH64 (xxhash's own test vectors and
	// github.com/cespare/xxhash), covering the <4, <8, <32 and >=32 byte paths.
	tests := []struct {
		in   string
		seed uint64
		want uint64
	}{
		{"", 0, 0xef46db3751d8e999},
		{"a", 0, 0xd24ec4f1a98c6e5b},
		{"abc", 0, 0x44bc2cf5ad770999},
	}
	for _, tc := range tests {
		if got := XXHash64(tc.in, tc.seed); got != tc.want {
			t.Errorf("XXHash64(%q, %d) = %#x, want %#x", tc.in, tc.seed, got, tc.want)
		}
	}
	// Longer inputs: a one-byte change anywhere changes the hash.
	long := strings.Repeat("0123456789abcdef", 5)
	for n := 4; n <= len(long); n += 7 {
		a := XXHash64(long[:n], 0)
		b := XXHash64(long[:n-1]+"X", 0)
		if a == b || a == XXHash64(long[:n], 1) {
			t.Errorf("length %d: hash ignores the last byte or the seed", n)
		}
	}
}

func hp(h *routev3.RouteAction_HashPolicy) []*routev3.RouteAction_HashPolicy {
	return []*routev3.RouteAction_HashPolicy{h}
}

func TestBuildHashPolicies(t *testing.T) {
	header := func(name string) *routev3.RouteAction_HashPolicy {
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: name}}}
	}
	cookie := func(c *routev3.RouteAction_HashPolicy_Cookie) *routev3.RouteAction_HashPolicy {
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}
	}
	srcIP := func(on bool) *routev3.RouteAction_HashPolicy {
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: on}}}
	}
	query := func(name string) *routev3.RouteAction_HashPolicy {
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: name}}}
	}
	terminal := func(h *routev3.RouteAction_HashPolicy) *routev3.RouteAction_HashPolicy { h.Terminal = true; return h }
	rewrite := header("x-user")
	rewrite.GetHeader().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{}
	tests := []struct {
		name    string
		in      []*routev3.RouteAction_HashPolicy
		want    []HashPolicy
		wantErr string
	}{
		{"none", nil, nil, ""},
		{"header", hp(header("X-User")), []HashPolicy{{Kind: HashHeader, Name: "X-User"}}, ""},
		{"host header", hp(header("Host")), []HashPolicy{{Kind: HashHeader, Name: ":authority"}}, ""},
		{"pseudo header", hp(header(":path")), []HashPolicy{{Kind: HashHeader, Name: ":path"}}, ""},
		{"cookie without ttl", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{Name: "s"})), []HashPolicy{{Kind: HashCookie, Name: "s"}}, ""},
		{"cookie with ttl", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{Name: "s", Path: "/", Ttl: durationpb.New(90*time.Second + 5*time.Millisecond)})),
			[]HashPolicy{{Kind: HashCookie, Name: "s", CookiePath: "/", CookieTTL: 90 * time.Second, CookieGenerate: true}}, ""},
		{"cookie ttl 0", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{Name: "s", Ttl: durationpb.New(0)})),
			[]HashPolicy{{Kind: HashCookie, Name: "s", CookieGenerate: true}}, ""},
		{"source ip and terminal query", []*routev3.RouteAction_HashPolicy{srcIP(false), srcIP(true), terminal(query("u"))},
			[]HashPolicy{{Kind: HashSourceIP}, {Kind: HashQueryParameter, Name: "u", Terminal: true}}, ""},

		{"empty header name", hp(header("")), nil, `route.hash_policy[0].header.header_name: must not be empty`},
		{"bad pseudo header", hp(header(":protocol")), nil, `route.hash_policy[0].header.header_name = ":protocol": must be a header or :authority, :method, :path or :scheme`},
		{"regex rewrite", []*routev3.RouteAction_HashPolicy{srcIP(true), rewrite}, nil, `route.hash_policy[1].header.regex_rewrite: not supported`},
		{"cookie no name", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{})), nil, `route.hash_policy[0].cookie.name: must not be empty`},
		{"cookie attributes", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{Name: "s", Ttl: durationpb.New(time.Minute),
			Attributes: []*routev3.RouteAction_HashPolicy_CookieAttribute{{Name: "SameSite", Value: "Lax"}, {Name: "Secure"}}})),
			[]HashPolicy{{Kind: HashCookie, Name: "s", CookieTTL: time.Minute, CookieGenerate: true,
				CookieAttributes: []CookieAttribute{{Name: "SameSite", Value: "Lax"}, {Name: "Secure"}}}}, ""},
		{"cookie attribute no name", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{Name: "s",
			Attributes: []*routev3.RouteAction_HashPolicy_CookieAttribute{{Name: "Secure"}, {Value: "x"}}})), nil,
			`route.hash_policy[0].cookie.attributes[1].name = "": must be a non-empty token`},
		{"cookie attribute name not a token", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{Name: "s",
			Attributes: []*routev3.RouteAction_HashPolicy_CookieAttribute{{Name: "Same Site", Value: "Lax"}}})), nil,
			`route.hash_policy[0].cookie.attributes[0].name = "Same Site": must be a non-empty token`},
		{"cookie attribute value with ;", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{Name: "s",
			Attributes: []*routev3.RouteAction_HashPolicy_CookieAttribute{{Name: "Domain", Value: "a; Secure"}}})), nil,
			`route.hash_policy[0].cookie.attributes[0].value = "a; Secure": must be a header value without ';'`},
		{"cookie negative ttl", hp(cookie(&routev3.RouteAction_HashPolicy_Cookie{Name: "s", Ttl: durationpb.New(-time.Second)})), nil,
			`route.hash_policy[0].cookie.ttl = "-1s": must not be negative`},
		{"query no name", hp(query("")), nil, `route.hash_policy[0].query_parameter.name: must not be empty`},
		{"filter state", hp(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
			FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "k"}}}), nil, `route.hash_policy[0].filter_state: not supported`},
		{"unset", hp(&routev3.RouteAction_HashPolicy{}), nil,
			`route.hash_policy[0].policy_specifier: must be header, cookie, connection_properties or query_parameter`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := buildHashPolicies("route.hash_policy", tc.in)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("got %+v, want error %q", got, tc.wantErr)
				}
				if d := cmp.Diff(tc.wantErr, err.Error()); d != "" {
					t.Errorf("error (-want +got):\n%s", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestBuildRouteHashPolicyNACK(t *testing.T) {
	res := testResources(t)
	route2(res.Routes[0].(*routev3.RouteConfiguration)).GetRoute().HashPolicy = hp(&routev3.RouteAction_HashPolicy{})
	_, err := Build(res, nil)
	want := `route_config "http_proxy": virtual_hosts[0].routes[2].route.hash_policy[0].policy_specifier: must be header, cookie, connection_properties or query_parameter`
	if err == nil || err.Error() != want {
		t.Errorf("Build error = %v, want %s", err, want)
	}
}

func TestRequestHash(t *testing.T) {
	x := func(s string) uint64 { return XXHash64(s, 0) }
	combine := func(hs ...uint64) uint64 {
		var h uint64
		for _, v := range hs {
			h = bits.RotateLeft64(h, 1) ^ v
		}
		return h
	}
	req := func(target string, hdr ...string) *http.Request {
		r := httptest.NewRequest("GET", target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	tests := []struct {
		name     string
		policies []HashPolicy
		req      *http.Request
		ip       string
		want     uint64
		wantOK   bool
	}{
		{"no policy", nil, req("/"), "10.0.0.9", 0, false},
		{"header", []HashPolicy{{Kind: HashHeader, Name: "X-User"}}, req("/", "x-user", "jason"), "", x("jason"), true},
		{"header values in any order", []HashPolicy{{Kind: HashHeader, Name: "X-User"}}, req("/", "x-user", "b", "x-user", "a"), "", x("ab"), true},
		{"header absent", []HashPolicy{{Kind: HashHeader, Name: "X-User"}}, req("/"), "", 0, false},
		{"authority", []HashPolicy{{Kind: HashHeader, Name: ":authority"}}, req("http://reviews:9080/"), "", x("reviews:9080"), true},
		{"cookie", []HashPolicy{{Kind: HashCookie, Name: "s", CookieGenerate: true}}, req("/", "Cookie", `a=1; s="abc"`), "", x("abc"), true},
		{"cookie absent no ttl", []HashPolicy{{Kind: HashCookie, Name: "s"}}, req("/", "Cookie", "a=1"), "", 0, false},
		{"source ip", []HashPolicy{{Kind: HashSourceIP}}, req("/"), "10.0.0.9", x("10.0.0.9"), true},
		{"source ip unknown", []HashPolicy{{Kind: HashSourceIP}}, req("/"), "", 0, false},
		{"query", []HashPolicy{{Kind: HashQueryParameter, Name: "u"}}, req("/p?a=1&u=jason&u=x"), "", x("jason"), true},
		{"query empty value", []HashPolicy{{Kind: HashQueryParameter, Name: "u"}}, req("/p?u"), "", x(""), true},
		{"combined, missing ones skipped", []HashPolicy{{Kind: HashHeader, Name: "X-User"}, {Kind: HashHeader, Name: "X-None"}, {Kind: HashSourceIP}},
			req("/", "x-user", "jason"), "10.0.0.9", combine(x("jason"), x("10.0.0.9")), true},
		{"equal policies do not cancel", []HashPolicy{{Kind: HashSourceIP}, {Kind: HashSourceIP}}, req("/"), "10.0.0.9",
			combine(x("10.0.0.9"), x("10.0.0.9")), true},
		{"terminal with a hash stops", []HashPolicy{{Kind: HashHeader, Name: "X-User", Terminal: true}, {Kind: HashSourceIP}},
			req("/", "x-user", "jason"), "10.0.0.9", x("jason"), true},
		{"terminal without a hash goes on", []HashPolicy{{Kind: HashHeader, Name: "X-None", Terminal: true}, {Kind: HashSourceIP}},
			req("/"), "10.0.0.9", x("10.0.0.9"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Route{HashPolicies: tc.policies}
			got, ok, set := r.RequestHash(tc.req, tc.ip)
			if got != tc.want || ok != tc.wantOK || set != "" {
				t.Errorf("RequestHash = %#x, %v, %v; want %#x, %v, no cookie", got, ok, set, tc.want, tc.wantOK)
			}
		})
	}
}

func TestRequestHashGeneratedCookie(t *testing.T) {
	r := &Route{HashPolicies: []HashPolicy{{Kind: HashCookie, Name: "session", CookiePath: "/api", CookieTTL: time.Hour, CookieGenerate: true}}}
	req := httptest.NewRequest("GET", "/api/x", nil)
	req.RemoteAddr = "10.0.0.9:41000"
	local := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 15001}
	req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.Addr(local)))

	h, ok, c := r.RequestHash(req, "10.0.0.9")
	if c == "" || !ok {
		t.Fatalf("RequestHash = %#x, %v, %q; want a generated cookie", h, ok, c)
	}
	// Envoy: hex of xxHash64(remote address + local address), 16 digits.
	value := hex16(XXHash64("10.0.0.9:4100010.0.0.1:15001", 0))
	if want := `session="` + value + `"; Path=/api; Max-Age=3600; HttpOnly`; c != want {
		t.Errorf("Set-Cookie = %s, want %s", c, want)
	}
	if h != XXHash64(value, 0) {
		t.Errorf("hash = %#x, want xxHash64 of the cookie value", h)
	}
	// The same connection gets the same cookie; the client sending it back
	// hashes to the same value without a new cookie.
	_, _, again := r.RequestHash(req, "10.0.0.9")
	if again != c {
		t.Errorf("second request's cookie = %q, want %q", again, c)
	}
	back := httptest.NewRequest("GET", "/api/x", nil)
	back.AddCookie(&http.Cookie{Name: "session", Value: value, Quoted: true})
	if h2, ok2, set := r.RequestHash(back, ""); h2 != h || !ok2 || set != "" {
		t.Errorf("with the cookie: %#x, %v, %q; want %#x, true, no cookie", h2, ok2, set, h)
	}
	// Attributes go in order before HttpOnly (Envoy's makeSetCookieValue).
	r.HashPolicies[0].CookieAttributes = []CookieAttribute{{Name: "SameSite", Value: "Strict"}, {Name: "Secure"}}
	if _, _, sc := r.RequestHash(req, ""); !strings.HasSuffix(sc, "; Max-Age=3600; SameSite=Strict; Secure; HttpOnly") {
		t.Errorf("cookie with attributes = %q, want SameSite=Strict; Secure before HttpOnly", sc)
	}
	// ttl 0: a session cookie, no Max-Age.
	r.HashPolicies[0].CookieTTL = 0
	if _, _, sc := r.RequestHash(req, ""); sc == "" || strings.Contains(sc, "Max-Age") {
		t.Errorf("session cookie = %q, want no Max-Age", sc)
	}
}

func hex16(v uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b[:])
}

func TestRequestHashAllocs(t *testing.T) {
	r := &Route{HashPolicies: []HashPolicy{{Kind: HashHeader, Name: "X-User"}, {Kind: HashSourceIP}, {Kind: HashQueryParameter, Name: "u"}}}
	req := httptest.NewRequest("GET", "/p?u=jason", nil)
	req.Header.Set("X-User", "jason")
	if n := testing.AllocsPerRun(100, func() { r.RequestHash(req, "10.0.0.9") }); n != 0 {
		t.Errorf("RequestHash allocates %.0f times, want 0", n)
	}
}
