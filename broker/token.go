package broker

import (
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
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// tokenResponse is the /oauth/token success body.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	IDToken     string `json:"id_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	form, err := readTokenBody(w, r)
	if err != nil {
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: err.Error()})
		return
	}
	client, basic, oerr := s.authenticateClient(r, form)
	if oerr != nil {
		if basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="dpop-broker", charset="UTF-8"`)
		}
		writeOAuthError(w, oerr)
		return
	}
	switch form.Get("grant_type") {
	case "authorization_code":
		s.grantAuthorizationCode(w, r, client, form)
	case "":
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: "grant_type is required"})
	default:
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "unsupported_grant_type", Description: "only authorization_code is supported"})
	}
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
func (s *Server) authenticateClient(r *http.Request, form url.Values) (c *ClientConfig, basic bool, e *oauthError) {
	invalid := func(desc string) *oauthError {
		return &oauthError{Status: http.StatusUnauthorized, Code: "invalid_client", Description: desc}
	}
	id, secret, method := form.Get("client_id"), form.Get("client_secret"), AuthNone
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
		id, secret, method = uid, usecret, AuthSecretBasic
	} else if secret != "" {
		method = AuthSecretPost
	}
	if id == "" {
		return nil, basic, invalid("client authentication is required")
	}
	c = s.clients[id]
	if c == nil {
		return nil, basic, invalid("unknown client")
	}
	if c.authMethod() != method {
		return nil, basic, invalid("the client must authenticate with " + c.authMethod())
	}
	if method != AuthNone && subtle.ConstantTimeCompare([]byte(secret), []byte(c.ClientSecret)) != 1 {
		return nil, basic, invalid("client authentication failed")
	}
	return c, basic, nil
}

func (s *Server) grantAuthorizationCode(w http.ResponseWriter, r *http.Request, client *ClientConfig, form url.Values) {
	grantErr := func(desc string) {
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "invalid_grant", Description: desc})
	}
	code := form.Get("code")
	if code == "" {
		writeOAuthError(w, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: "code is required"})
		return
	}
	rec, err := s.takeCode(r, code)
	if err != nil {
		if storeDown(err) {
			s.log.Error("store unavailable at token endpoint", "err", err)
			writeOAuthError(w, &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "the session store is unavailable"})
			return
		}
		grantErr("authorization code is invalid, expired or already used")
		return
	}
	switch {
	case rec.App.ClientID != client.ClientID:
		grantErr("authorization code was issued to another client")
		return
	case form.Get("redirect_uri") != rec.App.RedirectURI:
		grantErr("redirect_uri does not match the authorization request")
		return
	}
	if p := pkceProblem(rec.App.CodeChallenge, form.Get("code_verifier")); p != "" {
		grantErr(p)
		return
	}
	binding, oerr := s.tokenBinding(r, rec)
	if oerr != nil {
		writeOAuthError(w, oerr)
		return
	}
	resp, err := s.issueTokens(rec, client, binding)
	if err != nil {
		s.log.Error("token issuance failed", "err", err)
		writeOAuthError(w, &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "could not issue tokens"})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// takeCode takes the broker code (single use) and checks its expiry on the broker clock.
func (s *Server) takeCode(r *http.Request, code string) (*codeRecord, error) {
	if len(code) > 256 || !strings.Contains(code, ".") {
		return nil, sessions.ErrNotFound
	}
	raw, err := s.store.Take(r.Context(), sessions.KindCode, code)
	if err != nil {
		return nil, err
	}
	var rec codeRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("malformed code record: %w", err)
	}
	if s.now().UnixMilli() >= rec.Expires {
		return nil, sessions.ErrNotFound
	}
	return &rec, nil
}

// pkceProblem verifies RFC 7636 S256 (PK-1, PK-4); "" means fine.
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
	TokenType string // "Bearer" (or "DPoP" once issue 3 lands)
	JKT       string // cnf.jkt for DPoP-bound tokens
}

// tokenBinding decides the access-token binding for a token request. Extension point for
// DPoP-bound tokens (issue 3): verify the DPoP header proof here (DS-1…DS-17), compare its
// key with rec.App.DPoPJKT (DS-20), and return TokenType "DPoP" with the thumbprint. Until
// then a code bound with dpop_jkt is refused (fail closed) and proofs are ignored.
func (s *Server) tokenBinding(_ *http.Request, rec *codeRecord) (binding, *oauthError) {
	if rec.App.DPoPJKT != "" {
		return binding{}, &oauthError{Status: http.StatusBadRequest, Code: "invalid_grant", Description: "authorization codes bound with dpop_jkt are not supported by this broker yet"}
	}
	return binding{TokenType: "Bearer"}, nil
}

// issueTokens signs the ID token and the access token for a redeemed code.
func (s *Server) issueTokens(rec *codeRecord, client *ClientConfig, b binding) (*tokenResponse, error) {
	now := s.now()
	jti := randomString(16)
	aud := []string{}
	if rec.App.Audience != "" {
		aud = append(aud, rec.App.Audience)
	}
	aud = append(aud, s.userinfoAudience())
	at := map[string]any{
		"iss": s.issuer, "sub": rec.UserID, "aud": aud, "azp": client.ClientID, "client_id": client.ClientID,
		"iat": now.Unix(), "exp": now.Add(s.cfg.Lifetimes.AccessToken).Unix(), "jti": jti,
		"scope": rec.App.Scope, "sid": rec.SID,
	}
	if b.JKT != "" {
		at["cnf"] = map[string]string{"jkt": b.JKT}
	}
	accessToken, err := signJWT(s.atSigner, at)
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	id := scopedClaims(rec.Claims, rec.App.Scope)
	for k, v := range map[string]any{
		"iss": s.issuer, "sub": rec.UserID, "aud": client.ClientID, "azp": client.ClientID,
		"iat": now.Unix(), "exp": now.Add(s.cfg.Lifetimes.IDToken).Unix(), "auth_time": rec.AuthTime,
		"sid": rec.SID, "at_hash": atHash(accessToken),
	} {
		id[k] = v
	}
	if rec.App.Nonce != "" {
		id["nonce"] = rec.App.Nonce
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

// userinfoAudience is the access-token audience of /userinfo (issuer + "userinfo" in the
// SaaS's slash-terminated issuer form).
func (s *Server) userinfoAudience() string { return s.base + "/userinfo" }

// atHash is the left half of SHA-256 of the access token (RS256 and ES256 both hash with
// SHA-256), base64url (ID-8).
func atHash(accessToken string) string {
	h := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(h[:16])
}
