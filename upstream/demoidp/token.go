package demoidp

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// authenticate checks client_secret_basic or client_secret_post and returns the client id.
func (p *provider) authenticate(r *http.Request) (string, error) {
	postID, postSecret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	var id, secret, method string
	if bid, bsecret, ok := r.BasicAuth(); ok {
		if postSecret != "" {
			return "", errors.New("more than one client authentication method")
		}
		var err1, err2 error
		id, err1 = url.QueryUnescape(bid)
		secret, err2 = url.QueryUnescape(bsecret)
		if err1 != nil || err2 != nil {
			return "", errors.New("malformed basic credentials")
		}
		if postID != "" && postID != id {
			return "", errors.New("client_id mismatch")
		}
		method = "client_secret_basic"
	} else if postSecret != "" {
		id, secret, method = postID, postSecret, "client_secret_post"
	} else {
		return "", errors.New("client authentication required")
	}
	if !slices.Contains(p.opts.AuthMethods, method) {
		return "", fmt.Errorf("%s is not allowed", method)
	}
	idOK := subtle.ConstantTimeCompare([]byte(id), []byte(p.opts.ClientID)) == 1
	secretOK := subtle.ConstantTimeCompare([]byte(secret), []byte(p.opts.ClientSecret)) == 1
	if !idOK || !secretOK {
		return "", errors.New("invalid client credentials")
	}
	return id, nil
}

func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

func (p *provider) dpopDemanded() bool {
	return p.dpopOn || p.opts.RequireDPoP || p.opts.RequireNonce || p.opts.AlwaysNonce
}

func (p *provider) handleToken(w http.ResponseWriter, r *http.Request) {
	p.stats.TokenRequests.Add(1)
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "body must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return
	}
	clientID, err := p.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="demoidp"`)
		oauthError(w, http.StatusUnauthorized, "invalid_client", err.Error())
		return
	}

	var jkt string
	proofOK := false
	if p.dpopDemanded() && len(r.Header.Values("DPoP")) > 0 {
		pr, err := p.verifyProof(r, http.MethodPost, p.tokenHTU)
		if err != nil {
			p.stats.ProofsRejected.Add(1)
			oauthError(w, http.StatusBadRequest, "invalid_dpop_proof", err.Error())
			return
		}
		n, challenge, err := p.nonceChallenge(pr.nonce)
		if err != nil {
			p.stats.ProofsRejected.Add(1)
			oauthError(w, http.StatusBadRequest, "invalid_dpop_proof", err.Error())
			return
		}
		if challenge {
			p.stats.NonceChallenges.Add(1)
			w.Header().Set("DPoP-Nonce", n)
			oauthError(w, http.StatusBadRequest, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof")
			return
		}
		if err := p.recordJTI(pr); err != nil {
			p.stats.ProofsRejected.Add(1)
			oauthError(w, http.StatusBadRequest, "invalid_dpop_proof", err.Error())
			return
		}
		p.stats.ProofsAccepted.Add(1)
		jkt, proofOK = pr.jkt, true
	} else if p.opts.RequireDPoP {
		p.stats.ProofsRejected.Add(1)
		oauthError(w, http.StatusBadRequest, "invalid_dpop_proof", "DPoP proof required")
		return
	}

	if gt := r.PostForm.Get("grant_type"); gt != "authorization_code" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "only authorization_code is supported")
		return
	}
	code := r.PostForm.Get("code")
	if code == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "code is required")
		return
	}
	now := p.now()
	p.mu.Lock()
	e, ok := p.codes.take(now, code)
	p.mu.Unlock()
	switch {
	case !ok:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "authorization code is unknown, expired or already used")
		return
	case e.clientID != clientID:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "authorization code was issued to another client")
		return
	case r.PostForm.Get("redirect_uri") != e.redirectURI:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match the authorization request")
		return
	}
	if e.challenge != "" {
		v := r.PostForm.Get("code_verifier")
		if !validVerifier(v) || subtle.ConstantTimeCompare([]byte(b64sha256(v)), []byte(e.challenge)) != 1 {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE code_verifier does not match code_challenge")
			return
		}
	}
	if e.jkt != "" && (!proofOK || jkt != e.jkt) {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "DPoP proof key does not match dpop_jkt")
		return
	}

	at := randomToken()
	bound := proofOK && !p.opts.AnswerBearer
	te := tokenEntry{sub: p.subject(), clientID: clientID, scope: e.scope, exp: now.Add(accessTokenTTL)}
	tokenType := "Bearer"
	if bound {
		te.jkt, tokenType = jkt, "DPoP"
	}
	idToken, err := p.idToken(e, at, now)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", "could not sign the ID token")
		return
	}
	p.mu.Lock()
	err = p.tokens.put(now, at, te, te.exp)
	p.mu.Unlock()
	if err != nil {
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "token store full")
		return
	}
	p.nonceHeader(w)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": at,
		"token_type":   tokenType,
		"expires_in":   int(accessTokenTTL / time.Second),
		"id_token":     idToken,
		"scope":        e.scope,
	})
}

func (p *provider) idToken(e codeEntry, accessToken string, now time.Time) (string, error) {
	c := make(map[string]any, len(p.claims)+10)
	for k, v := range p.claims {
		c[k] = v
	}
	iss, aud, nonce := p.issuer, e.clientID, e.nonce
	if p.opts.IDTokenIssuer != "" {
		iss = p.opts.IDTokenIssuer
	}
	if p.opts.IDTokenAud != "" {
		aud = p.opts.IDTokenAud
	}
	if p.opts.IDTokenNonce != "" {
		nonce = p.opts.IDTokenNonce
	}
	h := sha256.Sum256([]byte(accessToken))
	c["iss"] = iss
	c["sub"] = p.subject()
	c["aud"] = aud
	c["azp"] = e.clientID
	c["exp"] = now.Add(p.opts.IDTokenTTL).Unix()
	c["iat"] = now.Unix()
	c["nonce"] = nonce
	if !p.opts.OmitAuthTime {
		c["auth_time"] = e.authTime.Unix()
	}
	c["at_hash"] = base64.RawURLEncoding.EncodeToString(h[:16])
	if e.sid != "" {
		c["sid"] = e.sid
		p.lastSID.Store(&e.sid)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("marshal id token: %w", err)
	}
	jws, err := p.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign id token: %w", err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("serialize id token: %w", err)
	}
	return s, nil
}

func (p *provider) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	p.stats.UserinfoCalls.Add(1)
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	challenge := func(s, errCode, desc string) {
		v := s
		if p.dpopDemanded() && s == "DPoP" && p.algsHeader != "" {
			v += ` algs="` + p.algsHeader + `",`
		}
		if errCode != "" {
			v += fmt.Sprintf(` error=%q, error_description=%q`, errCode, desc)
		}
		w.Header().Set("WWW-Authenticate", strings.TrimSuffix(v, ","))
		oauthError(w, http.StatusUnauthorized, errCode, desc)
	}
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="demoidp"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	p.mu.Lock()
	te, ok := p.tokens.get(p.now(), tok)
	p.mu.Unlock()
	switch strings.ToLower(scheme) {
	case "bearer":
		if !ok {
			challenge("Bearer", "invalid_token", "access token unknown or expired")
			return
		}
		if te.jkt != "" {
			challenge("DPoP", "invalid_token", "DPoP-bound access token presented as Bearer")
			return
		}
	case "dpop":
		if !ok {
			challenge("DPoP", "invalid_token", "access token unknown or expired")
			return
		}
		if te.jkt == "" {
			challenge("DPoP", "invalid_token", "access token is not DPoP-bound")
			return
		}
		pr, err := p.verifyProof(r, r.Method, p.userHTU)
		if err == nil && pr.ath != b64sha256(tok) {
			err = errors.New("DPoP proof ath does not match the access token")
		}
		if err == nil && pr.jkt != te.jkt {
			err = errors.New("DPoP proof key does not match the token binding")
		}
		if err != nil {
			p.stats.ProofsRejected.Add(1)
			challenge("DPoP", "invalid_dpop_proof", err.Error())
			return
		}
		n, must, err := p.nonceChallenge(pr.nonce)
		if err != nil {
			p.stats.ProofsRejected.Add(1)
			challenge("DPoP", "invalid_dpop_proof", err.Error())
			return
		}
		if must {
			p.stats.NonceChallenges.Add(1)
			w.Header().Set("DPoP-Nonce", n)
			challenge("DPoP", "use_dpop_nonce", "Resource server requires nonce in DPoP proof")
			return
		}
		if err := p.recordJTI(pr); err != nil {
			p.stats.ProofsRejected.Add(1)
			challenge("DPoP", "invalid_dpop_proof", err.Error())
			return
		}
		p.stats.ProofsAccepted.Add(1)
	default:
		challenge("Bearer", "invalid_request", "unsupported authorization scheme")
		return
	}
	out := make(map[string]any, len(p.claims)+1)
	for k, v := range p.claims {
		out[k] = v
	}
	out["sub"] = te.sub
	p.nonceHeader(w)
	writeJSON(w, http.StatusOK, out)
}
