package validation

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/go-jose/go-jose/v4"
	security "istio.io/api/security/v1beta1"
)

// requestAuthentication checks a RequestAuthentication as Istio's CRD
// schema and webhook (ValidateRequestAuthentication, validateJwtRule) do:
// at most one of selector, targetRef and targetRefs; each JWT rule with an
// issuer or a jwksUri, non-empty audiences, token locations and
// spaceDelimitedClaims, an http(s) jwksUri or else a jwks that parses,
// outputClaimToHeaders with a claim and a header name of [-_A-Za-z0-9],
// and a timeout of at least 1ms. Beyond Istio, outputPayloadToHeader and
// fromHeaders names must be HTTP header names, which the proxy requires.
func (c *checker) requestAuthentication(ra *security.RequestAuthentication) {
	// Targets are accepted (Istio's corpus has one): they name waypoints
	// and Kubernetes Gateways, which Loom has not, so the policy applies
	// to no proxy, as to no sidecar in Istio.
	c.policyTargets(ra.GetSelector(), ra.GetTargetRef(), ra.GetTargetRefs(), false)
	if n := len(ra.GetJwtRules()); n > 4096 {
		c.errf("spec.jwtRules", "Too many: %d: must have at most 4096 items", n)
	}
	for i, r := range ra.GetJwtRules() {
		c.jwtRule(fmt.Sprintf("spec.jwtRules[%d]", i), r)
	}
}

// claimHeaderRE is the CRD pattern of ClaimToHeader.header.
var claimHeaderRE = regexp.MustCompile(`^[-_A-Za-z0-9]+$`)

func (c *checker) jwtRule(p string, r *security.JWTRule) {
	if r == nil {
		return
	}
	if r.GetIssuer() == "" && r.GetJwksUri() == "" {
		c.errf(p+".issuer", "Required value: issuer or jwksUri must be non-empty string")
	}
	for i, a := range r.GetAudiences() {
		if a == "" {
			c.errf(fmt.Sprintf("%s.audiences[%d]", p, i), "Invalid value: \"\": audience must be non-empty string")
		}
	}
	if u := r.GetJwksUri(); u != "" {
		if msg := jwksURI(u); msg != "" {
			c.errf(p+".jwksUri", "Invalid value: %q: %s", u, msg)
		}
		if r.GetJwks() != "" {
			c.errf(p, "Invalid value: only one of jwks or jwksUri can be set")
		}
	}
	if j := r.GetJwks(); j != "" {
		if err := ParseJWKS(j); err != nil {
			c.errf(p+".jwks", "Invalid value: jwks parse error: %v", err)
		}
	}
	for i, h := range r.GetFromHeaders() {
		switch n := h.GetName(); {
		case n == "":
			c.errf(fmt.Sprintf("%s.fromHeaders[%d].name", p, i), "Required value: location header name must be non-empty string")
		case !isHeaderName(n) || strings.HasPrefix(n, ":"):
			c.errf(fmt.Sprintf("%s.fromHeaders[%d].name", p, i), "Invalid value: %q: must be an HTTP header name", n)
		}
	}
	for i, q := range r.GetFromParams() {
		if q == "" {
			c.errf(fmt.Sprintf("%s.fromParams[%d]", p, i), "Invalid value: \"\": location query must be non-empty string")
		}
	}
	for i, ck := range r.GetFromCookies() {
		if ck == "" {
			c.errf(fmt.Sprintf("%s.fromCookies[%d]", p, i), "Invalid value: \"\": cookie name must be non-empty string")
		}
	}
	for i, ch := range r.GetOutputClaimToHeaders() {
		cp := fmt.Sprintf("%s.outputClaimToHeaders[%d]", p, i)
		if ch.GetClaim() == "" {
			c.errf(cp+".claim", "Required value: outputClaimToHeaders header and claim value must be non-empty string")
		}
		switch h := ch.GetHeader(); {
		case h == "":
			c.errf(cp+".header", "Required value: outputClaimToHeaders header and claim value must be non-empty string")
		case !claimHeaderRE.MatchString(h):
			c.errf(cp+".header", "Invalid value: %q: header in body should match '^[-_A-Za-z0-9]+$'", h)
		}
	}
	if h := r.GetOutputPayloadToHeader(); h != "" && (!isHeaderName(h) || strings.HasPrefix(h, ":")) {
		c.errf(p+".outputPayloadToHeader", "Invalid value: %q: must be an HTTP header name", h)
	}
	c.duration(p+".timeout", r.GetTimeout())
	if n := len(r.GetSpaceDelimitedClaims()); n > 64 {
		c.errf(p+".spaceDelimitedClaims", "Too many: %d: must have at most 64 items", n)
	}
	for i, s := range r.GetSpaceDelimitedClaims() {
		if s == "" {
			c.errf(fmt.Sprintf("%s.spaceDelimitedClaims[%d]", p, i), "Invalid value: \"\": must be at least 1 chars long")
		}
	}
}

// jwksURI checks a jwksUri as Istio's CRD rule and ParseJwksURI do: at
// most 2048 bytes, a URL with scheme http or https and a host.
func jwksURI(s string) string {
	if len(s) > 2048 {
		return "must be at most 2048 characters"
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "url must have scheme http:// or https://"
	}
	if u.Host == "" {
		return "url must have a host"
	}
	return ""
}

// ParseJWKS checks that s is a JSON Web Key Set (RFC 7517 section 5)
// whose every key go-jose can read, as Istio's validation parses a jwks
// (an empty set is one; a lone JWK is not).
// It is what loomd checks a fetched JWKS with before serving it.
func ParseJWKS(s string) error {
	var set struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if set.Keys == nil {
		return fmt.Errorf(`not a JSON Web Key Set: no "keys" member`)
	}
	for i, raw := range *set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("keys[%d]: %w", i, err)
		}
	}
	return nil
}
