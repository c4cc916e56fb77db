package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// A refresh token is "FAMILY.SECRET". The store keeps, under the family's hash tag,
// "FAMILY.<base64url SHA-256 of SECRET>" → refreshRecord for the live token,
// "FAMILY.family" → refreshFamily (the live token and the owning client) and, for every token
// the family ever minted, "FAMILY.issued.<hash>" (written with the token, in one PutAll). Each
// refresh takes the live record (single use) and writes its successor. A token that is not
// live revokes the family only when it is one the family minted (its issued marker exists)
// and the client presenting it owns the family: reuse of a rotated token by its owner. A
// made-up secret under a known family prefix, or another client's token, changes nothing.

// refreshRecord is one live refresh token.
type refreshRecord struct {
	ClientID string `json:"client_id"`
	UserID   string `json:"user_id"`
	SID      string `json:"sid"`
	Scope    string `json:"scope"`
	Audience string `json:"audience,omitempty"`
	JKT      string `json:"jkt,omitempty"` // public clients: bound proof key (DS-21)
	AuthTime int64  `json:"auth_time"`
	Expires  int64  `json:"exp"` // unix ms, absolute for the whole family
}

// refreshFamily points at the family's live token and names the client that owns it.
type refreshFamily struct {
	Current  string `json:"current"`
	ClientID string `json:"client_id,omitempty"` // empty in families stored before it existed: never revoked by reuse
}

const (
	familySuffix = ".family"
	issuedInfix  = ".issued." // FAMILY.issued.<hash>: a token this family minted
)

// refreshRecordFor is the refresh token minted with a code: a public client's token is bound to
// the proof key (DS-21); a confidential client's is bound by client authentication.
func refreshRecordFor(rec *codeRecord, client *ClientConfig, proof *dpop.Result) refreshRecord {
	rr := refreshRecord{
		ClientID: client.ClientID, UserID: rec.UserID, SID: rec.SID, Scope: rec.App.Scope,
		Audience: rec.App.Audience, AuthTime: rec.AuthTime,
	}
	if client.Public() && proof != nil {
		rr.JKT = proof.JKT
	}
	return rr
}

// newRefreshToken stores rec as the live token of family fam ("" starts a family with a fresh
// absolute expiry) and returns the token.
func (s *Server) newRefreshToken(ctx context.Context, fam string, rec refreshRecord) (string, error) {
	now := s.now()
	if fam == "" {
		fam = randomString(16)
		rec.Expires = now.Add(s.cfg.Lifetimes.RefreshToken).UnixMilli()
	}
	ttl := time.UnixMilli(rec.Expires).Sub(now)
	if ttl <= 0 {
		return "", errors.New("refresh token family expired")
	}
	secret := randomString(32)
	hash := hashString(secret)
	rv, err1 := json.Marshal(rec)
	fv, err2 := json.Marshal(refreshFamily{Current: hash, ClientID: rec.ClientID})
	if err := errors.Join(err1, err2); err != nil {
		return "", fmt.Errorf("encode refresh token: %w", err)
	}
	err := s.store.PutAll(ctx,
		sessions.Item{Kind: sessions.KindRefresh, ID: fam + "." + hash, Value: rv, TTL: ttl},
		sessions.Item{Kind: sessions.KindRefresh, ID: fam + familySuffix, Value: fv, TTL: ttl},
		// Written with the token, so that from the moment it exists a later presentation of
		// it (once rotated) is recognised as reuse, even by a request racing the rotation.
		sessions.Item{Kind: sessions.KindRefresh, ID: fam + issuedInfix + hash, Value: []byte("1"), TTL: ttl},
	)
	if err != nil {
		return "", fmt.Errorf("store refresh token: %w", err)
	}
	return fam + "." + secret, nil
}

// splitRefreshToken returns the family and the storage id of a well-formed token.
func splitRefreshToken(tok string) (fam, id string, ok bool) {
	fam, secret, found := strings.Cut(tok, ".")
	if !found || len(fam) != 22 || len(secret) != 43 || !b64url(fam) || !b64url(secret) {
		return "", "", false
	}
	return fam, fam + "." + hashString(secret), true
}

func b64url(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool {
		return !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_')
	})
}

var errRefreshInvalid = invalidGrant("refresh token is invalid, expired or revoked")

func (s *Server) grantRefreshToken(r *http.Request, client *ClientConfig, form url.Values, x *exchange) (*tokenResponse, *oauthError) {
	proof, tok, oerr := s.grantInput(r, client, form, x, "refresh_token")
	if oerr != nil {
		return nil, oerr
	}
	fam, id, ok := splitRefreshToken(tok)
	if !ok {
		return nil, errRefreshInvalid
	}
	rec, oerr := s.peekRefresh(r.Context(), fam, id, client, proof, x)
	if oerr != nil {
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
	if oerr := s.consumeRefresh(r.Context(), fam, id, client, x); oerr != nil {
		return nil, oerr
	}
	cr := &codeRecord{
		App: appRequest{ClientID: client.ClientID, Scope: scope, Audience: rec.Audience},
		SID: rec.SID, UserID: rec.UserID, Claims: sess.Claims, AuthTime: rec.AuthTime,
	}
	resp, err := s.issueTokens(cr, client, b)
	if err == nil {
		resp.RefreshToken, err = s.newRefreshToken(r.Context(), fam, *rec) // rotation
	}
	if err != nil {
		return nil, s.issueFailed(err)
	}
	return resp, nil
}

// peekRefresh reads the live token and checks client, expiry and key binding (DS-21) without
// taking it, so a request that fails a check does not burn the holder's token. A token that is
// gone while its family lives was rotated already: that reuse revokes the family.
func (s *Server) peekRefresh(ctx context.Context, fam, id string, client *ClientConfig, proof *dpop.Result, x *exchange) (*refreshRecord, *oauthError) {
	raw, err := s.store.Get(ctx, sessions.KindRefresh, id)
	if err != nil {
		return nil, s.refreshGone(ctx, fam, id, client, err, x)
	}
	var rec refreshRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, s.issueFailed(fmt.Errorf("malformed refresh record: %w", err))
	}
	x.userID = rec.UserID
	switch {
	case rec.ClientID != client.ClientID:
		return nil, invalidGrant("refresh token was issued to another client")
	case s.now().UnixMilli() >= rec.Expires:
		return nil, errRefreshInvalid
	}
	return &rec, keyBindingProblem(rec.JKT, proof, "the refresh token")
}

// consumeRefresh takes the token (single use); losing a concurrent race counts as reuse.
func (s *Server) consumeRefresh(ctx context.Context, fam, id string, client *ClientConfig, x *exchange) *oauthError {
	if _, err := s.store.Take(ctx, sessions.KindRefresh, id); err != nil {
		return s.refreshGone(ctx, fam, id, client, err, x)
	}
	return nil
}

// refreshGone answers a token (storage id id) that could not be read or taken: reuse by the
// family's owner revokes the family (ferrt); anything else is invalid_grant and changes
// nothing.
func (s *Server) refreshGone(ctx context.Context, fam, id string, client *ClientConfig, err error, x *exchange) *oauthError {
	if !errors.Is(err, sessions.ErrNotFound) {
		s.log.Error("store unavailable at token endpoint", "err", err)
		return errStoreDown
	}
	reused, err := s.revokeReusedFamily(ctx, fam, id, client.ClientID)
	switch {
	case err != nil:
		s.log.Error("refresh token family not revoked", "err", err)
		return errStoreDown
	case reused:
		x.reuse = true
		return invalidGrant("refresh token was already used: every token of its family is revoked")
	}
	return errRefreshInvalid
}

// revokeReusedFamily revokes family fam when the token with storage id id (not live) is one
// the family minted and clientID owns the family (RFC 9700 §4.14.2 reuse detection). A secret
// the family never minted (someone who knows only the 22-character family prefix) or a
// client that does not own the family gets false and changes nothing.
func (s *Server) revokeReusedFamily(ctx context.Context, fam, id, clientID string) (bool, error) {
	raw, err := s.store.Get(ctx, sessions.KindRefresh, fam+familySuffix)
	if errors.Is(err, sessions.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var f refreshFamily
	if json.Unmarshal(raw, &f) != nil || f.ClientID == "" || f.ClientID != clientID {
		return false, nil
	}
	hash := strings.TrimPrefix(id, fam+".")
	if _, err := s.store.Get(ctx, sessions.KindRefresh, fam+issuedInfix+hash); err != nil {
		if errors.Is(err, sessions.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	// A concurrent reuse may have revoked it a moment ago: still reuse.
	if _, err := s.revokeFamily(ctx, fam); err != nil {
		return true, err
	}
	return true, nil
}

// revokeFamily deletes a family and its live token; false when the family does not exist.
func (s *Server) revokeFamily(ctx context.Context, fam string) (bool, error) {
	raw, err := s.store.Take(ctx, sessions.KindRefresh, fam+familySuffix)
	if errors.Is(err, sessions.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var f refreshFamily
	if json.Unmarshal(raw, &f) == nil && f.Current != "" {
		if err := s.store.Delete(ctx, sessions.KindRefresh, fam+"."+f.Current); err != nil {
			return true, err
		}
	}
	return true, nil
}

// refreshSession returns the broker session a refresh token belongs to: logout (or the end
// of the session) ends its refresh tokens.
func (s *Server) refreshSession(ctx context.Context, rec *refreshRecord) (*sessionRecord, *oauthError) {
	raw, err := s.store.Get(ctx, sessions.KindSession, rec.SID+".s")
	if storeDown(err) {
		return nil, errStoreDown
	}
	var sess sessionRecord
	if err != nil || json.Unmarshal(raw, &sess) != nil || sess.UserID != rec.UserID {
		return nil, invalidGrant("the session of this refresh token has ended")
	}
	return &sess, nil
}

// tokenEvent records a token-endpoint outcome: seacft/feacft for codes, sertft/fertft (ferrt on
// reuse) for refresh tokens, with the DPoP decision. Never the proof, token or code.
func (s *Server) tokenEvent(r *http.Request, ev *logs.Event, grant string, x *exchange, oerr *oauthError) {
	ok, failed := logs.TypeSuccessExchange, logs.TypeFailedExchange
	switch {
	case grant == "refresh_token" && x.reuse:
		ok, failed = logs.TypeSuccessRefresh, logs.TypeFailedRotatingRefresh
	case grant == "refresh_token":
		ok, failed = logs.TypeSuccessRefresh, logs.TypeFailedRefresh
	case grant != "authorization_code":
		if oerr == nil {
			return
		}
		ev.Details["grant_type"] = clip(grant, 64)
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
			dp["policy"] = PolicyAllowed // userinfo only: bound when a proof is sent, else Bearer
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
	if x.reuse {
		ev.Class = logs.ClassAudit // the presenter held a real (rotated) refresh token
	}
	if oerr != nil {
		ev.Type = failed
		d["error"] = oerr.Code
		d["error_description"] = clip(oerr.Description, 512)
	}
	if nonceChallenge(oerr) { // a protocol step, not a failed exchange (noncechallenge.go)
		s.nonceChallengeEvent(r, ev, grant)
		return
	}
	s.metrics.tokenRequest(grant, oerr == nil, x.bound)
	s.write(r, ev)
}
