package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// outcome is what a request through the filter came to.
type outcome struct {
	code     int    // 0: passed to next
	body     string // the local reply's body
	auth     string // www-authenticate
	details  string
	payload  any         // metadata[jwt_authn][payload]
	upstream http.Header // the headers next saw
	cleared  bool        // the filter cleared the route cache
}

// run sends r through a filter of c and reports the outcome.
func run(t testing.TB, c *Config, r *http.Request, override filter.Config) outcome {
	t.Helper()
	f, err := Factory{}.Build(c, filter.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	st := &filter.State{Override: override}
	r = r.WithContext(filter.NewContext(r.Context(), st))
	var got outcome
	rec := httptest.NewRecorder()
	f.ServeHTTP(rec, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.upstream = r.Header.Clone()
	}))
	if got.upstream == nil {
		got.code, got.body, got.auth, got.details = rec.Code, rec.Body.String(), rec.Header().Get("Www-Authenticate"), st.ReplyDetails
		if st.ReplyCode != rec.Code || st.ReplyBytes != int64(rec.Body.Len()) {
			t.Errorf("state says %d/%d bytes, reply was %d/%d", st.ReplyCode, st.ReplyBytes, rec.Code, rec.Body.Len())
		}
	}
	got.payload = st.Metadata[Name]["payload"]
	got.cleared = st.RouteCacheCleared
	return got
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://httpbin.foo:8000/headers", nil)
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return r
}

// asJSON round-trips v through JSON, as the claims come out of a payload.
func asJSON(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestIstioSampleTokens runs every token of Istio's JWT samples through
// the filter Istio would configure for its issuers and JWKS: valid tokens
// pass with their claims in the metadata (scope, permission split into
// lists), TokenExpired and TokenInvalid get 401 with Envoy's text, and a
// token of an issuer the rule does not name gets 401 too.
func TestIstioSampleTokens(t *testing.T) {
	e2eJWKS := readSample(t, "e2e/jwks.json")
	var e2eRules []rule
	for _, iss := range e2eIssuers {
		e2eRules = append(e2eRules, rule{issuer: iss, jwks: e2eJWKS})
	}
	e2e := mustConfig(t, istioConfig(e2eRules...), time.Time{})
	task := mustConfig(t, istioConfig(rule{issuer: taskIssuer, jwks: readSample(t, "jwks.json")}), time.Time{})

	checked := 0
	for _, tk := range e2eTokens(t) {
		t.Run("e2e/"+tk.Name, func(t *testing.T) {
			got := run(t, e2e, bearer(tk.Token), nil)
			switch tk.Name {
			case "TokenExpired":
				if got.code != 401 || got.body != "Jwt is expired" || got.auth != `Bearer realm="http://httpbin.foo:8000/headers", error="invalid_token"` {
					t.Fatalf("got %+v, want 401 Jwt is expired", got)
				}
			case "TokenInvalid":
				if got.code != 401 || got.body != JwtBadFormat.String() || got.payload != nil {
					t.Fatalf("got %+v, want 401 %q", got, JwtBadFormat)
				}
			default:
				if got.code != 0 {
					t.Fatalf("valid token refused: %d %s", got.code, got.body)
				}
				want := asJSON(t, tk.Payload).(map[string]any)
				for _, c := range []string{"scope", "permission"} {
					if s, ok := want[c].(string); ok {
						want[c] = asJSON(t, strings.Fields(s))
					}
				}
				if diff := cmp.Diff(want, got.payload); diff != "" {
					t.Fatalf("metadata payload (-want +got):\n%s", diff)
				}
				if got.upstream.Get("Authorization") != "" {
					t.Fatal("the token went upstream although forwardOriginalToken is false")
				}
			}
			checked++
			// Under the task's rule, no e2e token is of a configured issuer.
			if tk.Name != "TokenInvalid" {
				if got := run(t, task, bearer(tk.Token), nil); got.code != 401 || got.body != "Jwt issuer is not configured" {
					t.Fatalf("task rule: got %+v, want 401 Jwt issuer is not configured", got)
				}
			}
		})
	}
	for _, name := range []string{"demo.jwt", "groups-scope.jwt"} {
		t.Run("task/"+name, func(t *testing.T) {
			tok := readSample(t, name)
			got := run(t, task, bearer(tok), nil)
			if got.code != 0 {
				t.Fatalf("%s refused: %d %s", name, got.code, got.body)
			}
			p := got.payload.(map[string]any)
			if p["iss"] != taskIssuer || p["sub"] != taskIssuer {
				t.Fatalf("payload %v: want iss and sub %s", p, taskIssuer)
			}
			if name == "groups-scope.jwt" {
				if diff := cmp.Diff([]any{"group1", "group2"}, p["groups"]); diff != "" {
					t.Fatalf("groups (-want +got):\n%s", diff)
				}
			} else if p["foo"] != "bar" {
				t.Fatalf("demo.jwt payload %v: want foo: bar", p)
			}
			// Signed by the task's key, the token does not verify under the
			// e2e key set, whatever its issuer is configured with.
			other := mustConfig(t, istioConfig(rule{issuer: taskIssuer, jwks: e2eJWKS}), time.Time{})
			if got := run(t, other, bearer(tok), nil); got.code != 401 || got.body != JwksKidAlgMismatch.String() {
				t.Fatalf("other key set: got %+v, want 401 %q", got, JwksKidAlgMismatch)
			}
			checked++
		})
	}
	if checked < 16 {
		t.Fatalf("only %d sample tokens checked", checked)
	}
}

// TestForgedTokens: a token is accepted only when a JWKS key signed it.
// Changing a claim, grafting another token's signature, signing with the
// other sample key under the right kid, "alg: none" and an HMAC made with
// the RSA public key as secret all fail.
func TestForgedTokens(t *testing.T) {
	c := mustConfig(t, istioConfig(rule{issuer: taskIssuer, jwks: readSample(t, "jwks.json")}), time.Time{})
	demo := readSample(t, "demo.jwt")
	groups := readSample(t, "groups-scope.jwt")
	seg := strings.Split(demo, ".")
	gseg := strings.Split(groups, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	payload, _ := base64.RawURLEncoding.DecodeString(seg[1])
	tampered := strings.Replace(string(payload), `"foo":"bar"`, `"foo":"baz"`, 1)
	if tampered == string(payload) {
		t.Fatal("demo.jwt payload has no foo: bar")
	}
	var hdr map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(seg[0])
	if err := json.Unmarshal(hb, &hdr); err != nil {
		t.Fatal(err)
	}
	kid := hdr["kid"].(string)
	claims := map[string]any{"iss": taskIssuer, "sub": taskIssuer, "exp": time.Now().Add(time.Hour).Unix()}
	e2eKey := privateKey(t, "e2e/key.pem")
	jwksKey := ParseKeySet(readSample(t, "jwks.json")).keys[0]
	pubDER, _ := json.Marshal(jwksKey)

	tests := []struct {
		name, tok, want string
	}{
		{"payload changed", seg[0] + "." + b64([]byte(tampered)) + "." + seg[2], JwtVerificationFail.String()},
		{"signature of another token", seg[0] + "." + seg[1] + "." + gseg[2], JwtVerificationFail.String()},
		{"other key, right kid", sign(t, jose.RS256, e2eKey, kid, claims), JwtVerificationFail.String()},
		{"other key, no kid", sign(t, jose.RS256, e2eKey, "", claims), JwtVerificationFail.String()},
		{"alg none", b64([]byte(`{"alg":"none","kid":"`+kid+`"}`)) + "." + seg[1] + ".", JwtHeaderNotImplementedAlg.String()},
		{"HS256 keyed with the public key", sign(t, jose.HS256, pubDER, kid, claims), JwksKidAlgMismatch.String()},
		{"empty signature", seg[0] + "." + seg[1] + ".", JwtVerificationFail.String()},
		{"not base64", "a.b.c", JwtBadFormat.String()},
		{"two dots only", "..", JwtHeaderNotImplementedAlg.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, c, bearer(tt.tok), nil)
			if got.code != 401 || got.body != tt.want || got.payload != nil {
				t.Fatalf("got %d %q (payload %v), want 401 %q", got.code, got.body, got.payload, tt.want)
			}
		})
	}
}

// TestRequirements covers the verifier tree as Envoy evaluates it: a
// missing token passes Istio's requirement, present-but-bad fails, a
// request with a good and a bad token fails, and the explicit forms
// (provider_name, requires_all, allow_missing_or_failed).
func TestRequirements(t *testing.T) {
	jwks := readSample(t, "e2e/jwks.json")
	tok1 := tokenByName(t, "TokenIssuer1").Token
	tok2 := tokenByName(t, "TokenIssuer2").Token
	expired := tokenByName(t, "TokenExpired").Token
	one := istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks})
	two := istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks}, rule{issuer: e2eIssuers[1], jwks: jwks,
		headers: []*jwtv3.JwtHeader{{Name: "x-jwt", ValuePrefix: "Bearer "}}})
	providerOnly := istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks})
	providerOnly.Rules[0].GetRequires().RequiresType = &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}
	failedOK := istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks})
	failedOK.Rules[0].GetRequires().RequiresType = &jwtv3.JwtRequirement_AllowMissingOrFailed{}

	req := func(hdr ...string) *http.Request {
		r := bearer("")
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	tests := []struct {
		name     string
		cfg      *jwtv3.JwtAuthentication
		r        *http.Request
		wantCode int
		wantBody string
	}{
		{"missing passes", one, req(), 0, ""},
		{"valid passes", one, req("Authorization", "Bearer "+tok1), 0, ""},
		{"invalid fails", one, req("Authorization", "Bearer invalidToken"), 401, JwtBadFormat.String()},
		{"no Bearer prefix: not a token here", one, req("Authorization", "Basic "+tok1), 0, ""},
		{"query parameter", one, httptest.NewRequest("GET", "/x?access_token="+expired, nil), 401, "Jwt is expired"},
		{"good and bad token: fails", one, nil, 401, JwtBadFormat.String()},
		{"two rules: second issuer in its header", two, req("X-Jwt", "Bearer "+tok2), 0, ""},
		{"two rules: second issuer in the first's header", two, req("Authorization", "Bearer "+tok2), 401, "Jwt issuer is not configured"},
		{"two rules: both tokens", two, req("Authorization", "Bearer "+tok1, "X-Jwt", "Bearer "+tok2), 0, ""},
		// Istio's outer OR: the first provider alone is satisfied, as in Envoy.
		{"two rules: one good, one bad elsewhere", two, req("Authorization", "Bearer "+tok1, "X-Jwt", "Bearer "+expired), 0, ""},
		{"two rules: one missing, one bad", two, req("X-Jwt", "Bearer "+expired), 401, "Jwt issuer is not configured"},
		{"provider_name: missing fails", providerOnly, req(), 401, "Jwt is missing"},
		{"allow_missing_or_failed: bad passes", failedOK, req("Authorization", "Bearer "+expired), 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r
			if tt.name == "good and bad token: fails" {
				r = httptest.NewRequest("GET", "/x?access_token=bad.to.ken", nil)
				r.Header.Set("Authorization", "Bearer "+tok1)
			}
			got := run(t, mustConfig(t, tt.cfg, time.Time{}), r, nil)
			if got.code != tt.wantCode || got.body != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", got.code, got.body, tt.wantCode, tt.wantBody)
			}
			if tt.wantCode == 401 && tt.wantBody == "Jwt is missing" && got.auth != `Bearer realm="http://httpbin.foo:8000/headers"` {
				t.Fatalf("www-authenticate %q", got.auth)
			}
		})
	}
}

// TestClockSkew: exp and nbf are checked with Envoy's 60 s skew, or the
// provider's clock_skew_seconds.
func TestClockSkew(t *testing.T) {
	jwks := readSample(t, "e2e/jwks.json")
	expired := tokenByName(t, "TokenExpired") // exp 1562182856
	exp := time.Unix(1562182856, 0)
	key := privateKey(t, "e2e/key.pem")
	kid := ParseKeySet(jwks).keys[0].KeyID
	notYet := sign(t, jose.RS256, key, kid, map[string]any{"iss": e2eIssuers[0], "nbf": exp.Unix(), "exp": exp.Add(time.Hour).Unix()})
	tests := []struct {
		name string
		tok  string
		now  time.Time
		skew uint32
		want string
	}{
		{"exp + 59s", expired.Token, exp.Add(59 * time.Second), 0, ""},
		{"exp + 60s", expired.Token, exp.Add(60 * time.Second), 0, ""},
		{"exp + 61s", expired.Token, exp.Add(61 * time.Second), 0, "Jwt is expired"},
		{"exp + 5s with skew 2s", expired.Token, exp.Add(5 * time.Second), 2, "Jwt is expired"},
		{"nbf - 60s", notYet, exp.Add(-60 * time.Second), 0, ""},
		{"nbf - 61s", notYet, exp.Add(-61 * time.Second), 0, "Jwt not yet valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks})
			m.Providers["origins-0"].ClockSkewSeconds = tt.skew
			got := run(t, mustConfig(t, m, tt.now), bearer(tt.tok), nil)
			if got.body != tt.want {
				t.Fatalf("got %d %q, want %q", got.code, got.body, tt.want)
			}
		})
	}
}

// TestAudiences: a token must carry one of the provider's audiences
// (string or list aud, compared without scheme and trailing slash);
// otherwise 403 "Audiences in Jwt are not allowed".
func TestAudiences(t *testing.T) {
	jwks := readSample(t, "e2e/jwks.json")
	withAud := tokenByName(t, "TokenIssuer1WithAud").Token      // aud: foo
	withList := tokenByName(t, "TokenIssuer1WithAudList").Token // aud: [foo, buzz]
	noAud := tokenByName(t, "TokenIssuer1").Token
	tests := []struct {
		aud      []string
		tok      string
		wantCode int
	}{
		{nil, withAud, 0},
		{[]string{"foo"}, withAud, 0},
		{[]string{"https://foo/"}, withAud, 0},
		{[]string{"bar"}, withAud, 403},
		{[]string{"buzz"}, withList, 0},
		{[]string{"bar"}, withList, 403},
		{[]string{"foo"}, noAud, 403},
	}
	for _, tt := range tests {
		got := run(t, mustConfig(t, istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks, audiences: tt.aud}), time.Time{}), bearer(tt.tok), nil)
		if got.code != tt.wantCode || (tt.wantCode == 403 && got.body != "Audiences in Jwt are not allowed") {
			t.Errorf("audiences %v: got %d %q, want %d", tt.aud, got.code, got.body, tt.wantCode)
		}
	}
}

// TestHeaders: forward keeps or strips the token, forward_payload_header
// carries the base64url payload, claim_to_headers copies (nested)
// claims, and a client cannot send those headers itself.
func TestHeaders(t *testing.T) {
	jwks := readSample(t, "e2e/jwks.json")
	tk := tokenByName(t, "TokenIssuer1WithNestedClaims2")
	base := rule{issuer: e2eIssuers[0], jwks: jwks, payloadHdr: "x-jwt-payload",
		claimHeaders: []*jwtv3.JwtClaimToHeader{{HeaderName: "x-jwt-iss", ClaimName: "iss"}, {HeaderName: "x-jwt-nested", ClaimName: "nested.nested-2.key2"},
			{HeaderName: "x-jwt-iat", ClaimName: "iat"}, {HeaderName: "x-jwt-absent", ClaimName: "nope"}}}
	seg := strings.Split(tk.Token, ".")

	r := bearer(tk.Token)
	r.Header.Set("X-Jwt-Payload", "spoofed")
	r.Header.Set("X-Jwt-Absent", "spoofed")
	got := run(t, mustConfig(t, istioConfig(base), time.Time{}), r, nil)
	want := http.Header{
		"X-Jwt-Payload": {seg[1]}, "X-Jwt-Iss": {e2eIssuers[0]}, "X-Jwt-Nested": {"valueC"}, "X-Jwt-Iat": {"1604008018"},
	}
	if diff := cmp.Diff(want, got.upstream); diff != "" {
		t.Fatalf("upstream headers (-want +got):\n%s", diff)
	}

	fwd := base
	fwd.forward = true
	got = run(t, mustConfig(t, istioConfig(fwd), time.Time{}), bearer(tk.Token), nil)
	if got.upstream.Get("Authorization") != "Bearer "+tk.Token {
		t.Fatalf("forward: Authorization %q went upstream", got.upstream.Get("Authorization"))
	}

	// Missing token: the spoofed headers are still removed.
	r = bearer("")
	r.Header.Set("X-Jwt-Iss", "spoofed")
	if got = run(t, mustConfig(t, istioConfig(base), time.Time{}), r, nil); len(got.upstream) != 0 {
		t.Fatalf("upstream headers %v, want none", got.upstream)
	}
}

// TestClearRouteCache: as Envoy's authenticator, a verified token clears
// the route cache when its provider has clear_route_cache and
// payload_in_metadata, or added a claim_to_headers header; a missing
// token, or a provider without the flag, leaves the route as it is.
func TestClearRouteCache(t *testing.T) {
	jwks := readSample(t, "e2e/jwks.json")
	tk := tokenByName(t, "TokenIssuer1").Token
	cfg := func(clear bool, payload string, claim string) *Config {
		m := istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks,
			claimHeaders: []*jwtv3.JwtClaimToHeader{{HeaderName: "x-jwt-claim", ClaimName: claim}}})
		p := m.Providers["origins-0"]
		p.ClearRouteCache, p.PayloadInMetadata = clear, payload
		return mustConfig(t, m, time.Time{})
	}
	tests := []struct {
		name  string
		c     *Config
		tok   string
		clear bool
	}{
		{"payload_in_metadata", cfg(true, "payload", "nope"), tk, true},
		{"claim header added", cfg(true, "", "iss"), tk, true},
		{"nothing written", cfg(true, "", "nope"), tk, false},
		{"without clear_route_cache", cfg(false, "payload", "iss"), tk, false},
		{"no token", cfg(true, "payload", "iss"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, tt.c, bearer(tt.tok), nil)
			if got.code != 0 {
				t.Fatalf("refused: %d %s", got.code, got.body)
			}
			if got.cleared != tt.clear {
				t.Fatalf("route cache cleared = %v, want %v", got.cleared, tt.clear)
			}
		})
	}
}

// TestLocations: from_headers with a value prefix, from_params and
// from_cookies, each only for its issuer.
func TestLocations(t *testing.T) {
	jwks := readSample(t, "e2e/jwks.json")
	tok := tokenByName(t, "TokenIssuer1").Token
	c := mustConfig(t, istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks,
		headers: []*jwtv3.JwtHeader{{Name: "x-goog-iap-jwt-assertion"}, {Name: "x-auth", ValuePrefix: "Token "}},
		params:  []string{"my_token"}, cookies: []string{"session"}}), time.Time{})
	tests := []struct {
		name     string
		r        func() *http.Request
		wantPass bool
	}{
		{"plain header", func() *http.Request { r := bearer(""); r.Header.Set("X-Goog-Iap-Jwt-Assertion", tok); return r }, true},
		{"prefixed header", func() *http.Request { r := bearer(""); r.Header.Set("X-Auth", "Token "+tok+"; extra"); return r }, true},
		{"param", func() *http.Request { return httptest.NewRequest("GET", "/?my_token="+tok, nil) }, true},
		{"cookie", func() *http.Request {
			r := bearer("")
			r.AddCookie(&http.Cookie{Name: "session", Value: tok})
			return r
		}, true},
		{"default locations are off", func() *http.Request { return bearer("garbage") }, true},
		{"bad param", func() *http.Request { return httptest.NewRequest("GET", "/?my_token=garbage", nil) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, c, tt.r(), nil)
			if (got.code == 0) != tt.wantPass {
				t.Fatalf("got %d %q, want pass %v", got.code, got.body, tt.wantPass)
			}
			if tt.wantPass && tt.name != "default locations are off" && got.payload == nil {
				t.Fatal("no payload in metadata")
			}
		})
	}
}

// TestOtherAlgorithms: ES256, ES384, PS256, HS256 and EdDSA tokens verify
// against keys of their family; a key of the wrong curve does not fit.
func TestOtherAlgorithms(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	hmac := []byte("0123456789abcdef0123456789abcdef")
	rsaKey := privateKey(t, "e2e/key.pem")
	pub := func(k any, kid string) jose.JSONWebKey {
		jk := jose.JSONWebKey{Key: k, KeyID: kid}
		if _, sym := k.([]byte); sym {
			return jk
		}
		return jk.Public()
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub(p256, "p256"), pub(p384, "p384"), pub(ed, "ed"), pub(hmac, "hs"), pub(rsaKey, "rsa")}}
	jwks, _ := json.Marshal(set)
	c := mustConfig(t, istioConfig(rule{issuer: "iss", jwks: string(jwks)}), time.Time{})
	claims := map[string]any{"iss": "iss", "sub": "s"}
	tests := []struct {
		name string
		tok  string
		want int
	}{
		{"ES256", sign(t, jose.ES256, p256, "p256", claims), 0},
		{"ES384", sign(t, jose.ES384, p384, "p384", claims), 0},
		{"ES256 without kid", sign(t, jose.ES256, p256, "", claims), 0},
		{"EdDSA", sign(t, jose.EdDSA, ed, "ed", claims), 0},
		{"HS256", sign(t, jose.HS256, hmac, "hs", claims), 0},
		{"PS256", sign(t, jose.PS256, rsaKey, "rsa", claims), 0},
		{"RS512", sign(t, jose.RS512, rsaKey, "rsa", claims), 0},
		{"ES384 under the P-256 kid", sign(t, jose.ES384, p384, "p256", claims), 401},
	}
	for _, tt := range tests {
		if got := run(t, c, bearer(tt.tok), nil); got.code != tt.want {
			t.Errorf("%s: got %d %q, want %d", tt.name, got.code, got.body, tt.want)
		}
	}
}

// TestPerRouteAndRules: a PerRouteConfig disables the filter or names a
// requirement (an unknown name fails closed with 403); rules match by
// path; a CORS preflight bypasses the check.
func TestPerRouteAndRules(t *testing.T) {
	jwks := readSample(t, "e2e/jwks.json")
	m := istioConfig(rule{issuer: e2eIssuers[0], jwks: jwks})
	strict := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}}
	m.RequirementMap = map[string]*jwtv3.JwtRequirement{"strict": strict}
	m.Rules = append([]*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/public"}}}}, m.Rules...)
	c := mustConfig(t, m, time.Time{})

	disabled, err := Factory{}.ParseOverride(xdstest.MustAny(t, &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_Disabled{Disabled: true}}))
	if err != nil {
		t.Fatal(err)
	}
	named, _ := Factory{}.ParseOverride(xdstest.MustAny(t, &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "strict"}}))
	unknown, _ := Factory{}.ParseOverride(xdstest.MustAny(t, &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "nope"}}))

	bad := bearer("garbage")
	preflight := httptest.NewRequest(http.MethodOptions, "/", nil)
	preflight.Header.Set("Authorization", "Bearer garbage")
	preflight.Header.Set("Origin", "http://a")
	preflight.Header.Set("Access-Control-Request-Method", "GET")
	tests := []struct {
		name     string
		r        *http.Request
		override filter.Config
		want     int
	}{
		{"bad token", bad, nil, 401},
		{"disabled route", bearer("garbage"), disabled, 0},
		{"named requirement: missing token", bearer(""), named, 401},
		{"unknown requirement name", bearer(""), unknown, 403},
		{"rule without requirement", httptest.NewRequest("GET", "/public", nil), nil, 0},
		{"cors preflight", preflight, nil, 0},
	}
	for _, tt := range tests {
		if got := run(t, c, tt.r, tt.override); got.code != tt.want {
			t.Errorf("%s: got %d %q, want %d", tt.name, got.code, got.body, tt.want)
		}
	}
}

// TestGRPCReply: a gRPC request is refused as gRPC: HTTP 200 with
// grpc-status 16 and the text as grpc-message.
func TestGRPCReply(t *testing.T) {
	c := mustConfig(t, istioConfig(rule{issuer: taskIssuer, jwks: readSample(t, "jwks.json")}), time.Time{})
	r := bearer("garbage")
	r.Header.Set("Content-Type", "application/grpc")
	f, _ := Factory{}.Build(c, filter.Deps{})
	rec := httptest.NewRecorder()
	f.ServeHTTP(rec, r, http.NotFoundHandler())
	if rec.Code != 200 || rec.Header().Get("Grpc-Status") != "16" || rec.Header().Get("Grpc-Message") != JwtBadFormat.String() {
		t.Fatalf("got %d %v", rec.Code, rec.Header())
	}
}

// TestParseRefuses: what the proxy cannot serve is NACKed with the field.
func TestParseRefuses(t *testing.T) {
	jwks := readSample(t, "jwks.json")
	tests := []struct {
		name   string
		modify func(*jwtv3.JwtAuthentication)
		want   string
	}{
		{"remote jwks", func(m *jwtv3.JwtAuthentication) {
			m.Providers["origins-0"].JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{}}
		}, `providers["origins-0"].remote_jwks: not supported`},
		{"unknown provider", func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].GetRequires().GetRequiresAny().Requirements[0].RequiresType = &jwtv3.JwtRequirement_ProviderName{ProviderName: "x"}
		}, `rules[0].requires.requires_any.requirements[0].provider_name = "x": no such provider`},
		{"bad header name", func(m *jwtv3.JwtAuthentication) { m.Providers["origins-0"].ForwardPayloadHeader = "a b" },
			`providers["origins-0"].forward_payload_header = "a b": must be a header name`},
		{"header match", func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].Match.Headers = append(m.Rules[0].Match.Headers, nil)
		}, "rules[0].match.headers: not supported"},
	}
	for _, tt := range tests {
		m := istioConfig(rule{issuer: taskIssuer, jwks: jwks})
		tt.modify(m)
		_, err := FromProto(m)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	// A JWKS the proxy cannot read is not a NACK: its tokens fail.
	c := mustConfig(t, istioConfig(rule{issuer: taskIssuer, jwks: "not json"}), time.Time{})
	if got := run(t, c, bearer(readSample(t, "demo.jwt")), nil); got.code != 401 || got.body != JwksNoValidKeys.String() {
		t.Fatalf("unreadable JWKS: got %d %q", got.code, got.body)
	}
}

// BenchmarkVerify is one request with demo.jwt through Istio's filter for
// the task: extraction, parsing, claims, an RS256 signature check and the
// metadata.
func BenchmarkVerify(b *testing.B) {
	c := mustConfig(b, istioConfig(rule{issuer: taskIssuer, jwks: readSample(b, "jwks.json")}), time.Time{})
	f, err := Factory{}.Build(c, filter.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	tok := readSample(b, "demo.jwt")
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodGet, "http://a/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		st := &filter.State{}
		r = r.WithContext(filter.NewContext(r.Context(), st))
		f.ServeHTTP(nil, r, next)
		if st.Metadata == nil {
			b.Fatal("not verified")
		}
	}
}
