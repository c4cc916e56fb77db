package broker

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
)

// openTestToken decrypts an opaque access token issued under one of the shared test keys.
func openTestToken(t testing.TB, tok string) ([]byte, error) {
	t.Helper()
	for _, alg := range []string{"RS256", "ES256"} {
		o, err := newOpaqueTokens(testKeys(t, alg))
		if err != nil {
			t.Fatal(err)
		}
		if b, err := o.decrypt(tok); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("opaque access token not issued under a test key")
}

// TestOpaqueAccessTokens: a userinfo-only access token is opaque (JWE dir/A256GCM under a key
// derived from the signing key), works at /userinfo with the same checks as a JWT access
// token, and an API audience still gets an RFC 9068 JWT.
func TestOpaqueAccessTokens(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)

	r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, nil))})
	at := r.str("access_token")
	parts := strings.Split(at, ".")
	if r.status != 200 || len(parts) != 5 {
		t.Fatalf("userinfo-only access token is not a compact JWE: %d %q", r.status, at)
	}
	var hdr map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(raw, &hdr); err != nil || hdr["alg"] != "dir" || hdr["enc"] != "A256GCM" || parts[1] != "" {
		t.Fatalf("JWE header %s", raw)
	}
	c := claimsOf(t, at)
	if c["sub"] != "oidc|corp|alice" || c["cnf"] != nil || c["aud"].([]any)[0] != h.broker.userinfoAudience() || c["sid"] == "" {
		t.Errorf("claims %v", c)
	}
	if u := h.userinfo("Bearer "+at, ""); u.status != 200 || u.str("sub") != "oidc|corp|alice" {
		t.Fatalf("userinfo with the opaque token: %d %v", u.status, u.body)
	}

	// RFC 9449 §7.1, §7.2: bound, it is refused as Bearer and accepted with the DPoP scheme and a proof.
	r = h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, nil)), proof: h.tokenProof(a)})
	wantBound(t, r, a)
	bound := r.str("access_token")
	if u := h.userinfo("Bearer "+bound, ""); u.status != 401 {
		t.Errorf("bound opaque token as Bearer: %d", u.status)
	}
	if u := h.userinfo("DPoP "+bound, h.proof(a, "GET", "/userinfo", "", bound)); u.status != 200 {
		t.Errorf("bound opaque token with its proof: %d %v", u.status, u.body)
	}

	// An API audience keeps the JWT (typ at+jwt) that APIs verify with the JWKS.
	r = h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, func(q url.Values) { q.Set("audience", apiNone) }))})
	if p := strings.Split(r.str("access_token"), "."); r.status != 200 || len(p) != 3 {
		t.Fatalf("API access token is not a JWT: %d %v", r.status, r.body)
	}

	// Sealed under another key, or with claims that fail the checks: invalid_token.
	other, err := config.NewKeyRing(mustKey(t), "ES256")
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := newOpaqueTokens(other)
	now := time.Now()
	good := atClaims{Issuer: h.cfg.Issuer, Subject: "oidc|corp|alice", Audience: []string{h.broker.userinfoAudience()},
		IssuedAt: now.Unix(), Expiry: now.Add(time.Hour).Unix(), SID: c["sid"].(string), Scope: "openid"}
	wrongIss := good
	wrongIss.Issuer = "https://other.example/"
	wrongAud := good
	wrongAud.Audience = []string{"https://api.example"}
	expired := good
	expired.IssuedAt, expired.Expiry = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	if tok, _ := h.broker.opaque.seal(&good); h.userinfo("Bearer "+tok, "").status != 200 {
		t.Fatal("a well-formed sealed token is refused")
	}
	for _, tc := range []struct {
		name   string
		o      *opaqueTokens
		claims atClaims
	}{
		{name: "other key", o: foreign, claims: good},
		{name: "wrong iss", o: h.broker.opaque, claims: wrongIss},
		{name: "no userinfo audience", o: h.broker.opaque, claims: wrongAud},
		{name: "expired", o: h.broker.opaque, claims: expired},
	} {
		tok, err := tc.o.seal(&tc.claims)
		if err != nil {
			t.Fatal(err)
		}
		if u := h.userinfo("Bearer "+tok, ""); u.status != 401 || !strings.Contains(u.header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("%s: %d %v", tc.name, u.status, u.body)
		}
	}
	// A replica with the same signing key derives the same token key.
	k := testKeys(t, "ES256")
	o1, _ := newOpaqueTokens(k)
	o2, _ := newOpaqueTokens(testKeys(t, "ES256"))
	if len(o1.keys[k.KID]) != 32 || string(o1.keys[k.KID]) != string(o2.keys[k.KID]) || slices.ContainsFunc(slices.Collect(maps.Values(foreign.keys)), func(b []byte) bool { return string(b) == string(o1.keys[k.KID]) }) {
		t.Error("token key derivation is not a function of the signing key")
	}
}

func mustKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := dpop.GenerateKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	return k
}
