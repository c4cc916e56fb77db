package broker

import (
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// pageHead opens every page of the broker's own (pageTmpl, signInTmpl): the head with the
// page's .Title and the shared style rules; the page adds its rules and closes the style.
const pageHead = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;justify-content:center}
main{background:#fff;margin:4rem 1rem;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);max-width:32rem}
h1{font-size:1.3rem;margin-top:0}
`

var pageTmpl = template.Must(template.New("page").Parse(pageHead + `code{background:#eee;padding:0 .25rem;border-radius:3px}
li{margin:.4rem 0}
button{font-size:1rem;padding:.6rem 1.6rem;border:0;border-radius:4px;background:#2d6cdf;color:#fff;cursor:pointer}
button:focus-visible{outline:3px solid #8fb3f5;outline-offset:2px}
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
{{if .Error}}<p id="error"><code>{{.Error}}</code></p>{{end}}
{{if .Message}}<p id="message">{{.Message}}</p>{{end}}
{{if .Next}}<p id="next"><strong>{{.Next}}</strong></p>{{end}}
{{if .Links}}<ul id="links">{{range .Links}}<li><a href="{{.URL}}">{{.Text}}</a></li>{{end}}</ul>{{end}}
{{if .TraceID}}<p id="trace"><small>trace id: <code>{{.TraceID}}</code></small></p>{{end}}
{{with .Form}}<form method="post" action="{{.Action}}">{{range .Fields}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">{{end}}<button id="{{.ID}}" type="submit">{{.Button}}</button></form>{{end}}
</main>
</body>
</html>
`))

type pageLink struct{ URL, Text string }

type page struct {
	Title, Error, Message string
	Next                  string // what the reader does now, in plain words ("" = nothing said)
	Links                 []pageLink
	Form                  *pageForm
	// TraceID is shown on an error page of a traced request (tracing.go), for the user to
	// quote; "" shows nothing.
	TraceID string
}

// pageForm is a one-button POST form with hidden fields.
type pageForm struct {
	Action, ID, Button string
	Fields             []pageField
}

type pageField struct{ Name, Value string }

// htmlHeaders are set on every HTML page the broker renders.
func htmlHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
}

func renderPage(w http.ResponseWriter, status int, p page) {
	htmlHeaders(w)
	w.WriteHeader(status)
	_ = pageTmpl.Execute(w, p)
}

// responseModeWebMessage is the response_mode of silent authentication in an iframe: the
// answer is posted to the app's window (the redirect_uri's origin), as Auth0 and auth0-spa-js do.
const responseModeWebMessage = "web_message"

var webMessageTmpl = template.Must(template.New("wm").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorization response</title></head>
<body><script nonce="{{.Nonce}}">
(function () {
  var target = window.opener || window.parent;
  target.postMessage({type: "authorization_response", response: {{.Response}}}, {{.Origin}});
})();
</script></body></html>
`))

// webMessage answers with a page that posts response to origin (the registered redirect_uri's
// origin, never anything the request chose). Only that origin may frame it.
func webMessage(w http.ResponseWriter, origin string, response map[string]string) {
	nonce := randomString(16)
	htmlHeaders(w)
	h := w.Header()
	h.Del("X-Frame-Options") // frame-ancestors below admits the app's origin only
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; frame-ancestors "+origin)
	w.WriteHeader(http.StatusOK)
	_ = webMessageTmpl.Execute(w, struct {
		Nonce, Origin string
		Response      map[string]string
	}{nonce, origin, response})
}

// loginFailure is how a browser login request (/authorize, /login/callback and the limits in
// front of them) fails. One value names what the user or the app is told and what the failed
// login event (type f) records; failLogin writes both.
type loginFailure struct {
	// Code is the event's details.error, a stable code (codeInvalidState, an upstream.Code*,
	// an OAuth error code). An error page shows it; a redirect sends OAuthError.
	Code string
	// Description is the event's details.error_description, and what the page or the
	// redirect says unless AppDescription is set.
	Description string

	// Status is the HTTP status of the error page (400, 414, 500, 503) shown when App is nil;
	// 0 means 500.
	Status int

	// App, when set, gets the error at its redirect_uri instead of a page: error,
	// error_description, state and iss (RFC 6749 §4.1.2.1, RFC 9207), posted to its origin for
	// response_mode=web_message.
	App *appRequest
	// OAuthError is the redirect's error parameter; empty means Code. It differs from Code
	// when Code is a detail for the log only (invalid_state, an upstream code).
	OAuthError string
	// AppDescription is the redirect's error_description when the app must learn less than
	// the event records (internal addresses, callback paths); empty means Description.
	AppDescription string
	// Back links the error page to the application the login was for, when it is known and
	// still registered (nil: the page names no application).
	Back *pageLink
}

// failLogin answers the request with f (an error page, or the OAuth error redirect to f.App)
// and records ev as the failed login.
func (s *Server) failLogin(w http.ResponseWriter, r *http.Request, ev *logs.Event, f loginFailure) {
	if ev == nil { // every failure leaves an event, even from a caller that built none
		ev = s.newEvent(r)
	}
	if f.Status == 0 && f.App == nil {
		f.Status = http.StatusInternalServerError
	}
	s.recordFailedLogin(r, ev, f)
	if f.App != nil {
		oauthError, desc := f.OAuthError, f.AppDescription
		if oauthError == "" {
			oauthError = f.Code
		}
		if desc == "" {
			desc = f.Description
		}
		s.redirectToApp(w, r, f.App, url.Values{"error": {oauthError}, "error_description": {desc}})
		return
	}
	// No redirect: the app is unknown or untrusted, or the failure is the broker's own.
	title := "Sign-in failed"
	if f.Status == http.StatusServiceUnavailable {
		title = "Service temporarily unavailable"
	}
	p := page{Title: title, Error: f.Code, Message: f.Description, TraceID: traceID(r.Context())}
	if f.Code == codeInvalidState {
		p.Next = "Go back to the application you were signing in to and sign in again."
		if f.Back != nil {
			p.Links = []pageLink{*f.Back}
		}
	}
	renderPage(w, f.Status, p)
}

// recordFailedLogin records ev as a failed login (type f, or fsa for prompt=none) with details.error f.Code and
// details.error_description f.Description, and counts it in dpop_broker_logins_total.
func (s *Server) recordFailedLogin(r *http.Request, ev *logs.Event, f loginFailure) {
	ev.Type = logs.TypeFailedLogin
	if f.App != nil && f.App.silent {
		ev.Type = logs.TypeFailedSilentAuth // prompt=none: the answer of silent authentication
	}
	ev.Details["error"] = f.Code
	if f.Description != "" {
		ev.Details["error_description"] = s.clipEvent(f.Description, 512)
	}
	s.metrics.login(ev)
	s.write(r, ev)
}

// storeFailure is the failure of a login whose store operation failed with err, always a
// 503: store_full when the store is full, store_busy when a record kept changing under
// concurrent writers (the same user's session index, signed in from many browsers at once),
// else store_unavailable (unreachable, or any other failure: never a 500 for the store). It
// logs err.
func (s *Server) storeFailure(err error) loginFailure {
	s.log.Error("store operation failed", "err", err)
	switch {
	case storeFull(err):
		return loginFailure{Status: http.StatusServiceUnavailable, Code: codeStoreFull,
			Description: "The sign-in service is at capacity. Please try again shortly."}
	case errors.Is(err, sessions.ErrConflict):
		return loginFailure{Status: http.StatusServiceUnavailable, Code: codeStoreBusy,
			Description: "Too many sign-ins of this user are being saved at once. Please try again."}
	}
	return loginFailure{Status: http.StatusServiceUnavailable, Code: codeStoreUnavailable,
		Description: "The session store is unavailable. Please try again shortly."}
}

// redirectToApp adds params, state and iss to the app's redirect_uri and redirects there (or,
// for response_mode=web_message, posts them to the redirect_uri's origin).
func (s *Server) redirectToApp(w http.ResponseWriter, r *http.Request, app *appRequest, params url.Values) {
	u, err := url.Parse(app.RedirectURI)
	if err != nil { // registered URIs are validated at start-up; fail closed anyway
		renderPage(w, http.StatusBadRequest, page{Title: "Sign-in failed", Error: "invalid_redirect_uri"})
		return
	}
	// web_message needs a web origin to post to; a native app's private-use scheme
	// (com.example:/cb) has none and gets the query redirect.
	if app.ResponseMode == responseModeWebMessage && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
		resp := map[string]string{"iss": s.issuer}
		for k := range params {
			if v := params.Get(k); v != "" {
				resp[k] = v
			}
		}
		if app.State != "" {
			resp["state"] = app.State
		}
		webMessage(w, u.Scheme+"://"+u.Host, resp)
		return
	}
	q := u.Query()
	for k, vs := range params {
		for _, v := range vs {
			if v != "" {
				q.Set(k, v)
			}
		}
	}
	if app.State != "" {
		q.Set("state", app.State)
	}
	q.Set("iss", s.issuer)
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// oauthError is an RFC 6749 §5.2 error at the token or userinfo endpoint.
type oauthError struct {
	Status      int    `json:"-"`
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	writeJSON(w, e.Status, e)
}

// safeErrorCode returns code when it is a well-formed OAuth error code (RFC 6749 §4.1.2.1
// charset, bounded length), else "server_error".
func safeErrorCode(code string) string {
	if code == "" || len(code) > 64 || strings.ContainsFunc(code, func(r rune) bool {
		return r < 0x20 || r > 0x7e || r == '"' || r == '\\'
	}) {
		return "server_error"
	}
	return code
}

// clip bounds untrusted text before it goes into a page, redirect or event (logs.Clip).
func clip(s string, n int) string { return logs.Clip(s, n) }

// appHomeLink links an error page to the application of a login: the origin of its
// redirect_uri, when that is still one of client's registered redirect URIs and a web URL
// (nil otherwise: a native app's scheme, or a URI no longer registered, is not linked).
func appHomeLink(client *config.Client, redirectURI string) *pageLink {
	if !slices.Contains(client.RedirectURIs, redirectURI) {
		return nil
	}
	u, err := url.Parse(redirectURI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil
	}
	name := client.Name
	if name == "" {
		name = client.ClientID
	}
	return &pageLink{URL: u.Scheme + "://" + u.Host + "/", Text: "Back to " + name}
}
