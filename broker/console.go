package broker

import (
	"bytes"
	"embed"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// The operators' console under /console: server-rendered pages (html/template, escaped) in
// one layout with a navigation bar, assets embedded in the binary, a strict CSP (no inline
// script or style), and a console session (consolesession.go) in front of every page.
//
// A page is a file console/pages/NAME.html that defines "content" (and may define "head"
// for extra <link>s); consoleRoutes registers its handler with consolePage and the nav
// lists it in consoleNav. Handlers render with consoleRequest.render.

//go:embed console
var consoleFS embed.FS

// consoleNavItem is one entry of the console's navigation bar.
type consoleNavItem struct {
	Path  string // below /console, e.g. "/connections"
	Label string
	// Scope is the management scope an operator needs to see the page ("" = any operator).
	Scope string
}

// consoleNav is the navigation bar, in order.
var consoleNav = []consoleNavItem{
	{Path: "/", Label: "Overview"},
	{Path: "/connections", Label: "Connections", Scope: "read:connections"},
	{Path: "/logs", Label: "Logs", Scope: "read:logs"},
	{Path: "/apps", Label: "Apps", Scope: "read:clients"},
	{Path: "/sessions", Label: "Sessions", Scope: "read:sessions"},
}

// consoleCSP is the console's Content-Security-Policy: scripts, styles and images from the
// console's own assets only, forms posting to the console only, never framed.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// consolePages are the pages by name, each parsed into the layout.
var consolePages = mustConsolePages()

func mustConsolePages() map[string]*template.Template {
	base := template.Must(template.New("layout.html").ParseFS(consoleFS, "console/layout.html"))
	names, err := fs.Glob(consoleFS, "console/pages/*.html")
	if err != nil {
		panic(err)
	}
	out := make(map[string]*template.Template, len(names))
	for _, n := range names {
		t := template.Must(template.Must(base.Clone()).ParseFS(consoleFS, n))
		out[strings.TrimSuffix(path.Base(n), ".html")] = t
	}
	return out
}

// consoleView is what the layout renders.
type consoleView struct {
	Title    string
	Base     string // the console's path, e.g. /console
	Home     string // where the brand links ("" = Base + "/"): console.url on a wrong host's page
	Nav      []consoleNavLink
	Operator string // "" on the sign-in pages
	Via      string // how the operator signed in: "broker" or "token"
	CSRF     string // the session's CSRF token, for every form
	Notice   string // a confirmation after a write
	Problem  string // why the last write was refused
	Data     any    // the page's own data
}

type consoleNavLink struct {
	URL, Label string
	Current    bool
}

// consoleHeaders are set on every console page: the broker's page headers with the
// console's policy.
func consoleHeaders(w http.ResponseWriter) {
	htmlHeaders(w)
	h := w.Header()
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// consolePath is the console's path on this broker (below public_url's path).
func (s *Server) consolePath() string { return s.cookiePath("/console") }

// renderConsole renders page with v in the layout. A page that does not exist or fails to
// render answers a plain 500 (nothing partial reaches the browser).
func (s *Server) renderConsole(w http.ResponseWriter, status int, page string, v *consoleView) {
	consoleHeaders(w)
	t := consolePages[page]
	if t == nil {
		s.log.Error("console page missing", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	v.Base = s.consolePath()
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", v); err != nil {
		s.log.Error("console page failed to render", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// consoleRequest is one request to a console page by a signed-in operator.
type consoleRequest struct {
	w    http.ResponseWriter
	r    *http.Request
	sess *consoleSession
	s    *Server
	q    url.Values // r's URL query, parsed once (query)
}

// query is the request's URL query, parsed at the first call.
func (c *consoleRequest) query() url.Values {
	if c.q == nil {
		c.q = c.r.URL.Query()
	}
	return c.q
}

// render renders page in the layout with the navigation for the operator's scopes.
func (c *consoleRequest) render(status int, page, title string, data any) {
	c.renderView(status, page, &consoleView{Title: title, Data: data})
}

// renderView is render with the view's Title, Problem and Data set by the caller.
func (c *consoleRequest) renderView(status int, page string, v *consoleView) {
	c.fillView(v)
	if v.Problem == "" {
		v.Notice = consoleNotices[c.query().Get("done")]
	}
	c.s.renderConsole(c.w, status, page, v)
}

// fillView sets what the layout shows of the operator's session in v: who, the sign-out
// form's CSRF token, and the navigation for the operator's scopes.
func (c *consoleRequest) fillView(v *consoleView) {
	v.Operator, v.Via, v.CSRF = c.sess.Operator, c.sess.Via, c.sess.CSRF
	cur := strings.TrimPrefix(c.r.URL.Path, c.s.consolePath())
	for _, n := range consoleNav {
		if n.Scope != "" && !c.sess.allows(n.Scope) {
			continue
		}
		current := cur == n.Path || (n.Path != "/" && strings.HasPrefix(cur, n.Path+"/"))
		v.Nav = append(v.Nav, consoleNavLink{URL: c.s.consolePath() + n.Path, Label: n.Label, Current: current})
	}
}

// snapshot returns the stored connections and clients for a list page, or answers page
// (titled title) with 503 when the store cannot be read.
func (c *consoleRequest) snapshot(page, title string) (*connSnapshot, bool) {
	snap, err := c.s.reg.current(c.r.Context(), false)
	if err != nil {
		c.s.log.Error("console: connections and clients could not be read", "page", page, "err", err)
		c.renderView(http.StatusServiceUnavailable, page, &consoleView{Title: title, Problem: "The store is unavailable. Try again shortly."})
		return nil, false
	}
	return snap, true
}

// consoleNotices are the confirmations a write's redirect names (?done=KEY): fixed texts, so
// a crafted link cannot put words on the page.
var consoleNotices = map[string]string{
	"dpop":              "Saved. The next login through this connection, on every replica, uses the new DPoP setting.",
	"ended":             "Every session of this user has ended; apps with back-channel logout were told.",
	"signed_out":        "You are signed out of the console.",
	"broker_signed_out": "You are signed out of the broker. Sign in as the administrator you mean to be.",
}

// consoleHandler is a console page or write; it answers through c.
type consoleHandler func(c *consoleRequest)

// consolePage wraps h: a console session with scope ("" = any) is required (else the
// sign-in page, or 403), the management API's rate limits apply (consolecost.go), and every POST carries the session's CSRF token from the console's
// own origin (consolesession.go).
func (s *Server) consolePage(scope string, h consoleHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, problem := s.consoleSessionOf(r)
		if s.consoleRateLimited(w, r, sess) {
			return
		}
		if sess == nil {
			if r.Method != http.MethodGet {
				s.consoleRefused(w, r, http.StatusUnauthorized, problem, "")
				return
			}
			http.Redirect(w, r, s.consolePath()+"/signin", http.StatusSeeOther)
			return
		}
		c := &consoleRequest{w: w, r: r, sess: sess, s: s}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if problem := s.consoleCSRFProblem(w, r, sess); problem != "" {
				s.consoleRefusedIn(c, http.StatusForbidden, problem)
				return
			}
		}
		if scope != "" && !sess.allows(scope) {
			v := &consoleView{Data: consoleRefusedData{Scope: scope, AdminSignIn: s.cfg.ConsoleSignIn()}}
			c.fillView(v)
			s.consoleRefusedView(w, r, http.StatusForbidden, "the operator lacks the "+scope+" permission", sess.Operator, sess.Via, v)
			return
		}
		h(c)
	}
}

// consoleRoutes registers the console under /console (h adds the public URL's path); every
// page but the assets answers only at the console's own host (consoleHostProblem).
func (s *Server) consoleRoutes(register func(string, http.HandlerFunc)) {
	register("GET /console/assets/{name}", s.consoleAsset)
	h := func(pattern string, f http.HandlerFunc) { register(pattern, s.consoleHostGuard(f)) }
	h("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, s.consolePath()+"/", http.StatusSeeOther)
	})
	h("GET /console/signin", s.consoleSignInPage)
	h("GET /console/login", s.consoleLogin)
	h("GET /console/callback", s.consoleCallback)
	h("POST /console/login/token", s.consoleTokenLogin)
	h("POST /console/signout", s.consolePage("", s.consoleSignOut))
	h("GET /console/{$}", s.consolePage("", s.consoleHome))
	s.consoleConnectionRoutes(h)
	s.consoleUserRoutes(h)
	s.consoleLogRoutes(h)
}

// consoleHome is the console's landing page: the Overview's charts (consoleoverview.go) for
// an operator who may read the logs, else the sections the operator may open.
func (s *Server) consoleHome(c *consoleRequest) {
	if c.sess.allows("read:logs") {
		s.consoleOverview(c)
		return
	}
	c.render(http.StatusOK, "home", "Overview", nil)
}

// consoleAsset serves an embedded asset (CSS, JS, SVG); anything else is 404.
func (s *Server) consoleAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	b, err := consoleFS.ReadFile("console/assets/" + name)
	if err != nil || strings.Contains(name, "/") {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", consoleCSP)
	_, _ = w.Write(b)
}

// capturedResponse is an in-process answer of a broker handler the console calls (the token
// endpoint for its own code, the management API for its writes): nothing reaches the browser.
type capturedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *capturedResponse) Header() http.Header { return c.header }

func (c *capturedResponse) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

// Write keeps at most maxBodyBytes of the answer.
func (c *capturedResponse) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	if room := maxBodyBytes - c.body.Len(); room > 0 {
		c.body.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

// inProcessRequest is r turned into a request to one of the broker's own handlers (method,
// path below the public URL's path, body of contentType): the same context, peer address,
// User-Agent and X-Forwarded-For (so its event names the operator's address), nothing else
// of the browser's request (no cookies).
func (s *Server) inProcessRequest(r *http.Request, method, path, contentType string, body []byte) *http.Request {
	ir := r.Clone(r.Context())
	ir.Method, ir.URL = method, &url.URL{Path: s.cookiePath(path)}
	ir.RequestURI = ir.URL.Path
	ir.Header = http.Header{"Content-Type": {contentType}}
	for _, h := range []string{"User-Agent", "X-Forwarded-For"} {
		if v := r.Header.Values(h); len(v) > 0 {
			ir.Header[h] = v
		}
	}
	ir.Body, ir.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	ir.Form, ir.PostForm = nil, nil
	return ir
}
