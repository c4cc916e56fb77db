package demoidp

import (
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/discovery"
)

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Upstream IdP (demo)</title>
<style>
body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;justify-content:center}
main{background:#fff;margin:4rem 1rem;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);max-width:28rem}
h1{font-size:1.3rem;margin-top:0}
button{font-size:1rem;padding:.6rem 1.6rem;border:0;border-radius:4px;background:#2d6cdf;color:#fff;cursor:pointer}
.muted{color:#666;font-size:.9rem}
</style>
</head>
<body>
<main>
<h1>Upstream IdP (demo)</h1>
<p>The application <strong>{{.ClientID}}</strong> asks you to sign in.</p>
<p id="user">You will sign in as <strong>{{.Name}}</strong>{{if .Email}} &lt;{{.Email}}&gt;{{end}}<br><span class="muted">subject: {{.Subject}}</span></p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="request" value="{{.RequestID}}">
<button id="signin" type="submit">Sign in</button>
</form>
</main>
</body>
</html>
`))

// redirectAllowed accepts any http(s) loopback redirect URI and the configured exact ones.
func (p *provider) redirectAllowed(raw string) bool {
	if slices.Contains(p.opts.RedirectURIs, raw) {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Fragment != "" || u.User != nil {
		return false
	}
	return discovery.LoopbackHost(u.Hostname())
}

// redirectWith sends the browser back to redirectURI with params (and iss when enabled).
func (p *provider) redirectWith(w http.ResponseWriter, r *http.Request, redirectURI string, params map[string]string, status int) {
	u, err := url.Parse(redirectURI)
	if err != nil { // validated before; fail closed anyway
		http.Error(w, "invalid redirect_uri", http.StatusBadRequest)
		return
	}
	q := u.Query()
	for k, v := range params {
		if v != "" {
			q.Set(k, v)
		}
	}
	if p.opts.IssParameter {
		q.Set("iss", p.issuer)
	}
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), status)
}

func (p *provider) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	p.stats.AuthorizeRequests.Add(1)
	q := r.URL.Query()
	clientID := q.Get("client_id")
	redirectURI := q.Get("redirect_uri")
	if clientID != p.opts.ClientID {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	if redirectURI == "" || !p.redirectAllowed(redirectURI) {
		http.Error(w, "missing or unregistered redirect_uri", http.StatusBadRequest)
		return
	}
	state := q.Get("state")
	fail := func(code, desc string) {
		p.redirectWith(w, r, redirectURI, map[string]string{"error": code, "error_description": desc, "state": state}, http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		fail("unsupported_response_type", "response_type must be code")
		return
	}
	if state == "" {
		fail("invalid_request", "state is required")
		return
	}
	nonce := q.Get("nonce")
	if nonce == "" {
		fail("invalid_request", "nonce is required")
		return
	}
	scope := q.Get("scope")
	if !slices.Contains(strings.Fields(scope), "openid") {
		fail("invalid_scope", "scope must include openid")
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "" && !p.opts.NoPKCE:
		fail("invalid_request", "code_challenge is required (PKCE S256)")
		return
	case challenge != "" && method != "S256":
		fail("invalid_request", "code_challenge_method must be S256")
		return
	case challenge != "" && (len(challenge) != 43 || strings.ContainsAny(challenge, "+/=")):
		fail("invalid_request", "code_challenge is not a base64url SHA-256 value")
		return
	}
	if p.opts.AuthorizeError != "" {
		fail(p.opts.AuthorizeError, "the upstream refused the request")
		return
	}
	entry := codeEntry{
		clientID: clientID, redirectURI: redirectURI, nonce: nonce, challenge: challenge,
		jkt: q.Get("dpop_jkt"), scope: scope,
	}
	if !p.opts.IgnoreMaxAge {
		maxAge, err := strconv.Atoi(q.Get("max_age"))
		entry.reauth = slices.Contains(strings.Fields(q.Get("prompt")), "login") ||
			err == nil && time.Duration(maxAge)*time.Second < p.opts.SessionAge
	}
	now := p.now()
	if p.opts.Interactive {
		id := randomToken()
		p.mu.Lock()
		err := p.pending.put(now, id, pendingEntry{code: entry, state: state}, now.Add(pendingTTL))
		p.mu.Unlock()
		if err != nil {
			fail("temporarily_unavailable", "too many pending sign-ins")
			return
		}
		name, _ := p.claims["name"].(string)
		email, _ := p.claims["email"].(string)
		if name == "" {
			name = p.subject()
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Frame-Options", "DENY")
		_ = loginPage.Execute(w, map[string]string{
			"ClientID": clientID, "Name": name, "Email": email, "Subject": p.subject(),
			"Action": p.prefix + "/authorize/approve", "RequestID": id,
		})
		return
	}
	p.issueCode(w, r, entry, state, http.StatusFound)
}

func (p *provider) handleApprove(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id := r.PostForm.Get("request")
	p.mu.Lock()
	pe, ok := p.pending.take(p.now(), id)
	p.mu.Unlock()
	if id == "" || !ok {
		http.Error(w, "unknown or expired sign-in request; start again from the application", http.StatusBadRequest)
		return
	}
	p.issueCode(w, r, pe.code, pe.state, http.StatusSeeOther)
}

func (p *provider) issueCode(w http.ResponseWriter, r *http.Request, e codeEntry, state string, status int) {
	now := p.now()
	e.authTime = now
	if !e.reauth {
		e.authTime = now.Add(-p.opts.SessionAge) // the existing SSO session
	}
	e.exp = now.Add(codeTTL)
	e.sid = p.loginSessionID()
	code := randomToken()
	p.mu.Lock()
	err := p.codes.put(now, code, e, e.exp)
	p.mu.Unlock()
	if err != nil {
		p.redirectWith(w, r, e.redirectURI, map[string]string{"error": "temporarily_unavailable", "state": state}, status)
		return
	}
	p.redirectWith(w, r, e.redirectURI, map[string]string{"code": code, "state": state}, status)
}
