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

// authorizeLimits are the longest accepted /authorize parameter values, in bytes.
var authorizeLimits = map[string]int{
	"response_type": 64, "response_mode": 32, "client_id": 256, "redirect_uri": 2048,
	"scope": 1024, "state": 512, "nonce": 512, "code_challenge": 43, "code_challenge_method": 16,
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
// handler, to the app, as IS-2 requires).
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

// knownClient returns the registered client q names once, or nil.
func (s *Server) knownClient(q url.Values) *ClientConfig {
	if ids := q["client_id"]; len(ids) == 1 {
		return s.clients[ids[0]]
	}
	return nil
}

// guardAuthorize applies the rate limits and the size limits in front of /authorize. A
// limit problem goes back to the app as invalid_request when the client and its redirect_uri
// are valid, else to the user as an error page; each writes an f event.
func (s *Server) guardAuthorize(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := s.now()
		if ref := s.guard.check(s.guard.authorizeIP, ipKey(s.clientIP(r)), now); ref != nil {
			s.authorizeRefused(w, r, ref)
			return
		}
		q, ok := s.boundedQuery(w, r)
		if !ok {
			return
		}
		client := s.knownClient(q)
		if client != nil {
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
			if uri := q["redirect_uri"]; len(uri) == 1 && slices.Contains(client.RedirectURIs, uri[0]) {
				app := &appRequest{ClientID: client.ClientID, RedirectURI: uri[0]}
				if st := q["state"]; len(st) == 1 && len(st[0]) <= authorizeLimits["state"] {
					app.State = st[0]
				}
				s.appError(w, r, app, "invalid_request", desc, codeInvalidRequest, ev)
				return
			}
		}
		s.errorPage(w, r, http.StatusBadRequest, codeInvalidRequest, desc, ev)
	}
}

// guardCallback applies the size limits in front of /login/callback (error page, f event).
func (s *Server) guardCallback(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, ok := s.boundedQuery(w, r)
		if !ok {
			return
		}
		if name, desc := paramProblem(q, callbackLimits, callbackSingle); desc != "" {
			ev := s.newEvent(r)
			if name != "" {
				ev.Details["parameter"] = name
			}
			s.errorPage(w, r, http.StatusBadRequest, codeInvalidRequest, "The identity provider's response is invalid: "+desc+".", ev)
			return
		}
		next(w, r)
	}
}

// boundedQuery parses the query of a login request: longer than maxQueryBytes is 414,
// malformed (bad escape, ';') is 400; both with an error page and an f event.
func (s *Server) boundedQuery(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	if len(r.URL.RawQuery) > maxQueryBytes {
		s.errorPage(w, r, http.StatusRequestURITooLong, codeInvalidRequest,
			fmt.Sprintf("The request is too large: the query string is longer than %d bytes.", maxQueryBytes), s.newEvent(r))
		return nil, false
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.errorPage(w, r, http.StatusBadRequest, codeInvalidRequest,
			"The query string is malformed (invalid percent-encoding or a ';' separator).", s.newEvent(r))
		return nil, false
	}
	return q, true
}

// authorizeRefused answers a rate-limited /authorize with a 429 page and Retry-After, and
// records an f event with details.error too_many_requests (limited like every
// unauthenticated event).
func (s *Server) authorizeRefused(w http.ResponseWriter, r *http.Request, ref *refusal) {
	ref.setRetryAfter(w)
	ev := s.newEvent(r)
	if len(r.URL.RawQuery) <= maxQueryBytes {
		if q, err := url.ParseQuery(r.URL.RawQuery); err == nil {
			if c := s.knownClient(q); c != nil {
				withClient(ev, c)
			}
		}
	}
	ev.Details["rate_limit"] = ref.details()
	s.fail(r, ev, codeTooManyRequests, ref.description())
	renderPage(w, http.StatusTooManyRequests, page{
		Title: "Too many sign-in attempts", Error: codeTooManyRequests,
		Message: fmt.Sprintf("The sign-in service is receiving too many requests. Please try again in %d seconds.", ref.retryAfterSeconds()),
	})
}

// guardToken applies the per-IP limit, the body limit (413) and the per-client limit in front
// of /oauth/token and /oauth/revoke. The body is read once here (≤ maxBodyBytes) and handed on
// in memory. A rate-limited request is recorded as refusedType, or, when it is "", as the token
// endpoint's failure for its grant (feacft, fertft).
func (s *Server) guardToken(next http.HandlerFunc, refusedType string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := s.now()
		if ref := s.guard.check(s.guard.tokenIP, ipKey(s.clientIP(r)), now); ref != nil {
			body, _ := readBody(w, r) // to name the client in the event
			s.tokenRefused(w, r, ref, body, refusedType)
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
		if s.guard.tokenClient != nil {
			if id, _ := tokenRequestClient(r, body); s.clients[id] != nil {
				if ref := s.guard.check(s.guard.tokenClient, id, now); ref != nil {
					s.tokenRefused(w, r, ref, body, refusedType)
					return
				}
			}
		}
		next(w, r)
	}
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
// unauthenticated event (the client is named, not authenticated).
func (s *Server) tokenRefused(w http.ResponseWriter, r *http.Request, ref *refusal, body []byte, refusedType string) {
	ref.setRetryAfter(w)
	oerr := &oauthError{Status: http.StatusTooManyRequests, Code: codeTooManyRequests, Description: ref.description()}
	ev := s.newEvent(r)
	id, grant := tokenRequestClient(r, body)
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
	if c := s.clients[id]; c != nil {
		withClient(ev, c)
	} else if id != "" {
		ev.Details["requested_client_id"] = clip(id, 128)
	}
	ev.Details["error"] = oerr.Code
	ev.Details["error_description"] = oerr.Description
	ev.Details["rate_limit"] = ref.details()
	s.write(r, ev)
	writeOAuthError(w, oerr)
}
