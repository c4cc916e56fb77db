package broker

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// The record of what operators changed (sapi) lives in the admin class, apart from the audit
// trail: an end user rotating a refresh token in a loop (one sertft each) and a read:logs
// token sending PATCH calls it has no scope for (one fapi 403 each, audit class) push out only
// audit events, never the sapi. Every read path still finds it: search, checkpoint paging and
// GET /api/v2/logs/{id}.
func TestAuditFloodsCannotFlushAdminActions(t *testing.T) {
	const flood = 120
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		st := store()
		h := newHarness(t, harnessOpts{up: optionalDPoPUp, store: st, eventStore: st, mutate: func(c *config.Config) {
			withMgmt(c)
			c.Logs.MaxEvents = 20
			c.Logs.Admin.MaxEvents = 5
		}})
		other := idOf(t, h, "other")
		if r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+other, tokAll, map[string]any{"enabled_clients": []string{spaClient}}); r.status != http.StatusOK {
			t.Fatalf("PATCH connection: %d %s", r.status, r.raw)
		}
		sapi := h.newestEntry()
		if sapi.Class != sessions.LogAdmin {
			t.Fatalf("the sapi event is in class %v, want admin", sapi.Class)
		}

		// (A) an end user rotating a refresh token in a loop.
		code := h.codeFor(spaClient, func(q url.Values) { q.Set("scope", "openid offline_access") })
		rt := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, code)}).str("refresh_token")
		for i := range flood {
			r := h.tok(tokReq{client: spaClient, form: refreshGrant(rt)})
			if rt = r.str("refresh_token"); r.status != http.StatusOK || rt == "" {
				t.Fatalf("refresh %d: %d %v", i, r.status, r.body)
			}
		}
		// (B) a read:logs token sending writes it has no scope for.
		for i := range flood {
			if r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+other, tokLogs, map[string]any{}); r.status != http.StatusForbidden {
				t.Fatalf("PATCH %d with a read:logs token: %d %s", i, r.status, r.raw)
			}
		}

		byClass := map[sessions.LogClass]int{}
		es, err := st.LogsAfter(context.Background(), "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			byClass[e.Class]++
		}
		// On Redis count retention is per shard of the event log: at most MaxLogKept(20).
		if byClass[sessions.LogAudit] > sessions.MaxLogKept(20) || byClass[sessions.LogAdmin] != 1 {
			t.Fatalf("the store keeps %v, want at most %d audit events and the one admin event", byClass, sessions.MaxLogKept(20))
		}
		r := api(t, h.srv.URL, "GET", "/api/v2/logs?q="+url.QueryEscape("type:"+logs.TypeSuccessAPI), tokLogs, nil)
		if r.status != http.StatusOK || len(r.list()) != 1 || r.list()[0].(map[string]any)["log_id"] != sapi.ID {
			t.Fatalf("search for the sapi event after the floods: %d %s", r.status, r.raw)
		}
		if r := api(t, h.srv.URL, "GET", "/api/v2/logs/"+sapi.ID, tokLogs, nil); r.status != http.StatusOK || r.obj()["type"] != logs.TypeSuccessAPI {
			t.Fatalf("GET /api/v2/logs/%s after the floods: %d %s", sapi.ID, r.status, r.raw)
		}
		types := apiLogTypes(t, h)
		if len(types) == 0 || types[0] != logs.TypeSuccessAPI {
			t.Fatalf("checkpoint paging starts with %v, want the sapi event first", types[:min(len(types), 3)])
		}
	})
}
