package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// Size limits on untrusted input (the request body limit is maxBodyBytes in server.go; the
// header limit is the http.Server's MaxHeaderBytes, set by cmd/broker).
const (
	maxQueryBytes      = 8 << 10 // raw query of /authorize and /login/callback
	maxQueryParams     = 64      // distinct parameter names
	maxParamNameBytes  = 64
	maxOtherParamBytes = 2048 // any parameter without its own limit
)

// The app's state and nonce at /authorize: both are kept in the login transaction and the
// code record, and echoed (state on the redirect, nonce in the ID token). Random values from
// SDKs are far shorter (openid-client 43 characters, auth0-spa-js 60).
const (
	maxStateBytes = 512
	maxNonceBytes = 256
)

// authorizeLimits are the longest accepted /authorize parameter values, in bytes (the only
// length checks of /authorize: guardAuthorize applies them before the handler runs).
var authorizeLimits = map[string]int{
	"response_type": 64, "response_mode": 32, "client_id": 256, "redirect_uri": 2048,
	"scope": 1024, "state": maxStateBytes, "nonce": maxNonceBytes, "code_challenge": 43, "code_challenge_method": 16,
	"connection": 128, "audience": 2048, "dpop_jkt": 43, "prompt": 64, "login_hint": 512,
	"max_age": 16, "ui_locales": 256, "acr_values": 512, "display": 16, "id_token_hint": 4096,
}

// authorizeSingle are /authorize parameters that must not be repeated (RFC 6749 §3.1): the
// ones the handler reads plus the OIDC ones it does not use.
var authorizeSingle = append(slices.Clone(singleParams),
	"login_hint", "max_age", "ui_locales", "acr_values", "display", "id_token_hint", "claims",
	"request", "request_uri")

// callbackLimits are the longest accepted /login/callback parameter values, in bytes (some
// IdPs issue codes of well over 1 KiB).
var callbackLimits = map[string]int{
	"state": 512, "code": 4096, "iss": 2048, "error": 256, "error_description": 2048,
	"error_uri": 2048, "session_state": 512,
}

// callbackSingle must not be repeated at /login/callback (a repeated iss is answered by the
// handler, to the app, as RFC 9207 §2.4 requires).
var callbackSingle = []string{"state", "code", "error", "error_description", "error_uri", "session_state"}

// paramProblem checks the parameter count, repetitions and lengths; desc is "" when q is fine.
func paramProblem(q url.Values, limits map[string]int, single []string) (name, desc string) {
	if len(q) > maxQueryParams {
		return "", fmt.Sprintf("the request has more than %d parameters", maxQueryParams)
	}
	for _, p := range single {
		if len(q[p]) > 1 {
			return p, p + " must not be repeated"
		}
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		if len(k) > maxParamNameBytes {
			return clip(k, maxParamNameBytes), fmt.Sprintf("a parameter name is longer than %d bytes", maxParamNameBytes)
		}
		limit, ok := limits[k]
		if !ok {
			limit = maxOtherParamBytes
		}
		for _, v := range q[k] {
			switch {
			case len(v) <= limit:
			case limit == 43: // code_challenge, dpop_jkt
				return k, k + " must be exactly 43 characters (a base64url SHA-256 value)"
			default:
				return k, fmt.Sprintf("%s is longer than %d bytes", k, limit)
			}
		}
	}
	return "", ""
}

// clientIP is the client's address for events and per-IP limits (see guard.clientAddr).
func (s *Server) clientIP(r *http.Request) string {
	if s.guard == nil {
		if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			return h
		}
		return r.RemoteAddr
	}
	return s.guard.clientAddr(r)
}

// knownClient returns the registered client q names once, or nil, from the last snapshot
// loaded (guards and refusals never wait for the store).
func (s *Server) knownClient(q url.Values) *config.Client {
	if ids := q["client_id"]; len(ids) == 1 {
		return s.cachedClient(ids[0])
	}
	return nil
}

// registeredRedirect reports whether q names exactly one redirect_uri, registered for client.
func registeredRedirect(client *config.Client, q url.Values) bool {
	uri := q["redirect_uri"]
	return len(uri) == 1 && slices.Contains(client.RedirectURIs, uri[0])
}

// guardAuthorize applies the rate limits and the size limits in front of /authorize. A
// limit problem goes back to the app as invalid_request when the client and its redirect_uri
// are valid, else to the user as an error page; each writes an f event. The per-IP limit
// comes first; the per-client bucket is spent only by requests it let through that name a
// registered client with one of its redirect_uris (/authorize has no client authentication,
// so this is all that can be checked before the bucket is charged).
func (s *Server) guardAuthorize(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := s.now()
		if ref := s.guard.check(s.guard.authorizeIP, logs.IPKey(s.clientIP(r)), now); ref != nil {
			s.authorizeRefused(w, r, ref)
			return
		}
		q, ok := s.boundedQuery(w, r)
		if !ok {
			return
		}
		client := s.knownClient(q)
		if client != nil && registeredRedirect(client, q) {
			if ref := s.guard.check(s.guard.authorizeClient, client.ClientID, now); ref != nil {
				s.authorizeRefused(w, r, ref)
				return
			}
		}
		name, desc := paramProblem(q, authorizeLimits, authorizeSingle)
		if desc == "" {
			next(w, r)
			return
		}
		ev := s.newEvent(r)
		if name != "" {
			ev.Details["parameter"] = name
		}
		if client != nil {
			withClient(ev, client)
			if registeredRedirect(client, q) {
				app := &appRequest{ClientID: client.ClientID, RedirectURI: q.Get("redirect_uri")}
				if st := q["state"]; len(st) == 1 && len(st[0]) <= maxStateBytes {
					app.State = st[0]
				}
				s.failLogin(w, r, ev, loginFailure{App: app, Code: codeInvalidRequest, Description: desc})
				return
			}
		}
		s.failLogin(w, r, ev, loginFailure{Status: http.StatusBadRequest, Code: codeInvalidRequest, Description: desc})
	}
}

// guardCallback applies the per-IP rate limit (429 page) and the size limits (error page) in
// front of /login/callback; each writes an f event.
func (s *Server) guardCallback(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ref := s.guard.check(s.guard.callbackIP, logs.IPKey(s.clientIP(r)), s.now()); ref != nil {
			s.refusedPage(w, r, ref, s.newEvent(r), tooManySignIns, signInBusy)
			return
		}
		q, ok := s.boundedQuery(w, r)
		if !ok {
			return
		}
		if name, desc := paramProblem(q, callbackLimits, callbackSingle); desc != "" {
			ev := s.newEvent(r)
			if name != "" {
				ev.Details["parameter"] = name
			}
			s.failLogin(w, r, ev, loginFailure{Status: http.StatusBadRequest, Code: codeInvalidRequest,
				Description: "The identity provider's response is invalid: " + desc + "."})
			return
		}
		next(w, r)
	}
}

// boundedQuery parses the query of a login request: longer than maxQueryBytes is 414,
// malformed (bad escape, ';') is 400; both with an error page and an f event.
func (s *Server) boundedQuery(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	if len(r.URL.RawQuery) > maxQueryBytes {
		s.failLogin(w, r, s.newEvent(r), loginFailure{Status: http.StatusRequestURITooLong, Code: codeInvalidRequest,
			Description: fmt.Sprintf("The request is too large: the query string is longer than %d bytes.", maxQueryBytes)})
		return nil, false
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.failLogin(w, r, s.newEvent(r), loginFailure{Status: http.StatusBadRequest, Code: codeInvalidRequest,
			Description: "The query string is malformed (invalid percent-encoding or a ';' separator)."})
		return nil, false
	}
	return q, true
}

// authorizeRefused answers a rate-limited /authorize (refusedPage), its f event naming the
// client when the query names a registered one.
func (s *Server) authorizeRefused(w http.ResponseWriter, r *http.Request, ref *refusal) {
	ev := s.newEvent(r)
	if len(r.URL.RawQuery) <= maxQueryBytes {
		if q, err := url.ParseQuery(r.URL.RawQuery); err == nil {
			if c := s.knownClient(q); c != nil {
				withClient(ev, c)
			}
		}
	}
	s.refusedPage(w, r, ref, ev, tooManySignIns, signInBusy)
}

// The title and reason of the 429 page of a refused sign-in.
const (
	tooManySignIns = "Too many sign-in attempts"
	signInBusy     = "The sign-in service is receiving too many requests."
)

// refusedPage answers a browser request a limit refused: the 429 page (title, why and when to
// retry) with Retry-After, and ev recorded by recordRefusal.
func (s *Server) refusedPage(w http.ResponseWriter, r *http.Request, ref *refusal, ev *logs.Event, title, why string) {
	ref.setRetryAfter(w)
	s.recordRefusal(r, ev, ref)
	renderPage(w, http.StatusTooManyRequests, page{
		Title: title, Error: codeTooManyRequests,
		Message: fmt.Sprintf("%s Please try again in %d seconds.", why, ref.retryAfterSeconds()),
		TraceID: traceID(r.Context()),
	})
}

// recordRefusal records ev, the event of a request a limit refused, with details.error
// too_many_requests, its description and details.rate_limit; it is limited like every
// unauthenticated event. An event without a type is a failed login (f, counted in
// dpop_broker_logins_total); otherwise ev.Type stands (flo, feacft, …).
func (s *Server) recordRefusal(r *http.Request, ev *logs.Event, ref *refusal) {
	ev.Details["rate_limit"] = ref.details()
	if ev.Type == "" {
		s.recordFailedLogin(r, ev, loginFailure{Code: codeTooManyRequests, Description: ref.description()})
		return
	}
	ev.Details["error"], ev.Details["error_description"] = codeTooManyRequests, ref.description()
	s.write(r, ev)
}

// guardLogout applies the per-IP rate limit of the logout endpoints (/oidc/logout GET and
// POST, /v2/logout, /logout/federated and the upstreams' /logout/backchannel/{id} share one
// bucket per IP): a 429 page with Retry-After and an flo event with details.error
// too_many_requests.
func (s *Server) guardLogout(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ref := s.guard.check(s.guard.logoutIP, logs.IPKey(s.clientIP(r)), s.now())
		if ref == nil {
			next(w, r)
			return
		}
		ev := s.newEvent(r)
		ev.Type = logs.TypeFailedLogout
		if ids := r.URL.Query()["client_id"]; len(ids) == 1 && len(ids[0]) <= 256 { // the body is not read
			if c := s.cachedClient(ids[0]); c != nil {
				withClient(ev, c)
			}
		}
		s.refusedPage(w, r, ref, ev, "Too many sign-out requests", "The sign-out service is receiving too many requests.")
	}
}

// guardToken applies the per-IP limit and the body limit (413) in front of /oauth/token and
// /oauth/revoke. The body is read once here (≤ maxBodyBytes) and handed on in memory. A
// rate-limited request is recorded as refusedType, or, when it is "", as the token endpoint's
// failure for its grant (feacft, fertft). The per-client limit is applied by the handlers
// once the client has authenticated (chargeClient).
func (s *Server) guardToken(next http.HandlerFunc, refusedType string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ref := s.guard.check(s.guard.tokenIP, logs.IPKey(s.clientIP(r)), s.now()); ref != nil {
			body, _ := readBody(w, r) // to name the client in the event
			id, grant := tokenRequestClient(r, body)
			s.tokenRefused(w, r, ref, id, grant, refusedType)
			return
		}
		body, err := readBody(w, r)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeOAuthError(w, &oauthError{Status: http.StatusRequestEntityTooLarge, Code: "invalid_request",
					Description: fmt.Sprintf("the request body is larger than %d bytes", maxBodyBytes)})
				return
			}
			writeOAuthError(w, invalidRequest("the request body could not be read"))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next(w, r)
	}
}

// chargeClient spends one request of client's /oauth/token bucket (shared with
// /oauth/revoke) once it has authenticated, and answers 429 when it is empty (true: the
// request is answered). So a request with a wrong or missing secret spends only its IP's
// bucket and cannot lock the app out. A public client has no secret: naming it proves
// nothing, so its requests are limited per IP only. grant names the event of a refusal.
func (s *Server) chargeClient(w http.ResponseWriter, r *http.Request, client *config.Client, grant, refusedType string) bool {
	if client.Public() {
		return false
	}
	ref := s.guard.check(s.guard.tokenClient, client.ClientID, s.now())
	if ref == nil {
		return false
	}
	s.tokenRefused(w, r, ref, client.ClientID, grant, refusedType)
	return true
}

// readBody reads at most maxBodyBytes of the request body (more is an *http.MaxBytesError).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return b, nil
}

// tokenRequestClient returns the client_id (HTTP Basic user, else the body's) and grant_type
// a token request names, without judging them.
func tokenRequestClient(r *http.Request, body []byte) (id, grant string) {
	var p struct {
		ClientID  any `json:"client_id"`
		GrantType any `json:"grant_type"`
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/x-www-form-urlencoded":
		f, _ := url.ParseQuery(string(body))
		p.ClientID, p.GrantType = f.Get("client_id"), f.Get("grant_type")
	case "application/json":
		_ = json.Unmarshal(body, &p)
	}
	id, _ = p.ClientID.(string)
	grant, _ = p.GrantType.(string)
	if user, _, ok := r.BasicAuth(); ok {
		if u, err := url.QueryUnescape(user); err == nil {
			id = u
		}
	}
	return id, grant
}

// tokenRefused answers a rate-limited /oauth/token: 429 {"error":"too_many_requests"} with
// Retry-After, and a feacft (fertft for refresh_token) event, limited like every
// unauthenticated event (the client is named, not authenticated). id and grant are what the
// request named (unchecked).
func (s *Server) tokenRefused(w http.ResponseWriter, r *http.Request, ref *refusal, id, grant, refusedType string) {
	ref.setRetryAfter(w)
	oerr := &oauthError{Status: http.StatusTooManyRequests, Code: codeTooManyRequests, Description: ref.description()}
	ev := s.newEvent(r)
	ev.Type = logs.TypeFailedExchange
	switch {
	case refusedType != "":
		ev.Type = refusedType
	case grant == "refresh_token":
		ev.Type = logs.TypeFailedRefresh
	case grant == "authorization_code", grant == "":
	default:
		ev.Details["grant_type"] = clip(grant, 64)
	}
	if c := s.cachedClient(id); c != nil {
		withClient(ev, c)
	} else if id != "" {
		ev.Details["requested_client_id"] = clip(id, 128)
	}
	s.recordRefusal(r, ev, ref)
	writeOAuthError(w, oerr)
}
