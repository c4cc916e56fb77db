package broker

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// handleLogout ends the broker session (GET /v2/logout?client_id&returnTo): it deletes the
// session record named by the session cookie (when the cookie's secret matches), clears the
// cookie, and redirects to returnTo when its origin is a registered redirect-URI origin of
// client_id; otherwise it shows a small page.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.endSession(r, c.Value)
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: s.cookiePath("/"), MaxAge: -1,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
	})
	q := r.URL.Query()
	if c := s.clients[q.Get("client_id")]; c != nil && allowedReturnTo(c, q.Get("returnTo")) {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, q.Get("returnTo"), http.StatusFound)
		return
	}
	renderPage(w, http.StatusOK, page{Title: "Signed out", Message: "You are signed out of the broker."})
}

// endSession deletes the session whose cookie value is "TAG.SECRET" and records slo.
func (s *Server) endSession(r *http.Request, cookie string) {
	tag, secret, ok := strings.Cut(cookie, ".")
	if !ok || tag == "" || secret == "" || len(cookie) > 256 || strings.ContainsAny(tag, "{}") {
		return
	}
	raw, err := s.store.Get(r.Context(), sessions.KindSession, tag+".s")
	if err != nil {
		return
	}
	var sess sessionRecord
	if json.Unmarshal(raw, &sess) != nil ||
		subtle.ConstantTimeCompare([]byte(hashString(secret)), []byte(sess.CookieHash)) != 1 {
		return
	}
	if err := s.store.Delete(r.Context(), sessions.KindSession, tag+".s"); err != nil {
		s.log.Warn("session not deleted at logout", "err", err)
		return
	}
	ev := s.newEvent(r)
	ev.Type = logs.TypeSuccessLogout
	ev.UserID = sess.UserID
	ev.Connection = sess.Connection
	if c := s.clients[sess.ClientID]; c != nil {
		withClient(ev, c)
	}
	if snap, err := s.reg.current(r.Context(), false); err == nil && snap.byName[sess.Connection] != nil {
		c := snap.byName[sess.Connection]
		ev.ConnectionID, ev.Strategy, ev.StrategyType = c.id, c.cfg.Strategy, "enterprise"
	}
	s.write(r, ev)
}

// allowedReturnTo reports whether returnTo is an absolute URL whose origin is the origin of
// one of the client's redirect URIs.
func allowedReturnTo(c *ClientConfig, returnTo string) bool {
	u, err := url.Parse(returnTo)
	if returnTo == "" || err != nil || !u.IsAbs() || u.Host == "" || u.User != nil {
		return false
	}
	for _, ru := range c.RedirectURIs {
		if r, err := url.Parse(ru); err == nil && strings.EqualFold(r.Scheme, u.Scheme) && strings.EqualFold(r.Host, u.Host) {
			return true
		}
	}
	return false
}
