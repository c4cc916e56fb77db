package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// The management API (the identity SaaS's Management API v2: connections, clients, logs and sessions) under /api/v2: static bearer tokens with scopes
// from management.tokens, the SaaS error body, sapi events for successful writes and fapi
// events for failed calls.

// mgmtAuth holds the SHA-256 of every configured token.
type mgmtAuth struct {
	tokens []mgmtToken
	// preCSRFKey is the MAC key of the console sign-in page's CSRF tokens (consoleguard.go),
	// derived from tokens.
	preCSRFKey []byte
}

type mgmtToken struct {
	name   string
	hash   [sha256.Size]byte
	scopes []string
}

func newMgmtAuth(cfg config.Management) *mgmtAuth {
	a := &mgmtAuth{}
	for i, t := range cfg.Tokens {
		name := t.Name
		if name == "" {
			name = fmt.Sprintf("tokens[%d]", i)
		}
		a.tokens = append(a.tokens, mgmtToken{name: name, hash: sha256.Sum256([]byte(t.Token)), scopes: slices.Clone(t.Scopes)})
	}
	a.preCSRFKey = preCSRFKey(a.tokens)
	return a
}

// match returns the token equal to presented, comparing hashes in constant time with every
// configured token (no early exit).
func (a *mgmtAuth) match(presented string) *mgmtToken {
	h := sha256.Sum256([]byte(presented))
	var found *mgmtToken
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(h[:], a.tokens[i].hash[:]) == 1 {
			found = &a.tokens[i]
		}
	}
	return found
}

// mgmtCall is one management request: who made it and what it did, for its event.
type mgmtCall struct {
	w      http.ResponseWriter
	r      *http.Request
	token  *mgmtToken
	body   any    // request body as parsed, secrets removed (writes only)
	connID string // connection touched, for the event
	conn   string
	// userID is the user whose sessions the call read or ended (the event's user_id);
	// details are what the call did, added to the event's details (no secrets).
	userID  string
	details map[string]any
	// detail is why the call was refused, for the fapi event only (never in the answer: it
	// may name internal addresses). No secrets.
	detail string
	// authorized: token grants a scope the route requires (set before the handler runs).
	authorized bool
	// fields is the fields / include_fields selection of a read (nil: every member).
	fields *fieldSelection
}

// setDetail adds key to the details of c's event, keeping those already there (the console's
// details.console among them).
func (c *mgmtCall) setDetail(key string, v any) {
	if c.details == nil {
		c.details = map[string]any{}
	}
	c.details[key] = v
}

// apiError is an error answered with the SaaS error body.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errBody(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_body", "Payload validation error: " + msg}
}

func errQuery(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_query_string", "Query validation error: " + msg}
}

var errNoConnection = &apiError{http.StatusNotFound, "inexistent_connection", "The connection does not exist."}

// storeAPIError maps a store failure: 503 when unreachable, 500 otherwise.
func (s *Server) storeAPIError(err error) *apiError {
	s.log.Error("management API store operation failed", "err", err)
	if storeDown(err) {
		return errStoreUnavailableAPI
	}
	return errInternalAPI
}

// errStoreUnavailableAPI is the management API's answer when the store cannot serve.
var errStoreUnavailableAPI = &apiError{http.StatusServiceUnavailable, codeStoreUnavailable, "The store is unavailable. Try again shortly."}

// storeResult maps the store's answer to a management read or write of one record: nil on
// success, notFound when the record is missing, else storeAPIError.
func (s *Server) storeResult(err error, notFound *apiError) *apiError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sessions.ErrNotFound):
		return notFound
	}
	return s.storeAPIError(err)
}

// loadStored decodes the stored document id that get returns (once the YAML is seeded); what
// names it in errors.
func loadStored[T any](s *Server, c *mgmtCall, id, what string, get func(context.Context, string) ([]byte, error), notFound *apiError) (*T, *apiError) {
	ctx := c.r.Context()
	if _, err := s.reg.current(ctx, false); err != nil {
		return nil, s.storeAPIError(err)
	}
	raw, err := get(ctx, id)
	if aerr := s.storeResult(err, notFound); aerr != nil {
		return nil, aerr
	}
	doc := new(T)
	if err := json.Unmarshal(raw, doc); err != nil {
		return nil, s.storeAPIError(fmt.Errorf("decode %s %s: %w", what, id, err))
	}
	return doc, nil
}

var errInternalAPI = &apiError{http.StatusInternalServerError, "internal_error", "The operation could not be completed."}

// mgmtHandler is a management endpoint: it answers through c.json or returns an error.
type mgmtHandler func(c *mgmtCall) *apiError

func (s *Server) mgmtRoutes(h func(string, http.HandlerFunc)) {
	h = withQueryParams(h) // each route's query parameters (mgmtquery.go)
	h("GET /api/v2/connections", s.mgmt.guard(s, []string{config.ScopeReadConnections}, s.listConnections))
	h("POST /api/v2/connections", s.mgmt.guard(s, []string{config.ScopeCreateConnections}, s.createConnection))
	h("GET /api/v2/connections/{id}", s.mgmt.guard(s, []string{config.ScopeReadConnections}, s.getConnection))
	h("PATCH /api/v2/connections/{id}", s.mgmt.guard(s, []string{config.ScopeUpdateConnections}, s.patchConnection))
	h("DELETE /api/v2/connections/{id}", s.mgmt.guard(s, []string{config.ScopeDeleteConnections}, s.deleteConnection))
	h("GET /api/v2/connections/{id}/clients", s.mgmt.guard(s, []string{config.ScopeReadConnections}, s.listConnectionClients))
	h("PATCH /api/v2/connections/{id}/clients", s.mgmt.guard(s, []string{config.ScopeUpdateConnections}, s.patchConnectionClients))
	s.clientRoutes(h)
	h("GET /api/v2/logs", s.mgmt.guard(s, []string{config.ScopeReadLogs}, s.searchLogs))
	h("GET /api/v2/logs/{id}", s.mgmt.guard(s, []string{config.ScopeReadLogs}, s.getLog))
	h("GET /api/v2/sessions/{id}", s.mgmt.guard(s, []string{config.ScopeReadSessions}, s.getSession))
	h("DELETE /api/v2/sessions/{id}", s.mgmt.guard(s, []string{config.ScopeDeleteSessions}, s.deleteSession))
	h("GET /api/v2/users/{user_id}/sessions", s.mgmt.guard(s, []string{config.ScopeReadSessions}, s.listUserSessions))
	h("DELETE /api/v2/users/{user_id}/sessions", s.mgmt.guard(s, []string{config.ScopeDeleteSessions}, s.deleteUserSessions))
}

// mgmtNotFound answers every other path under /api/v2/ (after authentication).
func (s *Server) mgmtNotFound() http.HandlerFunc {
	return s.mgmt.guard(s, nil, func(*mgmtCall) *apiError {
		return &apiError{http.StatusNotFound, "not_found", "Not Found"}
	})
}

// guard authenticates the bearer token, checks that it grants any of scopes, runs next and
// answers its error, recording sapi/fapi events.
func (a *mgmtAuth) guard(s *Server, scopes []string, next mgmtHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := &mgmtCall{w: w, r: r}
		w.Header().Set("Cache-Control", "no-store")
		if s.mgmtLimited(c, a) {
			return // rate limits per IP and per token (mgmtlimit.go)
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		tok = strings.TrimSpace(tok)
		switch {
		case r.Header.Get("Authorization") == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="management"`)
			s.apiFail(c, &apiError{http.StatusUnauthorized, "missing_authorization", "Missing authentication: send Authorization: Bearer <management token>"})
			return
		case !strings.EqualFold(scheme, "Bearer") || tok == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="management", error="invalid_request"`)
			s.apiFail(c, &apiError{http.StatusUnauthorized, "invalid_token", "Bad HTTP authentication header format: use Authorization: Bearer <management token>"})
			return
		}
		if c.token = a.match(tok); c.token == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="management", error="invalid_token"`)
			msg := "Invalid token"
			if len(a.tokens) == 0 {
				msg = "Invalid token: the management API has no tokens configured (management.tokens)"
			}
			s.apiFail(c, &apiError{http.StatusUnauthorized, "invalid_token", msg})
			return
		}
		if len(scopes) > 0 && !slices.ContainsFunc(scopes, func(sc string) bool { return slices.Contains(c.token.scopes, sc) }) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="management", error="insufficient_scope", scope="`+strings.Join(scopes, " ")+`"`)
			s.apiFail(c, &apiError{http.StatusForbidden, "insufficient_scope", "Insufficient scope, expected any of: " + strings.Join(scopes, ",")})
			return
		}
		c.authorized = len(scopes) > 0
		if c.authorized {
			if err := checkQuery(c); err != nil {
				s.apiFail(c, err)
				return
			}
		}
		if err := next(c); err != nil {
			s.apiFail(c, err)
		}
	}
}

// apiJSON answers status with v as JSON and records a sapi event for writes.
func (s *Server) apiJSON(c *mgmtCall, status int, v any) {
	c.w.Header().Set("Content-Type", "application/json; charset=utf-8")
	c.w.WriteHeader(status)
	_ = json.NewEncoder(c.w).Encode(v)
	s.apiSucceeded(c, status)
}

// apiEmpty answers status without a body (204, or the SaaS's bodiless 202) and records a
// sapi event for writes.
func (s *Server) apiEmpty(c *mgmtCall, status int) {
	c.w.WriteHeader(status)
	s.apiSucceeded(c, status)
}

// apiSucceeded records the sapi event of a write answered with status.
func (s *Server) apiSucceeded(c *mgmtCall, status int) {
	if mgmtWrite(c.r) {
		ev := s.mgmtEvent(c, status)
		ev.Type = logs.TypeSuccessAPI
		ev.Class = logs.ClassAdmin
		s.write(c.r, ev)
	}
}

// mgmtWrite reports a management call that may change the configuration (not GET or HEAD).
func mgmtWrite(r *http.Request) bool {
	return r.Method != http.MethodGet && r.Method != http.MethodHead
}

// mgmtFailClass is the retention class of the fapi event of c. A write refused to a token
// whose scope allowed it (a bad body, a refused discovery check, a conflict) is an
// administrative action: only operators can cause it, so it is kept with the sapi events in
// the admin class. Any other refusal of a valid token (insufficient_scope, a failed read, an
// unknown path) is audit: it names who tried, but a token without a write scope must not be
// able to push the operators' changes out of the admin class, whatever its rate. A call
// without a valid token is unauthenticated (limited, so anonymous calls cannot flush the log).
func mgmtFailClass(c *mgmtCall) logs.Class {
	switch {
	case c.token == nil:
		return logs.ClassUnauthenticated
	case c.authorized && mgmtWrite(c.r):
		return logs.ClassAdmin
	}
	return logs.ClassAudit
}

// apiFail answers e with the SaaS error body and records a fapi event in the class
// mgmtFailClass decides.
func (s *Server) apiFail(c *mgmtCall, e *apiError) {
	c.w.Header().Set("Content-Type", "application/json; charset=utf-8")
	c.w.WriteHeader(e.status)
	_ = json.NewEncoder(c.w).Encode(map[string]any{
		"statusCode": e.status, "error": http.StatusText(e.status), "message": e.message, "errorCode": e.code,
	})
	ev := s.mgmtEvent(c, e.status)
	ev.Type = logs.TypeFailedAPI
	ev.Class = mgmtFailClass(c)
	ev.CredentialCheck = e.status == http.StatusUnauthorized // printed even when the limits drop it
	ev.Details["error"] = map[string]any{"message": s.clipEvent(e.message, 512), "errorCode": e.code}
	if c.detail != "" {
		ev.Details["error"].(map[string]any)["detail"] = s.clipEvent(c.detail, 1024)
	}
	s.write(c.r, ev)
}

// maxEventBodyBytes bounds the JSON of the request body a management event keeps.
const maxEventBodyBytes = 4 << 10

// mgmtEvent builds the sapi/fapi event of c.
func (s *Server) mgmtEvent(c *mgmtCall, status int) *logs.Event {
	ev := s.newEvent(c.r)
	req := map[string]any{"method": c.r.Method, "path": s.clipEvent(c.r.URL.Path, 256)}
	if q := c.r.URL.RawQuery; q != "" {
		req["query"] = s.clipEvent(q, 512)
	}
	if c.body != nil {
		req["body"] = c.body
		if raw, err := json.Marshal(c.body); err != nil || len(raw) > maxEventBodyBytes {
			// A body of up to maxBodyBytes would weigh several times that once escaped: the
			// event keeps a shrunk copy, marked, with the size of the body it was made from.
			req["body"], _ = logs.ShrinkValue(c.body, maxEventBodyBytes)
			req["body_truncated"], req["body_bytes"] = true, len(raw)
		}
	}
	if c.token != nil {
		req["auth"] = map[string]any{"user": c.token.name, "scopes": c.token.scopes}
	}
	for k, v := range c.details {
		ev.Details[k] = v
	}
	ev.Details["request"] = req
	ev.Details["response"] = map[string]any{"statusCode": status}
	ev.Connection, ev.ConnectionID = c.conn, c.connID
	ev.UserID = c.userID
	return ev
}

// decodeBody reads a JSON object body into dst (unknown members refused) and keeps a copy,
// without secrets, for the event.
func decodeBody(c *mgmtCall, dst any) *apiError {
	return decodeJSONBody(c, dst, false)
}

// decodeJSONBody is decodeBody for an object body, or an array body when array.
func decodeJSONBody(c *mgmtCall, dst any, array bool) *apiError {
	if ct := c.r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return errBody("Content-Type must be application/json")
	}
	raw, err := readLimited(c.r, maxBodyBytes)
	if err != nil {
		return &apiError{http.StatusRequestEntityTooLarge, "payload_too_large", "Payload validation error: body larger than 64 KiB"}
	}
	var generic any
	err = json.Unmarshal(raw, &generic)
	if _, isArray := generic.([]any); array && (err != nil || !isArray) {
		return errBody("the body must be a JSON array")
	}
	if _, isObject := generic.(map[string]any); !array && (err != nil || !isObject) {
		return errBody("the body must be a JSON object")
	}
	c.body = redactValue(generic)
	if err := strictMembers(raw, reflect.TypeOf(dst), ""); err != nil {
		return errBody(err.Error())
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return errBody(jsonProblem(err))
	}
	return nil
}

// jsonProblem rewords a decoding error for the API caller.
func jsonProblem(err error) string {
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "Additional properties not allowed: " + strings.Trim(f, `"`)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("Expected type %s but found type %s on property %s", jsonTypeName(te.Type.Kind().String()), te.Value, te.Field)
	}
	return strings.TrimPrefix(msg, "json: ")
}

func jsonTypeName(kind string) string {
	switch kind {
	case "slice":
		return "array"
	case "struct", "map", "ptr":
		return "object"
	case "bool":
		return "boolean"
	}
	return kind
}

// redactValue is redactBody for any JSON value (objects within arrays included).
func redactValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return redactBody(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = redactValue(e)
		}
		return out
	}
	return v
}

// redactBody removes secret members (secretMember: client_secret however its name is cased,
// at any depth) from a request body kept for an event.
func redactBody(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if secretMember(k) {
			out["client_secret_present"] = true
			continue
		}
		out[k] = redactValue(v)
	}
	return out
}
