package broker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// Upstream back-channel logout (OpenID Connect Back-Channel Logout 1.0, the broker as the
// relying party): an upstream IdP whose user session ends POSTs a logout token to
// PUBLIC_URL/logout/backchannel/{connection id}, the URI the operator registers there. The
// broker ends every broker session created from that upstream session (the token's sid) or,
// with sub alone, every session of that user at the connection, each through endSessionTag
// (so the apps that hold it are notified in turn). docs/sessions.md, "Upstream back-channel
// logout", describes it for operators.

// upstreamLogoutPath is the path prefix of the back-channel logout URIs, one per connection.
const upstreamLogoutPath = "/logout/backchannel/"

// maxUpstreamLogoutBody bounds the request body (a form with one logout token).
const maxUpstreamLogoutBody = 16 << 10

// maxLogoutJTITTL caps how long a logout token's jti is remembered: until its exp plus the
// clock skew, with exp at most this far ahead (a token whose exp is later is refused).
const maxLogoutJTITTL = upstream.MaxLogoutTokenLifetime

// upstreamLogoutTimeout bounds the work after the token is accepted (replay record, lookup,
// ending the sessions); it runs on even when the upstream hangs up, so that a logout the
// replay record has claimed is not left half done.
const upstreamLogoutTimeout = 10 * time.Second

// reasonUpstreamLogout is details.reason of the slo and flo events of this endpoint.
const reasonUpstreamLogout = "upstream back-channel logout"

// Stable details.error codes of a refused back-channel logout (the token's own are
// upstream.CodeLogoutTokenInvalid, upstream.CodeJWKS and upstream.CodeDiscovery).
const (
	codeUnknownConnection   = "unknown_connection"
	codeLogoutTokenReplayed = "logout_token_replayed"
)

// handleUpstreamLogout is the back-channel logout URI of the connection whose id the path
// names (any method: only POST is accepted, others get 405). The request (Back-Channel
// Logout 1.0 §2.5) is a form with one logout_token, at most maxUpstreamLogoutBody; the token
// is checked by upstream.Connection.VerifyLogoutToken (§2.6) and its jti is single use. Then
// the sessions it names end (§2.7), each with an slo event; when none matched, one slo event
// says so. The answer (§2.8) is 200 with Cache-Control: no-store whether or not a session
// matched, so the upstream learns nothing about the broker's sessions; a refused request gets
// 400 {"error":"invalid_request"} and an flo event (anyone can send one: unauthenticated
// class); when the token cannot be checked or the store fails, 503 and an flo event, so that
// an upstream that retries tries again.
func (s *Server) handleUpstreamLogout(w http.ResponseWriter, r *http.Request) {
	ev := s.newEvent(r)
	ev.Type, ev.Class = logs.TypeFailedLogout, logs.ClassUnauthenticated
	ev.Details["reason"] = reasonUpstreamLogout
	// refuse records desc in the event and answers public: the caller is not authenticated,
	// so the answer names the rule broken but no configured value (issuer, client_id).
	refuse := func(status int, code, desc, public string) {
		ev.Details["error"], ev.Details["error_description"] = code, s.clipEvent(desc, 512)
		s.write(r, ev)
		answer := &oauthError{Status: status, Code: codeInvalidRequest, Description: public}
		if status == http.StatusServiceUnavailable {
			// The cause (an upstream or store failure) stays in the event: it may name
			// internal addresses, and the caller is not authenticated.
			answer.Code, answer.Description = "temporarily_unavailable", "the logout cannot be carried out now; retry later"
		}
		writeOAuthError(w, answer)
	}
	fail := func(status int, code, desc string) { refuse(status, code, desc, desc) }
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, codeInvalidRequest, "a back-channel logout request is a POST (Back-Channel Logout 1.0 §2.5)")
		return
	}
	snap, err := s.reg.current(r.Context(), false)
	if err != nil {
		fail(http.StatusServiceUnavailable, codeStoreUnavailable, "the connections cannot be read: "+err.Error())
		return
	}
	id := r.PathValue("connection")
	conn := snap.byID[id]
	if conn == nil {
		ev.Details["requested_connection_id"] = s.clipEvent(id, 64)
		fail(http.StatusBadRequest, codeUnknownConnection, "no connection has this id")
		return
	}
	withConnection(ev, conn)
	if conn.err != nil || conn.up == nil {
		fail(http.StatusBadRequest, codeConnectionUnusable, "the connection cannot be used: its configuration is refused")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		fail(http.StatusBadRequest, codeInvalidRequest, "the body must be application/x-www-form-urlencoded (Back-Channel Logout 1.0 §2.5)")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxUpstreamLogoutBody)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			fail(http.StatusBadRequest, codeInvalidRequest, fmt.Sprintf("the request body is larger than %d bytes", maxUpstreamLogoutBody))
			return
		}
		fail(http.StatusBadRequest, codeInvalidRequest, "the form body could not be read")
		return
	}
	if toks := r.PostForm["logout_token"]; len(toks) != 1 || toks[0] == "" {
		fail(http.StatusBadRequest, codeInvalidRequest, "the request must carry exactly one logout_token (Back-Channel Logout 1.0 §2.5)")
		return
	}
	lt, err := conn.up.VerifyLogoutToken(r.Context(), r.PostForm.Get("logout_token"))
	if err != nil {
		desc, public := err.Error(), "the logout token is refused"
		var ue *upstream.Error
		if errors.As(err, &ue) {
			desc = ue.Description
			if ue.Public != "" {
				public = ue.Public
			}
		}
		switch code := upstream.CodeOf(err); code {
		case upstream.CodeDiscovery, upstream.CodeJWKS, upstream.CodeJWKSRefetchThrottled:
			// A token naming a key the broker does not hold yet, while the upstream's JWK Set
			// may not be fetched again, may be genuine (a rotated key): 503 with Retry-After
			// (RFC 9110 §10.2.3) until that fetch is allowed, never a final 400.
			if ue != nil && ue.RetryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ue.RetryAfter.Seconds()))))
			}
			fail(http.StatusServiceUnavailable, code, "the logout token cannot be checked now: "+desc)
		default:
			refuse(http.StatusBadRequest, code, desc, public)
		}
		return
	}
	ev.Details["upstream_logout_by"] = upstreamLogoutBy(lt)
	if lt.Subject != "" {
		ev.UserID = conn.cfg.Strategy + "|" + conn.cfg.Name + "|" + lt.Subject
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), upstreamLogoutTimeout)
	defer cancel()
	jti := sessions.IndexID("bcl", conn.id, lt.JTI)
	// Clamped before the skew is added (a far exp saturates Sub; adding to it would wrap):
	// VerifyLogoutToken refused an exp more than maxLogoutJTITTL ahead, so the jti is
	// remembered as long as the token can be accepted (its exp plus the skew).
	ttl := min(max(lt.Expiry.Sub(s.now()), 0), maxLogoutJTITTL) + s.cfg.DPoP.ClockSkew
	switch err := s.store.Create(ctx, sessions.KindJTI, jti, []byte{'1'}, max(ttl, time.Second)); {
	case errors.Is(err, sessions.ErrExists):
		fail(http.StatusBadRequest, codeLogoutTokenReplayed, "the logout token's jti was received before: a replayed token (Back-Channel Logout 1.0 §2.6)")
		return
	case err != nil:
		fail(http.StatusServiceUnavailable, storeCode(err), "the logout token's jti cannot be recorded: "+err.Error())
		return
	}
	ended, err := s.endUpstreamSessions(ctx, r, conn, lt)
	if err != nil {
		// Some sessions may have ended; the jti is forgotten so that the upstream's retry of
		// this token ends the rest.
		if derr := s.store.Delete(ctx, sessions.KindJTI, jti); derr != nil {
			s.log.Warn("logout token jti not forgotten after a failed back-channel logout", "err", derr)
		}
		fail(http.StatusServiceUnavailable, storeCode(err), "the sessions of the logout token cannot be ended: "+err.Error())
		return
	}
	if ended == 0 {
		// §2.7: nothing to end is still a successful logout; one event records that.
		ev.Type, ev.Class = logs.TypeSuccessLogout, logs.ClassByType
		ev.Details["sessions_ended"] = 0
		s.write(r, ev)
	}
	w.Header().Set("Cache-Control", "no-store") // §2.8
	w.WriteHeader(http.StatusOK)
}

// endUpstreamSessions ends the live sessions created at conn from the upstream session
// and/or of the upstream user lt names (upstreamSessions), recording slo for each with
// details.session_id, and returns how many it ended. A session that another path ended
// meanwhile is not counted; a store failure stops it with an error.
func (s *Server) endUpstreamSessions(ctx context.Context, r *http.Request, conn *connection, lt *upstream.LogoutToken) (int, error) {
	found, err := s.upstreamSessions(ctx, conn, lt.SessionID, lt.Subject, lt.IssuedAt)
	if err != nil {
		return 0, fmt.Errorf("find the sessions: %w", err)
	}
	ended := 0
	for _, f := range found {
		sess, err := s.endSessionLogged(ctx, r, f.tag, reasonUpstreamLogout, map[string]any{"upstream_logout_by": upstreamLogoutBy(lt)})
		if err != nil {
			return ended, err
		}
		if sess != nil {
			ended++
		}
	}
	return ended, nil
}

// storeCode is details.error of a store failure: store_full or store_unavailable.
func storeCode(err error) string {
	if storeFull(err) {
		return codeStoreFull
	}
	return codeStoreUnavailable
}

// upstreamLogoutBy says what a logout token named: "sid", "sub" or both (never their values).
func upstreamLogoutBy(lt *upstream.LogoutToken) []string {
	var out []string
	if lt.SessionID != "" {
		out = append(out, "sid")
	}
	if lt.Subject != "" {
		out = append(out, "sub")
	}
	return out
}

// RegistrationURLs are the URLs an operator registers at the upstream IdP for connection c:
// the redirect URI of its logins (callback_path decides it) and its back-channel logout URI.
func (s *Server) RegistrationURLs(c *config.Connection) (redirectURI, backchannelLogoutURI string) {
	id := c.ConnectionID()
	redirectURI = s.callbackURL
	if c.Options.CallbackPath == config.CallbackDedicated {
		redirectURI += "/" + url.PathEscape(id)
	}
	return redirectURI, s.base + upstreamLogoutPath + url.PathEscape(id)
}
