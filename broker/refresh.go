package broker

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// refreshRecordFor is the refresh token minted with a code: a public client's token is bound to
// the proof key (RFC 9449 §5); a confidential client's is bound by client authentication.
func refreshRecordFor(rec *codeRecord, client *config.Client, proof *dpop.Result) refreshRecord {
	rr := refreshRecord{
		ClientID: client.ClientID, UserID: rec.UserID, SID: rec.SID, Scope: rec.App.Scope,
		Audience: rec.App.Audience, AuthTime: rec.AuthTime,
	}
	if client.Public() && proof != nil {
		rr.JKT = proof.JKT
	}
	return rr
}

var errRefreshInvalid = invalidGrant("refresh token is invalid, expired or revoked")

func (s *Server) grantRefreshToken(r *http.Request, client *config.Client, form url.Values, x *exchange) (*tokenResponse, *oauthError) {
	proof, tok, oerr := s.grantInput(r, client, form, x, "refresh_token")
	if oerr != nil {
		return nil, oerr
	}
	p, oerr := s.liveRefresh(r.Context(), tok, client, proof, x)
	if oerr != nil {
		return nil, oerr
	}
	rec := p.rec
	if oerr := s.chargeRefreshFamily(p, x); oerr != nil {
		return nil, oerr
	}
	if oerr := s.claimProof(r.Context(), proof); oerr != nil {
		return nil, oerr
	}
	scope := rec.Scope
	if req := form.Get("scope"); req != "" {
		granted := strings.Fields(rec.Scope)
		for _, sc := range strings.Fields(req) {
			if !slices.Contains(granted, sc) {
				return nil, &oauthError{Status: http.StatusBadRequest, Code: "invalid_scope", Description: "scope " + clip(sc, 64) + " was not granted to this refresh token"}
			}
		}
		scope = req
	}
	if aud := form.Get("audience"); aud != "" && aud != rec.Audience {
		return nil, invalidRequest("audience does not match the refresh token")
	}
	sess, oerr := s.refreshSession(r.Context(), rec)
	if oerr != nil {
		return nil, oerr
	}
	b, oerr := s.tokenBinding(client, rec.Audience, proof, x) // the table applies to every refresh
	if oerr != nil {
		return nil, oerr
	}
	scope = s.applyGrant(client, x, scope) // the current grant, which may have narrowed
	cr := &codeRecord{
		App: appRequest{ClientID: client.ClientID, Scope: scope, Audience: rec.Audience},
		SID: rec.SID, UserID: rec.UserID, Claims: sess.Claims, AuthTime: sess.AuthTime, AMR: sess.AMR, ACR: sess.ACR,
	}
	resp, err := s.issueTokens(cr, client, b)
	if err != nil {
		return nil, s.issueFailed(err)
	}
	// Nothing was consumed so far: a failed check or a failed signature leaves the token live.
	if resp.RefreshToken, oerr = s.rotateRefresh(r.Context(), p, x); oerr != nil {
		return nil, oerr
	}
	return resp, nil
}

// liveRefresh reads tok's family and checks that tok is its live token, issued to client, not
// expired and, when bound, presented with its key (RFC 9449 §5), without changing anything, so a
// request that fails a check does not burn the holder's token. A retired token of the family
// presented by the family's own client is reuse and revokes the family; any other token
// (unknown, made up under a known family prefix, another client's retired token) is
// invalid_grant and changes nothing.
func (s *Server) liveRefresh(ctx context.Context, tok string, client *config.Client, proof *dpop.Result, x *exchange) (*presentedRefresh, *oauthError) {
	p, err := s.lookupRefresh(ctx, tok)
	if err != nil {
		if storeDown(err) {
			s.log.Error("store unavailable at token endpoint", "err", err)
			return nil, errStoreDown
		}
		return nil, s.issueFailed(err)
	}
	switch p.state {
	case refreshRetired:
		if p.f.ClientID == "" || p.f.ClientID != client.ClientID {
			return nil, errRefreshInvalid
		}
		if p.f.Token != nil {
			// A family bound to a DPoP key (public clients, RFC 9449 §5) counts reuse only
			// from that key's holder: a stolen token alone must not log its user out.
			if keyBindingProblem(p.f.Token.JKT, proof, "the refresh token") != nil {
				return nil, errRefreshInvalid
			}
			x.userID = p.f.Token.UserID
		}
		return nil, s.refreshReused(ctx, p.fam, x)
	case refreshUnknown:
		return nil, errRefreshInvalid
	}
	rec := p.rec
	x.userID = rec.UserID
	switch {
	case rec.ClientID != client.ClientID:
		return nil, invalidGrant("refresh token was issued to another client")
	case s.now().UnixMilli() >= rec.Expires:
		return nil, errRefreshInvalid
	}
	if oerr := keyBindingProblem(rec.JKT, proof, "the refresh token"); oerr != nil {
		return nil, oerr
	}
	return p, nil
}

// rotateRefresh replaces p's family record by its next generation in one conditional write
// and returns the new token. The write succeeds only if the family record still holds what
// was read: a concurrent rotation or revocation makes it fail, which counts as reuse (the
// same token was presented twice, or the family was revoked meanwhile) and revokes the
// family, so a revoked family is never written back.
func (s *Server) rotateRefresh(ctx context.Context, p *presentedRefresh, x *exchange) (string, *oauthError) {
	ttl := time.UnixMilli(p.rec.Expires).Sub(s.now())
	if ttl <= 0 {
		return "", errRefreshInvalid
	}
	v, tok, err := p.next()
	if err != nil {
		return "", s.issueFailed(err)
	}
	id := p.fam + familySuffix
	put := []sessions.Item{{Kind: sessions.KindRefresh, ID: id, Value: v, TTL: ttl}}
	restore := []sessions.Item{{Kind: sessions.KindRefresh, ID: id, Value: p.raw, TTL: ttl}}
	var del []sessions.Ref
	if p.legacyLive != nil { // converting a legacy family: its live record goes
		legacyID := p.fam + "." + p.f.Current
		del = append(del, sessions.Ref{Kind: sessions.KindRefresh, ID: legacyID})
		restore = append(restore, sessions.Item{Kind: sessions.KindRefresh, ID: legacyID, Value: p.legacyLive, TTL: ttl})
	}
	switch err := s.store.Swap(ctx, sessions.KindRefresh, id, p.raw, put, del); {
	case err == nil:
		return tok, nil
	case errors.Is(err, sessions.ErrConflict):
		return "", s.refreshReused(ctx, p.fam, x)
	default:
		s.undoSwap(ctx, "refresh token rotation", err, sessions.KindRefresh, id, v, restore, nil)
		return "", s.issueFailed(err)
	}
}

// refreshReused revokes family fam after a token of it was presented again by its own
// client (RFC 9700 §4.14.2) and answers invalid_grant (ferrt). A concurrent reuse may have
// revoked it a moment ago: still reuse.
func (s *Server) refreshReused(ctx context.Context, fam string, x *exchange) *oauthError {
	if _, err := s.revokeFamily(ctx, fam); err != nil {
		s.log.Error("refresh token family not revoked", "err", logs.KeepLevel(err))
		return errStoreDown
	}
	x.reuse = true
	return invalidGrant("refresh token was already used: every token of its family is revoked")
}

// refreshSession returns the broker session a refresh token belongs to: logout (or the end
// of the session) ends its refresh tokens. A refresh is a use of the session: it slides its
// idle window (slideSession).
func (s *Server) refreshSession(ctx context.Context, rec *refreshRecord) (*sessionRecord, *oauthError) {
	sess, raw, oerr := s.liveSession(ctx, rec.SID, rec.UserID, "the session of this refresh token has ended")
	if oerr != nil {
		return nil, oerr
	}
	s.slideSession(ctx, rec.SID, raw, sess)
	return sess, nil
}

// tokenEvent records a token-endpoint outcome: seacft/feacft for codes, sertft/fertft (ferrt on
// reuse) for refresh tokens, with the DPoP decision. Never the proof, token or code. An event
// already stored with the grant's own write (x.logged, claimCode) is only counted.
func (s *Server) tokenEvent(r *http.Request, ev *logs.Event, grant string, x *exchange, oerr *oauthError) {
	if x.logged && oerr == nil {
		s.metrics.tokenRequest(grant, true, x.bound)
		s.metrics.events.WithLabelValues(ev.Type).Inc()
		return
	}
	if !s.fillTokenEvent(ev, grant, x, oerr) {
		return
	}
	if nonceChallenge(oerr) { // a protocol step, not a failed exchange (noncechallenge.go)
		s.nonceChallengeEvent(r, ev, grant)
		return
	}
	s.metrics.tokenRequest(grant, oerr == nil, x.bound)
	s.write(r, ev)
}

// fillTokenEvent sets ev's type, class and details for the outcome oerr of a grant (nil:
// tokens issued); false when the outcome records no event.
func (s *Server) fillTokenEvent(ev *logs.Event, grant string, x *exchange, oerr *oauthError) bool {
	ok, failed := logs.TypeSuccessExchange, logs.TypeFailedExchange
	switch {
	case grant == "refresh_token" && x.reuse:
		ok, failed = logs.TypeSuccessRefresh, logs.TypeFailedRotatingRefresh
	case grant == "refresh_token":
		ok, failed = logs.TypeSuccessRefresh, logs.TypeFailedRefresh
	case grant != "authorization_code":
		if oerr == nil {
			return false
		}
		ev.Details["grant_type"] = s.clipEvent(grant, 64)
	}
	ev.UserID = x.userID
	d := ev.Details
	if x.codeReuse != nil {
		x.codeReuse.details(d)
	}
	dp := map[string]any{"bound": x.bound}
	if x.decided {
		dp["policy"] = x.policy
		if x.target.kind == audUserinfo {
			dp["policy"] = config.PolicyAllowed // userinfo only: bound when a proof is sent, else Bearer
		}
		if x.target.audience != "" {
			d["audience"] = x.target.audience
		}
	}
	if x.proof != nil {
		dp["jkt"], dp["alg"] = x.proof.JKT, x.proof.Alg
	}
	d["dpop"] = dp
	withScope(d, x.scope)
	ev.Type = ok
	if x.reuse || x.codeReuse != nil {
		// The presenter held a real (rotated) refresh token, or passed every check of the
		// code it presented again (its client, redirect_uri, PKCE verifier, dpop_jkt key):
		// no flood of anonymous requests can cause or evict these.
		ev.Class = logs.ClassAudit
	}
	if oerr != nil {
		ev.Type = failed
		d["error"] = oerr.Code
		d["error_description"] = s.clipEvent(oerr.Description, 512)
	}
	return true
}
