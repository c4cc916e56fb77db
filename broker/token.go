package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// tokenResponse is the /oauth/token success body.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.nonceHeader(w) // every token response carries a fresh nonce when nonces are on (RFC 9449 §8.2)
	form, err := readTokenBody(w, r)
	if err != nil {
		writeOAuthError(w, invalidRequest(err.Error()))
		return
	}
	ev := s.newEvent(r)
	x := &exchange{event: ev}
	grant := form.Get("grant_type")
	client, basic, oerr := s.authenticateClient(r, form)
	if oerr == nil && s.chargeClient(w, r, client, grant, "") {
		return // the per-client limit, spent only once the client has authenticated
	}
	var resp *tokenResponse
	if oerr == nil {
		withClient(ev, client)
		ev.Class = clientClass(client)
		switch grant {
		case "authorization_code":
			resp, oerr = s.grantAuthorizationCode(r, client, form, x)
		case "refresh_token":
			resp, oerr = s.grantRefreshToken(r, client, form, x)
		case "":
			oerr = invalidRequest("grant_type is required")
		default:
			oerr = &oauthError{Status: http.StatusBadRequest, Code: "unsupported_grant_type", Description: "only authorization_code and refresh_token are supported"}
		}
	} else if id := form.Get("client_id"); id != "" {
		ev.Details["requested_client_id"] = s.clipEvent(id, 128)
	}
	s.tokenLimited(w, ev, x)
	s.tokenEvent(r, ev, grant, x, oerr)
	if oerr != nil {
		if basic && oerr.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="dpop-broker", charset="UTF-8"`)
		}
		writeOAuthError(w, oerr)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// readTokenBody parses a form-encoded or JSON body (≤ 64 KiB) into url.Values; repeated
// parameters are refused.
func readTokenBody(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var form url.Values
	switch ct {
	case "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			return nil, errors.New("malformed or too large form body")
		}
		form = r.PostForm
	case "application/json":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, errors.New("body too large")
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, errors.New("malformed JSON body")
		}
		form = url.Values{}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				form.Set(k, v)
			case nil:
			default:
				return nil, fmt.Errorf("parameter %s must be a string", k)
			}
		}
	default:
		return nil, errors.New("the Content-Type must be application/x-www-form-urlencoded or application/json")
	}
	for k, vs := range form {
		if len(vs) > 1 {
			return nil, fmt.Errorf("%s must not be repeated", k)
		}
	}
	return form, nil
}

// authenticateClient applies the client's registered method: client_secret_basic,
// client_secret_post, or none (public client; PKCE is then enforced per code). basic reports
// whether the request used HTTP Basic (the 401 then carries WWW-Authenticate).
func (s *Server) authenticateClient(r *http.Request, form url.Values) (c *config.Client, basic bool, e *oauthError) {
	invalid := func(desc string) *oauthError {
		return &oauthError{Status: http.StatusUnauthorized, Code: "invalid_client", Description: desc}
	}
	id, secret, method := form.Get("client_id"), form.Get("client_secret"), config.AuthNone
	if bid, bsecret, ok := r.BasicAuth(); ok {
		basic = true
		if secret != "" {
			return nil, basic, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: "use only one client authentication method"}
		}
		uid, err1 := url.QueryUnescape(bid)
		usecret, err2 := url.QueryUnescape(bsecret)
		if err1 != nil || err2 != nil {
			return nil, basic, invalid("malformed Basic credentials")
		}
		if id != "" && id != uid {
			return nil, basic, invalid("client_id does not match the Basic credentials")
		}
		id, secret, method = uid, usecret, config.AuthSecretBasic
	} else if secret != "" {
		method = config.AuthSecretPost
	}
	if id == "" {
		return nil, basic, invalid("client authentication is required")
	}
	// A miss (unknown id, another method, a wrong secret) looks at the store's current
	// clients before it is answered: the client may have been created or given a new secret
	// on another replica a moment ago (before this replica's watch reported it).
	rc, err := s.findClient(r.Context(), id, func(c *regClient) bool {
		return c.cfg.AuthMethod() == method && (method == config.AuthNone || c.secretMatches(secret))
	})
	if snap := s.reg.snap.Load(); err == nil && rc == nil && snap != nil {
		if c := snap.clients[id]; c != nil && c.cfg.AuthMethod() != method {
			rc = c // known, but another method: say which
		}
	}
	switch {
	case err != nil:
		s.log.Error("clients could not be read at the token endpoint", "err", err)
		return nil, basic, errStoreDown
	case rc == nil: // the same answer as a wrong secret: the endpoint does not list client ids
		return nil, basic, invalid("client authentication failed")
	case rc.cfg.AuthMethod() != method:
		return nil, basic, invalid("the client must authenticate with " + rc.cfg.AuthMethod())
	}
	return rc.cfg, basic, nil
}

// exchange collects what a token request decided, for its event.
type exchange struct {
	proof   *dpop.Result // the accepted proof, if any
	target  target       // resolved audience
	policy  string       // the API policy applied to this client (target.policyFor)
	decided bool         // target was resolved (policy known)
	bound   bool         // the access token is DPoP-bound
	userID  string
	reuse   bool           // a rotated refresh token was presented again (ferrt)
	scope   *scopeDecision // the scope granted by policy (grants.go)
	// codeReuse is set when an authorization code was presented again (codereuse.go).
	codeReuse *codeReuse
	// limited is set when a limit inside the grant refused the request (refreshlimit.go).
	limited *refusal
	// event is the request's event; logged is set once it was stored with the grant's own
	// write (claimCode), which leaves tokenEvent only its counting.
	event  *logs.Event
	logged bool
}

func (s *Server) grantAuthorizationCode(r *http.Request, client *config.Client, form url.Values, x *exchange) (*tokenResponse, *oauthError) {
	// The proof is checked before the code is taken, so a use_dpop_nonce retry keeps the code.
	proof, code, oerr := s.grantInput(r, client, form, x, "code")
	if oerr != nil {
		return nil, oerr
	}
	ctx, pr := r.Context(), presentation{client: client, form: form, proof: proof}
	rec, raw, ahead, err := s.readCode(ctx, code)
	if err == nil {
		ctx = joinTrace(ctx, rec.App.Trace) // the login's trace, begun at /authorize (tracing.go)
	}
	switch {
	case errors.Is(err, sessions.ErrNotFound):
		return nil, s.usedCode(ctx, code, pr, x)
	case storeDown(err):
		s.log.Error("store unavailable at token endpoint", "err", err)
		return nil, errStoreDown
	case err != nil:
		return nil, s.issueFailed(err)
	}
	x.userID = rec.UserID
	// Every check runs on the record read, before anything is claimed (codereuse.go): a
	// request that fails one leaves the code for the client it was issued to.
	if oerr := s.codeProblem(rec, pr); oerr != nil {
		return nil, oerr
	}
	// A session that ended after the code was issued (logout, an administrator, the upstream)
	// already told the app so by back-channel logout: no tokens may follow.
	claims, oerr := s.liveSessionClaims(ctx, rec.SID, rec.UserID, "the session this authorization code was issued from has ended", ahead)
	if oerr != nil {
		// Only the code's presence matters here: a plain read, not readCode's read of the
		// session too (which just answered), and none when the store is down.
		if oerr != errStoreDown {
			if _, err := s.store.Get(ctx, sessions.KindCode, code); errors.Is(err, sessions.ErrNotFound) {
				return nil, s.usedCode(ctx, code, pr, x) // redeemed meanwhile (whose replay ended the session)
			}
		}
		return nil, oerr
	}
	rec.Claims = claims // the user's claims live in the session (the code does not carry them)
	b, oerr := s.tokenBinding(client, rec.App.Audience, proof, x)
	if oerr != nil {
		return nil, oerr
	}
	rec.App.Scope = s.applyGrant(client, x, rec.App.Scope) // tokens and refresh token carry it
	// The proof's replay claim, once the code is known to be live and the grant passes; a
	// replayed proof is refused before the code is claimed, so the code stays for a retry.
	if oerr := s.claimProof(ctx, proof); oerr != nil {
		return nil, oerr
	}
	resp, err := s.issueTokens(rec, client, b)
	var family *sessions.Item
	if err == nil && slices.Contains(strings.Fields(rec.App.Scope), "offline_access") {
		var fi sessions.Item
		grant, _, _ := strings.Cut(code, ".") // the family is named after the code's grant tag
		fi, resp.RefreshToken, err = s.newFamily(grant, refreshRecordFor(rec, client, proof))
		family = &fi
	}
	if err != nil {
		return nil, s.issueFailed(err)
	}
	if oerr := s.claimCode(ctx, code, raw, rec, family, pr, x); oerr != nil {
		return nil, oerr
	}
	return resp, nil
}

// grantInput verifies the token request's DPoP proof (kept in x) and returns it with the
// grant's required form parameter param.
func (s *Server) grantInput(r *http.Request, client *config.Client, form url.Values, x *exchange, param string) (*dpop.Result, string, *oauthError) {
	proof, oerr := s.tokenProof(r, client)
	if x.proof = proof; oerr != nil {
		return nil, "", oerr
	}
	v := form.Get(param)
	if v == "" {
		return nil, "", invalidRequest(param + " is required")
	}
	return proof, v, nil
}

// errStoreDown answers a token request when the store cannot be reached.
var errStoreDown = &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "the session store is unavailable"}

// errStoreFull answers a token request whose record the store had no room for.
var errStoreFull = &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "the session store is full"}

// issueFailed logs why tokens could not be issued and answers 503 or 500.
func (s *Server) issueFailed(err error) *oauthError {
	s.log.Error("token issuance failed", "err", err)
	if storeFull(err) {
		return errStoreFull
	}
	if storeDown(err) {
		return errStoreDown
	}
	return &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "could not issue tokens"}
}

// clientNeedsProof is the refusal for a client that must bind its tokens but sent no proof.
const clientNeedsProof = "client requires sender-constrained tokens: send a DPoP proof"

// tokenProof verifies the DPoP proof of a token request when one is sent (RFC 9449 §4.3, §5). A
// client that requires sender constraining (dpop_bound_access_tokens, RFC 9449 §5.2) must send
// one.
func (s *Server) tokenProof(r *http.Request, client *config.Client) (*dpop.Result, *oauthError) {
	if len(r.Header.Values("DPoP")) == 0 {
		if client.RequiresPoP() {
			return nil, invalidRequest(clientNeedsProof)
		}
		return nil, nil
	}
	// The replay claim waits until the grant shows a live code or refresh token (claimProof),
	// so proofs made up with a public client's id cannot fill the store.
	res, err := s.verifyProof(r, "/oauth/token", "", "", true)
	if err != nil {
		return nil, s.tokenProofError(err)
	}
	return res, nil
}

// claimProof records the token request's proof in the replay cache (RFC 9449 §11.1), once the
// grant is known to be live and before it is consumed; nil proof: nothing to claim.
func (s *Server) claimProof(ctx context.Context, proof *dpop.Result) *oauthError {
	if err := s.verifier.Claim(ctx, proof); err != nil {
		return s.tokenProofError(err)
	}
	return nil
}

// tokenProofError is the token endpoint's answer to a proof that failed a check (400) or
// could not be checked (503, logged).
func (s *Server) tokenProofError(err error) *oauthError {
	oerr := proofError(err, false)
	if oerr.Status == http.StatusServiceUnavailable {
		s.log.Error("DPoP proof check failed", "err", err)
	}
	return oerr
}

// keyBindingProblem checks a grant bound to a key thumbprint (dpop_jkt codes, RFC 9449 §10;
// public clients' refresh tokens, §5): a proof with exactly that key is required.
func keyBindingProblem(want string, proof *dpop.Result, what string) *oauthError {
	switch {
	case want == "":
		return nil
	case proof == nil:
		return invalidGrant(what + " is bound to a DPoP key: send a DPoP proof signed with that key")
	case subtle.ConstantTimeCompare([]byte(proof.JKT), []byte(want)) != 1:
		return invalidGrant("the DPoP proof key does not match the key " + what + " is bound to")
	}
	return nil
}

// tokenBinding resolves the audience, checks the client's grant for it against the current
// configuration (grants.go) and applies the issuance table (decideBinding).
func (s *Server) tokenBinding(client *config.Client, audience string, proof *dpop.Result, x *exchange) (binding, *oauthError) {
	t, oerr := s.resolveAudience(audience)
	if oerr != nil {
		return binding{}, oerr
	}
	x.target, x.policy, x.decided = t, t.policyFor(client.Public()), true
	if oerr := grantProblem(client, t); oerr != nil {
		return binding{}, oerr
	}
	bind, refuse := decideBinding(t.kind, t.audience, client.RequiresPoP(), proof != nil, x.policy)
	if refuse != nil {
		return binding{}, refuse
	}
	b := bindingFor(bind, proof)
	x.bound = b.JKT != ""
	return b, nil
}

// pkceProblem verifies RFC 7636 S256 (the verifier's form, §4.1; the comparison, §4.6); ""
// means fine.
func pkceProblem(challenge, verifier string) string {
	if challenge == "" {
		if verifier != "" {
			return "code_verifier sent but the authorization request had no code_challenge"
		}
		return ""
	}
	if verifier == "" {
		return "code_verifier is required"
	}
	if !validVerifier(verifier) {
		return "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~]"
	}
	h := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(h[:])), []byte(challenge)) != 1 {
		return "PKCE code_verifier does not match code_challenge"
	}
	return ""
}

func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	return !strings.ContainsFunc(v, func(c rune) bool {
		return !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~')
	})
}

// binding is how an issued access token is sender-constrained.
type binding struct {
	TokenType string // "Bearer" or "DPoP"
	JKT       string // cnf.jkt for DPoP-bound tokens (RFC 9449 §6.1)
	Alg       string // the proof's alg
}

// atClaims are the claims of a broker access token (RFC 9068 for API audiences; the same set,
// sealed, for userinfo-only tokens).
type atClaims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience []string `json:"aud"`
	AZP      string   `json:"azp"`
	ClientID string   `json:"client_id"`
	IssuedAt int64    `json:"iat"`
	Expiry   int64    `json:"exp"`
	JTI      string   `json:"jti"`
	Scope    string   `json:"scope"`
	SID      string   `json:"sid"`
	Cnf      *atCnf   `json:"cnf,omitempty"`
}

type atCnf struct {
	JKT string `json:"jkt"`
}

// issueTokens issues the access token (opaque when only /userinfo is its audience, a signed
// JWT for an API audience) and signs the ID token for a redeemed code.
func (s *Server) issueTokens(rec *codeRecord, client *config.Client, b binding) (*tokenResponse, error) {
	now := s.now()
	at := atClaims{
		Issuer: s.issuer, Subject: rec.UserID, AZP: client.ClientID, ClientID: client.ClientID,
		IssuedAt: now.Unix(), Expiry: now.Add(s.cfg.Lifetimes.AccessToken).Unix(), JTI: randomString(16),
		Scope: rec.App.Scope, SID: rec.SID,
	}
	if rec.App.Audience != "" {
		at.Audience = []string{rec.App.Audience, s.userinfoAudience()}
	} else {
		at.Audience = []string{s.userinfoAudience()}
	}
	if b.JKT != "" {
		at.Cnf = &atCnf{JKT: b.JKT}
	}
	var accessToken string
	var err error
	if rec.App.Audience == "" && s.opaque != nil {
		accessToken, err = s.opaque.seal(&at)
	} else {
		var payload any // the API's profile claims (apis[].claims, claims.go) join the token's own
		if payload, err = withClaims(&at, s.apiClaims(rec.App.Audience, rec.Claims, rec.App.Scope)); err == nil {
			accessToken, err = signJWT(s.atSigner, payload)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	id := scopedClaims(rec.Claims, rec.App.Scope)
	id["iss"], id["sub"], id["aud"], id["azp"] = s.issuer, rec.UserID, client.ClientID, client.ClientID
	id["iat"], id["exp"], id["auth_time"] = now.Unix(), now.Add(s.cfg.Lifetimes.IDToken).Unix(), rec.AuthTime
	id["sid"], id["at_hash"] = rec.SID, atHash(accessToken)
	if rec.App.Nonce != "" {
		id["nonce"] = rec.App.Nonce
	}
	if len(rec.AMR) > 0 { // the upstream's, as its ID token said (OIDC Core §2)
		id["amr"] = rec.AMR
	}
	if rec.ACR != "" {
		id["acr"] = rec.ACR
	}
	idToken, err := signJWT(s.idSigner, id)
	if err != nil {
		return nil, fmt.Errorf("id token: %w", err)
	}
	return &tokenResponse{
		AccessToken: accessToken, IDToken: idToken, TokenType: b.TokenType,
		ExpiresIn: int64(s.cfg.Lifetimes.AccessToken / time.Second), Scope: rec.App.Scope,
	}, nil
}

// signJWT signs claims as a compact JWS.
func signJWT(signer jose.Signer, claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("marshal claims: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return jws.CompactSerialize()
}

// userinfoAudience is the access-token audience of /userinfo (issuer + "userinfo" in the
// SaaS's slash-terminated issuer form).
func (s *Server) userinfoAudience() string { return s.base + "/userinfo" }

// atHash is the left half of SHA-256 of the access token (RS256 and ES256 both hash with
// SHA-256), base64url (OIDC Core §3.1.3.6).
func atHash(accessToken string) string {
	h := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(h[:16])
}
