package matcher

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func TestString(t *testing.T) {
	re := func(r string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: r}}}
	}
	tests := []struct {
		name     string
		m        *matcherv3.StringMatcher
		yes, no  []string
		wantFail string
	}{
		{"exact", exact("abc"), []string{"abc"}, []string{"ABC", "abcd", ""}, ""},
		{"exact ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "Exact.COM"}, IgnoreCase: true},
			[]string{"exact.com", "EXACT.com"}, []string{"exact.co", "exact.comm"}, ""},
		{"prefix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/x/"}}, []string{"/x/", "/x/y"}, []string{"/x", "/X/y"}, ""},
		{"prefix ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "prefix."}, IgnoreCase: true},
			[]string{"PREFIX.a", "prefix."}, []string{"prefix", "xprefix.a"}, ""},
		{"suffix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".com"}}, []string{"a.com", ".com"}, []string{"a.COM", "com"}, ""},
		{"suffix ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".Suffix.com"}, IgnoreCase: true},
			[]string{"a.SUFFIX.com"}, []string{"suffix.com"}, ""},
		{"contains", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "mid"}}, []string{"amidb", "mid"}, []string{"MID", "mi"}, ""},
		{"contains ignore case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "MiD"}, IgnoreCase: true},
			[]string{"aMIDb", "mid"}, []string{"mi d"}, ""},
		{"regex is whole-string", re(".*/ns/foo/.*"), []string{"spiffe://cluster.local/ns/foo/sa/a"}, []string{"spiffe://cluster.local/ns/foox/sa/a"}, ""},
		{"regex presence", re(".+"), []string{"x"}, []string{""}, ""},
		{"regex ignores ignore_case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a"}}, IgnoreCase: true},
			[]string{"a"}, []string{"A"}, ""},
		{"bad regex", re("("), nil, nil, `safe_regex.regex = "(": must be RE2`},
		{"no pattern", &matcherv3.StringMatcher{}, nil, nil, "match_pattern: must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewString(tt.m)
			if tt.wantFail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantFail) {
					t.Fatalf("NewString error = %v, want %q", err, tt.wantFail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range tt.yes {
				if !s.Match(v) {
					t.Errorf("%q does not match", v)
				}
			}
			for _, v := range tt.no {
				if s.Match(v) {
					t.Errorf("%q matches", v)
				}
			}
		})
	}
}

func TestValueAndMetadata(t *testing.T) {
	strs := func(vs ...string) *matcherv3.ValueMatcher {
		var ms []*matcherv3.ValueMatcher
		for _, v := range vs {
			ms = append(ms, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(v)}})
		}
		if len(ms) == 1 {
			return ms[0]
		}
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: ms}}}
	}
	// Istio's claim matcher: the claim is one of the values, or a list
	// holding one.
	claim := func(vs ...string) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{
			{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: strs(vs...)}}}},
			strs(vs...),
		}}}}
	}
	md := Metadata{"envoy.filters.http.jwt_authn": {"payload": map[string]any{
		"iss": "https://issuer", "groups": []any{"group1", "group2"}, "nested": map[string]any{"a": map[string]any{"b": "deep"}},
		"exp": float64(4685989700), "admin": true, "nothing": nil,
	}}}
	path := func(p ...string) []*matcherv3.MetadataMatcher_PathSegment {
		var out []*matcherv3.MetadataMatcher_PathSegment
		for _, k := range p {
			out = append(out, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
		}
		return out
	}
	jwt := func(v *matcherv3.ValueMatcher, invert bool, p ...string) *matcherv3.MetadataMatcher {
		return &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.jwt_authn", Path: path(append([]string{"payload"}, p...)...), Value: v, Invert: invert}
	}
	tests := []struct {
		name string
		m    *matcherv3.MetadataMatcher
		want bool
	}{
		{"string claim", jwt(strs("https://issuer"), false, "iss"), true},
		{"string claim differs", jwt(strs("other"), false, "iss"), false},
		{"list claim holds one", jwt(claim("group2", "group9"), false, "groups"), true},
		{"list claim holds none", jwt(claim("group3"), false, "groups"), false},
		{"claim matcher on a string claim", jwt(claim("https://issuer"), false, "iss"), true},
		{"nested claim", jwt(claim("deep"), false, "nested", "a", "b"), true},
		{"path through a string", jwt(strs("x"), false, "iss", "x"), false},
		{"missing claim", jwt(strs("x"), false, "sub"), false},
		{"missing claim inverted", jwt(strs("x"), true, "sub"), true},
		{"missing namespace", &matcherv3.MetadataMatcher{Filter: "other", Path: path("payload"), Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}}, false},
		{"present", jwt(&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}, false, "iss"), true},
		{"present false never matches", jwt(&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: false}}, false, "sub"), false},
		{"number range", jwt(&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_DoubleMatch{DoubleMatch: &matcherv3.DoubleMatcher{
			MatchPattern: &matcherv3.DoubleMatcher_Range{Range: &typev3.DoubleRange{Start: 4e9, End: 5e9}}}}}, false, "exp"), true},
		{"number exact", jwt(&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_DoubleMatch{DoubleMatch: &matcherv3.DoubleMatcher{
			MatchPattern: &matcherv3.DoubleMatcher_Exact{Exact: 1}}}}, false, "exp"), false},
		{"string matcher on a number", jwt(strs("4685989700"), false, "exp"), false},
		{"bool", jwt(&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_BoolMatch{BoolMatch: true}}, false, "admin"), true},
		{"null", jwt(&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}}, false, "nothing"), true},
		{"null on a missing claim", jwt(&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_NullMatch_{NullMatch: &matcherv3.ValueMatcher_NullMatch{}}}, false, "sub"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMetadata(tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(md); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
			if tt.want && m.Match(nil) != tt.m.GetInvert() {
				t.Errorf("matches without metadata")
			}
		})
	}
	for name, m := range map[string]*matcherv3.MetadataMatcher{
		"filter: must not be empty":          {Path: path("a"), Value: strs("x")},
		"path: must not be empty":            {Filter: "f", Value: strs("x")},
		"value: must be set":                 {Filter: "f", Path: path("a")},
		"or_match.value_matchers: must have": {Filter: "f", Path: path("a"), Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{strs("x")}}}}},
	} {
		if _, err := NewMetadata(m); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("NewMetadata error = %v, want %q", err, name)
		}
	}
}

func TestHeader(t *testing.T) {
	req := httptest.NewRequest("GET", "http://Exact.com/p?q=1", nil)
	req.Header.Add("X-Header", "a")
	req.Header.Add("X-Header", "b")
	req.Header.Set("X-Num", "42")
	tests := []struct {
		name string
		m    *routev3.HeaderMatcher
		want bool
	}{
		{"authority ignore case", &routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "exact.com"}, IgnoreCase: true}}}, true},
		{"host is the authority", &routev3.HeaderMatcher{Name: "Host", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, true},
		{"method", &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("GET")}}, true},
		{"path has the query", &routev3.HeaderMatcher{Name: ":path", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("/p?q=1")}}, true},
		{"repeated header joined", &routev3.HeaderMatcher{Name: "x-header", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("a,b")}}, true},
		{"absent header", &routev3.HeaderMatcher{Name: "x-none", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("")}}, false},
		{"absent header inverted", &routev3.HeaderMatcher{Name: "x-none", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("")}}, false},
		{"absent header treated as empty", &routev3.HeaderMatcher{Name: "x-none", TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("")}}, true},
		{"absent, present_match false", &routev3.HeaderMatcher{Name: "x-none", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, true},
		{"absent, present inverted", &routev3.HeaderMatcher{Name: "x-none", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, true},
		{"inverted match", &routev3.HeaderMatcher{Name: "x-num", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("42")}}, false},
		{"range", &routev3.HeaderMatcher{Name: "x-num", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 40, End: 43}}}, true},
		{"range end excluded", &routev3.HeaderMatcher{Name: "x-num", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 0, End: 42}}}, false},
		{"no specifier is presence", &routev3.HeaderMatcher{Name: "x-num"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHeader(tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Match(req); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := NewHeader(&routev3.HeaderMatcher{Name: ":status"}); err == nil {
		t.Error(":status accepted")
	}
	h, _ := NewHeader(&routev3.HeaderMatcher{Name: "x-num"})
	if h.Match(nil) {
		t.Error("a connection has headers")
	}
}

func TestCIDR(t *testing.T) {
	tests := []struct {
		prefix string
		bits   uint32
		yes    []string
		no     []string
	}{
		{"10.10.10.10", 32, []string{"10.10.10.10", "::ffff:10.10.10.10"}, []string{"10.10.10.11"}},
		{"192.168.10.7", 24, []string{"192.168.10.0", "192.168.10.255"}, []string{"192.168.11.1"}},
		{"::ffff:1.2.0.0", 112, []string{"1.2.3.4"}, []string{"1.3.0.0"}},
		{"2001:db8::", 32, []string{"2001:db8::1"}, []string{"2001:db9::1", "1.2.3.4"}},
		{"0.0.0.0", 0, []string{"8.8.8.8"}, []string{"::1"}},
	}
	for _, tt := range tests {
		p, err := NewCIDR(&corev3.CidrRange{AddressPrefix: tt.prefix, PrefixLen: wrapperspb.UInt32(tt.bits)})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range tt.yes {
			if !CIDRContains(p, netip.MustParseAddr(a)) {
				t.Errorf("%s/%d does not contain %s", tt.prefix, tt.bits, a)
			}
		}
		for _, a := range tt.no {
			if CIDRContains(p, netip.MustParseAddr(a)) {
				t.Errorf("%s/%d contains %s", tt.prefix, tt.bits, a)
			}
		}
	}
	if CIDRContains(netip.MustParsePrefix("0.0.0.0/0"), netip.Addr{}) {
		t.Error("an unknown address is in 0.0.0.0/0")
	}
	for _, c := range []*corev3.CidrRange{{AddressPrefix: "1.2.3"}, {AddressPrefix: "1.2.3.4", PrefixLen: wrapperspb.UInt32(33)}} {
		if _, err := NewCIDR(c); err == nil {
			t.Errorf("NewCIDR(%v) accepted", c)
		}
	}
}

// TestURITemplate checks Envoy's uri_template semantics on the templates
// Istio's {*} and {**} paths become and on Envoy's own examples.
func TestURITemplate(t *testing.T) {
	tests := []struct {
		template string
		yes, no  []string
	}{
		{"/path/template/*", []string{"/path/template/a", "/path/template/a.b~c%20", "/path/template/x?y=/z"},
			[]string{"/path/template/", "/path/template/a/b", "/path/template", "/path/template/a*"}},
		{"/**/path/template", []string{"//path/template", "/a/path/template", "/a/b/c/path/template"},
			[]string{"/path/template", "/a/path/template/"}},
		{"/foo/**/", []string{"/foo//", "/foo/bar/", "/foo/bar/baz/"}, []string{"/foo/bar", "/foo/bar/baz.txt"}},
		{"/foo/*/bar/**", []string{"/foo/buzz/bar/", "/foo/buzz/bar/baz", "/foo/buzz/bar/baz/q"}, []string{"/foo/buzz/bar", "/foo//bar/"}},
		{"/videos/*/*/*.m4s", []string{"/videos/123414/hls/1080p5000_00001.m4s"}, []string{"/videos/1/2/x.mp4"}},
		{"/**.mpd", []string{"/content/123/india/dash/55/manifest.mpd", "/.mpd"}, []string{"/content/manifest.mpd/x"}},
		{"/videos/{file}", []string{"/videos/1080p5000_00001.m4s"}, []string{"/videos/a/b"}},
		{"/api/{v=v1/*}/x", []string{"/api/v1/users/x"}, []string{"/api/v2/users/x"}},
		{"/exact", []string{"/exact", "/exact?q"}, []string{"/exact/", "/exac"}},
	}
	for _, tt := range tests {
		m, err := NewURITemplate(tt.template)
		if err != nil {
			t.Fatalf("%s: %v", tt.template, err)
		}
		for _, p := range tt.yes {
			if !m.Match(p) {
				t.Errorf("%s does not match %s", tt.template, p)
			}
		}
		for _, p := range tt.no {
			if m.Match(p) {
				t.Errorf("%s matches %s", tt.template, p)
			}
		}
	}
	for _, bad := range []string{"", "x", "/a b", "/**/*", "/**/{x}", "/{x}/{x}", "/a//b", "/a*b/c", "/{1x}", "/{x=}", "/{a}/{b}/{c}/{d}/{e}/{f}", "/a=b", "/{abcdefghijklmnopq}"} {
		if _, err := NewURITemplate(bad); err == nil {
			t.Errorf("template %q accepted", bad)
		}
	}
}
