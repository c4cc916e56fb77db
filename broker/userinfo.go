package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// accessClaims are the access-token claims /userinfo relies on.
type accessClaims struct {
	jwt.Claims
	Scope    string `json:"scope"`
	SID      string `json:"sid"`
	ClientID string `json:"client_id"`
}

func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dpop-broker"`)
		w.WriteHeader(http.StatusUnauthorized) // RFC 6750 §3.1: no error info without credentials
		return
	}
	if !strings.EqualFold(scheme, "Bearer") {
		// Extension point (issue 3): "DPoP" scheme with proof verification (DS-23).
		s.bearerError(w, http.StatusBadRequest, "invalid_request", "unsupported authorization scheme (use Bearer)")
		return
	}
	claims, err := s.verifyAccessToken(tok)
	if err != nil {
		s.bearerError(w, http.StatusUnauthorized, "invalid_token", err.Error())
		return
	}
	raw, err := s.store.Get(r.Context(), sessions.KindSession, claims.SID+".s")
	switch {
	case storeDown(err):
		s.log.Error("store unavailable at userinfo", "err", err)
		writeOAuthError(w, &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "the session store is unavailable"})
		return
	case err != nil:
		s.bearerError(w, http.StatusUnauthorized, "invalid_token", "the session of this access token has ended")
		return
	}
	var sess sessionRecord
	if err := json.Unmarshal(raw, &sess); err != nil || sess.UserID != claims.Subject {
		s.bearerError(w, http.StatusUnauthorized, "invalid_token", "the session of this access token has ended")
		return
	}
	out := scopedClaims(sess.Claims, claims.Scope)
	out["sub"] = sess.UserID
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) bearerError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="dpop-broker", error=%q, error_description=%q`, code, desc))
	writeOAuthError(w, &oauthError{Status: status, Code: code, Description: desc})
}

// verifyAccessToken checks the broker's own access token: signature and alg, typ at+jwt,
// iss, the userinfo audience, exp/iat (no leeway beyond a few seconds).
func (s *Server) verifyAccessToken(raw string) (*accessClaims, error) {
	if len(raw) > 8192 {
		return nil, errors.New("access token too long")
	}
	t, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{s.keys.SigningAlg})
	if err != nil {
		return nil, errors.New("malformed access token")
	}
	if len(t.Headers) != 1 || t.Headers[0].ExtraHeaders[jose.HeaderType] != "at+jwt" {
		return nil, errors.New("not an access token (typ must be at+jwt)")
	}
	var c accessClaims
	if err := t.Claims(s.keys.Signing.Public(), &c); err != nil {
		return nil, errors.New("access token signature is invalid")
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: s.issuer, Time: s.now()}, 5*time.Second); err != nil {
		return nil, fmt.Errorf("access token rejected: %w", err)
	}
	if !slices.Contains([]string(c.Audience), s.userinfoAudience()) {
		return nil, errors.New("access token audience does not include userinfo")
	}
	if c.Expiry == nil || c.SID == "" || c.Subject == "" {
		return nil, errors.New("access token lacks exp, sub or sid")
	}
	return &c, nil
}

// signJWT signs claims as a compact JWS.
func signJWT(signer jose.Signer, claims map[string]any) (string, error) {
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
