package broker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// Test clients and APIs for the DPoP server tests.
const (
	popClient   = "pop" // confidential, require_sender_constraining
	popSecret   = "pop-secret-value"
	boundClient = "bound-spa" // public, dpop_bound_access_tokens (RFC 9449 §5.2)
	spaOrigin   = "https://spa.example.com"
	apiNone     = "https://api.none.example"
	apiAllowed  = "https://api.allowed.example"
	apiRequired = "https://api.required.example"
	apiPublic   = "https://api.required-public.example" // required, required_for public_clients
	nonceSecret = "0123456789abcdef0123456789abcdef"
)

var (
	signersOnce      sync.Once
	keyA, keyB, keyC *dpop.Signer // ES256, ES256, EdDSA
)

func testSigners(t testing.TB) (a, b, c *dpop.Signer) {
	t.Helper()
	signersOnce.Do(func() {
		mk := func(alg, label string) *dpop.Signer {
			k, err := dpop.GenerateKey(alg)
			if err != nil {
				panic(err)
			}
			s, err := dpop.NewSigner(k, label)
			if err != nil {
				panic(err)
			}
			return s
		}
		keyA, keyB, keyC = mk("ES256", "ES256"), mk("ES256", "ES256"), mk("Ed25519", "EdDSA")
	})
	return keyA, keyB, keyC
}

// dpopHarness is a broker with three APIs (one per policy), a PoP-requiring confidential
// client, a dpop_bound_access_tokens public client and CORS for the SPA; every client is
// granted every API.
func dpopHarness(t testing.TB, mut func(*config.Config)) *harness {
	return newHarness(t, harnessOpts{up: dpopUp, mutate: func(c *config.Config) {
		appURL := strings.TrimSuffix(c.Clients[0].RedirectURIs[0], "/cb")
		c.APIs = []config.API{
			{Audience: apiNone, SenderConstraining: config.PolicyNone},
			{Audience: apiAllowed, SenderConstraining: config.PolicyAllowed},
			{Audience: apiRequired, SenderConstraining: config.PolicyRequired},
			{Audience: apiPublic, SenderConstraining: config.PolicyRequired, RequiredFor: config.RequiredForPublic},
		}
		c.Clients[1].AllowedOrigins = []string{spaOrigin}
		c.Clients = append(c.Clients,
			config.Client{ClientID: popClient, ClientSecret: popSecret, RedirectURIs: []string{appURL + "/pop"}, Connections: []string{"corp"}, RequireSenderConstraining: true},
			config.Client{ClientID: boundClient, RedirectURIs: []string{appURL + "/bound"}, Connections: []string{"corp"}, DPoPBoundAccessTokens: true},
		)
		for i := range c.Clients { // every test client may obtain tokens for every API
			for _, api := range c.APIs {
				c.Clients[i].APIs = append(c.Clients[i].APIs, config.APIGrant{Audience: api.Audience})
			}
		}
		if mut != nil {
			mut(c)
		}
	}})
}

func withNonces(c *config.Config) {
	c.DPoPServer.RequireNonce, c.DPoPServer.NonceSecret = true, nonceSecret
}

// clientInfo returns the redirect path and secret of a test client.
func clientInfo(id string) (path, secret string) {
	switch id {
	case appClient:
		return "/cb", appSecret
	case popClient:
		return "/pop", popSecret
	case spaClient:
		return "/spa", ""
	case boundClient:
		return "/bound", ""
	}
	panic("unknown client " + id)
}

// codeFor logs in for client and returns the broker code; mut edits the /authorize query.
func (h *harness) codeFor(client string, mut func(url.Values)) string {
	h.t.Helper()
	return h.codeIn(h.browser(), client, mut)
}

// codeIn is codeFor in the browser b (its cookies: the broker's session).
func (h *harness) codeIn(b *http.Client, client string, mut func(url.Values)) string {
	h.t.Helper()
	path, _ := clientInfo(client)
	q := url.Values{
		"response_type": {"code"}, "client_id": {client}, "redirect_uri": {h.app.URL + path},
		"scope": {"openid profile email"}, "state": {"st"}, "nonce": {"n"}, "connection": {"corp"},
		"code_challenge": {s256(testVerifier)}, "code_challenge_method": {"S256"},
	}
	if mut != nil {
		mut(q)
	}
	resp, _ := get(h.t, b, h.srv.URL+"/authorize?"+q.Encode())
	res := appResult(h.t, resp, h.app.URL+path)
	if res.Get("code") == "" {
		h.t.Fatalf("no code: %v", res)
	}
	return res.Get("code")
}

// tokReq is one /oauth/token request.
type tokReq struct {
	client string
	form   url.Values // grant parameters (client authentication is added)
	proof  string     // DPoP header; "" = none
	json   bool       // JSON body instead of a form
	header http.Header
	path   string // default /oauth/token
}

type httpResult struct {
	status int
	body   map[string]any
	header http.Header
}

func (r httpResult) str(k string) string { s, _ := r.body[k].(string); return s }

func (h *harness) tok(tr tokReq) httpResult {
	h.t.Helper()
	_, secret := clientInfo(tr.client)
	form := url.Values{}
	for k, v := range tr.form {
		form[k] = v
	}
	if secret == "" {
		form.Set("client_id", tr.client)
	}
	var body io.Reader = strings.NewReader(form.Encode())
	ct := "application/x-www-form-urlencoded"
	if tr.json {
		m := map[string]string{}
		for k := range form {
			m[k] = form.Get(k)
		}
		b, _ := json.Marshal(m)
		body, ct = bytes.NewReader(b), "application/json"
	}
	path := tr.path
	if path == "" {
		path = "/oauth/token"
	}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, body)
	req.Header.Set("Content-Type", ct)
	if secret != "" {
		req.SetBasicAuth(tr.client, secret)
	}
	if tr.proof != "" {
		req.Header.Set("DPoP", tr.proof)
	}
	for k, vs := range tr.header {
		req.Header[k] = vs
	}
	return h.do(req)
}

func (h *harness) do(req *http.Request) httpResult {
	h.t.Helper()
	resp, err := h.client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return httpResult{status: resp.StatusCode, body: m, header: resp.Header}
}

// codeGrant is the authorization_code form for client.
func (h *harness) codeGrant(client, code string) url.Values {
	path, _ := clientInfo(client)
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {h.app.URL + path}, "code_verifier": {testVerifier}}
}

func refreshGrant(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
}

// proof signs a proof for the broker endpoint path.
func (h *harness) proof(s *dpop.Signer, method, path, nonce, at string) string {
	h.t.Helper()
	p, err := s.Proof(method, h.srv.URL+path, nonce, at, h.clock.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) tokenProof(s *dpop.Signer) string {
	return h.proof(s, http.MethodPost, "/oauth/token", "", "")
}

// userinfo calls /userinfo with an Authorization header value and an optional proof.
func (h *harness) userinfo(auth, proof string) httpResult {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/userinfo", nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	return h.do(req)
}

// claimsOf decodes a JWT payload (the signature is checked by the broker's own tests).
// An opaque (userinfo-only) access token is opened with the test signing keys' token key.
func claimsOf(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	var b []byte
	var err error
	switch len(parts) {
	case 3:
		b, err = base64.RawURLEncoding.DecodeString(parts[1])
	case 5:
		b, err = openTestToken(t, tok)
	default:
		t.Fatalf("not a JWT: %q", tok)
	}
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func cnfJKT(t testing.TB, at string) string {
	cnf, _ := claimsOf(t, at)["cnf"].(map[string]any)
	s, _ := cnf["jkt"].(string)
	return s
}

// wantOAuth checks status and error code (and the description when want != "").
func wantOAuth(t testing.TB, r httpResult, status int, code, desc string) {
	t.Helper()
	if r.status != status || r.str("error") != code || desc != "" && r.str("error_description") != desc {
		t.Fatalf("got %d %v, want %d %s %q", r.status, r.body, status, code, desc)
	}
}

// wantBound checks a DPoP-bound token response (RFC 9449 §5, §6.1) for signer s.
func wantBound(t testing.TB, r httpResult, s *dpop.Signer) {
	t.Helper()
	if r.status != 200 || r.str("token_type") != "DPoP" || cnfJKT(t, r.str("access_token")) != s.Thumbprint() {
		t.Fatalf("want a DPoP-bound token for %s: %d %v", s.Thumbprint(), r.status, r.body)
	}
}

func wantBearer(t testing.TB, r httpResult) {
	t.Helper()
	if r.status != 200 || r.str("token_type") != "Bearer" || cnfJKT(t, r.str("access_token")) != "" {
		t.Fatalf("want a Bearer token: %d %v", r.status, r.body)
	}
}

// issuanceRows is the issuance table of the README ("Sender-constrained tokens for your own
// apps"), row by row.
var issuanceRows = []struct {
	aud       string // "" = userinfo only
	clientPoP bool
	proof     bool
	want      string // "bearer", "bound" or the invalid_request description
}{
	{aud: "", clientPoP: false, proof: false, want: "bearer"},
	{aud: "", clientPoP: false, proof: true, want: "bound"},
	{aud: "", clientPoP: true, proof: false, want: clientNeedsProof},
	{aud: "", clientPoP: true, proof: true, want: "bound"},
	{aud: apiNone, clientPoP: false, proof: false, want: "bearer"},
	{aud: apiAllowed, clientPoP: false, proof: false, want: "bearer"},
	{aud: apiRequired, clientPoP: false, proof: false, want: "API " + apiRequired + " requires sender-constrained tokens: send a DPoP proof"},
	{aud: apiNone, clientPoP: false, proof: true, want: "bearer"},
	{aud: apiAllowed, clientPoP: false, proof: true, want: "bound"},
	{aud: apiRequired, clientPoP: false, proof: true, want: "bound"},
	{aud: apiNone, clientPoP: true, proof: false, want: clientNeedsProof},
	{aud: apiAllowed, clientPoP: true, proof: false, want: clientNeedsProof},
	{aud: apiRequired, clientPoP: true, proof: false, want: clientNeedsProof},
	{aud: apiNone, clientPoP: true, proof: true, want: "client requires sender constraining but API " + apiNone + " does not allow it"},
	{aud: apiAllowed, clientPoP: true, proof: true, want: "bound"},
	{aud: apiRequired, clientPoP: true, proof: true, want: "bound"},
}

func rowName(aud string, clientPoP, proof bool, want string) string {
	a, c, p, w := "userinfo-only", "client does not require PoP", "no proof", "issued, "+want
	switch aud {
	case apiNone, apiAllowed, apiRequired:
		a = "custom API policy " + strings.Split(strings.TrimPrefix(aud, "https://api."), ".")[0]
	}
	if clientPoP {
		c = "client requires PoP"
	}
	if proof {
		p = "proof sent"
	}
	if want != "bearer" && want != "bound" {
		w = "not issued"
	}
	return fmt.Sprintf("%s / %s / %s → %s", a, c, p, w)
}

func TestDecideBindingTable(t *testing.T) {
	for _, row := range issuanceRows {
		t.Run(rowName(row.aud, row.clientPoP, row.proof, row.want), func(t *testing.T) {
			kind, policy := audUserinfo, ""
			switch row.aud {
			case apiNone:
				kind, policy = audAPI, config.PolicyNone
			case apiAllowed:
				kind, policy = audAPI, config.PolicyAllowed
			case apiRequired:
				kind, policy = audAPI, config.PolicyRequired
			}
			bind, refuse := decideBinding(kind, row.aud, row.clientPoP, row.proof, policy)
			switch row.want {
			case "bearer", "bound":
				if refuse != nil || bind != (row.want == "bound") {
					t.Fatalf("bind=%v refuse=%v", bind, refuse)
				}
			default:
				if refuse == nil || bind || refuse.Code != "invalid_request" || refuse.Description != row.want || refuse.Status != 400 {
					t.Fatalf("bind=%v refuse=%+v, want invalid_request %q", bind, refuse, row.want)
				}
			}
		})
	}
}

// issueRow logs in for client (audience aud, "" for userinfo only), exchanges the code with a
// proof from a when proof is set, and checks the answer: want is "bearer", "bound" or the
// invalid_request description (a row of the issuance table).
func (h *harness) issueRow(t *testing.T, a *dpop.Signer, client, aud string, proof bool, want string) httpResult {
	t.Helper()
	code := h.codeFor(client, func(q url.Values) {
		if aud != "" {
			q.Set("audience", aud)
		}
	})
	tr := tokReq{client: client, form: h.codeGrant(client, code)}
	if proof {
		tr.proof = h.tokenProof(a)
	}
	r := h.tok(tr)
	switch want {
	case "bearer":
		wantBearer(t, r)
	case "bound":
		wantBound(t, r, a)
	default:
		wantOAuth(t, r, 400, "invalid_request", want)
	}
	return r
}

// TestRequiredForPublicClients: an API with sender_constraining required and required_for
// public_clients requires a proof from public clients only; confidential clients get the
// "allowed" column of the issuance table.
func TestRequiredForPublicClients(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	for _, tc := range []struct {
		name, client string
		proof        bool
		want         string // "bearer", "bound" or the invalid_request description
	}{
		{name: "required_for public_clients / confidential client / no proof → issued, bearer", client: appClient, proof: false, want: "bearer"},
		{name: "required_for public_clients / confidential client / proof sent → issued, bound", client: appClient, proof: true, want: "bound"},
		{name: "required_for public_clients / public client / no proof → not issued", client: spaClient, proof: false, want: "API " + apiPublic + " requires sender-constrained tokens: send a DPoP proof"},
		{name: "required_for public_clients / public client / proof sent → issued, bound", client: spaClient, proof: true, want: "bound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.issueRow(t, a, tc.client, apiPublic, tc.proof, tc.want)
			// The token event names the policy applied to this client.
			want := config.PolicyAllowed
			if tc.client == spaClient {
				want = config.PolicyRequired
			}
			if dp, _ := h.lastEvent().Details["dpop"].(map[string]any); dp["policy"] != want {
				t.Errorf("event details.dpop = %v, want policy %s", dp, want)
			}
		})
	}
}

func TestIssuanceTableEndToEnd(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	for _, row := range issuanceRows {
		t.Run(rowName(row.aud, row.clientPoP, row.proof, row.want), func(t *testing.T) {
			client := appClient
			if row.clientPoP {
				client = popClient
			}
			r := h.issueRow(t, a, client, row.aud, row.proof, row.want)
			if r.status == 200 {
				aud, _ := claimsOf(t, r.str("access_token"))["aud"].([]any)
				if row.aud != "" && (len(aud) != 2 || aud[0] != row.aud) {
					t.Errorf("aud = %v", aud)
				}
			}
		})
	}
	t.Run("unknown audience → invalid_request at /authorize", func(t *testing.T) {
		q := url.Values{"response_type": {"code"}, "client_id": {appClient}, "redirect_uri": {h.app.URL + "/cb"},
			"scope": {"openid"}, "audience": {"https://unknown.example"}, "code_challenge": {s256(testVerifier)}, "code_challenge_method": {"S256"}}
		resp, _ := get(t, h.browser(), h.srv.URL+"/authorize?"+q.Encode())
		res := appResult(t, resp, h.app.URL+"/cb")
		if res.Get("error") != "invalid_request" || res.Get("error_description") != "audience https://unknown.example is not an API known to this broker" {
			t.Fatalf("%v", res)
		}
	})
}

func TestInvalidProofAtTokenEndpointLeavesTheCode(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	for _, tc := range []struct {
		name  string
		proof func() string
	}{
		{name: "not a JWT", proof: func() string { return "not-a-jwt" }},
		{name: "htm GET", proof: func() string { return h.proof(a, http.MethodGet, "/oauth/token", "", "") }},
		{name: "htu of another endpoint", proof: func() string { return h.proof(a, http.MethodPost, "/userinfo", "", "") }},
		{name: "tampered signature", proof: func() string { p := h.tokenProof(a); return p[:len(p)-4] + "AAAA" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := h.codeFor(spaClient, nil)
			r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: tc.proof()})
			wantOAuth(t, r, 400, "invalid_dpop_proof", "")
			if r.str("error_description") == "" {
				t.Error("no error_description")
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeFailedExchange || ev.Details["error"] != "invalid_dpop_proof" {
				t.Errorf("event %+v", ev)
			}
			// The proof is checked before the code is taken: the code still works.
			wantBound(t, h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)}), a)
		})
	}
	t.Run("two DPoP headers", func(t *testing.T) {
		code := h.codeFor(spaClient, nil)
		r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), header: http.Header{"Dpop": {h.tokenProof(a), h.tokenProof(a)}}})
		wantOAuth(t, r, 400, "invalid_dpop_proof", "")
	})
}

func TestReplayedProofAtTokenEndpointIsRefused(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	p := h.tokenProof(a)
	wantBound(t, h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: p}), a)
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: p})
	wantOAuth(t, r, 400, "invalid_dpop_proof", "")
}

func TestTokenEndpointDemandsAServerNonce(t *testing.T) {
	h := dpopHarness(t, withNonces)
	a, _, _ := testSigners(t)
	code := h.codeFor(spaClient, nil)
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)})
	wantOAuth(t, r, 400, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof")
	nonce := r.header.Get("DPoP-Nonce")
	if nonce == "" || len(r.header.Values("DPoP-Nonce")) != 1 || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("headers: %v", r.header)
	}
	r = h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.proof(a, http.MethodPost, "/oauth/token", nonce, "")})
	wantBound(t, r, a)
	if r.header.Get("DPoP-Nonce") == "" {
		t.Error("a token response carries a fresh DPoP-Nonce")
	}
	t.Run("a made-up nonce", func(t *testing.T) {
		code := h.codeFor(spaClient, nil)
		r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.proof(a, http.MethodPost, "/oauth/token", "bogus-nonce", "")})
		wantOAuth(t, r, 400, "use_dpop_nonce", nonceRequiredText)
		if r.header.Get("DPoP-Nonce") == "" {
			t.Error("no fresh nonce")
		}
	})
	t.Run("requests without a proof are unaffected", func(t *testing.T) {
		r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, nil))})
		wantBearer(t, r)
	})
}

func TestBoundTokenNamesTheProofKeyAndItsEventNoSecret(t *testing.T) {
	h := dpopHarness(t, nil)
	_, _, c := testSigners(t)
	code := h.codeFor(spaClient, func(q url.Values) { q.Set("audience", apiAllowed) })
	p := h.tokenProof(c)
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: p})
	wantBound(t, r, c)
	ev := h.lastEvent()
	dp, _ := ev.Details["dpop"].(map[string]any)
	if ev.Type != logs.TypeSuccessExchange || ev.Description != "Success Exchange" || ev.UserID != "oidc|corp|alice" ||
		dp["bound"] != true || dp["policy"] != "allowed" || dp["jkt"] != c.Thumbprint() || dp["alg"] != "EdDSA" || ev.Details["audience"] != apiAllowed {
		t.Fatalf("seacft event = %+v", ev)
	}
	raw, _ := json.Marshal(ev)
	for _, secret := range []string{p, code, r.str("access_token"), r.str("id_token")} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("event carries a proof, code or token: %s", raw)
		}
	}
	h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(c)})
	ev = h.lastEvent()
	if ev.Type != logs.TypeFailedExchange || ev.Details["error"] != "invalid_grant" || ev.Details["error_description"] == nil {
		t.Fatalf("feacft event = %+v", ev)
	}
}

func TestCodeBoundByDPoPJKTNeedsAProofWithThatKey(t *testing.T) {
	h := dpopHarness(t, nil)
	a, b, _ := testSigners(t)
	bindA := func(q url.Values) { q.Set("dpop_jkt", a.Thumbprint()) }
	for _, tc := range []struct {
		name  string
		proof func() string
		desc  string
	}{
		{name: "missing proof", proof: func() string { return "" }, desc: "the authorization code (dpop_jkt) is bound to a DPoP key: send a DPoP proof signed with that key"},
		{name: "proof from another key", proof: func() string { return h.tokenProof(b) }, desc: "the DPoP proof key does not match the key the authorization code (dpop_jkt) is bound to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := h.codeFor(spaClient, bindA)
			wantOAuth(t, h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: tc.proof()}), 400, "invalid_grant", tc.desc)
		})
	}
	t.Run("proof with the dpop_jkt key", func(t *testing.T) {
		code := h.codeFor(spaClient, bindA)
		wantBound(t, h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)}), a)
	})
}

func TestRefreshTokenBindingRotationAndReuse(t *testing.T) {
	h := dpopHarness(t, nil)
	a, b, _ := testSigners(t)
	offline := func(q url.Values) { q.Set("scope", "openid profile offline_access") }

	t.Run("public client: refresh token bound to the proof key", func(t *testing.T) {
		r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, offline)), proof: h.tokenProof(a)})
		wantBound(t, r, a)
		rt := r.str("refresh_token")
		if rt == "" {
			t.Fatalf("no refresh token: %v", r.body)
		}
		desc := "the refresh token is bound to a DPoP key: send a DPoP proof signed with that key"
		wantOAuth(t, h.tok(tokReq{client: spaClient, form: refreshGrant(rt)}), 400, "invalid_grant", desc)
		desc = "the DPoP proof key does not match the key the refresh token is bound to"
		wantOAuth(t, h.tok(tokReq{client: spaClient, form: refreshGrant(rt), proof: h.tokenProof(b)}), 400, "invalid_grant", desc)
		if ev := h.lastEvent(); ev.Type != logs.TypeFailedRefresh || ev.Details["error"] != "invalid_grant" {
			t.Errorf("fertft event = %+v", ev)
		}
		// Failed attempts did not burn the token; the holder of key a refreshes.
		r2 := h.tok(tokReq{client: spaClient, form: refreshGrant(rt), proof: h.tokenProof(a), json: true})
		wantBound(t, r2, a)
		if r2.str("refresh_token") == "" || r2.str("refresh_token") == rt || r2.str("id_token") == "" {
			t.Fatalf("rotation: %v", r2.body)
		}
		if ev := h.lastEvent(); ev.Type != logs.TypeSuccessRefresh {
			t.Errorf("sertft event = %+v", ev)
		}
		// The successor stays bound to a.
		wantOAuth(t, h.tok(tokReq{client: spaClient, form: refreshGrant(r2.str("refresh_token")), proof: h.tokenProof(b)}), 400, "invalid_grant", desc)
	})
	t.Run("public client without proof: unbound refresh token", func(t *testing.T) {
		r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, offline))})
		wantBearer(t, r)
		wantBearer(t, h.tok(tokReq{client: spaClient, form: refreshGrant(r.str("refresh_token"))}))
	})
	t.Run("confidential client: refresh token bound by client authentication", func(t *testing.T) {
		r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, offline)), proof: h.tokenProof(a)})
		wantBound(t, r, a)
		r2 := h.tok(tokReq{client: appClient, form: refreshGrant(r.str("refresh_token")), proof: h.tokenProof(b)})
		wantBound(t, r2, b) // the issuance table applies to the refresh, with the new key
		wantBearer(t, h.tok(tokReq{client: appClient, form: refreshGrant(r2.str("refresh_token"))}))
	})
	t.Run("refresh token of another client", func(t *testing.T) {
		r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, offline))})
		wantOAuth(t, h.tok(tokReq{client: appClient, form: refreshGrant(r.str("refresh_token"))}), 400, "invalid_grant", "refresh token was issued to another client")
	})
	t.Run("rotation: reuse revokes the family (ferrt)", func(t *testing.T) {
		r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, offline)), proof: h.tokenProof(a)})
		rt1 := r.str("refresh_token")
		rt2 := h.tok(tokReq{client: spaClient, form: refreshGrant(rt1), proof: h.tokenProof(a)}).str("refresh_token")
		if rt2 == "" {
			t.Fatal("no rotated token")
		}
		wantOAuth(t, h.tok(tokReq{client: spaClient, form: refreshGrant(rt1), proof: h.tokenProof(a)}), 400, "invalid_grant",
			"refresh token was already used: every token of its family is revoked")
		if ev := h.lastEvent(); ev.Type != logs.TypeFailedRotatingRefresh {
			t.Errorf("ferrt event = %+v", ev)
		}
		wantOAuth(t, h.tok(tokReq{client: spaClient, form: refreshGrant(rt2), proof: h.tokenProof(a)}), 400, "invalid_grant", "refresh token is invalid, expired or revoked")
	})
	t.Run("refresh re-applies the issuance table", func(t *testing.T) {
		code := h.codeFor(popClient, func(q url.Values) { offline(q); q.Set("audience", apiAllowed) })
		r := h.tok(tokReq{client: popClient, form: h.codeGrant(popClient, code), proof: h.tokenProof(a)})
		wantBound(t, r, a)
		wantOAuth(t, h.tok(tokReq{client: popClient, form: refreshGrant(r.str("refresh_token"))}), 400, "invalid_request", clientNeedsProof)
	})
	t.Run("refresh after logout: the session has ended", func(t *testing.T) {
		b2 := h.browser()
		resp, _ := get(t, b2, h.authorizeURL(offline))
		code := appResult(t, resp, h.app.URL+"/cb").Get("code")
		r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)})
		get(t, b2, h.srv.URL+"/v2/logout?client_id="+appClient)
		wantOAuth(t, h.tok(tokReq{client: appClient, form: refreshGrant(r.str("refresh_token"))}), 400, "invalid_grant", "the session of this refresh token has ended")
	})
	t.Run("refresh with a narrower scope", func(t *testing.T) {
		r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, offline))})
		f := refreshGrant(r.str("refresh_token"))
		f.Set("scope", "openid email")
		wantOAuth(t, h.tok(tokReq{client: appClient, form: f}), 400, "invalid_scope", "scope email was not granted to this refresh token")
		f.Set("scope", "openid")
		if r2 := h.tok(tokReq{client: appClient, form: f}); r2.status != 200 || r2.str("scope") != "openid" {
			t.Fatalf("%d %v", r2.status, r2.body)
		}
	})
}

func TestDPoPBoundAccessTokensClientMustSendAProof(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	code := h.codeFor(boundClient, nil)
	wantOAuth(t, h.tok(tokReq{client: boundClient, form: h.codeGrant(boundClient, code)}), 400, "invalid_request", clientNeedsProof)
	// Refused before the code is taken: the client can still redeem it with a proof.
	wantBound(t, h.tok(tokReq{client: boundClient, form: h.codeGrant(boundClient, code), proof: h.tokenProof(a)}), a)
}

func TestUserinfoChecksSchemeProofAndChallenges(t *testing.T) {
	h := dpopHarness(t, nil)
	a, b, _ := testSigners(t)
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: h.tokenProof(a)})
	wantBound(t, r, a)
	at := r.str("access_token")
	ui := func(s *dpop.Signer, method, nonce, token string) string {
		return h.proof(s, method, "/userinfo", nonce, token)
	}
	wantChallenge := func(t *testing.T, r httpResult, code string) {
		t.Helper()
		www := r.header.Get("WWW-Authenticate")
		if r.status != 401 || r.str("error") != code || !strings.HasPrefix(www, `DPoP error="`+code+`"`) ||
			!strings.Contains(www, `algs="ES256 EdDSA Ed25519 RS256 PS256"`) || !strings.Contains(www, "error_description=") {
			t.Fatalf("got %d %v WWW-Authenticate %q, want 401 DPoP %s", r.status, r.body, www, code)
		}
	}
	t.Run("DPoP scheme with a proof by the bound key", func(t *testing.T) {
		r := h.userinfo("DPoP "+at, ui(a, http.MethodGet, "", at))
		if r.status != 200 || r.str("sub") != "oidc|corp|alice" {
			t.Fatalf("%d %v", r.status, r.body)
		}
	})
	t.Run("bound token as Bearer", func(t *testing.T) {
		wantChallenge(t, h.userinfo("Bearer "+at, ""), "invalid_token")
	})
	t.Run("proof from another key", func(t *testing.T) {
		wantChallenge(t, h.userinfo("DPoP "+at, ui(b, http.MethodGet, "", at)), "invalid_dpop_proof")
	})
	t.Run("DPoP scheme without a proof", func(t *testing.T) {
		wantChallenge(t, h.userinfo("DPoP "+at, ""), "invalid_dpop_proof")
	})
	t.Run("proof without ath", func(t *testing.T) {
		wantChallenge(t, h.userinfo("DPoP "+at, ui(a, http.MethodGet, "", "")), "invalid_dpop_proof")
	})
	t.Run("proof for POST on a GET", func(t *testing.T) {
		wantChallenge(t, h.userinfo("DPoP "+at, ui(a, http.MethodPost, "", at)), "invalid_dpop_proof")
	})
	t.Run("replayed proof", func(t *testing.T) {
		p := ui(a, http.MethodGet, "", at)
		if r := h.userinfo("DPoP "+at, p); r.status != 200 {
			t.Fatalf("first use %d", r.status)
		}
		wantChallenge(t, h.userinfo("DPoP "+at, p), "invalid_dpop_proof")
	})
	t.Run("unbound token with the DPoP scheme", func(t *testing.T) {
		r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, nil))})
		bearer := r.str("access_token")
		wantChallenge(t, h.userinfo("DPoP "+bearer, ui(a, http.MethodGet, "", bearer)), "invalid_token")
		if r := h.userinfo("Bearer "+bearer, ""); r.status != 200 {
			t.Fatalf("Bearer token as Bearer: %d", r.status)
		}
	})
	t.Run("no credentials: no error info", func(t *testing.T) {
		r := h.userinfo("", "")
		www := strings.Join(r.header.Values("WWW-Authenticate"), ", ")
		if r.status != 401 || strings.Contains(www, "error") || !strings.Contains(www, "DPoP algs=") || !strings.Contains(www, "Bearer") {
			t.Fatalf("%d %q", r.status, www)
		}
	})
	t.Run("Bearer and DPoP together: invalid_request", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/userinfo", nil)
		req.Header.Add("Authorization", "DPoP "+at)
		req.Header.Add("Authorization", "Bearer "+at)
		req.Header.Set("DPoP", ui(a, http.MethodGet, "", at))
		wantOAuth(t, h.do(req), 400, "invalid_request", "send exactly one Authorization header")
	})
	t.Run("header and URL token: invalid_request", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/userinfo?access_token=x", nil)
		req.Header.Set("Authorization", "Bearer "+at)
		wantOAuth(t, h.do(req), 400, "invalid_request", "")
	})
}

func TestUserinfoDemandsAServerNonce(t *testing.T) {
	h := dpopHarness(t, withNonces)
	a, _, _ := testSigners(t)
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: h.tokenProof(a)})
	wantOAuth(t, r, 400, "use_dpop_nonce", nonceRequiredText)
	r = h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)),
		proof: h.proof(a, http.MethodPost, "/oauth/token", r.header.Get("DPoP-Nonce"), "")})
	wantBound(t, r, a)
	at := r.str("access_token")
	// A fresh client that has no nonce yet is challenged.
	u := h.userinfo("DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", "", at))
	www, nonce := u.header.Get("WWW-Authenticate"), u.header.Get("DPoP-Nonce")
	if u.status != 401 || !strings.HasPrefix(www, `DPoP error="use_dpop_nonce"`) || nonce == "" || u.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("challenge: %d %q nonce %q", u.status, www, nonce)
	}
	if u := h.userinfo("DPoP "+at, h.proof(a, http.MethodGet, "/userinfo", nonce, at)); u.status != 200 {
		t.Fatalf("with nonce: %d %v", u.status, u.body)
	}
}

func TestTokenEndpointTakesJSONBodyAndAuth0ClientHeader(t *testing.T) {
	h := dpopHarness(t, nil)
	a, _, _ := testSigners(t)
	code := h.codeFor(spaClient, func(q url.Values) { q.Set("dpop_jkt", a.Thumbprint()) })
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a), json: true,
		header: http.Header{"Auth0-Client": {base64.StdEncoding.EncodeToString([]byte(`{"name":"auth0-spa-js","version":"2.4.0"}`))}, "Origin": {spaOrigin}}})
	wantBound(t, r, a)
	if r.header.Get("Access-Control-Allow-Origin") != spaOrigin || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "DPoP-Nonce") {
		t.Errorf("CORS on the token response: %v", r.header)
	}
}

func TestTokenAndUserinfoAnswerCORSPreflight(t *testing.T) {
	h := dpopHarness(t, nil)
	for _, path := range []string{"/oauth/token", "/userinfo"} {
		t.Run("preflight "+path, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodOptions, h.srv.URL+path, nil)
			req.Header.Set("Origin", spaOrigin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "content-type, dpop, auth0-client")
			r := h.do(req)
			hd := r.header
			if r.status != 204 || hd.Get("Access-Control-Allow-Origin") != spaOrigin || !strings.Contains(hd.Get("Access-Control-Allow-Methods"), "POST") ||
				hd.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type, DPoP, Auth0-Client" ||
				hd.Get("Access-Control-Expose-Headers") != "DPoP-Nonce, WWW-Authenticate, Retry-After" || hd.Get("Vary") != "Origin" {
				t.Fatalf("%d %v", r.status, hd)
			}
			req.Header.Set("Origin", "https://evil.example")
			r = h.do(req)
			if r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Vary") != "Origin" {
				t.Fatalf("foreign origin: %v", r.header)
			}
		})
	}
}

func TestDiscoveryListsTheConfiguredProofAlgs(t *testing.T) {
	h := dpopHarness(t, func(c *config.Config) { c.DPoPServer.Algs = []string{"ES256", "PS256"} })
	_, body := get(t, http.DefaultClient, h.srv.URL+"/.well-known/openid-configuration")
	if !strings.Contains(body, `"dpop_signing_alg_values_supported":["ES256","PS256"]`) || !strings.Contains(body, `"refresh_token"`) {
		t.Fatalf("%s", body)
	}
	// RFC 9449 §4.3 step 5: an alg outside the list is refused.
	_, _, c := testSigners(t)
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: h.tokenProof(c)})
	wantOAuth(t, r, 400, "invalid_dpop_proof", "")
}

func TestProofReplayedAtAnotherReplicaIsRefused(t *testing.T) {
	addr := redistest.Start(t)
	open := func() sessions.Store {
		st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	h := newHarness(t, harnessOpts{up: dpopUp, store: open(), mutate: withNonces})
	// A second replica: same configuration (public URL, nonce secret), its own Redis client.
	b2, err := New(h.cfg, Deps{Store: open(), Events: h.events, Now: h.clock.Now, Keys: testKeys(t, "RS256")})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(b2.Handler())
	t.Cleanup(srv2.Close)
	a, _, _ := testSigners(t)

	// A nonce issued by one replica is accepted by the other (stateless nonces).
	r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: h.tokenProof(a)})
	nonce := r.header.Get("DPoP-Nonce")
	wantOAuth(t, r, 400, "use_dpop_nonce", nonceRequiredText)

	p := h.proof(a, http.MethodPost, "/oauth/token", nonce, "")
	codes := []string{h.codeFor(spaClient, nil), h.codeFor(spaClient, nil)}
	urls := []string{h.srv.URL, srv2.URL}
	results := make([]httpResult, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			form := h.codeGrant(spaClient, codes[i])
			form.Set("client_id", spaClient)
			req, _ := http.NewRequest(http.MethodPost, urls[i]+"/oauth/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("DPoP", p)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var m map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&m)
			results[i] = httpResult{status: resp.StatusCode, body: m, header: resp.Header}
		}()
	}
	wg.Wait()
	ok, replay := 0, 0
	for _, r := range results {
		switch {
		case r.status == 200 && r.str("token_type") == "DPoP":
			ok++
		case r.status == 400 && r.str("error") == "invalid_dpop_proof":
			replay++
		}
	}
	if ok != 1 || replay != 1 {
		t.Fatalf("the same proof at two replicas: %+v, want exactly one success", results)
	}
}

// jtiDown is a store whose replay-cache writes fail as if Redis were down.
type jtiDown struct{ sessions.Store }

func (s jtiDown) Create(ctx context.Context, kind sessions.Kind, id string, v []byte, ttl time.Duration) error {
	if kind == sessions.KindJTI {
		return fmt.Errorf("dial: %w", sessions.ErrUnavailable)
	}
	return s.Store.Create(ctx, kind, id, v, ttl)
}

func TestStoreReplayCacheClaimsOnceAndFailsClosed(t *testing.T) {
	ctx := context.Background()
	c := storeReplay{store: sessions.NewMemory()}
	for _, key := range []string{"plain", "{tag}.x", ".leading-dot", strings.Repeat("k", 4096)} {
		t.Run("key "+key[:min(len(key), 12)], func(t *testing.T) {
			if ok, err := c.Claim(ctx, key, time.Minute); !ok || err != nil {
				t.Fatalf("first claim: %v %v", ok, err)
			}
			if ok, err := c.Claim(ctx, key, time.Minute); ok || err != nil {
				t.Fatalf("second claim: %v %v", ok, err)
			}
		})
	}
	t.Run("store down fails closed", func(t *testing.T) {
		ok, err := storeReplay{store: jtiDown{Store: sessions.NewMemory()}}.Claim(ctx, "k", time.Minute)
		if ok || !errors.Is(err, sessions.ErrUnavailable) {
			t.Fatalf("%v %v", ok, err)
		}
		h := newHarness(t, harnessOpts{up: dpopUp, store: jtiDown{Store: sessions.NewMemory()}})
		a, _, _ := testSigners(t)
		code := h.codeFor(spaClient, nil)
		wantOAuth(t, h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code), proof: h.tokenProof(a)}), 503, "temporarily_unavailable", "")
	})
}
