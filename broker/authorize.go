package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// appRequest is the app's authorization request, kept until the broker issues its code.
type appRequest struct {
	ClientID      string `json:"client_id"`
	RedirectURI   string `json:"redirect_uri"`
	State         string `json:"state,omitempty"`
	Nonce         string `json:"nonce,omitempty"`
	CodeChallenge string `json:"code_challenge,omitempty"` // S256 only
	Scope         string `json:"scope"`
	Audience      string `json:"audience,omitempty"`
	DPoPJKT       string `json:"dpop_jkt,omitempty"`
	// ResponseMode is "web_message" when the app asked for its answer by postMessage (silent
	// authentication in an iframe); empty means query.
	ResponseMode string `json:"response_mode,omitempty"`
	// silent is set for prompt=none once the request is accepted: its failures are fsa.
	silent bool
	// Trace is the W3C traceparent of the /authorize span when tracing is on (tracing.go):
	// the callback and the code's redemption continue that trace. Never used for anything else.
	Trace string `json:"traceparent,omitempty"`
}

// transaction is the login transaction stored between /authorize and /login/callback under
// txID(state, cookie hash); it is taken (single use) by the callback.
type transaction struct {
	App        appRequest      `json:"app"`
	Connection string          `json:"connection"`
	Start      *upstream.Start `json:"start"`
	CookieHash string          `json:"cookie_hash"` // base64url SHA-256 of the browser cookie
	Expires    int64           `json:"exp"`         // unix ms; checked against the injected clock
	// LimitKey is the per-IP limit key (logs.IPKey) of the browser that started the login: the
	// callback gives its live-transaction slot back (bounded.go).
	LimitKey string `json:"limit_key,omitempty"`
	// Callback is the redirect_uri sent upstream (callbackFor).
	Callback string `json:"callback,omitempty"`
	// HomeRealmDomain is the email domain that chose the connection (homerealm.go), for the
	// login's events.
	HomeRealmDomain string `json:"hrd_domain,omitempty"`
}

// txCookie binds a login transaction to the browser that started it; its name over https is
// cookieName(txCookie).
const txCookie = "dpop_broker_tx"

// singleParams must not be repeated (RFC 6749 §3.1).
var singleParams = []string{
	"response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
	"code_challenge_method", "connection", "audience", "dpop_jkt", "response_mode", "prompt",
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ev := s.newEvent(r)
	found, err := s.findClient(r.Context(), q.Get("client_id"), nil)
	if err != nil {
		s.failLogin(w, r, ev, s.storeFailure(err))
		return
	}
	if found == nil || len(q["client_id"]) > 1 {
		s.failLogin(w, r, ev, loginFailure{Status: http.StatusBadRequest, Code: codeInvalidClient,
			Description: "Unknown client_id: the application is not registered with this broker."})
		return
	}
	client := found.cfg
	withClient(ev, client)
	app := &appRequest{ClientID: client.ClientID, RedirectURI: q.Get("redirect_uri")}
	if len(q["redirect_uri"]) != 1 || !slices.Contains(client.RedirectURIs, app.RedirectURI) {
		s.failLogin(w, r, ev, loginFailure{Status: http.StatusBadRequest, Code: codeInvalidRedirectURI,
			Description: "The redirect_uri is missing or not registered for this application."})
		return
	}
	app.State = q.Get("state")
	if len(q["response_mode"]) == 1 && q.Get("response_mode") == responseModeWebMessage {
		app.ResponseMode = responseModeWebMessage
	}
	if p := authorizeProblem(q, client); p != nil {
		s.failLogin(w, r, ev, loginFailure{App: app, Code: p.Code, Description: p.Description})
		return
	}
	t, oerr := s.resolveAudience(q.Get("audience"))
	if oerr != nil {
		s.failLogin(w, r, ev, loginFailure{App: app, OAuthError: oerr.Code, Code: codeInvalidRequest, Description: oerr.Description})
		return
	}
	if s.refuseUngranted(w, r, app, client, t, ev) {
		return
	}
	app.Nonce, app.Scope, app.Audience = q.Get("nonce"), q.Get("scope"), q.Get("audience")
	app.CodeChallenge, app.DPoPJKT = q.Get("code_challenge"), q.Get("dpop_jkt")
	app.Trace = loginTrace(r.Context())

	if s.answeredBySession(w, r, q, client, app, ev) {
		return
	}
	st, secret, ok := s.startLogin(w, r, q, client, app, ev)
	if !ok {
		return
	}
	http.SetCookie(w, s.brokerCookie(txCookie, secret, "/login/callback", int(s.cfg.Lifetimes.Transaction.Seconds())+1))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, st.AuthURL, http.StatusFound)
}

// startLogin picks the connection for an accepted authorization request, starts the upstream
// login and stores the login transaction. It returns the upstream start and the secret of the
// browser's transaction cookie; when it returns ok false it has answered the request itself
// (a sign-in page, an error redirect to the app or an error page) and recorded the
// failure on ev.
//
// The connections are the registry's snapshot (registry.go): a change made on any replica
// reaches it a moment after the store's watch reports it, and within registryRecheck when the
// watch is down; no store read of the connections per login.
//
// The browser's live-transaction slot (bounded.go) is taken before the upstream is asked
// anything: a pushed authorization request is a credentialed POST in the broker's name, so a
// login the bound refuses must not send one. It is given back unless the transaction is
// stored.
func (s *Server) startLogin(w http.ResponseWriter, r *http.Request, q url.Values, client *config.Client, app *appRequest, ev *logs.Event) (st *upstream.Start, secret string, ok bool) {
	snap, err := s.reg.current(r.Context(), false)
	if err != nil {
		s.failLogin(w, r, ev, s.storeFailure(err))
		return nil, "", false
	}
	slot := transaction{LimitKey: logs.IPKey(s.clientIP(r)), Expires: s.now().Add(s.cfg.Lifetimes.Transaction).UnixMilli()}
	held := false
	defer func() {
		if held && !ok {
			s.freeTx(&slot)
		}
	}()
	var beginErr error
	conn, domain, signIn, refusal := s.pickConnection(snap, client, q)
	if conn != nil && conn.err == nil {
		if ref := s.holdTx(&slot); ref != nil {
			withConnection(ev, conn)
			s.refusedPage(w, r, ref, ev, tooManySignIns, "Too many sign-ins are in progress from your network.")
			return nil, "", false
		}
		held = true
		st, beginErr = conn.up.Begin(r.Context(), s.callbackFor(conn), upstreamOptions(q)...)
	}
	if conn == nil {
		switch name := q.Get("connection"); {
		case signIn != nil:
			renderSignIn(w, signIn)
		case name != "":
			s.failLogin(w, r, ev, loginFailure{App: app, Code: codeInvalidRequest,
				Description: "connection " + s.clipEvent(name, 64) + " is not enabled for this application"})
		case refusal != "":
			s.failLogin(w, r, ev, loginFailure{App: app, Code: codeInvalidRequest, Description: refusal})
		default:
			s.failLogin(w, r, ev, loginFailure{App: app, Code: codeInvalidRequest,
				Description: "no connection is enabled for this application"})
		}
		return nil, "", false
	}
	withConnection(ev, conn)
	if domain != "" {
		ev.Details[detailHomeRealmDomain] = domain
	}
	if conn.err != nil {
		s.failLogin(w, r, ev, s.beginFailure(app, ev, &upstream.Error{Code: codeConnectionUnusable, Description: "the stored connection configuration cannot be used: " + conn.err.Error(), Err: conn.err}))
		return nil, "", false
	}
	if beginErr != nil {
		s.failLogin(w, r, ev, s.beginFailure(app, ev, beginErr))
		return nil, "", false
	}
	secret = randomString(32)
	tx := transaction{
		App: *app, Connection: conn.cfg.Name, Start: st, CookieHash: hashString(secret), Callback: s.callbackFor(conn),
		Expires: slot.Expires, LimitKey: slot.LimitKey, HomeRealmDomain: domain,
	}
	raw, err := json.Marshal(tx)
	if err != nil {
		s.failLogin(w, r, ev, loginFailure{Status: http.StatusInternalServerError, Code: "server_error",
			Description: "could not encode the login transaction"})
		return nil, "", false
	}
	if err := s.store.Create(r.Context(), sessions.KindTransaction, txID(st.State, tx.CookieHash), raw, s.cfg.Lifetimes.Transaction); err != nil {
		s.failLogin(w, r, ev, s.storeFailure(err))
		return nil, "", false
	}
	return st, secret, true
}

// upstreamOptions passes the app's authentication requirements on to the upstream: max_age
// (checked against the upstream ID token's auth_time, OIDC Core §3.1.3.7 step 13) and
// prompt=login; and the parameters options.upstream_params aliases may send (claims.go).
func upstreamOptions(q url.Values) []upstream.BeginOption {
	opts := []upstream.BeginOption{upstream.WithAppParams(aliasSources(q))}
	if n, err := strconv.Atoi(q.Get("max_age")); err == nil && n >= 0 {
		opts = append(opts, upstream.WithMaxAge(n))
	}
	if slices.Contains(strings.Fields(q.Get("prompt")), "login") {
		opts = append(opts, upstream.WithPromptLogin())
	}
	return opts
}

// authorizeProblem checks the request parameters that are answered with an OAuth error
// redirect (the client and redirect_uri are already trusted).
func authorizeProblem(q url.Values, client *config.Client) *oauthError {
	bad := func(code, desc string) *oauthError { return &oauthError{Code: code, Description: desc} }
	for _, p := range singleParams {
		if len(q[p]) > 1 {
			return bad("invalid_request", p+" must not be repeated")
		}
	}
	if rt := q.Get("response_type"); rt != "code" {
		return bad("unsupported_response_type", "response_type must be code")
	}
	promptNone := slices.Contains(strings.Fields(q.Get("prompt")), "none")
	switch rm := q.Get("response_mode"); {
	case rm == responseModeWebMessage && !promptNone:
		return bad("invalid_request", "response_mode web_message is supported only with prompt=none (silent authentication)")
	case rm != "" && rm != "query" && rm != responseModeWebMessage:
		return bad("invalid_request", "response_mode "+clip(rm, 32)+" is not supported (use query)")
	}
	if !slices.Contains(strings.Fields(q.Get("scope")), "openid") {
		return bad("invalid_scope", "scope must include openid")
	}
	if promptNone && len(strings.Fields(q.Get("prompt"))) > 1 {
		return bad("invalid_request", "prompt=none must not be combined with other values") // OIDC Core §3.1.2.1
	}
	if ma, ok := q["max_age"]; ok {
		if n, err := strconv.Atoi(ma[0]); err != nil || n < 0 || ma[0] != strconv.Itoa(n) {
			return bad("invalid_request", "max_age must be a non-negative number of seconds")
		}
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge == "" && method != "":
		return bad("invalid_request", "code_challenge_method without code_challenge")
	case challenge != "" && method != "S256": // RFC 7636 §4.3: absent means plain, which is refused
		return bad("invalid_request", "code_challenge_method must be S256")
	case challenge != "" && !isB64SHA256(challenge):
		return bad("invalid_request", "code_challenge must be the base64url SHA-256 of the verifier (43 characters)")
	case challenge == "" && client.Public():
		return bad("invalid_request", "PKCE is required for public clients: send code_challenge with code_challenge_method=S256")
	}
	if jkt := q.Get("dpop_jkt"); jkt != "" && !isB64SHA256(jkt) {
		return bad("invalid_request", "dpop_jkt must be a base64url SHA-256 JWK thumbprint")
	}
	return nil // lengths (state, nonce, …) were checked by guardAuthorize (authorizeLimits)
}

// pickConnection returns the connection for the request: the named one (enabled for the
// client: listed in its connections or naming it in enabled_clients), or the client's only
// one, or with several and none named the one home-realm discovery routes to (homerealm.go).
// With that one, domain is the login_hint's email domain that chose it (for the login's
// events), else "". Otherwise it returns the page to show (identifier-first or chooser), or
// neither: an unknown or disabled name, or no connection that can be used, with refusal saying
// why when it is not one of those.
func (s *Server) pickConnection(snap *connSnapshot, client *config.Client, q url.Values) (conn *connection, domain string, p *signInPage, refusal string) {
	enabled := snap.enabledFor(client)
	if name := q.Get("connection"); name != "" {
		if !slices.Contains(enabled, name) {
			return nil, "", nil, ""
		}
		return snap.byName[name], "", nil, ""
	}
	switch len(enabled) {
	case 0:
		return nil, "", nil, ""
	case 1:
		return snap.byName[enabled[0]], "", nil, ""
	}
	if conn, p, refusal = s.homeRealm(q, client, snap.enabledConns(client)); conn != nil {
		domain = config.EmailDomain(q.Get("login_hint")) // homeRealm picks a connection only by it
	}
	return conn, domain, p, refusal
}

// beginFailure is the failure of a login whose connection cannot start it (discovery or
// DPoP gate). It logs err; the app gets the stable code, the event the detail.
func (s *Server) beginFailure(app *appRequest, ev *logs.Event, err error) loginFailure {
	code := upstream.CodeOf(err)
	desc := err.Error()
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.Description != "" {
		desc = ue.Description
	}
	var ce *discovery.CapabilityError
	if errors.As(err, &ce) {
		desc = ce.Error()
		code = ce.Code()
	}
	s.log.Warn("upstream login cannot start", "connection", ev.Connection, "error", code, "err", err)
	if ce != nil { // capability errors name issuer and algs only
		return loginFailure{App: app, OAuthError: "server_error", Code: code, Description: desc, AppDescription: code + ": " + desc}
	}
	if code == upstream.CodeClientAuthUnsupported || code == upstream.CodePARNotSupported {
		// The connection asks for what the upstream does not offer: a configuration problem,
		// not a passing one.
		return loginFailure{App: app, OAuthError: "server_error", Code: code, Description: desc,
			AppDescription: code + ": the connection's configuration does not fit the upstream identity provider"}
	}
	// Discovery and transport failures may carry internal addresses: the app gets the code,
	// the event the detail.
	return loginFailure{App: app, OAuthError: "temporarily_unavailable", Code: code, Description: desc,
		AppDescription: code + ": the upstream identity provider cannot be used right now"}
}

// cookiePath returns path below the public URL's path.
func (s *Server) cookiePath(path string) string {
	if u, err := url.Parse(s.base); err == nil {
		return strings.TrimSuffix(u.Path, "/") + path
	}
	return path
}

func clientName(c *config.Client) string {
	if c.Name != "" {
		return c.Name
	}
	return c.ClientID
}

// randomString returns n random bytes, base64url without padding (no '.', '{' or '}', so it
// is a valid store id and hash tag).
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics on failure)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashString is base64url(SHA-256(s)).
func hashString(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// isB64SHA256 reports whether s looks like an unpadded base64url SHA-256 value.
func isB64SHA256(s string) bool {
	if len(s) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}
