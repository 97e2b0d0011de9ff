package jwtauthn

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// FuzzVerify feeds arbitrary Authorization values through Istio's
// configuration for the e2e issuers. The filter must never panic, and
// must accept a token only when it is one a JWKS key really signed: the
// accepted token verifies with go-jose against the key set, and its
// payload is one of Istio's sample payloads (nobody here can sign new
// ones). The seed corpus (every sample token, mangled forms, garbage)
// runs in plain go test.
func FuzzVerify(f *testing.F) {
	jwks := readSample(f, "e2e/jwks.json")
	var rules []rule
	for _, iss := range e2eIssuers {
		rules = append(rules, rule{issuer: iss, jwks: jwks})
	}
	c := mustConfig(f, istioConfig(rules...), time.Unix(1700000000, 0))
	var set jose.JSONWebKeySet
	for _, k := range ParseKeySet(jwks).keys {
		set.Keys = append(set.Keys, k)
	}
	var payloads [][]byte
	for _, tk := range e2eTokens(f) {
		f.Add("Bearer " + tk.Token)
		f.Add("Bearer " + strings.ToUpper(tk.Token))
		f.Add("Bearer " + tk.Token + tk.Token)
		if i := strings.LastIndexByte(tk.Token, '.'); i > 0 {
			f.Add("Bearer " + tk.Token[:i+1])
			f.Add("Bearer " + tk.Token[:i] + ".AAAA")
		}
		if sig, err := jose.ParseSignedCompact(tk.Token, algorithms); err == nil {
			payloads = append(payloads, sig.UnsafePayloadWithoutVerification())
		}
	}
	for _, s := range []string{"", "Bearer ", "Bearer ..", "Bearer a.b.c", "Bearer TokenInvalid", "Basic x", "Bearer eyJhbGciOiJub25lIn0.e30.",
		"Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, auth string) {
		r := httptest.NewRequest(http.MethodGet, "http://a/", nil)
		r.Header["Authorization"] = []string{auth}
		got := run(t, c, r, nil)
		if got.code != 0 || got.payload == nil {
			return // refused, or no token found (allow_missing)
		}
		tok := tokenAfter(auth, strings.Index(auth, "Bearer ")+len("Bearer "))
		sig, err := jose.ParseSignedCompact(tok, algorithms)
		if err != nil {
			t.Fatalf("accepted a token go-jose cannot parse: %v", err)
		}
		payload, err := sig.Verify(set)
		if err != nil {
			t.Fatalf("accepted a token no JWKS key signed: %v", err)
		}
		for _, p := range payloads {
			if bytes.Equal(p, payload) {
				return
			}
		}
		t.Fatalf("accepted a payload that is none of the samples: %s", payload)
	})
}
