package broker

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// keysWithClientAuth returns the shared test keys plus a new ES256 client-authentication key
// and, when previous, an RS256 one that is only published.
func keysWithClientAuth(t *testing.T, previous bool) *config.KeyRing {
	t.Helper()
	k := *testKeys(t, "RS256")
	k.ClientAuth, k.PreviousClientAuth = nil, nil
	es, err := dpop.GenerateKey("ES256")
	if err == nil {
		err = k.AddClientAuthKey(es, "ES256", false)
	}
	if err == nil && previous {
		rs, gerr := dpop.GenerateKey("RS256")
		if err = gerr; err == nil {
			err = k.AddClientAuthKey(rs, "RS256", true)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return &k
}

func TestClientAuthJWKSPublishesOnlyPublicClientAuthKeys(t *testing.T) {
	keys := keysWithClientAuth(t, true)
	h := newHarness(t, harnessOpts{keys: keys})
	resp, body := get(t, h.client(), h.srv.URL+clientAuthJWKSPath)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %d %s", clientAuthJWKSPath, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Keys[0].KeyID != keys.ClientAuth[0].KID || set.Keys[1].KeyID != keys.PreviousClientAuth[0].KID {
		t.Fatalf("published %s, want the current ES256 key then the previous RS256 key", body)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Use != "sig" || k.KeyID == keys.KID {
			t.Errorf("key %s: want public, use sig, never the token-signing key", k.KeyID)
		}
	}
	if strings.Contains(body, `"d"`) {
		t.Fatal("private key material published")
	}
	// The token-signing JWKS stays apart.
	_, tokenSet := get(t, h.client(), h.srv.URL+"/.well-known/jwks.json")
	if strings.Contains(tokenSet, keys.ClientAuth[0].KID) {
		t.Fatal("a client-authentication key is in the token-signing JWKS")
	}
}

func TestMgmtChecksClientAuthenticationAndPARAgainstTheUpstream(t *testing.T) {
	pkjUp, err := demoidp.Start(demoidp.Options{ClientID: upClientID, ClientSecret: upSecret, AuthMethods: []string{"private_key_jwt"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pkjUp.Close)
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: withMgmt, keys: keysWithClientAuth(t, false)})
	otherID := idOf(t, h, "other")
	opts := func(issuer string, extra map[string]any) map[string]any {
		o := map[string]any{"issuer": issuer, "client_id": upClientID}
		for k, v := range extra {
			o[k] = v
		}
		return map[string]any{"options": o}
	}
	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		code   string
		msg    string
	}{
		{name: "client_secret_post listed by the upstream is accepted", body: opts(h.up.URL, map[string]any{"token_endpoint_auth_method": "client_secret_post"}), status: 200},
		{name: "private_key_jwt not listed: 400 naming what the upstream lists", body: opts(h.up.URL, map[string]any{"token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256"}),
			status: 400, code: "client_auth_not_supported", msg: "options.token_endpoint_auth_method: upstream " + h.up.URL + " does not accept token_endpoint_auth_method private_key_jwt: its token_endpoint_auth_methods_supported is [client_secret_basic, client_secret_post]"},
		{name: "client_secret_basic against a private_key_jwt-only upstream: 400", body: opts(pkjUp.URL, map[string]any{"token_endpoint_auth_method": "client_secret_basic"}),
			status: 400, code: "client_auth_not_supported", msg: "is [private_key_jwt]"},
		{name: "private_key_jwt without a key for its alg: 400 naming the key to configure", body: opts(pkjUp.URL, map[string]any{"token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "PS256"}),
			status: 400, code: "client_auth_key_missing", msg: "configure keys.client_auth with alg PS256"},
		{name: "private_key_jwt with a client_secret: 400 naming it", body: opts(pkjUp.URL, map[string]any{"token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256", "client_secret": upSecret}),
			status: 400, code: "invalid_body", msg: "options.client_secret: must not be set with token_endpoint_auth_method private_key_jwt"},
		{name: "private_key_jwt with a key, listed by the upstream, is accepted (the stored secret is dropped)", body: opts(pkjUp.URL, map[string]any{"token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256"}), status: 200},
		{name: "back from private_key_jwt a secret method needs the secret again", body: opts(h.up.URL, map[string]any{"token_endpoint_auth_method": "client_secret_basic"}),
			status: 400, code: "invalid_body", msg: "options.client_secret: is required"},
		{name: "use_par against an upstream without a PAR endpoint: 400", body: opts(h.up.URL, map[string]any{"use_par": true, "client_secret": upSecret}),
			status: 400, code: "par_not_supported", msg: "options.use_par: upstream " + h.up.URL + " does not support pushed authorization requests"},
		{name: "an unknown method is a payload error", body: opts(h.up.URL, map[string]any{"token_endpoint_auth_method": "tls_client_auth", "client_secret": upSecret}),
			status: 400, code: "invalid_body", msg: `"tls_client_auth" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+otherID, tokAll, tc.body)
			if tc.status != 200 {
				wantAPIError(t, r, tc.status, tc.code, tc.msg)
				if ev := h.lastEvent(); ev.Type != logs.TypeFailedAPI {
					t.Errorf("event %s, want fapi", ev.Type)
				}
				return
			}
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			want := tc.body["options"].(map[string]any)["token_endpoint_auth_method"]
			if got := r.obj()["options"].(map[string]any)["token_endpoint_auth_method"]; got != want {
				t.Errorf("token_endpoint_auth_method = %v, want %v", got, want)
			}
		})
	}
}

func TestLoginEventsNameTheClientAuthenticationMethod(t *testing.T) {
	h := newHarness(t, harnessOpts{up: optionalDPoPUp, keys: keysWithClientAuth(t, false), mutate: func(c *config.Config) {
		c.Connections[0].Options.TokenEndpointAuthMethod = config.AuthSecretPost
		o := &c.Connections[1].Options
		o.TokenEndpointAuthMethod, o.TokenEndpointAuthSigningAlg, o.ClientSecret = config.AuthPrivateKeyJWT, "ES256", ""
	}})
	h.login()
	if ev := h.lastEventOf(logs.TypeSuccessLogin); ev.Details["token_endpoint_auth_method"] != "client_secret_post" {
		t.Fatalf("s event details %v: want token_endpoint_auth_method client_secret_post", ev.Details)
	}
	// "other" uses private_key_jwt, which the upstream does not list: the login does not start.
	resp, _ := get(t, h.browser(), h.authorizeURL(func(q url.Values) {
		q["client_id"], q["redirect_uri"], q["connection"] = []string{spaClient}, []string{h.app.URL + "/spa"}, []string{"other"}
	}))
	if resp.Request.URL.Query().Get("error") == "" {
		t.Fatalf("the login reached %s, want an error back at the app", resp.Request.URL)
	}
	ev := h.lastEventOf(logs.TypeFailedLogin)
	if ev.Details["token_endpoint_auth_method"] != "private_key_jwt" || ev.Details["error"] == nil {
		t.Fatalf("f event details %v: want the method and the error", ev.Details)
	}
	if !strings.Contains(ev.Description+jsonString(ev.Details), "client_auth_not_supported") {
		t.Errorf("f event %v does not carry client_auth_not_supported", ev.Details)
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
