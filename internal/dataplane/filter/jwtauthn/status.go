package jwtauthn

// Status is the outcome of verifying a request or a token, as Envoy's
// jwt_verify_lib names it; String is the text Envoy answers with.
type Status uint8

// The statuses this filter produces.
const (
	OK Status = iota
	JwtMissed
	JwtNotYetValid
	JwtExpired
	JwtBadFormat
	JwtHeaderParseErrorBadBase64
	JwtHeaderParseErrorBadJSON
	JwtHeaderNotImplementedAlg
	JwtPayloadParseErrorBadBase64
	JwtPayloadParseErrorBadJSON
	JwtPayloadParseErrorIssNotString
	JwtPayloadParseErrorSubNotString
	JwtPayloadParseErrorIatNotInteger
	JwtPayloadParseErrorNbfNotInteger
	JwtPayloadParseErrorExpNotInteger
	JwtPayloadParseErrorAudNotString
	JwtUnknownIssuer
	JwtAudienceNotAllowed
	JwtVerificationFail
	JwksNoValidKeys
	JwksKidAlgMismatch
)

var statusText = [...]string{
	OK:                                "OK",
	JwtMissed:                         "Jwt is missing",
	JwtNotYetValid:                    "Jwt not yet valid",
	JwtExpired:                        "Jwt is expired",
	JwtBadFormat:                      "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
	JwtHeaderParseErrorBadBase64:      "Jwt header is an invalid Base64url encoded",
	JwtHeaderParseErrorBadJSON:        "Jwt header is an invalid JSON",
	JwtHeaderNotImplementedAlg:        "Jwt header [alg] is not supported",
	JwtPayloadParseErrorBadBase64:     "Jwt payload is an invalid Base64url encoded",
	JwtPayloadParseErrorBadJSON:       "Jwt payload is an invalid JSON",
	JwtPayloadParseErrorIssNotString:  "Jwt payload [iss] field is not a string",
	JwtPayloadParseErrorSubNotString:  "Jwt payload [sub] field is not a string",
	JwtPayloadParseErrorIatNotInteger: "Jwt payload [iat] field is not an integer",
	JwtPayloadParseErrorNbfNotInteger: "Jwt payload [nbf] field is not an integer",
	JwtPayloadParseErrorExpNotInteger: "Jwt payload [exp] field is not an integer",
	JwtPayloadParseErrorAudNotString:  "Jwt payload [aud] field is not a string or string list",
	JwtUnknownIssuer:                  "Jwt issuer is not configured",
	JwtAudienceNotAllowed:             "Audiences in Jwt are not allowed",
	JwtVerificationFail:               "Jwt verification fails",
	JwksNoValidKeys:                   "Jwks doesn't have valid keys",
	JwksKidAlgMismatch:                "Jwks doesn't have key to match kid or alg from Jwt",
}

// String is Envoy's text for s, the body of its local reply.
func (s Status) String() string {
	if int(s) < len(statusText) {
		return statusText[s]
	}
	return "Jwt verification fails"
}

// missing reports whether s is JwtMissed or JwtUnknownIssuer, the two a
// requires_any treats as "no token for this provider".
func (s Status) missing() bool { return s == JwtMissed || s == JwtUnknownIssuer }
