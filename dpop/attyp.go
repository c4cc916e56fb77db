package dpop

import (
	"mime"

	jose "github.com/go-jose/go-jose/v4"
)

// AccessTokenType is the JOSE typ of a JWT access token (RFC 9068 §2.1).
const AccessTokenType = "at+jwt"

// IsAccessTokenType reports whether a JOSE typ header value names an RFC 9068 access token:
// "at+jwt" or its full media type "application/at+jwt" (RFC 9068 §4; typ is a media type,
// compared case-insensitively, RFC 7515 §4.1.9). An ID token (typ JWT or none) is not one.
func IsAccessTokenType(typ string) bool {
	mt, params, err := mime.ParseMediaType(typ)
	if err != nil || len(params) > 0 {
		return false
	}
	return mt == AccessTokenType || mt == "application/"+AccessTokenType
}

// tokenType returns the typ header of a compact JWS ("" when it has none or is not a string).
func tokenType(raw string, algs []jose.SignatureAlgorithm) (string, bool) {
	jws, err := jose.ParseSignedCompact(raw, algs)
	if err != nil || len(jws.Signatures) != 1 {
		return "", false
	}
	typ, _ := jws.Signatures[0].Protected.ExtraHeaders[jose.HeaderType].(string)
	return typ, true
}
