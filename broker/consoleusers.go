package broker

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
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

// consoleAppsView is one page of the Apps page: the apps by client_id, consoleAppsPerPage a
// page, page numbers from 0 as GET /api/v2/clients's page/per_page; the links are "" on the
// first and last page.
type consoleAppsView struct {
	Apps                  []consoleAppRow
	Total, First, Last    int // all apps; the 1-based positions of this page's first and last
	Page, Pages           int // this page (1-based) and how many there are
	Prev, Next, FirstPage string
	LastPage              string
	ConnIDs               map[string]string // connection name → id, for links (nil: no links)
}

// consoleAppsPerPage is the apps one page lists: GET /api/v2/clients's default per_page.
const consoleAppsPerPage = 50

func (s *Server) consoleApps(c *consoleRequest) {
	page, aerr := pageParam(c.query()) // GET /api/v2/clients's page
	if aerr != nil {
		c.consoleBadRequest(aerr.message)
		c.renderView(http.StatusBadRequest, "apps", &consoleView{Title: "Apps", Problem: "The page is not a page number.", Data: consoleAppsView{}})
		return
	}
	snap, ok := c.snapshot("apps", "Apps")
	if !ok {
		return
	}
	all := snap.clientList // sorted by client_id, as the management API pages them
	v := consoleAppsView{Total: len(all), Page: page + 1, Pages: max(1, (len(all)+consoleAppsPerPage-1)/consoleAppsPerPage)}
	shown, start := pageOf(all, page, consoleAppsPerPage)
	for _, cl := range shown {
		v.Apps = append(v.Apps, consoleAppRow{
			ID: cl.cfg.ClientID, Name: cl.cfg.Name, AuthMethod: cl.cfg.AuthMethod(),
			RedirectURIs: cl.cfg.RedirectURIs, Connections: snap.enabledFor(cl.cfg), RequiresDPoP: cl.cfg.RequiresPoP(),
		})
	}
	if len(v.Apps) > 0 {
		v.First, v.Last = start+1, start+len(v.Apps)
	}
	v.ConnIDs = s.consoleConnIDs(c)
	link := func(p int) string { return s.consolePath() + "/apps?" + url.Values{"page": {strconv.Itoa(p)}}.Encode() }
	if page > 0 {
		v.FirstPage, v.Prev = link(0), link(min(page, v.Pages)-1)
	}
	if page+1 < v.Pages {
		v.Next, v.LastPage = link(page+1), link(v.Pages-1)
	}
	c.render(http.StatusOK, "apps", "Apps", v)
}

// consoleSessionsView is the Sessions page: the user asked for and their live sessions.
type consoleSessionsView struct {
	UserID   string
	Asked    bool
	Sessions []apiSession
	// Total are the user's live sessions, First and Last the 1-based positions of those shown
	// (oldest first); Next and FirstPage link the next page (GET /api/v2/users/{id}/sessions's
	// from cursor) and the first ("" on the last, and on the first).
	Total, First, Last int
	Next, FirstPage    string
	CanEnd             bool
	// Email: the user id asked for looks like an email (sessions are found by user id only);
	// LogsURL searches the Logs page for it as a user_name ("" without read:logs).
	Email   bool
	LogsURL string
	// Bare: the user id asked for is a bare subject (no strategy|connection| prefix); Matches
	// are the user ids it makes with the connections (at most consoleSubjectMatches), those
	// with live sessions first, each with a link to its sessions.
	Bare    bool
	Matches []consoleSubjectMatch
}

// consoleSubjectMatch is a user id a bare subject makes with one connection.
type consoleSubjectMatch struct {
	UserID, URL string
	Sessions    int
}

// consoleSubjectMatches bounds the connections a bare subject is looked up with: one index
// read each, and a read of each session the index holds (at most maxUserSessions), so a
// lookup reads at most consoleSubjectMatches indexes and consoleSubjectMatches *
// maxUserSessions session records; a subject unknown to a connection costs its index read
// alone.
const consoleSubjectMatches = 10

// subjectMatches are the user ids strategy|connection|subject of the first
// consoleSubjectMatches connections, with how many live sessions each has: the ones with
// sessions first, then by connection name.
func (s *Server) subjectMatches(ctx context.Context, subject string) []consoleSubjectMatch {
	snap, err := s.reg.current(ctx, false)
	if err != nil {
		return nil
	}
	var out []consoleSubjectMatch
	for _, conn := range snap.list[:min(len(snap.list), consoleSubjectMatches)] {
		id := conn.cfg.Strategy + "|" + conn.cfg.Name + "|" + subject
		found, err := s.userSessions(ctx, id)
		if err != nil {
			return nil
		}
		out = append(out, consoleSubjectMatch{UserID: id, Sessions: len(found),
			URL: s.consolePath() + "/sessions?" + url.Values{"user_id": {id}}.Encode()})
	}
	slices.SortStableFunc(out, func(a, b consoleSubjectMatch) int { return cmp.Compare(b.Sessions, a.Sessions) })
	return out
}

// consoleSessionsShown bounds the sessions one page lists.
const consoleSessionsShown = 50

func (s *Server) consoleSessions(c *consoleRequest) {
	q := c.query()
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
	after, ok := parseSessionCursor(q.Get("from"))
	if len(q["from"]) > 1 || !ok {
		c.consoleBadRequest("from is not a cursor of the Sessions page")
		c.renderView(http.StatusBadRequest, "sessions", &consoleView{Title: "Sessions", Problem: "The page link is not one of this page's: start from the first page.", Data: consoleSessionsView{UserID: v.UserID}})
		return
	}
	found, err := s.userSessions(c.r.Context(), v.UserID)
	if err != nil {
		s.log.Error("console: sessions could not be read", "err", err)
		c.renderView(http.StatusServiceUnavailable, "sessions", &consoleView{Title: "Sessions", Problem: "The store is unavailable. Try again shortly.", Data: v})
		return
	}
	v.Asked = true
	if len(found) == 0 && !strings.Contains(v.UserID, "|") && !strings.Contains(v.UserID, "@") {
		v.Bare, v.Matches = true, s.subjectMatches(c.r.Context(), v.UserID)
	}
	if len(found) == 0 && strings.Contains(v.UserID, "@") {
		v.Email = true
		if c.sess.allows(config.ScopeReadLogs) {
			v.LogsURL = s.consolePath() + "/logs?" + url.Values{"q": {logs.QuoteTerm("user_name", v.UserID)}}.Encode()
		}
	}
	page, start, more := sessionsPage(found, after, consoleSessionsShown) // the management API's paging
	if after != nil {
		v.FirstPage = s.consolePath() + "/sessions?" + url.Values{"user_id": {v.UserID}}.Encode()
	}
	for _, f := range page {
		v.Sessions = append(v.Sessions, s.sessionView(f.tag, f.sess))
	}
	v.Total = len(found)
	if len(page) > 0 {
		v.First, v.Last = start+1, start+len(page)
	}
	if more {
		v.Next = s.consolePath() + "/sessions?" + url.Values{"user_id": {v.UserID}, "from": {sessionCursor(page[len(page)-1])}}.Encode()
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
