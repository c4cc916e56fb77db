package dpop

import (
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TestResourceServerRequiresAccessTokenType: RFC 9068 §4, only a JWT whose typ is at+jwt (or
// application/at+jwt, in any case) passes; an ID token signed by the same key for the same
// audience, a typ JWT token and an untyped one are refused with 401 invalid_token.
func TestResourceServerRequiresAccessTokenType(t *testing.T) {
	e := newRSEnv(t, nil)
	now := time.Now()
	atClaims := map[string]any{
		"iss": rsIssuer, "aud": []string{rsAudience}, "sub": "user-1",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "scope": "openid read:data",
	}
	// An ID token as a broker would sign it for a client whose client_id is the API audience.
	idClaims := map[string]any{
		"iss": rsIssuer, "aud": rsAudience, "azp": rsAudience, "sub": "user-1", "nonce": "n",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "auth_time": now.Unix(), "sid": "s",
	}
	typed := func(typ string) *jose.SignerOptions {
		if typ == "" {
			return &jose.SignerOptions{}
		}
		return (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	}
	for _, tc := range []struct {
		name       string
		typ        string
		claims     map[string]any
		wantStatus int
	}{
		{name: "typ at+jwt passes", typ: "at+jwt", claims: atClaims, wantStatus: 200},
		{name: "typ application/at+jwt passes", typ: "application/at+jwt", claims: atClaims, wantStatus: 200},
		{name: "typ compares case-insensitively", typ: "Application/AT+JWT", claims: atClaims, wantStatus: 200},
		{name: "ID token signed by the same key is refused", typ: "JWT", claims: idClaims, wantStatus: 401},
		{name: "access-token claims with typ JWT are refused", typ: "JWT", claims: atClaims, wantStatus: 401},
		{name: "untyped JWT is refused", typ: "", claims: atClaims, wantStatus: 401},
		{name: "typ with parameters is refused", typ: "application/at+jwt; v=1", claims: atClaims, wantStatus: 401},
		{name: "other +jwt type is refused", typ: "dpop+jwt", claims: atClaims, wantStatus: 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := signCompact(t, jose.RS256, e.atKey, typed(tc.typ), tc.claims)
			r := e.do(t, []string{"Bearer " + tok}, nil, "")
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d (%v %v)", r.status, tc.wantStatus, r.body, r.challenge)
			}
			if tc.wantStatus == 200 {
				if r.body["sub"] != "user-1" {
					t.Errorf("body %v", r.body)
				}
				return
			}
			if c := r.challenge["bearer"]; c["error"] != ErrCodeInvalidToken || c["error_description"] != "not an access token (typ must be at+jwt)" {
				t.Errorf("challenge %v", r.challenge)
			}
		})
	}
}

func TestIsAccessTokenType(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		want bool
	}{
		{typ: "at+jwt", want: true},
		{typ: "AT+JWT", want: true},
		{typ: "application/at+jwt", want: true},
		{typ: "APPLICATION/At+Jwt", want: true},
		{typ: "", want: false},
		{typ: "JWT", want: false},
		{typ: "jwt", want: false},
		{typ: "application/jwt", want: false},
		{typ: "at+jwt; x=y", want: false},
		{typ: "text/at+jwt", want: false},
		{typ: "dpop+jwt", want: false},
	} {
		if got := IsAccessTokenType(tc.typ); got != tc.want {
			t.Errorf("IsAccessTokenType(%q) = %v, want %v", tc.typ, got, tc.want)
		}
	}
}
