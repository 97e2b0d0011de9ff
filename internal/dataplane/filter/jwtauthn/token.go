package jwtauthn

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// token is a parsed, not yet verified JWT: its JWS (parsed by go-jose)
// and the claims of its payload. Nothing in it is trusted before
// KeySet.verify says OK.
type token struct {
	sig     *jose.JSONWebSignature
	payload []byte         // the JSON payload
	claims  map[string]any // as encoding/json decodes it
	iss     string
	aud     []string
	exp     uint64 // 0: none
	nbf     uint64 // 0: none
}

// maxTokenSize bounds the tokens parsed (a header is already bounded by
// the server's header limit; this bounds query parameters and cookies
// alike). A longer token fails as malformed.
const maxTokenSize = 64 << 10

// parseToken parses a compact JWS with go-jose (only the algorithms Envoy
// supports) and checks its registered claims' types as Envoy's
// jwt_verify_lib does.
func parseToken(s string) (*token, Status) {
	if len(s) > maxTokenSize || strings.Count(s, ".") != 2 {
		return nil, JwtBadFormat
	}
	sig, err := jose.ParseSignedCompact(s, algorithms)
	if err != nil {
		if strings.Contains(err.Error(), "unexpected signature algorithm") {
			return nil, JwtHeaderNotImplementedAlg
		}
		return nil, JwtBadFormat
	}
	if len(sig.Signatures) != 1 {
		return nil, JwtBadFormat
	}
	t := &token{sig: sig, payload: sig.UnsafePayloadWithoutVerification()}
	dec := json.NewDecoder(bytes.NewReader(t.payload))
	if err := dec.Decode(&t.claims); err != nil || t.claims == nil || dec.More() {
		return nil, JwtPayloadParseErrorBadJSON
	}
	var ok bool
	if v, has := t.claims["iss"]; has {
		if t.iss, ok = v.(string); !ok {
			return nil, JwtPayloadParseErrorIssNotString
		}
	}
	if v, has := t.claims["sub"]; has {
		if _, ok = v.(string); !ok {
			return nil, JwtPayloadParseErrorSubNotString
		}
	}
	switch v := t.claims["aud"].(type) {
	case nil:
	case string:
		t.aud = []string{v}
	case []any:
		for _, a := range v {
			s, ok := a.(string)
			if !ok {
				return nil, JwtPayloadParseErrorAudNotString
			}
			t.aud = append(t.aud, s)
		}
	default:
		return nil, JwtPayloadParseErrorAudNotString
	}
	for _, c := range []struct {
		name string
		dst  *uint64
		bad  Status
	}{{"exp", &t.exp, JwtPayloadParseErrorExpNotInteger}, {"nbf", &t.nbf, JwtPayloadParseErrorNbfNotInteger}, {"iat", nil, JwtPayloadParseErrorIatNotInteger}} {
		v, has := t.claims[c.name]
		if !has {
			continue
		}
		f, ok := v.(float64)
		if !ok || f < 0 || f != math.Trunc(f) || f >= 1<<63 {
			return nil, c.bad
		}
		if c.dst != nil {
			*c.dst = uint64(f)
		}
	}
	return t, OK
}

// checkTime is jwt_verify_lib's verifyTimeConstraint: the token is not
// valid before nbf - skew nor after exp + skew.
func (t *token) checkTime(now time.Time, skew time.Duration) Status {
	sec := now.Unix()
	if sec < 0 {
		sec = 0
	}
	n, s := uint64(sec), uint64(skew/time.Second)
	if t.nbf != 0 && n+s < t.nbf {
		return JwtNotYetValid
	}
	if t.exp != 0 && n > t.exp+s {
		return JwtExpired
	}
	return OK
}

// audienceAllowed is jwt_verify_lib's CheckAudience: with no configured
// audiences any token passes; otherwise one of the token's must equal one
// of allowed, compared without an http:// or https:// scheme and a
// trailing slash.
func (t *token) audienceAllowed(allowed []string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range t.aud {
		a = sanitizeAudience(a)
		for _, w := range allowed {
			if a == sanitizeAudience(w) {
				return true
			}
		}
	}
	return false
}

func sanitizeAudience(a string) string {
	if rest, ok := strings.CutPrefix(a, "http://"); ok {
		a = rest
	} else if rest, ok := strings.CutPrefix(a, "https://"); ok {
		a = rest
	}
	return strings.TrimSuffix(a, "/")
}
