package broker

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

func TestMgmtUnknownQueryParametersRefused(t *testing.T) {
	h := logsHarness(t, nil, withSessionTokens)
	base := h.srv.URL
	corpID := config.DeriveConnectionID("corp")
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		code, msg                 string
	}{
		{name: "connections list: unknown filter", method: "GET", path: "/api/v2/connections?strategy=oidc&stratgy=okta", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "Additional properties not allowed: stratgy (this endpoint accepts strategy, name,"},
		{name: "connections list: several unknown, sorted", method: "GET", path: "/api/v2/connections?zeta=1&alpha=2", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "not allowed: alpha, zeta"},
		{name: "a refusal names at most 10 unknown parameters", method: "GET", path: "/api/v2/logs?" + strings.Repeat("x", 70) + "=1&p01=1&p02=1&p03=1&p04=1&p05=1&p06=1&p07=1&p08=1&p09=1&p10=1&p11=1", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "not allowed: p01, p02, p03, p04, p05, p06, p07, p08, p09, p10, … (this endpoint"},
		{name: "unknown and repeated: the first by name is reported", method: "GET", path: "/api/v2/logs?q=a&q=b&zz=1", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "q must not be repeated"},
		{name: "connection by id: a list parameter", method: "GET", path: "/api/v2/connections/" + corpID + "?page=0", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "not allowed: page (this endpoint accepts fields, include_fields)"},
		{name: "logs: unknown parameter", method: "GET", path: "/api/v2/logs?type=s", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "not allowed: type"},
		{name: "log by id: any parameter", method: "GET", path: "/api/v2/logs/" + strings.Repeat("1", 56) + "?fields=type", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "this endpoint accepts no query parameters"},
		{name: "user sessions: unknown parameter", method: "GET", path: "/api/v2/users/u1/sessions?page=1", token: tokSessions,
			status: 400, code: "invalid_query_string", msg: "not allowed: page"},
		{name: "PATCH: any parameter", method: "PATCH", path: "/api/v2/connections/" + corpID + "?dry_run=true", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "not allowed: dry_run"},
		{name: "DELETE: any parameter", method: "DELETE", path: "/api/v2/connections/" + corpID + "?force=1", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "not allowed: force"},
		{name: "repeated q", method: "GET", path: "/api/v2/logs?q=type:s&q=type:f", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "q must not be repeated"},
		{name: "repeated fields", method: "GET", path: "/api/v2/connections?fields=id&fields=name", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "fields must not be repeated"},
		{name: "a bad %-escape (would drop the filter)", method: "GET", path: "/api/v2/logs?q=type:f%zz", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "the query string cannot be decoded"},
		{name: "a ';' separator", method: "GET", path: "/api/v2/connections?name=corp;strategy=okta", token: tokAll,
			status: 400, code: "invalid_query_string", msg: "the query string cannot be decoded"},
		{name: "without a token: 401 before the query is read", method: "GET", path: "/api/v2/connections?nope=1", token: "",
			status: 401, code: "missing_authorization", msg: "Missing authentication"},
		{name: "token without the scope: 403 before the query is read", method: "GET", path: "/api/v2/logs?nope=1", token: tokRead,
			status: 403, code: "insufficient_scope", msg: "read:logs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := api(t, base, tc.method, tc.path, tc.token, nil)
			wantAPIError(t, r, tc.status, tc.code, tc.msg)
			ev := h.lastEvent()
			e, _ := ev.Details["error"].(map[string]any)
			if ev.Type != logs.TypeFailedAPI || e["errorCode"] != tc.code {
				t.Errorf("last event %s details.error %v, want fapi %s", ev.Type, e, tc.code)
			}
		})
	}
	t.Run("the connection is unchanged by the refused PATCH and DELETE", func(t *testing.T) {
		if r := api(t, base, "GET", "/api/v2/connections/"+corpID, tokAll, nil); r.status != 200 || r.obj()["name"] != "corp" {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	})
	t.Run("strategy may be repeated; every accepted parameter of the list together", func(t *testing.T) {
		r := api(t, base, "GET", "/api/v2/connections?strategy=oidc&strategy=okta&name=corp&fields=id&include_fields=true&page=0&per_page=5&include_totals=false", tokAll, nil)
		if r.status != 200 || len(r.list()) != 1 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	})
	t.Run("the SDK's defaults on the user sessions list are accepted", func(t *testing.T) {
		if r := api(t, base, "GET", "/api/v2/users/u1/sessions?include_totals=true&take=50", tokSessions, nil); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	})
}

func TestMgmtLogsSearchIsQ(t *testing.T) {
	h := logsHarness(t, nil, nil)
	base := h.srv.URL
	s1 := writeEvent(t, h, logs.TypeSuccessLogin, "corp", appClient, "")
	f1 := writeEvent(t, h, logs.TypeFailedLogin, "corp", appClient, "invalid_dpop_proof")
	for _, tc := range []struct {
		name, query string
		want        []string
	}{
		{name: "search filters like q", query: "search=" + url.QueryEscape("type:s"), want: []string{s1}},
		{name: "q filters", query: "q=" + url.QueryEscape("type:f"), want: []string{f1}},
		{name: "q and search with the same value", query: "q=type:f&search=type:f", want: []string{f1}},
		{name: "neither: every event", query: "", want: []string{f1, s1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := logIDs(t, api(t, base, "GET", "/api/v2/logs?"+tc.query, tokLogs, nil)); !slices.Equal(got, tc.want) {
				t.Errorf("log ids %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("search with include_totals, as the SDK sends it", func(t *testing.T) {
		r := api(t, base, "GET", "/api/v2/logs?page=0&per_page=50&include_totals=true&search="+url.QueryEscape("type:s"), tokLogs, nil)
		m := r.obj()
		l, _ := m["logs"].([]any)
		if r.status != 200 || m["total"] != float64(1) || len(l) != 1 || l[0].(map[string]any)["log_id"] != s1 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	})
	t.Run("q and search that differ are refused", func(t *testing.T) {
		wantAPIError(t, api(t, base, "GET", "/api/v2/logs?q=type:s&search=type:f", tokLogs, nil), 400, "invalid_query_string", "search is another name of q")
	})
	t.Run("a malformed search is refused like a malformed q", func(t *testing.T) {
		wantAPIError(t, api(t, base, "GET", "/api/v2/logs?search="+url.QueryEscape("type:(s"), tokLogs, nil), 400, "invalid_query_string", "")
	})
}

// members returns the sorted member names of a JSON object.
func members(v any) []string {
	m, _ := v.(map[string]any)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestMgmtFieldSelection(t *testing.T) {
	h := logsHarness(t, nil, withClientsMgmt)
	base := h.srv.URL
	writeEvent(t, h, logs.TypeSuccessLogin, "corp", appClient, "")
	writeEvent(t, h, logs.TypeFailedLogin, "other", spaClient, "use_dpop_nonce")
	corpID := config.DeriveConnectionID("corp")
	allConnectionMembers := members(api(t, base, "GET", "/api/v2/connections?name=corp", tokAll, nil).list()[0])

	for _, tc := range []struct {
		name, path string
		token      string              // default tokAll
		items      func(apiResp) []any // the objects the selection applies to
		want       []string            // their members, sorted
	}{
		{name: "connections list: include", path: "/api/v2/connections?fields=name,id",
			items: apiResp.list, want: []string{"id", "name"}},
		{name: "connections list: spaces and an empty name are ignored", path: "/api/v2/connections?fields=" + url.QueryEscape(" name , ,strategy,"),
			items: apiResp.list, want: []string{"name", "strategy"}},
		{name: "connections list: exclude", path: "/api/v2/connections?fields=options,realms,is_domain_connection&include_fields=false",
			items: apiResp.list, want: slices.DeleteFunc(slices.Clone(allConnectionMembers), func(m string) bool {
				return m == "options" || m == "realms" || m == "is_domain_connection"
			})},
		{name: "connections list: a name the object lacks selects nothing", path: "/api/v2/connections?fields=id,authentication",
			items: apiResp.list, want: []string{"id"}},
		{name: "connections list with include_totals: the wrapper is kept", path: "/api/v2/connections?fields=id&include_totals=true",
			items: func(r apiResp) []any { l, _ := r.obj()["connections"].([]any); return l }, want: []string{"id"}},
		{name: "connections checkpoint page", path: "/api/v2/connections?fields=name&take=1",
			items: func(r apiResp) []any { l, _ := r.obj()["connections"].([]any); return l }, want: []string{"name"}},
		{name: "connection by id", path: "/api/v2/connections/" + corpID + "?fields=enabled_clients,name",
			items: func(r apiResp) []any { return []any{r.obj()} }, want: []string{"enabled_clients", "name"}},
		{name: "connection by id: exclude options", path: "/api/v2/connections/" + corpID + "?fields=options&include_fields=false",
			items: func(r apiResp) []any { return []any{r.obj()} },
			want:  slices.DeleteFunc(append(slices.Clone(allConnectionMembers), "enabled_clients"), func(m string) bool { return m == "options" })},
		{name: "logs", path: "/api/v2/logs?fields=type,log_id",
			items: apiResp.list, want: []string{"log_id", "type"}},
		{name: "logs with include_totals", path: "/api/v2/logs?fields=type&include_totals=true",
			items: func(r apiResp) []any { l, _ := r.obj()["logs"].([]any); return l }, want: []string{"type"}},
		{name: "logs checkpoint", path: "/api/v2/logs?fields=log_id&take=10",
			items: apiResp.list, want: []string{"log_id"}},
		{name: "include_fields without fields: every member", path: "/api/v2/connections?include_fields=false",
			items: apiResp.list, want: allConnectionMembers},
		{name: "clients list", path: "/api/v2/clients?fields=client_id,name", token: tokClients,
			items: apiResp.list, want: []string{"client_id", "name"}},
		{name: "clients list with include_totals: exclude", path: "/api/v2/clients?fields=callbacks,allowed_logout_urls,allowed_origins,apis,connections&include_fields=false&include_totals=true", token: tokClients,
			items: func(r apiResp) []any { l, _ := r.obj()["clients"].([]any); return l },
			want:  []string{"backchannel_logout_session_required", "client_id", "dpop_bound_access_tokens", "name", "require_proof_of_possession", "token_endpoint_auth_method"}},
		{name: "clients checkpoint page", path: "/api/v2/clients?fields=client_id&take=1", token: tokClients,
			items: func(r apiResp) []any { l, _ := r.obj()["clients"].([]any); return l }, want: []string{"client_id"}},
		{name: "client by id", path: "/api/v2/clients/" + appClient + "?fields=connections,client_id", token: tokClients,
			items: func(r apiResp) []any { return []any{r.obj()} }, want: []string{"client_id", "connections"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := tc.token
			if token == "" {
				token = tokAll
			}
			r := api(t, base, "GET", tc.path, token, nil)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			items := tc.items(r)
			if len(items) == 0 {
				t.Fatalf("no objects in %s", r.raw)
			}
			slices.Sort(tc.want)
			for _, it := range items {
				if got := members(it); !slices.Equal(got, tc.want) {
					t.Errorf("members %v, want %v (%s)", got, tc.want, r.raw)
				}
			}
		})
	}
	for _, tc := range []struct {
		name, path, msg string
	}{
		{name: "include_fields not a boolean", path: "/api/v2/connections?fields=id&include_fields=yes", msg: "include_fields must be true or false"},
		{name: "a nested member name", path: "/api/v2/connections?fields=options.issuer", msg: `fields: "options.issuer" is not a member name`},
		{name: "more than 50 names", path: "/api/v2/logs?fields=" + strings.Repeat("type,", 51), msg: "more than 50"},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			wantAPIError(t, api(t, base, "GET", tc.path, tokAll, nil), 400, "invalid_query_string", tc.msg)
		})
	}
}
