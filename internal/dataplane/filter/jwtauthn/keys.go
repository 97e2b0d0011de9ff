package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"

	"github.com/go-jose/go-jose/v4"
)

// KeySet is a provider's parsed JWKS: the public keys (and HMAC secrets)
// tokens are verified with. It is immutable and safe for concurrent use.
type KeySet struct {
	keys []jose.JSONWebKey
}

// Len is the number of usable keys.
func (s *KeySet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}

// ParseKeySet reads a JSON Web Key Set with go-jose. Keys it cannot read
// are skipped; a private key is kept only in its public form. A set that
// is not JSON, or has no usable key, gives an empty KeySet (tokens then
// fail with "Jwks doesn't have valid keys", as in Envoy).
func ParseKeySet(jwks string) *KeySet {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if json.Unmarshal([]byte(jwks), &set) != nil {
		return &KeySet{}
	}
	ks := &KeySet{}
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if k.UnmarshalJSON(raw) != nil {
			continue
		}
		if secret, sym := k.Key.([]byte); sym {
			if len(secret) == 0 {
				continue
			}
		} else if !k.Valid() {
			continue
		} else if !k.IsPublic() {
			k = k.Public()
		}
		ks.keys = append(ks.keys, k)
	}
	return ks
}

// algorithms are the JWS algorithms Envoy's jwt_authn verifies.
var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.HS256, jose.HS384, jose.HS512,
	jose.EdDSA,
}

// keyFits reports whether k can verify alg: the key's type is the
// algorithm's family (and for ECDSA its curve the algorithm's), and the
// key's own alg, when set, is alg. This is Envoy's "kid or alg match"
// test: a token no key fits fails with JwksKidAlgMismatch.
func keyFits(k *jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return alg[0] == 'R' || alg[0] == 'P'
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return key.Curve == elliptic.P256()
		case "ES384":
			return key.Curve == elliptic.P384()
		case "ES512":
			return key.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	case []byte:
		return alg[0] == 'H'
	}
	return false
}

// verify checks sig against the keys as Envoy's jwt_verify_lib does: a
// token with a kid is tried only with keys of that kid (or of no kid), and
// only keys that fit its alg; the first that verifies wins. The
// signature itself is checked by go-jose.
func (s *KeySet) verify(sig *jose.JSONWebSignature) Status {
	if s.Len() == 0 {
		return JwksNoValidKeys
	}
	h := sig.Signatures[0].Header
	matched := false
	for i := range s.keys {
		k := &s.keys[i]
		if h.KeyID != "" && k.KeyID != "" && k.KeyID != h.KeyID {
			continue
		}
		if !keyFits(k, h.Algorithm) {
			continue
		}
		matched = true
		if _, err := sig.Verify(k.Key); err == nil {
			return OK
		}
	}
	if matched {
		return JwtVerificationFail
	}
	return JwksKidAlgMismatch
}
