package validation

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// raDoc is a RequestAuthentication "ra" in namespace default whose spec is
// body.
func raDoc(body string) string {
	return "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra, namespace: default}\nspec:\n" + body
}

func TestRequestAuthentication(t *testing.T) {
	jwks, err := os.ReadFile("../../../../shared/istio-samples/jwt/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"istio's jwt task, inline jwks", raDoc(`  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '` + string(jwks) + `'
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
`), nil},
		{"jwksUri without issuer, all locations", raDoc(`  jwtRules:
  - jwksUri: https://example.com/.well-known/jwks.json
    audiences: [a, b]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [token]
    fromCookies: [session]
    outputClaimToHeaders: [{header: x-sub, claim: sub}, {header: x-nested, claim: a.b}]
    timeout: 2s
    spaceDelimitedClaims: [roles]
    presence: REQUIRED
`), nil},
		{"no issuer nor jwksUri", raDoc("  jwtRules: [{audiences: [a]}]\n"),
			[]string{"spec.jwtRules[0].issuer: Required value: issuer or jwksUri must be non-empty string"}},
		{"jwks and jwksUri", raDoc("  jwtRules: [{issuer: i, jwksUri: 'http://x/j', jwks: '" + string(jwks) + "'}]\n"),
			[]string{"spec.jwtRules[0]: Invalid value: only one of jwks or jwksUri can be set"}},
		{"bad jwksUri", raDoc("  jwtRules: [{issuer: i, jwksUri: 'ftp://x/j'}, {issuer: j, jwksUri: 'https:///j'}]\n"), []string{
			`spec.jwtRules[0].jwksUri: Invalid value: "ftp://x/j": url must have scheme http:// or https://`,
			`spec.jwtRules[1].jwksUri: Invalid value: "https:///j": url must have a host`,
		}},
		{"bad jwks", raDoc("  jwtRules: [{issuer: i, jwks: '{\"keys\": [{\"kty\": \"XYZ\"}]}'}, {issuer: j, jwks: 'nope'}]\n"), []string{
			`spec.jwtRules[0].jwks: Invalid value: jwks parse error: keys[0]: go-jose/go-jose: unsupported key type, format, curve, or RSA modulus size`,
			`spec.jwtRules[1].jwks: Invalid value: jwks parse error: not a JSON Web Key Set: invalid character 'o' in literal null (expecting 'u')`,
		}},
		{"headers", raDoc(`  jwtRules:
  - issuer: i
    outputPayloadToHeader: "bad header"
    outputClaimToHeaders: [{header: "x.y", claim: c}]
    fromHeaders: [{name: ":path"}]
`), []string{
			`spec.jwtRules[0].fromHeaders[0].name: Invalid value: ":path": must be an HTTP header name`,
			`spec.jwtRules[0].outputClaimToHeaders[0].header: Invalid value: "x.y": header in body should match '^[-_A-Za-z0-9]+$'`,
			`spec.jwtRules[0].outputPayloadToHeader: Invalid value: "bad header": must be an HTTP header name`,
		}},
		{"timeout", raDoc("  jwtRules: [{issuer: i, timeout: 0s}]\n"),
			[]string{"spec.jwtRules[0].timeout: Invalid value: 0s: duration must be positive"}},
		{"targetRef kind not allowed, selector wildcard", raDoc(`  targetRefs: [{group: apps, kind: Deployment, name: d}]
`), []string{"spec.targetRefs[0]: Invalid value: targetRef must be to one of Service, ServiceEntry, gateway.networking.k8s.io Gateway or GatewayClass but was apps/Deployment"}},
		{"selector wildcard", raDoc("  selector: {matchLabels: {app: 'h*'}}\n"),
			[]string{"spec.selector.matchLabels[app]: Invalid value: wildcard is not supported in selector"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, tt.doc)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}
