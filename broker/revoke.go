package broker

import (
	"net/http"
	"strings"

	"github.com/dpop-broker/dpop-broker/logs"
)

// handleRevoke is OAuth 2.0 Token Revocation (RFC 7009) at POST /oauth/revoke, the discovery
// revocation_endpoint: the client authenticates as at /oauth/token (form or JSON body) and
// sends token (and optionally token_type_hint). A refresh token the client holds revokes its
// whole family (every rotation of it) and records srrt. As §2.2 asks, a token that is
// unknown, expired, already revoked or another client's gets 200 and changes nothing. The
// broker's access tokens are self-contained (JWT or JWE) and short-lived, so presenting one
// answers unsupported_token_type (§2.2.1). A refused request records frrt.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	ev := s.newEvent(r)
	fail := func(oerr *oauthError, basic bool) {
		ev.Type = logs.TypeFailedRevocation
		ev.Details["error"] = oerr.Code
		ev.Details["error_description"] = oerr.Description
		s.write(r, ev)
		if basic && oerr.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="dpop-broker", charset="UTF-8"`)
		}
		writeOAuthError(w, oerr)
	}
	form, err := readTokenBody(w, r)
	if err != nil {
		fail(invalidRequest(err.Error()), false)
		return
	}
	client, basic, oerr := s.authenticateClient(r, form)
	if oerr != nil {
		if id := form.Get("client_id"); id != "" {
			ev.Details["requested_client_id"] = s.clipEvent(id, 128)
		}
		fail(oerr, basic)
		return
	}
	if s.chargeClient(w, r, client, "", logs.TypeFailedRevocation) {
		return // the per-client limit, spent only once the client has authenticated
	}
	withClient(ev, client)
	ev.Class = clientClass(client)
	tok := form.Get("token")
	if tok == "" {
		fail(invalidRequest("token is required"), false)
		return
	}
	if _, _, ok := splitRefreshToken(tok); !ok {
		if isOpaque(tok) || strings.Count(tok, ".") == 2 { // a JWE or a JWS: an access token
			fail(&oauthError{Status: http.StatusBadRequest, Code: "unsupported_token_type",
				Description: "access tokens are self-contained and expire on their own; revoke the refresh token"}, false)
			return
		}
		w.WriteHeader(http.StatusOK) // §2.2: an invalid token is no error
		return
	}
	p, err := s.lookupRefresh(r.Context(), tok)
	switch {
	case err != nil && storeDown(err):
		s.log.Error("store unavailable at revocation endpoint", "err", err)
		fail(errStoreDown, false)
		return
	case err != nil:
		s.log.Error("refresh token family not readable at revocation endpoint", "err", err)
		w.WriteHeader(http.StatusOK) // nothing to say about it
		return
	case p.state != refreshLive:
		w.WriteHeader(http.StatusOK) // unknown, rotated, expired or revoked already
		return
	case p.rec.ClientID != client.ClientID:
		w.WriteHeader(http.StatusOK) // not this client's: nothing to say about it
		return
	}
	rec := p.rec
	if rec.JKT != "" {
		// A refresh token bound to a DPoP key (public clients, RFC 9449 §5) is revoked only by
		// the key's holder: the request must carry a proof signed with it. Without one the
		// token is "not this client's" (§2.2: 200, nothing changes).
		if _, err := s.verifyProof(r, "/oauth/revoke", "", rec.JKT, false); err != nil {
			ev.UserID = rec.UserID
			refusal := &oauthError{Code: "invalid_dpop_proof", Description: "the refresh token is bound to a DPoP key: send a proof signed with it"}
			if len(r.Header.Values("DPoP")) == 0 {
				refusal.Code = "dpop_proof_required"
			}
			ev.Type = logs.TypeFailedRevocation
			ev.Details["error"], ev.Details["error_description"] = refusal.Code, refusal.Description
			s.write(r, ev)
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	if _, err := s.revokeFamily(r.Context(), p.fam); err != nil {
		s.log.Error("refresh token family not revoked", "err", logs.KeepLevel(err))
		fail(errStoreDown, false)
		return
	}
	ev.Type = logs.TypeSuccessRevocation
	ev.UserID = rec.UserID
	s.write(r, ev)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
