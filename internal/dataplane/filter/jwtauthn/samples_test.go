package jwtauthn

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/emptypb"
)

// samples is Istio's JWT test data, beside the module.
const samples = "../../../../../shared/istio-samples/jwt"

// Istio's task issuer and its JWKS (jwt/jwks.json), and the e2e issuers,
// all signed by the key of jwt/e2e/jwks.json.
const taskIssuer = "testing@secure.istio.io"

var e2eIssuers = []string{"test-issuer-1@istio.io", "test-issuer-2@istio.io", "test-issuer-3@istio.io"}

// sampleToken is one token of jwt/e2e/tokens.json.
type sampleToken struct {
	Name    string         `json:"name"`
	Token   string         `json:"token"`
	Payload map[string]any `json:"payload"`
}

func readSample(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samples, name))
	if err != nil {
		t.Fatalf("Istio's JWT samples are missing (%v): shared/istio-samples must be beside the module", err)
	}
	return strings.TrimSpace(string(b))
}

func e2eTokens(t testing.TB) []sampleToken {
	t.Helper()
	var f struct {
		Tokens []sampleToken `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(readSample(t, "e2e/tokens.json")), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Tokens) < 10 {
		t.Fatalf("only %d tokens in tokens.json", len(f.Tokens))
	}
	return f.Tokens
}

func tokenByName(t testing.TB, name string) sampleToken {
	t.Helper()
	for _, tk := range e2eTokens(t) {
		if tk.Name == name {
			return tk
		}
	}
	t.Fatalf("no token %q in tokens.json", name)
	return sampleToken{}
}

// privateKey reads a PEM RSA private key of the samples (PKCS#1 or #8).
func privateKey(t testing.TB, name string) *rsa.PrivateKey {
	t.Helper()
	blk, _ := pem.Decode([]byte(readSample(t, name)))
	if blk == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return k.(*rsa.PrivateKey)
}

// sign makes a compact JWS of claims with key (go-jose), alg and kid.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rule is one RequestAuthentication jwtRule as Istio converts it.
type rule struct {
	issuer, jwks string
	audiences    []string
	forward      bool
	payloadHdr   string
	headers      []*jwtv3.JwtHeader
	params       []string
	cookies      []string
	claimHeaders []*jwtv3.JwtClaimToHeader
	spaceDelim   []string
}

// istioConfig is what Istio's convertToEnvoyJwtConfig makes of rules: a
// provider "origins-N" per rule with payload_in_metadata "payload", and
// for one rule requires_any {provider, allow_missing}, for more
// requires_any {P1 .. Pn, requires_all {any{Pi, allow_missing}...}}.
func istioConfig(rules ...rule) *jwtv3.JwtAuthentication {
	m := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}, BypassCorsPreflight: true}
	var inner, outer []*jwtv3.JwtRequirement
	for i, r := range rules {
		name := "origins-" + string(rune('0'+i))
		m.Providers[name] = &jwtv3.JwtProvider{
			Issuer: r.issuer, Audiences: r.audiences, Forward: r.forward, ForwardPayloadHeader: r.payloadHdr,
			PayloadInMetadata: "payload", FromHeaders: r.headers, FromParams: r.params, FromCookies: r.cookies,
			ClaimToHeaders: r.claimHeaders,
			NormalizePayloadInMetadata: &jwtv3.JwtProvider_NormalizePayload{
				SpaceDelimitedClaims: append([]string{"permission", "scope"}, r.spaceDelim...)},
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: r.jwks}}},
		}
		p := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
		inner = append(inner, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
			Requirements: []*jwtv3.JwtRequirement{p, {RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}}}}})
		outer = append(outer, p)
	}
	req := inner[0]
	if len(rules) > 1 {
		outer = append(outer, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: inner}}})
		req = &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: outer}}}
	}
	m.Rules = []*jwtv3.RequirementRule{{
		Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: req},
	}}
	return m
}

// mustConfig parses m with the clock at now (the real clock when zero).
func mustConfig(t testing.TB, m *jwtv3.JwtAuthentication, now time.Time) *Config {
	t.Helper()
	c, err := FromProto(m)
	if err != nil {
		t.Fatal(err)
	}
	if !now.IsZero() {
		c.now = func() time.Time { return now }
	}
	return c
}
