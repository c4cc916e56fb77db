package broker

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
)

// TestSigningKeyRotation: after keys.signing is replaced and the old key moves to
// keys.previous_signing, the JWKS publishes both (current first), new tokens carry the new
// kid (KeyRing.Signer), and access tokens issued under the old key (JWT and opaque) still work at /userinfo
// until they expire. Without the previous key they are refused.
func TestSigningKeyRotation(t *testing.T) {
	h := dpopHarness(t, nil) // signs with testKeys(t, "ES256"): the old key
	old := h.broker.keys
	jwtAT := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, func(q url.Values) {
		q.Set("audience", apiAllowed)
	}))}).str("access_token")
	opaqueAT := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, nil))}).str("access_token")
	if !isOpaque(opaqueAT) || isOpaque(jwtAT) || jwtAT == "" {
		t.Fatalf("want one JWT and one opaque access token, got %q and %q", jwtAT, opaqueAT)
	}

	newKey, err := dpop.GenerateKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	// rotated is a replica restarted with the new key (and the old one as previous when
	// keepOld), sharing the store, so the sessions behind the tokens are there.
	rotated := func(keepOld bool) (*config.KeyRing, string) {
		k, err := config.NewKeyRing(newKey, "ES256")
		if err != nil {
			t.Fatal(err)
		}
		k.DPoP = old.DPoP // the DPoP keys toward the upstream do not change
		if keepOld {
			if err := k.AddPrevious(old.Signing, string(old.SigningAlg)); err != nil {
				t.Fatal(err)
			}
		}
		b, err := New(h.cfg, Deps{Store: h.store, Events: h.events, Now: h.clock.Now, Keys: k})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(b.Handler())
		t.Cleanup(srv.Close)
		return k, srv.URL
	}
	userinfo := func(base, at string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+at)
		return h.do(req).status
	}

	k, base := rotated(true)
	resp, err := http.Get(base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct {
			KID string `json:"kid"`
			Alg string `json:"alg"`
			D   string `json:"d"`
		} `json:"keys"`
	}
	err = json.NewDecoder(resp.Body).Decode(&jwks)
	_ = resp.Body.Close()
	if err != nil || len(jwks.Keys) != 2 || jwks.Keys[0].KID != k.KID || jwks.Keys[1].KID != old.KID || jwks.Keys[0].D != "" || jwks.Keys[1].D != "" {
		t.Fatalf("JWKS = %+v (%v), want the new key %s then the previous %s, public only", jwks, err, k.KID, old.KID)
	}
	for name, at := range map[string]string{"JWT": jwtAT, "opaque": opaqueAT} {
		if st := userinfo(base, at); st != http.StatusOK {
			t.Errorf("%s access token from before the rotation: /userinfo %d, want 200 (previous key kept)", name, st)
		}
	}
	// The rotated replica signs with the new key: a code from the old one (shared store)
	// redeemed there gets an ID token with the new kid.
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(h.codeGrant(appClient, h.codeFor(appClient, nil)).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(appClient, appSecret)
	r := h.do(req)
	hdr, _, _ := strings.Cut(r.str("id_token"), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(hdr)
	var jh struct {
		KID string `json:"kid"`
	}
	if r.status != http.StatusOK || json.Unmarshal(raw, &jh) != nil || jh.KID != k.KID {
		t.Errorf("token from the rotated replica: %d, ID token kid %q, want %s", r.status, jh.KID, k.KID)
	}
	// A replica that dropped the previous key refuses them.
	_, bare := rotated(false)
	for name, at := range map[string]string{"JWT": jwtAT, "opaque": opaqueAT} {
		if st := userinfo(bare, at); st != http.StatusUnauthorized {
			t.Errorf("%s access token of a dropped key: /userinfo %d, want 401", name, st)
		}
	}
	// The previous key never signs.
	if err := k.AddPrevious(newKey, "ES256"); err == nil {
		t.Error("AddPrevious accepted the current key")
	}
	if err := k.AddPrevious(old.Signing, "ES256"); err == nil {
		t.Error("AddPrevious accepted a key twice")
	}
}
