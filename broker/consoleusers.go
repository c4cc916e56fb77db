package broker

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// The console's Apps and Sessions pages: the registered clients (read-only, never a secret),
// and one user's live broker sessions, which an operator may end (through DELETE
// /api/v2/users/{user_id}/sessions in-process: the same logout, back-channel notices and
// sapi event, naming the operator).

func (s *Server) consoleUserRoutes(h func(string, http.HandlerFunc)) {
	h("GET /console/apps", s.consolePage(config.ScopeReadClients, s.consoleApps))
	h("GET /console/sessions", s.consolePage(config.ScopeReadSessions, s.consoleSessions))
	h("POST /console/sessions/end", s.consolePage(config.ScopeDeleteSessions, s.consoleEndSessions))
}

// consoleAppRow is one client as the console shows it.
type consoleAppRow struct {
	ID, Name, AuthMethod string
	RedirectURIs         []string
	Connections          []string
	RequiresDPoP         bool
}

func (s *Server) consoleApps(c *consoleRequest) {
	snap, ok := c.snapshot("apps", "Apps")
	if !ok {
		return
	}
	rows := make([]consoleAppRow, 0, len(snap.clientList))
	for _, cl := range snap.clientList {
		rows = append(rows, consoleAppRow{
			ID: cl.cfg.ClientID, Name: cl.cfg.Name, AuthMethod: cl.cfg.AuthMethod(),
			RedirectURIs: cl.cfg.RedirectURIs, Connections: snap.enabledFor(cl.cfg), RequiresDPoP: cl.cfg.RequiresPoP(),
		})
	}
	c.render(http.StatusOK, "apps", "Apps", rows)
}

// consoleSessionsView is the Sessions page: the user asked for and their live sessions.
type consoleSessionsView struct {
	UserID   string
	Asked    bool
	Sessions []apiSession
	More     int // live sessions beyond those shown
	CanEnd   bool
	// Email: the user id asked for looks like an email (sessions are found by user id only);
	// LogsURL searches the Logs page for it as a user_name ("" without read:logs).
	Email   bool
	LogsURL string
}

// consoleSessionsShown bounds the sessions one page lists.
const consoleSessionsShown = 50

func (s *Server) consoleSessions(c *consoleRequest) {
	q := c.r.URL.Query()
	v := consoleSessionsView{UserID: q.Get("user_id"), CanEnd: c.sess.allows(config.ScopeDeleteSessions)}
	if v.UserID == "" {
		c.render(http.StatusOK, "sessions", "Sessions", v)
		return
	}
	if len(q["user_id"]) != 1 || len(v.UserID) > maxAPIUserID || !utf8.ValidString(v.UserID) {
		c.consoleBadRequest("not one user id of at most 1024 characters")
		c.renderView(http.StatusBadRequest, "sessions", &consoleView{Title: "Sessions", Problem: "Give one user id of at most 1024 characters.", Data: consoleSessionsView{}})
		return
	}
	found, err := s.userSessions(c.r.Context(), v.UserID)
	if err != nil {
		s.log.Error("console: sessions could not be read", "err", err)
		c.renderView(http.StatusServiceUnavailable, "sessions", &consoleView{Title: "Sessions", Problem: "The store is unavailable. Try again shortly.", Data: v})
		return
	}
	slices.SortFunc(found, compareSessions)
	v.Asked = true
	if len(found) == 0 && strings.Contains(v.UserID, "@") {
		v.Email = true
		if c.sess.allows(config.ScopeReadLogs) {
			v.LogsURL = s.consolePath() + "/logs?" + url.Values{"q": {logs.QuoteTerm("user_name", v.UserID)}}.Encode()
		}
	}
	for i, f := range found {
		if i == consoleSessionsShown {
			v.More = len(found) - i
			break
		}
		v.Sessions = append(v.Sessions, s.sessionView(f.tag, f.sess))
	}
	c.render(http.StatusOK, "sessions", "Sessions", v)
}

// consoleEndSessions ends every session of the form's user_id, as the management API does.
func (s *Server) consoleEndSessions(c *consoleRequest) {
	user := c.r.PostForm.Get("user_id")
	if len(c.r.PostForm["user_id"]) != 1 || user == "" {
		c.consoleBadRequest("not one user id")
		c.renderView(http.StatusBadRequest, "sessions", &consoleView{Title: "Sessions", Problem: "Give one user id.", Data: consoleSessionsView{}})
		return
	}
	status, msg := s.consoleMgmt(c, http.MethodDelete, "/api/v2/users/"+url.PathEscape(user)+"/sessions", map[string]string{"user_id": user}, nil, s.deleteUserSessions)
	if status >= 300 {
		c.renderView(status, "sessions", &consoleView{Title: "Sessions", Problem: msg, Data: consoleSessionsView{UserID: user}})
		return
	}
	http.Redirect(c.w, c.r, s.consolePath()+"/sessions?done=ended&user_id="+url.QueryEscape(user), http.StatusSeeOther)
}
