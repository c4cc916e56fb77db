package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const vtURL = "https://api.example.com/api/private"

var vtNow = time.Unix(1_700_000_000, 0)

func vtVerifier() *Verifier {
	return &Verifier{Replay: NewMemoryReplayCache(1000), Now: func() time.Time { return vtNow }}
}

func vtJWK(t testing.TB, pub crypto.PublicKey) json.RawMessage {
	t.Helper()
	j, err := json.Marshal(jose.JSONWebKey{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func vtHeader(t testing.TB, alg string) map[string]any {
	return map[string]any{"typ": "dpop+jwt", "alg": alg, "jwk": vtJWK(t, testKey(t, alg).Public())}
}

func vtClaims() map[string]any {
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	return map[string]any{"jti": b64.EncodeToString(jti[:]), "htm": "GET", "htu": vtURL, "iat": vtNow.Unix()}
}

func vtEncode(t testing.TB, v any) string {
	t.Helper()
	if s, ok := v.(string); ok {
		return b64.EncodeToString([]byte(s))
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64.EncodeToString(j)
}

// vtCraft signs any header and claims with the test key of signAlg (Signer's signing code).
func vtCraft(t testing.TB, signAlg string, hdr, claims any) string {
	t.Helper()
	input := vtEncode(t, hdr) + "." + vtEncode(t, claims)
	s := testSigner(t, signAlg)
	sig, err := s.sign([]byte(input))
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

// vtGoJose signs claims with go-jose (EmbedJWK, typ dpop+jwt) for algs Signer does not do.
func vtGoJose(t testing.TB, alg jose.SignatureAlgorithm, key crypto.Signer, claims any) string {
	t.Helper()
	return signCompact(t, alg, key, (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"), claims)
}

// signCompact signs claims (as JSON) with go-jose and returns the compact JWS.
func signCompact(t testing.TB, alg jose.SignatureAlgorithm, key any, opts *jose.SignerOptions, claims any) string {
	t.Helper()
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := sg.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
		} else {
			out[k] = kv[i+1]
		}
	}
	return out
}

var (
	ecKeysOnce         sync.Once
	ec384, ec521, rsa1 crypto.Signer
)

func vtExtraKeys(t testing.TB) {
	ecKeysOnce.Do(func() {
		ec384, _ = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		ec521, _ = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatalf("rsa 1024: %v", err)
		}
		rsa1 = k
	})
}

func TestVerify(t *testing.T) {
	vtExtraKeys(t)
	ctx := context.Background()
	es := func(claims map[string]any) string { return vtCraft(t, AlgES256, vtHeader(t, AlgES256), claims) }
	good := es(vtClaims())
	parts := strings.Split(good, ".")
	const at = "access-token-123"

	otherKey, _ := GenerateKey(AlgES256)
	otherSigner, _ := NewSigner(otherKey, AlgES256)

	// A proof whose header carries a private EC jwk.
	privJWK, _ := json.Marshal(jose.JSONWebKey{Key: testKey(t, AlgES256)})
	// A 1024-bit RSA proof signed by hand.
	rsaSmall := func() string {
		hdr := map[string]any{"typ": "dpop+jwt", "alg": "RS256", "jwk": vtJWK(t, rsa1.Public())}
		input := vtEncode(t, hdr) + "." + vtEncode(t, vtClaims())
		d := sha256.Sum256([]byte(input))
		sig, err := rsa.SignPKCS1v15(rand.Reader, rsa1.(*rsa.PrivateKey), crypto.SHA256, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return input + "." + b64.EncodeToString(sig)
	}()
	hs256 := func() string {
		hdr := with(vtHeader(t, AlgES256), "alg", "HS256")
		input := vtEncode(t, hdr) + "." + vtEncode(t, vtClaims())
		m := hmac.New(sha256.New, []byte("0123456789abcdef0123456789abcdef"))
		m.Write([]byte(input))
		return input + "." + b64.EncodeToString(m.Sum(nil))
	}()
	none := vtEncode(t, with(vtHeader(t, AlgES256), "alg", "none")) + "." + vtEncode(t, vtClaims()) + "."
	anotherKeysSig := vtCraft(t, AlgES256, map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": vtJWK(t, otherKey.Public())}, vtClaims())
	anotherKeysSig = strings.Join(append(strings.Split(anotherKeysSig, ".")[:2], parts[2]), ".")
	flipped := []byte(parts[2])
	if flipped[5] == 'A' {
		flipped[5] = 'B'
	} else {
		flipped[5] = 'A'
	}

	nonces, err := NewNonceSource([]byte(strings.Repeat("k", 32)), time.Minute, func() time.Time { return vtNow })
	if err != nil {
		t.Fatal(err)
	}
	prev, _ := NewNonceSource([]byte(strings.Repeat("k", 32)), time.Minute, func() time.Time { return vtNow.Add(-time.Minute) })
	stale, _ := NewNonceSource([]byte(strings.Repeat("k", 32)), time.Minute, func() time.Time { return vtNow.Add(-2 * time.Minute) })
	forged, _ := NewNonceSource([]byte(strings.Repeat("x", 32)), time.Minute, func() time.Time { return vtNow })
	withNonces := func(v *Verifier) { v.Nonces, v.RequireNonce = nonces, true }

	// One case per check of RFC 9449 §4.3; wantCheck names the docs/conformance.md row.
	tests := []struct {
		name      string
		headers   []string
		check     Check
		setup     func(*Verifier)
		wantCode  string // "" = accepted
		wantCheck string
	}{
		// accepted
		{name: "valid ES256 proof accepted", headers: []string{good}},
		{name: "htu default port equal", headers: []string{es(with(vtClaims(), "htu", "https://api.example.com:443/api/private"))}},
		{name: "htu scheme and host case-insensitive", headers: []string{es(with(vtClaims(), "htu", "HTTPS://API.Example.COM/api/private"))}},
		{name: "htu percent-encoding normalised", headers: []string{es(with(vtClaims(), "htu", "https://api.example.com/%61pi/private"))}},
		{name: "htu dot segments removed", headers: []string{es(with(vtClaims(), "htu", "https://api.example.com/api/x/../private"))}},
		{name: "htu query and fragment ignored", headers: []string{es(with(vtClaims(), "htu", vtURL+"?a=b#f"))}},
		{name: "check URL query ignored", headers: []string{good}, check: Check{URL: vtURL + "?x=1"}},
		{name: "iat exactly MaxAge old accepted", headers: []string{es(with(vtClaims(), "iat", vtNow.Unix()-300))}},
		{name: "iat MaxFuture ahead accepted", headers: []string{es(with(vtClaims(), "iat", vtNow.Unix()+30))}},
		{name: "ath matches", headers: []string{es(with(vtClaims(), "ath", ATH(at)))}, check: Check{AccessToken: at}},
		{name: "JKT matches", headers: []string{good}, check: Check{JKT: testSigner(t, AlgES256).Thumbprint()}},
		{name: "current nonce accepted", headers: []string{es(with(vtClaims(), "nonce", nonces.Nonce()))}, setup: withNonces},
		{name: "previous-step nonce accepted", headers: []string{es(with(vtClaims(), "nonce", prev.Nonce()))}, setup: withNonces},
		{name: "ES384 accepted", headers: []string{vtGoJose(t, jose.ES384, ec384, vtClaims())}},
		{name: "ES512 accepted", headers: []string{vtGoJose(t, jose.ES512, ec521, vtClaims())}},

		// Step 1: one header field, one value.
		{name: "missing header", headers: nil, wantCode: ErrCodeInvalidProof, wantCheck: checkSingleHeader},
		{name: "two headers", headers: []string{good, good}, wantCode: ErrCodeInvalidProof, wantCheck: checkSingleHeader},
		{name: "comma-joined values", headers: []string{good + "," + good}, wantCode: ErrCodeInvalidProof, wantCheck: checkSingleHeader},
		{name: "comma-joined with space", headers: []string{good + ", " + es(vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkSingleHeader},
		// Step 2: a well-formed JWT.
		{name: "empty value", headers: []string{""}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "two parts", headers: []string{parts[0] + "." + parts[1]}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "four parts", headers: []string{good + ".x"}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "oversized", headers: []string{es(with(vtClaims(), "pad", strings.Repeat("a", MaxProofSize)))}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "header not base64url", headers: []string{"e30+." + parts[1] + "." + parts[2]}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "header padded base64", headers: []string{parts[0] + "==." + parts[1] + "." + parts[2]}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "header not JSON", headers: []string{vtEncode(t, "not json") + "." + parts[1] + "." + parts[2]}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "claims not JSON", headers: []string{vtCraft(t, AlgES256, vtHeader(t, AlgES256), "[1,2]")}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "claims wrong types", headers: []string{es(with(vtClaims(), "iat", "1700000000"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		{name: "crit header refused", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "crit", []string{"b64"}, "b64", false), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkWellFormed},
		// Step 4: typ.
		{name: "typ missing", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "typ", nil), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkTyp},
		{name: "typ JWT", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "typ", "JWT"), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkTyp},
		{name: "typ at+jwt (token swapping)", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "typ", "at+jwt"), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkTyp},
		{name: "typ upper-case", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "typ", "DPOP+JWT"), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkTyp},
		{name: "TYP member name is case-sensitive", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "typ", nil, "TYP", "dpop+jwt"), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkTyp},
		// Step 5: alg.
		{name: "alg none", headers: []string{none}, wantCode: ErrCodeInvalidProof, wantCheck: checkAlg},
		{name: "alg HS256", headers: []string{hs256}, wantCode: ErrCodeInvalidProof, wantCheck: checkAlg},
		{name: "HS256 refused even when configured", headers: []string{hs256}, setup: func(v *Verifier) { v.Algs = []string{"HS256", "ES256"} }, wantCode: ErrCodeInvalidProof, wantCheck: checkAlg},
		{name: "alg missing", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "alg", nil), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkAlg},
		{name: "alg outside allow-list", headers: []string{vtCraft(t, AlgEdDSA, vtHeader(t, AlgEdDSA), vtClaims())}, setup: func(v *Verifier) { v.Algs = []string{"ES256"} }, wantCode: ErrCodeInvalidProof, wantCheck: checkAlg},
		// Step 7: a public jwk fitting alg.
		{name: "jwk missing", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "jwk", nil), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkPublicJWK},
		{name: "jwk with private d", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "jwk", json.RawMessage(privJWK)), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkPublicJWK},
		{name: "symmetric jwk k", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "jwk", map[string]string{"kty": "oct", "k": "c2VjcmV0"}), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkPublicJWK},
		{name: "RSA jwk with p only", headers: []string{vtCraft(t, AlgRS256, with(vtHeader(t, AlgRS256), "jwk", addMember(t, vtJWK(t, testKey(t, AlgRS256).Public()), "p", "AQAB")), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkPublicJWK},
		{name: "RSA 1024-bit jwk", headers: []string{rsaSmall}, wantCode: ErrCodeInvalidProof, wantCheck: checkPublicJWK},
		{name: "jwk does not fit alg", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "jwk", vtJWK(t, testKey(t, AlgEdDSA).Public())), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkPublicJWK},
		{name: "ES256 with P-384 jwk", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "jwk", vtJWK(t, ec384.Public())), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkPublicJWK},
		{name: "jwk point not on curve", headers: []string{vtCraft(t, AlgES256, with(vtHeader(t, AlgES256), "jwk", addMember(t, vtJWK(t, testKey(t, AlgES256).Public()), "y", strings.Repeat("A", 43))), vtClaims())}, wantCode: ErrCodeInvalidProof, wantCheck: checkPublicJWK},
		// Step 6: signature.
		{name: "tampered signature", headers: []string{parts[0] + "." + parts[1] + "." + string(flipped)}, wantCode: ErrCodeInvalidProof, wantCheck: checkSignature},
		{name: "signed by a key other than the jwk", headers: []string{anotherKeysSig}, wantCode: ErrCodeInvalidProof, wantCheck: checkSignature},
		{name: "empty signature", headers: []string{parts[0] + "." + parts[1] + "."}, wantCode: ErrCodeInvalidProof, wantCheck: checkSignature},
		{name: "tampered claims", headers: []string{parts[0] + "." + vtEncode(t, vtClaims()) + "." + parts[2]}, wantCode: ErrCodeInvalidProof, wantCheck: checkSignature},
		// Step 3: required claims (and the jti length bound of §11.1).
		{name: "jti missing", headers: []string{es(with(vtClaims(), "jti", nil))}, wantCode: ErrCodeInvalidProof, wantCheck: checkRequiredClaims},
		{name: "jti empty", headers: []string{es(with(vtClaims(), "jti", ""))}, wantCode: ErrCodeInvalidProof, wantCheck: checkRequiredClaims},
		{name: "htm missing", headers: []string{es(with(vtClaims(), "htm", nil))}, wantCode: ErrCodeInvalidProof, wantCheck: checkRequiredClaims},
		{name: "htu missing", headers: []string{es(with(vtClaims(), "htu", nil))}, wantCode: ErrCodeInvalidProof, wantCheck: checkRequiredClaims},
		{name: "iat missing", headers: []string{es(with(vtClaims(), "iat", nil))}, wantCode: ErrCodeInvalidProof, wantCheck: checkRequiredClaims},
		{name: "ath missing at the RS", headers: []string{good}, check: Check{AccessToken: at}, wantCode: ErrCodeInvalidProof, wantCheck: checkRequiredClaims},
		{name: "jti longer than 256", headers: []string{es(with(vtClaims(), "jti", strings.Repeat("j", MaxJTILength+1)))}, wantCode: ErrCodeInvalidProof, wantCheck: checkReplay},
		// Steps 8 and 9: htm, htu.
		{name: "htm mismatch", headers: []string{es(with(vtClaims(), "htm", "POST"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkHTM},
		{name: "htm is case-sensitive", headers: []string{es(with(vtClaims(), "htm", "get"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkHTM},
		{name: "htu other path", headers: []string{es(with(vtClaims(), "htu", "https://api.example.com/api/public"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkHTU},
		{name: "htu other host", headers: []string{es(with(vtClaims(), "htu", "https://evil.example.com/api/private"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkHTU},
		{name: "htu other scheme", headers: []string{es(with(vtClaims(), "htu", "http://api.example.com/api/private"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkHTU},
		{name: "htu other port", headers: []string{es(with(vtClaims(), "htu", "https://api.example.com:8443/api/private"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkHTU},
		{name: "htu relative", headers: []string{es(with(vtClaims(), "htu", "/api/private"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkHTU},
		{name: "encoded slash is not a slash", headers: []string{es(with(vtClaims(), "htu", "https://api.example.com/api%2Fprivate"))}, wantCode: ErrCodeInvalidProof, wantCheck: checkHTU},
		// Step 11: iat window.
		{name: "iat too old", headers: []string{es(with(vtClaims(), "iat", vtNow.Unix()-301))}, wantCode: ErrCodeInvalidProof, wantCheck: checkIAT},
		{name: "iat in the future", headers: []string{es(with(vtClaims(), "iat", vtNow.Unix()+31))}, wantCode: ErrCodeInvalidProof, wantCheck: checkIAT},
		{name: "iat huge", headers: []string{es(with(vtClaims(), "iat", 1e300))}, wantCode: ErrCodeInvalidProof, wantCheck: checkIAT},
		{name: "custom MaxAge", headers: []string{es(with(vtClaims(), "iat", vtNow.Unix()-61))}, setup: func(v *Verifier) { v.MaxAge = time.Minute }, wantCode: ErrCodeInvalidProof, wantCheck: checkIAT},
		// Step 12: ath and key binding.
		{name: "ath mismatch", headers: []string{es(with(vtClaims(), "ath", ATH("other-token")))}, check: Check{AccessToken: at}, wantCode: ErrCodeInvalidProof, wantCheck: checkATH},
		{name: "JKT mismatch", headers: []string{good}, check: Check{JKT: otherSigner.Thumbprint()}, wantCode: ErrCodeInvalidProof, wantCheck: checkKeyBinding},
		// Step 10 and §8: server nonces.
		{name: "nonce required but missing", headers: []string{good}, setup: withNonces, wantCode: ErrCodeUseNonce, wantCheck: checkNonceRequired},
		{name: "stale nonce", headers: []string{es(with(vtClaims(), "nonce", stale.Nonce()))}, setup: withNonces, wantCode: ErrCodeUseNonce, wantCheck: checkNonce},
		{name: "nonce from another secret", headers: []string{es(with(vtClaims(), "nonce", forged.Nonce()))}, setup: withNonces, wantCode: ErrCodeUseNonce, wantCheck: checkNonce},
		{name: "garbage nonce", headers: []string{es(with(vtClaims(), "nonce", "abc"))}, setup: withNonces, wantCode: ErrCodeUseNonce, wantCheck: checkNonce},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := vtVerifier()
			if tc.setup != nil {
				tc.setup(v)
			}
			c := tc.check
			if c.Method == "" {
				c.Method = "GET"
			}
			if c.URL == "" {
				c.URL = vtURL
			}
			res, err := v.Verify(ctx, tc.headers, c)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if res.JKT == "" || res.JTI == "" || res.Alg == "" || res.IAT.IsZero() {
					t.Errorf("incomplete result %+v", res)
				}
				return
			}
			var pe *ProofError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v (%T), want *ProofError", err, err)
			}
			if pe.Code != tc.wantCode || pe.Check != tc.wantCheck {
				t.Fatalf("got %s/%s (%s), want %s/%s", pe.Code, pe.Check, pe.Description, tc.wantCode, tc.wantCheck)
			}
			if res != nil {
				t.Errorf("result with error: %+v", res)
			}
		})
	}
}

// addMember returns jwk JSON with member name set to value.
func addMember(t testing.TB, jwk json.RawMessage, name, value string) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(jwk, &m); err != nil {
		t.Fatal(err)
	}
	m[name] = value
	out, _ := json.Marshal(m)
	return out
}

func TestVerifyAllAlgs(t *testing.T) {
	for _, alg := range allAlgs {
		t.Run(alg+" accepted with its thumbprint", func(t *testing.T) {
			s := testSigner(t, alg)
			proof, err := s.Proof("POST", "https://as.example.com/oauth/token", "", "", vtNow)
			if err != nil {
				t.Fatal(err)
			}
			res, err := vtVerifier().Verify(context.Background(), []string{proof}, Check{Method: "POST", URL: "https://as.example.com/oauth/token"})
			if err != nil {
				t.Fatal(err)
			}
			if res.JKT != s.Thumbprint() || res.Alg != alg || !res.IAT.Equal(vtNow) {
				t.Errorf("result %+v, want jkt %s alg %s", res, s.Thumbprint(), alg)
			}
		})
	}
}

func TestVerifyReplay(t *testing.T) {
	ctx := context.Background()
	s := testSigner(t, AlgES256)
	c := Check{Method: "GET", URL: vtURL}

	t.Run("same proof twice: second is a replay", func(t *testing.T) {
		v := vtVerifier()
		proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
		if _, err := v.Verify(ctx, []string{proof}, c); err != nil {
			t.Fatal(err)
		}
		_, err := v.Verify(ctx, []string{proof}, c)
		var pe *ProofError
		if !errors.As(err, &pe) || pe.Code != ErrCodeInvalidProof || pe.Check != checkReplay || pe.Description != "proof replayed" {
			t.Fatalf("second use: %v", err)
		}
	})
	t.Run("same proof with normalised-equal check URL is still a replay", func(t *testing.T) {
		v := vtVerifier()
		proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
		if _, err := v.Verify(ctx, []string{proof}, c); err != nil {
			t.Fatal(err)
		}
		_, err := v.Verify(ctx, []string{proof}, Check{Method: "GET", URL: "HTTPS://api.example.com:443/api/private"})
		var pe *ProofError
		if !errors.As(err, &pe) || pe.Check != checkReplay {
			t.Fatalf("second use: %v", err)
		}
	})
	t.Run("a rejected proof does not consume its jti", func(t *testing.T) {
		v := vtVerifier()
		claims := vtClaims()
		bad := vtCraft(t, AlgES256, vtHeader(t, AlgES256), with(claims, "htm", "POST"))
		if _, err := v.Verify(ctx, []string{bad}, c); err == nil {
			t.Fatal("bad proof accepted")
		}
		p := strings.Split(vtCraft(t, AlgES256, vtHeader(t, AlgES256), claims), ".")
		badSig := p[0] + "." + p[1] + "." + strings.Split(bad, ".")[2]
		if _, err := v.Verify(ctx, []string{badSig}, c); err == nil {
			t.Fatal("bad signature accepted")
		}
		if _, err := v.Verify(ctx, []string{strings.Join(p, ".")}, c); err != nil {
			t.Fatalf("good proof with the same jti: %v", err)
		}
	})
	t.Run("replay cache error fails closed", func(t *testing.T) {
		v := vtVerifier()
		v.Replay = failingReplay{}
		proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
		res, err := v.Verify(ctx, []string{proof}, c)
		var pe *ProofError
		if err == nil || res != nil || errors.As(err, &pe) {
			t.Fatalf("want a non-ProofError error, got %v %v", res, err)
		}
	})
	t.Run("no replay cache fails closed", func(t *testing.T) {
		v := vtVerifier()
		v.Replay = nil
		proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
		var pe *ProofError
		if _, err := v.Verify(ctx, []string{proof}, c); err == nil || errors.As(err, &pe) {
			t.Fatalf("want config error, got %v", err)
		}
	})
	t.Run("replay ttl covers the iat window", func(t *testing.T) {
		rec := &recordingReplay{}
		v := vtVerifier()
		v.Replay = rec
		proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
		if _, err := v.Verify(ctx, []string{proof}, c); err != nil {
			t.Fatal(err)
		}
		if rec.ttl != 330*time.Second || len(rec.key) != 43 {
			t.Fatalf("claim key %q ttl %v", rec.key, rec.ttl)
		}
	})
	t.Run("a deferred claim is made by Claim, once, with the same key and ttl", func(t *testing.T) {
		rec := &recordingReplay{}
		v := vtVerifier()
		v.Replay = rec
		proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
		res, err := v.Verify(ctx, []string{proof}, Check{Method: "GET", URL: vtURL, DeferReplay: true})
		if err != nil || rec.key != "" {
			t.Fatalf("Verify with DeferReplay: %v, claimed %q", err, rec.key)
		}
		if err := v.Claim(ctx, res); err != nil || rec.ttl != 330*time.Second || len(rec.key) != 43 {
			t.Fatalf("Claim: %v, key %q ttl %v", err, rec.key, rec.ttl)
		}
		rec.key = ""
		if err := v.Claim(ctx, res); err != nil || rec.key != "" {
			t.Fatalf("second Claim: %v, claimed again %q", err, rec.key)
		}
	})
	t.Run("a deferred claim of a proof seen before is a replay", func(t *testing.T) {
		v := vtVerifier()
		proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
		if _, err := v.Verify(ctx, []string{proof}, c); err != nil {
			t.Fatal(err)
		}
		res, err := v.Verify(ctx, []string{proof}, Check{Method: "GET", URL: vtURL, DeferReplay: true})
		if err != nil {
			t.Fatalf("Verify with DeferReplay: %v", err)
		}
		var pe *ProofError
		if err := v.Claim(ctx, res); !errors.As(err, &pe) || pe.Description != "proof replayed" {
			t.Fatalf("Claim: %v, want proof replayed", err)
		}
	})
	t.Run("nonce required without a source fails closed", func(t *testing.T) {
		v := vtVerifier()
		v.RequireNonce = true
		proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
		var pe *ProofError
		if _, err := v.Verify(ctx, []string{proof}, c); err == nil || errors.As(err, &pe) {
			t.Fatalf("want config error, got %v", err)
		}
	})
}

type failingReplay struct{}

func (failingReplay) Claim(context.Context, string, time.Duration) (bool, error) {
	return false, errors.New("redis down")
}

type recordingReplay struct {
	key string
	ttl time.Duration
}

func (r *recordingReplay) Claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
	r.key, r.ttl = key, ttl
	return true, nil
}

func TestKeyMismatch(t *testing.T) {
	s := testSigner(t, AlgES256)
	other := testSigner(t, AlgEdDSA)
	proof, _ := s.Proof("GET", vtURL, "", "", vtNow)
	_, err := vtVerifier().Verify(context.Background(), []string{proof}, Check{Method: "GET", URL: vtURL, JKT: other.Thumbprint()})
	var pe *ProofError
	if !errors.As(err, &pe) || !pe.KeyMismatch() {
		t.Fatalf("JKT mismatch: KeyMismatch false for %v", err)
	}
	proof, _ = s.Proof("GET", vtURL, "", "other", vtNow)
	_, err = vtVerifier().Verify(context.Background(), []string{proof}, Check{Method: "GET", URL: vtURL, AccessToken: "at"})
	if !errors.As(err, &pe) || pe.Check != checkATH || pe.KeyMismatch() {
		t.Fatalf("ath mismatch: %v", err)
	}
}

func TestNormalizeHTU(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{name: "lower-case scheme and host", in: "HTTPS://EXAMPLE.com/Path", want: "https://example.com/Path"},
		{name: "https default port removed", in: "https://example.com:443/a", want: "https://example.com/a"},
		{name: "http default port removed", in: "http://example.com:80/a", want: "http://example.com/a"},
		{name: "non-default port kept", in: "https://example.com:8443/a", want: "https://example.com:8443/a"},
		{name: "empty port removed", in: "https://example.com:/a", want: "https://example.com/a"},
		{name: "empty path is /", in: "https://example.com", want: "https://example.com/"},
		{name: "unreserved escapes decoded", in: "https://example.com/%7Euser/%41", want: "https://example.com/~user/A"},
		{name: "reserved escapes upper-cased", in: "https://example.com/a%2fb", want: "https://example.com/a%2Fb"},
		{name: "dot segments", in: "https://example.com/a/./b/../c", want: "https://example.com/a/c"},
		{name: "dot segment at the end", in: "https://example.com/a/..", want: "https://example.com/"},
		{name: "query and fragment dropped", in: "https://example.com/a?b=c#d", want: "https://example.com/a"},
		{name: "IPv6 literal", in: "https://[::1]:443/x", want: "https://[::1]/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NormalizeHTU(tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("NormalizeHTU(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "/relative", "ftp://example.com/", "https://", "mailto:a@b", "https://exa mple.com/"} {
		t.Run("rejects "+bad, func(t *testing.T) {
			if got, err := NormalizeHTU(bad); err == nil {
				t.Fatalf("NormalizeHTU(%q) = %q, want error", bad, got)
			}
		})
	}
}

func TestChallenge(t *testing.T) {
	v := vtVerifier()
	h := make(http.Header)
	v.Challenge(h)
	if len(h) != 0 {
		t.Fatalf("no nonce source: headers %v", h)
	}
	v.Nonces, _ = NewNonceSource(make([]byte, 32), time.Minute, func() time.Time { return vtNow })
	hh := make(http.Header)
	v.Challenge(hh)
	if len(hh["Dpop-Nonce"]) != 1 || hh["Dpop-Nonce"][0] != v.Nonces.Nonce() || hh["Cache-Control"][0] != "no-store" {
		t.Fatalf("challenge headers %v", hh)
	}
}

func TestAllowedAlgs(t *testing.T) {
	v := &Verifier{Algs: []string{"ES256", "HS256", "none", "EdDSA", "ES256"}}
	if got := strings.Join(v.AllowedAlgs(), " "); got != "ES256 EdDSA" {
		t.Fatalf("AllowedAlgs = %q", got)
	}
	if got := strings.Join((&Verifier{}).AllowedAlgs(), " "); got != strings.Join(DefaultAlgs, " ") {
		t.Fatalf("default AllowedAlgs = %q", got)
	}
}

// An Ed25519 proof passes under either JOSE name, EdDSA or the fully specified Ed25519
// (RFC 9864, what openid-client sends), unless Algs leaves that name out.
func TestVerifierAcceptsEd25519ProofsUnderBothNames(t *testing.T) {
	tests := []struct {
		name   string
		label  string
		algs   []string
		wantOK bool
	}{
		{name: "Ed25519 with the default algs", label: AlgEd25519, wantOK: true},
		{name: "EdDSA with the default algs", label: AlgEdDSA, wantOK: true},
		{name: "Ed25519 when only EdDSA is configured", label: AlgEd25519, algs: []string{AlgEdDSA}},
		{name: "EdDSA when only Ed25519 is configured", label: AlgEdDSA, algs: []string{AlgEd25519}},
		{name: "Ed25519 when it is configured", label: AlgEd25519, algs: []string{AlgES256, AlgEd25519}, wantOK: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := vtVerifier()
			v.Algs = tc.algs
			s := testSigner(t, tc.label)
			p, err := s.Proof(http.MethodGet, vtURL, "", "", vtNow)
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.Verify(context.Background(), []string{p}, Check{Method: http.MethodGet, URL: vtURL})
			if !tc.wantOK {
				var pe *ProofError
				if !errors.As(err, &pe) || pe.Code != ErrCodeInvalidProof {
					t.Fatalf("err = %v, want invalid_dpop_proof (alg not allowed)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if res.Alg != tc.label || res.JKT != s.Thumbprint() {
				t.Fatalf("result alg %q jkt %q, want %q and the key's thumbprint", res.Alg, res.JKT, tc.label)
			}
		})
	}
}

// With server nonces on, use_dpop_nonce answers only a proof that is otherwise valid (so a
// caller may treat it as a protocol step, not a failure): a bad signature or a proof for
// another key is invalid_dpop_proof even without a nonce.
func TestVerifierDemandsANonceOnlyFromOtherwiseValidProofs(t *testing.T) {
	nonces, err := NewNonceSource([]byte(strings.Repeat("k", 32)), time.Minute, func() time.Time { return vtNow })
	if err != nil {
		t.Fatal(err)
	}
	s := testSigner(t, AlgES256)
	good, err := s.Proof(http.MethodGet, vtURL, "", "", vtNow)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	other, err := s.Proof(http.MethodGet, vtURL, "", "", vtNow.Add(-time.Second))
	if err != nil {
		t.Fatal(err)
	}
	badSig := parts[0] + "." + parts[1] + "." + strings.Split(other, ".")[2]
	tests := []struct {
		name     string
		proof    string
		jkt      string
		wantCode string
	}{
		{name: "valid proof without a nonce", proof: good, wantCode: ErrCodeUseNonce},
		{name: "bad signature without a nonce", proof: badSig, wantCode: ErrCodeInvalidProof},
		{name: "proof for another key without a nonce", proof: good, jkt: testSigner(t, AlgEdDSA).Thumbprint(), wantCode: ErrCodeInvalidProof},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := vtVerifier()
			v.Nonces, v.RequireNonce = nonces, true
			_, err := v.Verify(context.Background(), []string{tc.proof}, Check{Method: http.MethodGet, URL: vtURL, JKT: tc.jkt})
			var pe *ProofError
			if !errors.As(err, &pe) || pe.Code != tc.wantCode {
				t.Fatalf("err = %v, want %s", err, tc.wantCode)
			}
		})
	}
}
