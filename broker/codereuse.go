package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// Authorization-code redemption and replay (RFC 6749 §4.1.2: a code used more than once is
// refused and the tokens issued from it are revoked).
//
// A code is "TAG.SECRET": TAG is its grant tag, the session's own tag for the code of the
// login that created the session and a fresh tag for every code issued from the session
// afterwards (single sign-on, newCode), so each code has its own family. A presentation reads the code and runs
// every check of the grant on it (client, redirect_uri, PKCE, dpop_jkt, audience, grant and
// sender-constraining policy), then the DPoP proof's replay claim, then signs the tokens; only
// then does it claim the code, in one conditional write (Store.Swap, 2 round trips in all:
// Get + Swap): if the code record is still there, delete it, create the marker
// "TAG.used.<hash of SECRET>" (codeUse) and, with offline_access, the refresh-token family
// "TAG.family". Of concurrent presenters exactly one wins. A presentation that fails a check
// claims nothing, so a stolen code presented without the verifier, by another client, with
// another redirect_uri or another proof key leaves the code for the app.
//
// A presentation that finds the code gone and the marker there is a replay only when it
// passes the checks the marker recorded (the same client, redirect_uri, PKCE verifier and
// dpop_jkt key): the session and the family are revoked. Anyone else gets invalid_grant and
// revokes nothing, so knowing a used code does not let an attacker log the user out. A code
// that was never issued leaves no marker and revokes nothing, even under a real session's
// TAG.

// codeUse is the marker a redeemed code leaves under its session's hash tag: what a
// presentation must match to count as a replay.
type codeUse struct {
	ClientID      string `json:"client_id,omitempty"`
	RedirectURI   string `json:"redirect_uri,omitempty"`
	CodeChallenge string `json:"code_challenge,omitempty"`
	DPoPJKT       string `json:"dpop_jkt,omitempty"`
	// Claim is random: this redemption's marker and no other (rollback).
	Claim string `json:"claim,omitempty"`
	// Family is the refresh-token family minted from the code, in markers written before
	// families were named after their code's tag (the family is TAG now).
	Family string `json:"family,omitempty"`
	// SID is the session the code was issued from; empty in markers written before single
	// sign-on, whose codes lived under their session's tag.
	SID string `json:"sid,omitempty"`
}

const codeUseInfix = ".used."

// codeUseID is the marker id of code ("" when code cannot be a code: not "TAG.SECRET", too
// long, or with characters no store id may hold).
func codeUseID(code string) string {
	tag, secret, ok := strings.Cut(code, ".")
	if !ok || tag == "" || secret == "" || strings.Contains(secret, ".") || len(code) > 256 || strings.ContainsAny(tag, "{}") {
		return ""
	}
	return tag + codeUseInfix + hashString(secret)
}

// codeUseTTL is how long a replay is still detected: as long as the session the code
// started may live (and at least the code lifetime). After that the session, and with it
// every refresh token of the code, has ended anyway.
func (s *Server) codeUseTTL() time.Duration {
	return max(s.cfg.SessionAbsolute(), s.cfg.Lifetimes.Code)
}

var errCodeInvalid = invalidGrant("authorization code is invalid, expired or already used")

// presentation is a token request presenting a code: what a replay must match.
type presentation struct {
	client *config.Client
	form   url.Values
	proof  *dpop.Result
}

// readCode returns the code's record and its stored bytes (what the claim swaps out), or
// sessions.ErrNotFound when code is malformed, unknown, already claimed or expired. When the
// store reads several records in one round trip (sessions.MultiGetter), the record of the
// session the code names (codeSessionHint) comes in the same round trip, as ahead.
func (s *Server) readCode(ctx context.Context, code string) (rec *codeRecord, raw []byte, ahead sessionAhead, err error) {
	if codeUseID(code) == "" || strings.ContainsAny(code, "{}") {
		return nil, nil, ahead, sessions.ErrNotFound
	}
	if sid := codeSessionHint(code); s.multiGet != nil && validTag(sid) {
		var got [][]byte
		got, err = s.multiGet.GetMany(ctx, sessions.Ref{Kind: sessions.KindCode, ID: code}, sessions.Ref{Kind: sessions.KindSession, ID: sid + ".s"})
		if err = s.metrics.storeError("get_many", err); err == nil {
			raw, ahead = got[0], sessionAhead{sid: sid, raw: got[1], done: true}
			if raw == nil {
				err = sessions.ErrNotFound
			}
		}
	} else {
		raw, err = s.store.Get(ctx, sessions.KindCode, code)
	}
	if err != nil {
		return nil, nil, sessionAhead{}, err
	}
	rec = new(codeRecord)
	if err := json.Unmarshal(raw, rec); err != nil {
		return nil, nil, sessionAhead{}, fmt.Errorf("malformed code record: %w", err)
	}
	return rec, raw, ahead, nil
}

// sessionAhead is the stored record of session sid, read ahead with a code (readCode): done
// when it was read, raw nil when there was none.
type sessionAhead struct {
	sid  string
	raw  []byte
	done bool
}

// codeProblem runs the checks of the grant on the code's record before anything is claimed
// (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 9449 §10).
func (s *Server) codeProblem(rec *codeRecord, pr presentation) *oauthError {
	switch {
	case s.now().UnixMilli() >= rec.Expires:
		return errCodeInvalid
	case rec.App.ClientID != pr.client.ClientID:
		return invalidGrant("authorization code was issued to another client")
	case pr.form.Get("redirect_uri") != rec.App.RedirectURI:
		return invalidGrant("redirect_uri does not match the authorization request")
	case pr.form.Get("audience") != "" && pr.form.Get("audience") != rec.App.Audience:
		return invalidRequest("audience does not match the authorization request")
	}
	if p := pkceProblem(rec.App.CodeChallenge, pr.form.Get("code_verifier")); p != "" {
		return invalidGrant(p)
	}
	return keyBindingProblem(rec.App.DPoPJKT, pr.proof, "the authorization code (dpop_jkt)") // RFC 9449 §10
}

// claimCode redeems the code: if its record still holds raw, it is deleted, its marker
// written and, when family is set, the refresh-token family created, all in one Swap. A
// presentation that loses the race to a concurrent one is answered as a presentation of a
// used code. A write that may or may not have happened (the store timed out) is rolled back,
// so the client's retry redeems the code instead of counting as a replay.
func (s *Server) claimCode(ctx context.Context, code string, raw []byte, rec *codeRecord, family *sessions.Item, pr presentation, x *exchange) *oauthError {
	useID := codeUseID(code)
	use, _ := json.Marshal(codeUse{ // plain struct: never fails
		ClientID: rec.App.ClientID, RedirectURI: rec.App.RedirectURI, CodeChallenge: rec.App.CodeChallenge,
		DPoPJKT: rec.App.DPoPJKT, Claim: randomString(16), SID: rec.SID,
	})
	put := []sessions.Item{{Kind: sessions.KindCode, ID: useID, Value: use, TTL: s.codeUseTTL()}}
	remove := []sessions.Ref{{Kind: sessions.KindCode, ID: useID}}
	if family != nil {
		put = append(put, *family)
		remove = append(remove, sessions.Ref{Kind: family.Kind, ID: family.ID})
	}
	err := s.swapCode(ctx, code, raw, put, x)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sessions.ErrConflict): // claimed (or expired) since it was read
		return s.usedCode(ctx, code, pr, x)
	}
	var restore []sessions.Item
	if ttl := time.UnixMilli(rec.Expires).Sub(s.now()); ttl > 0 {
		restore = append(restore, sessions.Item{Kind: sessions.KindCode, ID: code, Value: raw, TTL: ttl})
	}
	s.undoSwap(ctx, "authorization code redemption", err, sessions.KindCode, useID, use, restore, remove)
	return s.issueFailed(err)
}

// swapCode is claimCode's swap: the code's record raw out, put in. When the store can write
// the token event in the same step (sessions.LogBatcher) and the event is an audit entry, the
// successful exchange's event is stored with it (x.logged): one round trip instead of two, and
// no redeemed code without its event. A store that timed out may have written both; the
// claim is then rolled back (claimCode) and the failure recorded too.
func (s *Server) swapCode(ctx context.Context, code string, raw []byte, put []sessions.Item, x *exchange) error {
	del := []sessions.Ref{{Kind: sessions.KindCode, ID: code}}
	if s.logBatch != nil && x.event != nil && s.fillTokenEvent(x.event, "authorization_code", x, nil) {
		// A code exchange is not a login: loginTally counts nothing for it.
		traceEvent(ctx, x.event) // details.trace_id of a traced request
		err := s.events.WriteWith(ctx, x.event, func(ctx context.Context, id string, data []byte, maxLen int, _ sessions.Tally) error {
			t0 := s.storeStart()
			err := s.logBatch.SwapAndLog(ctx, sessions.KindCode, code, raw, put, del, id, data, maxLen)
			traceStore(ctx, "swap_and_log", sessions.KindCode, t0, err)
			return err
		})
		if x.logged = err == nil; err == nil || !errors.Is(err, errors.ErrUnsupported) {
			return s.metrics.storeError("swap", err)
		}
	}
	return s.store.Swap(ctx, sessions.KindCode, code, raw, put, del)
}

// usedCode answers a code that is not (or no longer) there. When its marker exists and the
// presentation passes the checks the marker recorded, it is a replay: the session and the
// family are revoked. Otherwise (never issued, expired unredeemed, or presented by someone who
// could not have redeemed it) it is invalid_grant and changes nothing.
func (s *Server) usedCode(ctx context.Context, code string, pr presentation, x *exchange) *oauthError {
	useID := codeUseID(code)
	if useID == "" {
		return errCodeInvalid
	}
	raw, err := s.store.Get(ctx, sessions.KindCode, useID)
	switch {
	case storeDown(err):
		s.log.Error("store unavailable at token endpoint", "err", err)
		return errStoreDown
	case err != nil:
		return errCodeInvalid
	}
	var use codeUse
	_ = json.Unmarshal(raw, &use) // a marker that cannot be read is an earlier format's: still a replay
	if !use.replayedBy(pr) {
		return errCodeInvalid
	}
	return s.codeReplayed(ctx, code, use, x)
}

// replayedBy reports whether pr could itself have redeemed the code the marker records: the
// same client, redirect_uri, PKCE verifier and dpop_jkt key. A marker of an earlier format
// records none of them; every presentation of its code is a replay, as it was then.
func (u *codeUse) replayedBy(pr presentation) bool {
	if u.ClientID == "" {
		return true
	}
	return u.ClientID == pr.client.ClientID && u.RedirectURI == pr.form.Get("redirect_uri") &&
		pkceProblem(u.CodeChallenge, pr.form.Get("code_verifier")) == "" &&
		keyBindingProblem(u.DPoPJKT, pr.proof, "") == nil
}

// codeReplayed revokes the session the replayed code started and the refresh-token family
// minted from it, records what it did in x (for the feacft event) and answers invalid_grant.
func (s *Server) codeReplayed(ctx context.Context, code string, use codeUse, x *exchange) *oauthError {
	tag, _, _ := strings.Cut(code, ".")
	sid := tag // the session: its own tag for the code of the login that created it
	if use.SID != "" {
		sid = use.SID
	}
	x.codeReuse = &codeReuse{sessionID: sid}
	sess, err := s.endSessionTag(ctx, sid)
	switch {
	case err != nil:
		s.log.Error("session of a replayed authorization code not revoked", "err", logs.KeepLevel(err))
		return errStoreDown
	case sess != nil:
		x.codeReuse.sessionRevoked = true
		x.userID = sess.UserID
	}
	families := []string{tag} // the family minted from the code is named after its grant tag
	if use.Family != "" && use.Family != tag {
		families = append(families, use.Family) // an earlier marker names it
	}
	for _, fam := range families {
		revoked, err := s.revokeFamily(ctx, fam)
		if err != nil {
			s.log.Error("refresh token family of a replayed authorization code not revoked", "err", logs.KeepLevel(err))
			return errStoreDown
		}
		x.codeReuse.familyRevoked = x.codeReuse.familyRevoked || revoked
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
