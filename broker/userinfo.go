package broker

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/dpop-broker/dpop-broker/dpop"
)

// accessClaims are the access-token claims /userinfo relies on.
type accessClaims struct {
	jwt.Claims
	Scope    string `json:"scope"`
	SID      string `json:"sid"`
	ClientID string `json:"client_id"`
	Cnf      *struct {
		JKT string `json:"jkt"`
	} `json:"cnf,omitempty"`
}

func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	s.nonceHeader(w)
	scheme, tok, oerr := userinfoCredentials(r)
	switch {
	case oerr != nil:
		s.bearerError(w, oerr.Status, oerr.Code, oerr.Description)
		return
	case tok == "": // RFC 6750 §3.1: no error info without credentials
		w.Header().Add("WWW-Authenticate", `Bearer realm="dpop-broker"`)
		w.Header().Add("WWW-Authenticate", fmt.Sprintf(`DPoP algs=%q`, strings.Join(s.cfg.DPoPServer.Algs, " ")))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	claims, proof, oerr := s.userinfoToken(r, scheme, tok)
	if oerr != nil {
		if scheme == "dpop" || oerr == errBoundAsBearer {
			s.writeDPoPChallenge(w, oerr)
		} else {
			s.bearerError(w, oerr.Status, oerr.Code, oerr.Description)
		}
		return
	}
	if s.chargeUserinfoSession(w, r, claims) {
		return // the per-session limit, spent only by a token (and proof) that passed its checks
	}
	var sess sessionRecord
	_, err := s.readSession(r.Context(), claims.SID, &sess)
	switch {
	case storeDown(err):
		s.log.Error("store unavailable at userinfo", "err", err)
		writeOAuthError(w, errStoreDown)
		return
	case err != nil:
		s.bearerError(w, http.StatusUnauthorized, "invalid_token", "the session of this access token has ended")
		return
	}
	if sess.UserID != claims.Subject || !s.sessionAlive(&sess) {
		s.bearerError(w, http.StatusUnauthorized, "invalid_token", "the session of this access token has ended")
		return
	}
	if oerr := s.claimUserinfoProof(r.Context(), proof); oerr != nil {
		s.writeDPoPChallenge(w, oerr)
		return
	}
	out := scopedClaims(sess.Claims, claims.Scope)
	out["sub"] = sess.UserID
	writeJSON(w, http.StatusOK, out)
}

// userinfoCredentials returns the lower-case scheme (bearer or dpop) and the token of the one
// Authorization header; "" when the request carries no credentials. Several headers, other
// schemes or a token in the URL as well are refused with invalid_request (RFC 6750 §3.1,
// RFC 9449 §7.1).
func userinfoCredentials(r *http.Request) (scheme, tok string, e *oauthError) {
	vals := r.Header.Values("Authorization")
	inURL := r.URL.Query().Has("access_token")
	switch {
	case len(vals) > 1:
		return "", "", invalidRequest("send exactly one Authorization header")
	case inURL:
		return "", "", invalidRequest("access tokens in the URL are not accepted: use the Authorization header")
	case len(vals) == 0 || strings.TrimSpace(vals[0]) == "":
		return "", "", nil
	}
	scheme, tok, _ = strings.Cut(strings.TrimSpace(vals[0]), " ")
	scheme, tok = strings.ToLower(scheme), strings.TrimSpace(tok)
	switch {
	case scheme != "bearer" && scheme != "dpop":
		return "", "", invalidRequest("unsupported authorization scheme (use Bearer or DPoP)")
	case tok == "" || strings.ContainsAny(tok, " \t,"):
		return "", "", invalidRequest("malformed " + scheme + " credentials")
	}
	return scheme, tok, nil
}

// errBoundAsBearer refuses a DPoP-bound token sent with the Bearer scheme (RFC 9449 §7.2); it is
// answered with a DPoP challenge.
var errBoundAsBearer = &oauthError{Status: http.StatusUnauthorized, Code: "invalid_token",
	Description: "DPoP-bound access token presented as Bearer: use the DPoP scheme with a proof"}

// userinfoToken verifies the access token and, with the DPoP scheme, its proof (RFC 9449 §7.1,
// §7.2): a bound token needs the DPoP scheme and a proof by its key; an unbound one the
// Bearer scheme. The proof's replay claim is left to claimUserinfoProof, so a request the
// per-session limit refuses stores nothing.
func (s *Server) userinfoToken(r *http.Request, scheme, tok string) (*accessClaims, *dpop.Result, *oauthError) {
	unauthorized := func(desc string) *oauthError {
		return &oauthError{Status: http.StatusUnauthorized, Code: "invalid_token", Description: desc}
	}
	claims, err := s.verifyAccessToken(tok)
	if err != nil {
		return nil, nil, unauthorized(err.Error())
	}
	jkt := ""
	if claims.Cnf != nil {
		jkt = claims.Cnf.JKT
	}
	switch {
	case scheme == "bearer" && jkt != "":
		return nil, nil, errBoundAsBearer
	case scheme == "bearer":
		return claims, nil, nil
	case jkt == "":
		return nil, nil, unauthorized("the access token is not DPoP-bound: use the Bearer scheme")
	case len(r.Header.Values("DPoP")) == 0:
		return nil, nil, &oauthError{Status: http.StatusUnauthorized, Code: dpop.ErrCodeInvalidProof, Description: "the DPoP scheme requires a DPoP proof header"}
	}
	proof, err := s.verifyProof(r, "/userinfo", tok, jkt, true)
	if err != nil {
		oerr := proofError(err, true)
		if oerr.Status == http.StatusServiceUnavailable {
			s.log.Error("DPoP proof check failed", "err", err)
		}
		return nil, nil, oerr
	}
	return claims, proof, nil
}

func (s *Server) bearerError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="dpop-broker", error=%q, error_description=%q`, code, desc))
	writeOAuthError(w, &oauthError{Status: status, Code: code, Description: desc})
}

// verifyAccessToken checks the broker's own access token: an opaque one is opened with the
// broker's token key (opaque.go); a JWT's signature and alg, typ at+jwt; then for both iss,
// the userinfo audience, exp/iat (no leeway beyond a few seconds).
func (s *Server) verifyAccessToken(raw string) (*accessClaims, error) {
	if len(raw) > 8192 {
		return nil, errors.New("access token too long")
	}
	var c accessClaims
	if isOpaque(raw) {
		if err := s.opaque.open(raw, &c); err != nil {
			return nil, err
		}
	} else {
		t, err := jwt.ParseSigned(raw, s.keys.VerificationAlgs())
		if err != nil {
			return nil, errors.New("malformed access token")
		}
		if len(t.Headers) != 1 || !isAccessTokenType(t.Headers[0].ExtraHeaders[jose.HeaderType]) {
			return nil, errors.New("not an access token (typ must be at+jwt)")
		}
		// The key by kid: the current signing key or a previous one (keys.previous_signing),
		// with the alg it is published with.
		pub, alg, ok := s.keys.VerificationKey(t.Headers[0].KeyID)
		if !ok || t.Headers[0].Algorithm != string(alg) {
			return nil, errors.New("access token signature is invalid")
		}
		if err := t.Claims(pub, &c); err != nil {
			return nil, errors.New("access token signature is invalid")
		}
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

// isAccessTokenType reports whether a JOSE typ header value names an RFC 9068 access token
// (the same rule as dpop.ResourceServer's).
func isAccessTokenType(typ any) bool {
	s, ok := typ.(string)
	return ok && dpop.IsAccessTokenType(s)
}
