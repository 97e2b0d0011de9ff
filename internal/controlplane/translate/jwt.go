package translate

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/emptypb"
	security "istio.io/api/security/v1beta1"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// jwtPayloadKey is the metadata key of the verified payload in
// jwtAuthnFilter's namespace, which Istio's generated RBAC matches as
// [payload, iss] and [payload, sub].
const jwtPayloadKey = "payload"

// placeholderJWKS is served for a rule whose JWKS could not be fetched
// (yet), as Istio's FakeJwks: a valid key set whose private key was
// thrown away, so every token of that issuer fails with 401 while
// requests without a token still pass.
const placeholderJWKS = `{"keys":[{"use":"sig","kty":"RSA","kid":"loom-placeholder","alg":"RS256","n":"ujNZrI9JT33bYmVH4Q6SoJMNR7goz49PMQ2Nw2mEEPRW71k0-dz7IG5GzyHexlI6OOXIm7Gt_V6UlLIMfDy1pmcqGTFtGxHjq6TjZ5R14mIl0c0wJumhDlV42U8S3Zx2KYZxyPCy2IdZwvji5WFqBCT5d6lOhxvBnefP_H7z9YDMLyPkx8xuZTu-7CR0WAn6ombZT-CBFuX8nu-IUoSbcjwd4qNBPFpXu1o7cM0xagE6yj1U9er59rqInhxHm-JRODpWEouXNTJH1EGKlguvahNMuQzr8cmC_WiMeA3kL_0CisbJiFNGwO__xvy5LXPb8p1lmha6PS44afIC0vFo3w","e":"AQAB"}]}`

// jwtFilter returns the envoy.filters.http.jwt_authn filter of proxy p,
// shaped as Istio's convertToEnvoyJwtConfig makes it, or nil when no
// RequestAuthentication applies to p:
//
//   - the jwtRules of every applying policy, stably sorted by issuer, each
//     a provider "origins-N" with payload_in_metadata "payload", forward,
//     forward_payload_header, claim_to_headers, from_headers (value_prefix
//     as written), from_params, from_cookies, audiences and
//     normalize_payload_in_metadata (spaceDelimitedClaims with Istio's
//     permission and scope), and clear_route_cache on every proxy but a
//     sidecar, so that a gateway's routes can match the verified claims;
//   - the JWKS inline (local_jwks): the rule's jwks, else the one loomd
//     fetched for it (keys), else placeholderJWKS;
//   - one rule on prefix "/": for one provider requires_any {provider,
//     allow_missing}, so a present but invalid token fails and a missing
//     one passes; for several, requires_any {P1 .. Pn, requires_all {any
//     {Pi, allow_missing} ...}}, with bypass_cors_preflight.
//
// A rule with presence REQUIRED (istio.io/api 1.32; Loom's reading of it)
// contributes its provider alone, without allow_missing, and then the
// requirement is the requires_all alone, so no other provider's token can
// stand in for it.
func jwtFilter(pc *model.PushContext, p *model.Proxy, keys *model.JwksSet) (*hcmv3.HttpFilter, error) {
	var rules []*security.JWTRule
	for _, ra := range pc.RequestAuthenticationsForProxy(p) {
		for _, r := range ra.Spec.GetJwtRules() {
			if r != nil {
				rules = append(rules, r)
			}
		}
	}
	if len(rules) == 0 {
		return nil, nil
	}
	slices.SortStableFunc(rules, func(a, b *security.JWTRule) int { return cmp.Compare(a.GetIssuer(), b.GetIssuer()) })

	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}, BypassCorsPreflight: true}
	var inner, outer []*jwtv3.JwtRequirement
	required := false
	for i, r := range rules {
		name := "origins-" + strconv.Itoa(i)
		prov := jwtProvider(r, keys)
		// As Istio (JwtFilter(clearRouteCache: not a sidecar)): a
		// gateway matches its routes again on the verified payload, for
		// VirtualServices' "@request.auth.claims" matches.
		prov.ClearRouteCache = p.Type != model.SidecarProxy
		cfg.Providers[name] = prov
		byName := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
		outer = append(outer, byName)
		if r.GetPresence() == security.JWTRule_REQUIRED {
			required = true
			inner = append(inner, byName)
			continue
		}
		inner = append(inner, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
			Requirements: []*jwtv3.JwtRequirement{byName, {RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}},
		}}})
	}
	var req *jwtv3.JwtRequirement
	switch {
	case len(inner) == 1:
		req = inner[0]
	case required:
		req = &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: inner}}}
	default:
		outer = append(outer, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: inner}}})
		req = &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: outer}}}
	}
	cfg.Rules = []*jwtv3.RequirementRule{{
		Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: req},
	}}
	a, err := packAny(cfg)
	if err != nil {
		return nil, fmt.Errorf("jwt_authn: %w", err)
	}
	return &hcmv3.HttpFilter{Name: jwtAuthnFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

func jwtProvider(r *security.JWTRule, keys *model.JwksSet) *jwtv3.JwtProvider {
	p := &jwtv3.JwtProvider{
		Issuer:               r.GetIssuer(),
		Audiences:            r.GetAudiences(),
		Forward:              r.GetForwardOriginalToken(),
		ForwardPayloadHeader: r.GetOutputPayloadToHeader(),
		PayloadInMetadata:    jwtPayloadKey,
		NormalizePayloadInMetadata: &jwtv3.JwtProvider_NormalizePayload{
			SpaceDelimitedClaims: spaceDelimitedClaims(r.GetSpaceDelimitedClaims()),
		},
		FromParams:  r.GetFromParams(),
		FromCookies: r.GetFromCookies(),
	}
	for _, h := range r.GetFromHeaders() {
		p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
	}
	for _, ch := range r.GetOutputClaimToHeaders() {
		p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: ch.GetHeader(), ClaimName: ch.GetClaim()})
	}
	jwks := r.GetJwks()
	if jwks != "" {
		jwks = publicJWKS(jwks)
	} else if fetched, ok := keys.Get(model.JwksKey{Issuer: r.GetIssuer(), URI: r.GetJwksUri()}); ok {
		jwks = fetched
	} else {
		jwks = placeholderJWKS
	}
	p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
		Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}}
	return p
}

// spaceDelimitedClaims is Istio's buildSpaceDelimitedClaims: the rule's
// claims plus permission and scope, deduplicated and sorted.
func spaceDelimitedClaims(extra []string) []string {
	out := append([]string{"permission", "scope"}, extra...)
	slices.Sort(out)
	return slices.Compact(out)
}

// publicJWKS returns jwks with every private key replaced by its public
// half, so that a private key pasted into a RequestAuthentication by
// mistake never reaches a proxy or its config dump. A set without private
// keys (the normal case) is returned as written.
func publicJWKS(jwks string) string {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if json.Unmarshal([]byte(jwks), &set) != nil {
		return jwks
	}
	changed := false
	out := make([]json.RawMessage, 0, len(set.Keys))
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if k.UnmarshalJSON(raw) != nil {
			out = append(out, raw)
			continue
		}
		if _, sym := k.Key.([]byte); sym || k.IsPublic() {
			out = append(out, raw)
			continue
		}
		changed = true
		pub := k.Public()
		if b, err := pub.MarshalJSON(); err == nil {
			out = append(out, b)
		} // else the private key is dropped
	}
	if !changed {
		return jwks
	}
	b, err := json.Marshal(map[string]any{"keys": out})
	if err != nil {
		return placeholderJWKS
	}
	return string(b)
}
