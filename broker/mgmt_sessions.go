package broker

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Sessions in the management API (the identity SaaS's Management API v2 shape, docs/sessions.md
// "Sessions in the management API"): GET and DELETE /api/v2/sessions/{id}, GET and DELETE
// /api/v2/users/{user_id}/sessions. A user's sessions are found through the session index
// (Server.userSessions), never by scanning the store; every ending goes through
// Server.endSessionTag, so the apps are notified as for any logout.

// apiSession is the session object: the SaaS's fields the broker knows, plus connection
// (the upstream connection the user signed in at). It never carries the cookie hash, the
// upstream ID token or the user's claims.
type apiSession struct {
	ID               string            `json:"id"`
	UserID           string            `json:"user_id"`
	CreatedAt        string            `json:"created_at,omitempty"`
	UpdatedAt        string            `json:"updated_at,omitempty"`
	AuthenticatedAt  string            `json:"authenticated_at,omitempty"`
	IdleExpiresAt    string            `json:"idle_expires_at,omitempty"`
	ExpiresAt        string            `json:"expires_at,omitempty"`
	LastInteractedAt string            `json:"last_interacted_at,omitempty"`
	Device           *apiSessionDevice `json:"device,omitempty"`
	Clients          []apiSessionApp   `json:"clients"`
	Authentication   apiSessionAuthn   `json:"authentication"`
	Cookie           apiSessionCookie  `json:"cookie"`
	Connection       string            `json:"connection,omitempty"`
}

type apiSessionDevice struct {
	InitialUserAgent string `json:"initial_user_agent,omitempty"`
	InitialIP        string `json:"initial_ip,omitempty"`
	LastUserAgent    string `json:"last_user_agent,omitempty"`
	LastIP           string `json:"last_ip,omitempty"`
}

type apiSessionApp struct {
	ClientID string `json:"client_id"`
}

type apiSessionAuthn struct {
	Methods []apiSessionMethod `json:"methods"`
}

// apiSessionMethod is one authentication of the session: "federated" (the SaaS's name for
// a login at an enterprise or social connection) at the upstream login's time.
type apiSessionMethod struct {
	Name      string `json:"name"`
	Timestamp string `json:"timestamp,omitempty"`
}

// apiSessionCookie says how the browser keeps the session cookie: "persistent" (the cookie
// has a Max-Age: the session's absolute timeout).
type apiSessionCookie struct {
	Mode string `json:"mode"`
}

// apiTimeLayout is RFC 3339 in UTC with milliseconds, as the log API prints dates.
const apiTimeLayout = "2006-01-02T15:04:05.000Z"

// apiTime formats unix seconds for the API ("" for 0: unknown, in records written before
// single sign-on).
func apiTime(unix int64) string {
	if unix <= 0 {
		return ""
	}
	return time.Unix(unix, 0).UTC().Format(apiTimeLayout)
}

// sessionView is the API object of the session tag (its sid).
func (s *Server) sessionView(tag string, sess *sessionRecord) apiSession {
	v := apiSession{
		ID: tag, UserID: sess.UserID, Connection: sess.Connection,
		CreatedAt: apiTime(sess.Created), UpdatedAt: apiTime(sess.Seen), LastInteractedAt: apiTime(sess.Seen),
		AuthenticatedAt: apiTime(sess.AuthTime), ExpiresAt: apiTime(sess.Expires),
		Clients:        []apiSessionApp{},
		Authentication: apiSessionAuthn{Methods: []apiSessionMethod{{Name: "federated", Timestamp: apiTime(sess.AuthTime)}}},
		Cookie:         apiSessionCookie{Mode: "persistent"},
	}
	if sess.Expires > 0 && sess.Seen > 0 {
		v.IdleExpiresAt = apiTime(min(sess.Seen+int64(s.cfg.SessionIdle()/time.Second), sess.Expires))
	}
	if sess.InitialIP != "" || sess.InitialUserAgent != "" || sess.LastIP != "" || sess.LastUserAgent != "" {
		v.Device = &apiSessionDevice{
			InitialUserAgent: sess.InitialUserAgent, InitialIP: sess.InitialIP,
			LastUserAgent: sess.LastUserAgent, LastIP: sess.LastIP,
		}
	}
	for _, id := range append([]string{sess.ClientID}, sess.Clients...) {
		if id != "" && !slices.Contains(v.Clients, apiSessionApp{id}) {
			v.Clients = append(v.Clients, apiSessionApp{id})
		}
	}
	return v
}

// maxDeviceUserAgent bounds a user agent kept in a session record.
const maxDeviceUserAgent = 512

// noteDevice records the browser of r (its address, as the rate limits and events see it,
// and its user agent) as the device that used the session sess last, and as the one that
// created it when the session has none yet. It belongs wherever a browser request creates or
// uses the session before its record is written: completeLogin (a new session),
// reauthenticate and answerFromSession. Refreshes come from the apps, not the browser, and
// do not count.
func (s *Server) noteDevice(sess *sessionRecord, r *http.Request) {
	ip, ua := clip(s.clientIP(r), 64), clip(r.UserAgent(), maxDeviceUserAgent)
	if sess.InitialIP == "" && sess.InitialUserAgent == "" {
		sess.InitialIP, sess.InitialUserAgent = ip, ua
	}
	sess.LastIP, sess.LastUserAgent = ip, ua
}

// Answers of the session routes.
var (
	errNoSession  = &apiError{http.StatusNotFound, "inexistent_session", "The session does not exist."}
	errSessionURI = &apiError{http.StatusBadRequest, "invalid_uri", "Path validation error: id must be a session id (22 base64url characters)"}
	errUserURI    = &apiError{http.StatusBadRequest, "invalid_uri",
		fmt.Sprintf("Path validation error: user_id must be 1 to %d characters of valid UTF-8 without control characters", maxAPIUserID)}
)

// maxAPIUserID bounds the user_id of a path ("strategy|connection|sub": a connection name is
// at most 128 characters, an OIDC sub at most 255).
const maxAPIUserID = 1024

// reasonAdminDeleted is details.reason of the slo event of a session ended through the API.
const reasonAdminDeleted = "deleted by an administrator"

// validSID reports whether id can be a session id: 22 base64url characters (16 random
// bytes), as the broker draws them.
func validSID(id string) bool { return len(id) == 22 && b64url(id) }

// pathUserID returns the path's user_id (unescaped by the router: "oidc%7Ccorp%7Calice" is
// "oidc|corp|alice"), refused when empty, overlong, not UTF-8 or holding control characters.
func pathUserID(c *mgmtCall) (string, *apiError) {
	id := c.r.PathValue("user_id")
	if id == "" || len(id) > maxAPIUserID || !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl) {
		return "", errUserURI
	}
	c.userID = id
	return id, nil
}

// pathSession reads the live session the path's id names.
func (s *Server) pathSession(c *mgmtCall) (string, *sessionRecord, *apiError) {
	tag := c.r.PathValue("id")
	if !validSID(tag) {
		return "", nil, errSessionURI
	}
	var sess sessionRecord
	_, err := s.readSession(c.r.Context(), tag, &sess)
	switch {
	case errors.Is(err, sessions.ErrNotFound): // also a record that cannot be read
		return "", nil, errNoSession
	case err != nil:
		return "", nil, s.storeAPIError(err)
	}
	if !s.sessionAlive(&sess) {
		return "", nil, errNoSession // ended by the broker's clock, its record not yet expired
	}
	s.sessionCall(c, &sess)
	return tag, &sess, nil
}

// sessionCall names the session's user and connection in c's event.
func (s *Server) sessionCall(c *mgmtCall, sess *sessionRecord) {
	c.userID, c.conn = sess.UserID, sess.Connection
	if snap, err := s.reg.current(c.r.Context(), false); err == nil && snap.byName[sess.Connection] != nil {
		c.connID = snap.byName[sess.Connection].id
	}
}

// endingContext is the context of an administrator's ending of sessions: it outlives the
// caller hanging up (an ending, once begun, is carried out whole) but not 30 seconds.
func endingContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
}

// GET /api/v2/sessions/{id}
func (s *Server) getSession(c *mgmtCall) *apiError {
	tag, sess, aerr := s.pathSession(c)
	if aerr != nil {
		return aerr
	}
	s.apiJSON(c, http.StatusOK, s.sessionView(tag, sess))
	return nil
}

// DELETE /api/v2/sessions/{id}: 204. The session ends as by a logout (endSessionTag: its
// apps are notified, its refresh tokens and opaque access tokens stop working), with an slo
// event (details.reason) beside the sapi one.
func (s *Server) deleteSession(c *mgmtCall) *apiError {
	tag, _, aerr := s.pathSession(c)
	if aerr != nil {
		return aerr
	}
	c.setDetail("session_id", tag)
	ctx, cancel := endingContext(c.r)
	defer cancel()
	ended, err := s.endSessionLogged(ctx, c.r, tag, reasonAdminDeleted, nil)
	switch {
	case err != nil:
		return s.storeAPIError(err)
	case ended == nil:
		return errNoSession // ended meanwhile by someone else
	}
	s.apiEmpty(c, http.StatusNoContent)
	return nil
}

// GET /api/v2/users/{user_id}/sessions: {"sessions": [...], "next": CURSOR}, checkpoint
// paging with from (the next of the previous page) and take (1 to 100, default 50); next is
// absent on the last page. Oldest session first. A user without sessions (or unknown to the
// broker, which keeps no user directory) has an empty list.
func (s *Server) listUserSessions(c *mgmtCall) *apiError {
	userID, aerr := pathUserID(c)
	if aerr != nil {
		return aerr
	}
	q := c.r.URL.Query()
	take, aerr := intParam(q, "take", 50, 1, 100)
	if aerr != nil {
		return aerr
	}
	if len(q["from"]) > 1 {
		return errQuery("from must not be repeated")
	}
	after, ok := parseSessionCursor(q.Get("from"))
	if !ok {
		return errQuery("from is not a cursor returned by this API")
	}
	found, err := s.userSessions(c.r.Context(), userID)
	if err != nil {
		return s.storeAPIError(err)
	}
	page, _, more := sessionsPage(found, after, take)
	out := struct {
		Sessions []apiSession `json:"sessions"`
		Next     string       `json:"next,omitempty"`
	}{Sessions: make([]apiSession, 0, len(page))}
	for _, f := range page {
		out.Sessions = append(out.Sessions, s.sessionView(f.tag, f.sess))
	}
	if more {
		out.Next = sessionCursor(page[len(page)-1])
	}
	s.apiJSON(c, http.StatusOK, out)
	return nil
}

// sessionsPage sorts found (compareSessions) and returns the take sessions after the cursor
// after (nil: from the first), the index of the first of them, and whether more follow: the
// checkpoint paging of the management API and the console's Sessions page.
func sessionsPage(found []indexedSession, after *indexedSession, take int) (page []indexedSession, start int, more bool) {
	slices.SortFunc(found, compareSessions)
	if after != nil {
		var at bool
		if start, at = slices.BinarySearchFunc(found, *after, compareSessions); at {
			start++ // the cursor's session itself was on the previous page
		}
	}
	page = found[start:min(start+take, len(found))]
	return page, start, start+len(page) < len(found)
}

// compareSessions orders sessions by start, then id.
func compareSessions(a, b indexedSession) int {
	return cmp.Or(cmp.Compare(a.sess.Created, b.sess.Created), strings.Compare(a.tag, b.tag))
}

// sessionCursor is the paging cursor after f: base64url("CREATED.ID").
func sessionCursor(f indexedSession) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(f.sess.Created, 10) + "." + f.tag))
}

// parseSessionCursor decodes a cursor of sessionCursor: nil for "" (the first page), ok
// false for anything this API did not return.
func parseSessionCursor(from string) (after *indexedSession, ok bool) {
	if from == "" {
		return nil, true
	}
	if len(from) > 64 {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(from)
	if err != nil {
		return nil, false
	}
	created, tag, found := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(created, 10, 64)
	if !found || err != nil || n < 0 || !validSID(tag) {
		return nil, false
	}
	return &indexedSession{tag: tag, sess: &sessionRecord{Created: n}}, true
}

// DELETE /api/v2/users/{user_id}/sessions: 202 without a body, as the SaaS answers. Every
// live session of the user ends as by a logout (each with its slo event and its apps
// notified); the sapi event says how many (details.sessions_ended). A user without sessions
// is 202 too, with none ended.
func (s *Server) deleteUserSessions(c *mgmtCall) *apiError {
	userID, aerr := pathUserID(c)
	if aerr != nil {
		return aerr
	}
	ctx, cancel := endingContext(c.r)
	defer cancel()
	found, err := s.userSessions(ctx, userID)
	if err != nil {
		return s.storeAPIError(err)
	}
	ended := 0
	var errs error
	for _, f := range found {
		e, err := s.endSessionLogged(ctx, c.r, f.tag, reasonAdminDeleted, nil)
		if err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		if e != nil {
			ended++
		}
	}
	c.setDetail("sessions_ended", ended)
	if errs != nil {
		c.detail = fmt.Sprintf("%d of %d sessions ended; the others could not be: %v", ended, len(found), errs)
		return s.storeAPIError(errs)
	}
	s.apiEmpty(c, http.StatusAccepted)
	return nil
}
