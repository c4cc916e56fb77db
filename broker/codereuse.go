package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Authorization-code replay (RFC 6749 §4.1.2: a code used more than once is refused and the
// tokens issued from it are revoked).
//
// A code is "TAG.SECRET" (TAG = the session's tag). Its first presentation claims it by
// creating "TAG.used.<hash of SECRET>" (Create: of concurrent presenters exactly one wins)
// and only then deletes the code; the marker later names the refresh-token family minted
// from the code. A presentation that finds the marker (the Create loses, or the code is gone
// and the marker is there) is a replay: the session and that family are revoked. The code is
// read before the claim, so a code that was never issued creates no marker and revokes
// nothing, even when its TAG is a real session's.

// codeUse is the marker a presented code leaves under its session's hash tag.
type codeUse struct {
	Family string `json:"family,omitempty"` // refresh-token family minted from it
}

const codeUseInfix = ".used."

// codeUseID is the marker id of code ("" when code is not "TAG.SECRET").
func codeUseID(code string) string {
	tag, secret, ok := strings.Cut(code, ".")
	if !ok || tag == "" || secret == "" || strings.Contains(secret, ".") {
		return ""
	}
	return tag + codeUseInfix + hashString(secret)
}

// codeUseTTL is how long a replay is still detected: as long as the session the code
// started may live (and at least the code lifetime). After that the session, and with it
// every refresh token of the code, has ended anyway.
func (s *Server) codeUseTTL() time.Duration {
	return max(s.cfg.Lifetimes.Session, s.cfg.Lifetimes.Code)
}

// errCodeReplayed reports a replay with what the marker says about the first redemption.
type errCodeReplayed struct{ use codeUse }

func (e *errCodeReplayed) Error() string { return "authorization code presented again" }

// errProofRefused stops redeemCode when the request's proof is refused (its caller has the
// answer).
var errProofRefused = errors.New("DPoP proof refused")

// redeemCode claims code for this request and returns its record. It returns
// *errCodeReplayed when the code was presented before, sessions.ErrNotFound when it is
// unknown or expired, or a store error. beforeClaim runs once the code is known to be live
// and before it is claimed; its error stops the redemption and leaves the code as it was.
func (s *Server) redeemCode(ctx context.Context, code string, beforeClaim func() error) (*codeRecord, error) {
	useID := codeUseID(code)
	if len(code) > 256 || useID == "" || strings.ContainsAny(code, "{}") {
		return nil, sessions.ErrNotFound
	}
	raw, err := s.store.Get(ctx, sessions.KindCode, code)
	if errors.Is(err, sessions.ErrNotFound) {
		return nil, s.priorUse(ctx, useID)
	}
	if err != nil {
		return nil, err
	}
	if err := beforeClaim(); err != nil {
		return nil, err
	}
	claim, _ := json.Marshal(codeUse{}) // plain struct: never fails
	switch err := s.store.Create(ctx, sessions.KindCode, useID, claim, s.codeUseTTL()); {
	case errors.Is(err, sessions.ErrExists):
		return nil, s.priorUse(ctx, useID)
	case err != nil:
		return nil, err
	}
	// Claimed: nobody else gets it. Deleting the code only frees the store early.
	if err := s.store.Delete(ctx, sessions.KindCode, code); err != nil {
		s.log.Warn("redeemed authorization code not deleted (it expires on its own)", "err", err)
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

// priorUse answers a code that is not (or no longer) there: *errCodeReplayed when its marker
// exists, else sessions.ErrNotFound (never issued, or expired unpresented).
func (s *Server) priorUse(ctx context.Context, useID string) error {
	raw, err := s.store.Get(ctx, sessions.KindCode, useID)
	if err != nil {
		return err
	}
	var use codeUse
	_ = json.Unmarshal(raw, &use) // a marker that cannot be read still marks a replay
	return &errCodeReplayed{use: use}
}

// recordCodeFamily notes in the code's marker the refresh-token family minted from it, so
// that a replay revokes that family too. A replay that comes before this note revokes the
// session alone; the family's tokens then die with it (a refresh needs its session).
func (s *Server) recordCodeFamily(ctx context.Context, code, refreshToken string) error {
	fam, _, _ := strings.Cut(refreshToken, ".")
	v, _ := json.Marshal(codeUse{Family: fam}) // plain struct: never fails
	return s.store.Put(ctx, sessions.KindCode, codeUseID(code), v, s.codeUseTTL())
}

// codeReplayed revokes the session the replayed code started and the refresh-token family
// minted from it, records what it did in x (for the feacft event) and answers invalid_grant.
func (s *Server) codeReplayed(ctx context.Context, code string, use codeUse, x *exchange) *oauthError {
	tag, _, _ := strings.Cut(code, ".")
	x.codeReuse = &codeReuse{sessionID: tag}
	raw, err := s.store.Take(ctx, sessions.KindSession, tag+".s")
	switch {
	case err == nil:
		x.codeReuse.sessionRevoked = true
		var sess sessionRecord
		if json.Unmarshal(raw, &sess) == nil {
			x.userID = sess.UserID
		}
	case !errors.Is(err, sessions.ErrNotFound):
		s.log.Error("session of a replayed authorization code not revoked", "err", err)
		return errStoreDown
	}
	if use.Family != "" {
		revoked, err := s.revokeFamily(ctx, use.Family)
		if err != nil {
			s.log.Error("refresh token family of a replayed authorization code not revoked", "err", err)
			return errStoreDown
		}
		x.codeReuse.familyRevoked = revoked
	}
	return invalidGrant("authorization code was already used: the session and the tokens issued from it are revoked")
}

// codeReuse is what a replayed code revoked, for its event.
type codeReuse struct {
	sessionID      string
	sessionRevoked bool
	familyRevoked  bool
}

// details adds the replay to an feacft event's details (no code, no token).
func (c *codeReuse) details(d map[string]any) {
	d["code_reuse"] = true
	d["session_id"] = c.sessionID
	d["session_revoked"] = c.sessionRevoked
	d["refresh_family_revoked"] = c.familyRevoked
}
