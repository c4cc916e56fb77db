package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Query strings of the management API. Each route names the parameters it reads; any other
// parameter is refused with 400 invalid_query_string, so a filter the broker does not know
// (a misspelt name, one of a newer SaaS release) never silently answers every record.
// fields and include_fields select the members of the objects a read answers.

// mgmtQueryParams are the query parameters each management route accepts, by the pattern it
// is registered with in mgmtRoutes. A route absent here accepts none. Only strategy may be
// repeated.
var mgmtQueryParams = map[string][]string{
	"GET /api/v2/connections":              {"strategy", "name", "fields", "include_fields", "from", "take", "page", "per_page", "include_totals"},
	"GET /api/v2/connections/{id}":         {"fields", "include_fields"},
	"GET /api/v2/connections/{id}/clients": {"take", "from"},
	"GET /api/v2/clients":                  {"fields", "include_fields", "page", "per_page", "include_totals", "from", "take"},
	"GET /api/v2/clients/{id}":             {"fields", "include_fields"},
	"GET /api/v2/logs":                     {"q", "search", "page", "per_page", "sort", "fields", "include_fields", "include_totals", "from", "take"},
	"GET /api/v2/users/{user_id}/sessions": {"from", "take", "include_totals"},
}

// repeatableParams may appear more than once in a query string.
var repeatableParams = map[string]bool{"strategy": true}

// maxSelectedFields bounds the names of one fields parameter; maxUnknownNamed the unknown
// parameters one refusal names.
const (
	maxSelectedFields = 50
	maxUnknownNamed   = 10
)

var fieldName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

type queryParamsKey struct{}

// withQueryParams wraps the route registration of mgmtRoutes: each handler finds its
// route's accepted parameters in the request context (guard checks them after the token).
func withQueryParams(h func(string, http.HandlerFunc)) func(string, http.HandlerFunc) {
	return func(pattern string, f http.HandlerFunc) {
		accepted := mgmtQueryParams[pattern]
		h(pattern, func(w http.ResponseWriter, r *http.Request) {
			f(w, r.WithContext(context.WithValue(r.Context(), queryParamsKey{}, accepted)))
		})
	}
}

// fieldSelection is a parsed fields / include_fields pair: the members named are kept
// (include) or removed (!include).
type fieldSelection struct {
	names   map[string]bool
	include bool
}

// checkQuery refuses an undecodable query string, parameters the route does not accept and
// repeated ones, and parses fields / include_fields into c.fields where the route accepts
// them.
func checkQuery(c *mgmtCall) *apiError {
	accepted, _ := c.r.Context().Value(queryParamsKey{}).([]string)
	// URL.Query drops the pairs it cannot decode; a dropped filter would widen the answer.
	q, err := url.ParseQuery(c.r.URL.RawQuery)
	if err != nil {
		return errQuery("the query string cannot be decoded (a bad %-escape or a ';')")
	}
	var unknown []string
	for _, name := range slices.Sorted(maps.Keys(q)) {
		switch {
		case !slices.Contains(accepted, name):
			unknown = append(unknown, name)
		case len(q[name]) > 1 && !repeatableParams[name]:
			return errQuery(name + " must not be repeated")
		}
	}
	if len(unknown) > 0 {
		if len(unknown) > maxUnknownNamed {
			unknown = append(unknown[:maxUnknownNamed], "…")
		}
		for i, u := range unknown {
			unknown[i] = clipName(u)
		}
		also := "this endpoint accepts no query parameters"
		if len(accepted) > 0 {
			also = "this endpoint accepts " + strings.Join(accepted, ", ")
		}
		return errQuery(fmt.Sprintf("Additional properties not allowed: %s (%s)", strings.Join(unknown, ", "), also))
	}
	if !slices.Contains(accepted, "fields") {
		return nil
	}
	sel, aerr := parseFieldSelection(q.Get("fields"), q.Get("include_fields"))
	c.fields = sel
	return aerr
}

// clipName shortens a parameter name echoed in an error message.
func clipName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// parseFieldSelection parses fields (comma-separated top-level member names; empty: every
// member) and include_fields (true, the default, or false).
func parseFieldSelection(fields, includeFields string) (*fieldSelection, *apiError) {
	sel := &fieldSelection{names: map[string]bool{}, include: true}
	switch includeFields {
	case "", "true":
	case "false":
		sel.include = false
	default:
		return nil, errQuery("include_fields must be true or false")
	}
	n := 0
	for name := range strings.SplitSeq(fields, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if n++; n > maxSelectedFields {
			return nil, errQuery(fmt.Sprintf("fields names more than %d members", maxSelectedFields))
		}
		if !fieldName.MatchString(name) {
			return nil, errQuery(fmt.Sprintf("fields: %q is not a member name (top-level members only: letters, digits and _)", clipName(name)))
		}
		sel.names[name] = true
	}
	if len(sel.names) == 0 {
		return nil, nil // every member
	}
	return sel, nil
}

// selectFields returns v (which encodes as a JSON object) with only the members c's
// fields / include_fields select; v itself without a selection.
func (s *Server) selectFields(c *mgmtCall, v any) (any, *apiError) {
	if c.fields == nil {
		return v, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, s.internalAPIError(fmt.Errorf("encode answer for fields: %w", err))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, s.internalAPIError(fmt.Errorf("answer for fields is not an object: %w", err))
	}
	for k := range m {
		if c.fields.names[k] != c.fields.include {
			delete(m, k)
		}
	}
	return m, nil
}

// selectEach applies selectFields to every element of items (an empty list stays []).
func selectEach[T any](s *Server, c *mgmtCall, items []T) (any, *apiError) {
	if c.fields == nil {
		if items == nil {
			return []T{}, nil
		}
		return items, nil
	}
	out := make([]any, 0, len(items))
	for i := range items {
		v, aerr := s.selectFields(c, items[i])
		if aerr != nil {
			return nil, aerr
		}
		out = append(out, v)
	}
	return out, nil
}

// internalAPIError logs err and answers 500 without its text.
func (s *Server) internalAPIError(err error) *apiError {
	s.log.Error("management API answer failed", "err", err)
	return errInternalAPI
}
