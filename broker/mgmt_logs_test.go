package broker

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// logsHarness is a broker with management tokens whose event log is in store.
func logsHarness(t *testing.T, store sessions.Store, mutate func(*config.Config)) *harness {
	t.Helper()
	return newHarness(t, harnessOpts{up: optionalDPoPUp, eventStore: store, mutate: func(c *config.Config) {
		withMgmt(c)
		if mutate != nil {
			mutate(c)
		}
	}})
}

func writeEvent(t *testing.T, h *harness, typ, conn, client, errCode string) string {
	t.Helper()
	ev := &logs.Event{Type: typ, Connection: conn, ClientID: client, Details: map[string]any{}}
	if conn != "" {
		ev.Strategy = "oidc"
	}
	if errCode != "" {
		ev.Details["error"] = errCode
	}
	if err := h.events.Write(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	return ev.LogID
}

func logIDs(t *testing.T, r apiResp) []string {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	var ids []string
	for _, e := range r.list() {
		ids = append(ids, e.(map[string]any)["log_id"].(string))
	}
	return ids
}

var linkRE = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

func TestMgmtLogs(t *testing.T) {
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		h := logsHarness(t, store(), nil)
		base := h.srv.URL
		get := func(path string) apiResp { return api(t, base, "GET", path, tokLogs, nil) }

		s1 := writeEvent(t, h, logs.TypeSuccessLogin, "corp", appClient, "")
		s2 := writeEvent(t, h, logs.TypeSuccessLogin, "other", spaClient, "")
		f1 := writeEvent(t, h, logs.TypeFailedLogin, "corp", appClient, "invalid_dpop_proof")
		f2 := writeEvent(t, h, logs.TypeFailedLogin, "other", spaClient, "use_dpop_nonce")
		a1 := writeEvent(t, h, logs.TypeSuccessAPI, "", "", "")

		for _, tc := range []struct {
			name, q string
			want    []string // newest first
		}{
			{name: "no q: every event, newest first", q: "", want: []string{a1, f2, f1, s2, s1}},
			{name: "q type:s", q: "type:s", want: []string{s2, s1}},
			{name: "q type:f", q: "type:f", want: []string{f2, f1}},
			{name: "q connection:NAME", q: "connection:corp", want: []string{f1, s1}},
			{name: "q client_id:ID", q: "client_id:" + spaClient, want: []string{f2, s2}},
			{name: "q details.error:CODE", q: "details.error:use_dpop_nonce", want: []string{f2}},
			{name: "q AND", q: "type:f AND connection:corp", want: []string{f1}},
			{name: "q implicit AND", q: "type:s client_id:" + appClient, want: []string{s1}},
			{name: "q no match", q: "type:f AND details.error:nope", want: nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := logIDs(t, get("/api/v2/logs?q="+url.QueryEscape(tc.q)))
				if strings.Join(got, ",") != strings.Join(tc.want, ",") {
					t.Errorf("q %q: got %v, want %v", tc.q, got, tc.want)
				}
			})
		}
		t.Run("sort date:1 is oldest first; page/per_page", func(t *testing.T) {
			if got := logIDs(t, get("/api/v2/logs?sort=date:1&per_page=2&page=1")); strings.Join(got, ",") != f1+","+f2 {
				t.Errorf("got %v", got)
			}
		})
		t.Run("include_totals wraps {start, limit, length, total, logs}", func(t *testing.T) {
			r := get("/api/v2/logs?q=type:s&per_page=1&page=1&include_totals=true")
			m := r.obj()
			if m["start"] != float64(1) || m["limit"] != float64(1) || m["length"] != float64(1) || m["total"] != float64(2) {
				t.Fatalf("%s", r.raw)
			}
			if l := m["logs"].([]any); len(l) != 1 || l[0].(map[string]any)["log_id"] != s1 {
				t.Errorf("logs %v", l)
			}
		})
		t.Run("bad paging, sort or q is 400 invalid_query_string; over-long q is 414", func(t *testing.T) {
			wantAPIError(t, get("/api/v2/logs?per_page=101"), 400, "invalid_query_string", "per_page")
			wantAPIError(t, get("/api/v2/logs?page=-1"), 400, "invalid_query_string", "page")
			wantAPIError(t, get("/api/v2/logs?page=20&per_page=100"), 400, "invalid_query_string", "1000")
			wantAPIError(t, get("/api/v2/logs?sort=user_id:1"), 400, "invalid_query_string", "sort")
			wantAPIError(t, get("/api/v2/logs?q="+url.QueryEscape("type:(s")), 400, "invalid_query_string", "")
			wantAPIError(t, get("/api/v2/logs?q="+url.QueryEscape("unknownfield:x")), 400, "invalid_query_string", "")
			wantAPIError(t, get("/api/v2/logs?take=0"), 400, "invalid_query_string", "take")
			wantAPIError(t, get("/api/v2/logs?from=123"), 400, "invalid_query_string", "from")
			wantAPIError(t, get("/api/v2/logs?q="+strings.Repeat("a", logs.MaxQueryLen+1)), 414, "invalid_query_string", "too long")
		})
		t.Run("GET /logs/{id}", func(t *testing.T) {
			r := get("/api/v2/logs/" + f2)
			m := r.obj()
			if r.status != 200 || m["log_id"] != f2 || m["type"] != "f" || m["details"].(map[string]any)["error"] != "use_dpop_nonce" || m["description"] != "Failed Login" {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			wantAPIError(t, get("/api/v2/logs/"+strings.Repeat("0", 56)), 404, "inexistent_log", "The log does not exist.")
			wantAPIError(t, get("/api/v2/logs/not-a-log-id"), 400, "invalid_uri", "log_id")
		})
		t.Run("checkpoint ignores q and sets Link rel=next", func(t *testing.T) {
			r := get("/api/v2/logs?take=2&q=type:f")
			if got := logIDs(t, r); strings.Join(got, ",") != s1+","+s2 {
				t.Fatalf("got %v", got)
			}
			m := linkRE.FindStringSubmatch(r.header.Get("Link"))
			if m == nil || !strings.HasPrefix(m[1], base+"/api/v2/logs?") || !strings.Contains(m[1], "from="+s2) || !strings.Contains(m[1], "take=2") {
				t.Fatalf("Link %q", r.header.Get("Link"))
			}
		})
	})
}

// TestMgmtLogsCheckpointWhileAppending follows rel="next" while events are written: every
// event is seen once, in log_id order, and an empty page's next repeats its URL.
func TestMgmtLogsCheckpointWhileAppending(t *testing.T) {
	forStores(t, func(t *testing.T, store func() sessions.Store) {
		h := logsHarness(t, store(), nil)
		var written, seen []string
		next := h.srv.URL + "/api/v2/logs?take=3"
		for i := range 40 {
			if i < 20 {
				for j := range 2 {
					written = append(written, writeEvent(t, h, logs.TypeSuccessLogin, "corp", appClient, fmt.Sprint(i, j)))
				}
			}
			r := api(t, "", "GET", next, tokLogs, nil)
			ids := logIDs(t, r)
			seen = append(seen, ids...)
			m := linkRE.FindStringSubmatch(r.header.Get("Link"))
			if m == nil {
				t.Fatalf("no Link: %q", r.header.Get("Link"))
			}
			if len(ids) == 0 && m[1] != next {
				t.Fatalf("empty page: next %q, want the same URL %q", m[1], next)
			}
			next = m[1]
			if i >= 20 && len(ids) == 0 {
				break
			}
		}
		if strings.Join(seen, ",") != strings.Join(written, ",") {
			t.Fatalf("checkpoint paging saw %d events, %d written (duplicates or gaps)", len(seen), len(written))
		}
	})
}

func TestMgmtLogsRetention(t *testing.T) {
	t.Run("logs.max_events bounds the store log", func(t *testing.T) {
		h := logsHarness(t, nil, func(c *config.Config) { c.Logs.MaxEvents = 3 })
		var ids []string
		for range 5 {
			ids = append(ids, writeEvent(t, h, logs.TypeSuccessLogin, "corp", appClient, ""))
		}
		got := logIDs(t, api(t, h.srv.URL, "GET", "/api/v2/logs", tokLogs, nil))
		if len(got) != 3 || got[0] != ids[4] || got[2] != ids[2] {
			t.Errorf("got %v", got)
		}
	})
	t.Run("logs.max_age hides and trims older events", func(t *testing.T) {
		h := logsHarness(t, nil, func(c *config.Config) { c.Logs.MaxAge = time.Hour })
		old := writeEvent(t, h, logs.TypeSuccessLogin, "corp", appClient, "")
		h.clock.Advance(2 * time.Hour)
		fresh := writeEvent(t, h, logs.TypeFailedLogin, "corp", appClient, "x")
		if got := logIDs(t, api(t, h.srv.URL, "GET", "/api/v2/logs", tokLogs, nil)); strings.Join(got, ",") != fresh {
			t.Errorf("got %v", got)
		}
		wantAPIError(t, api(t, h.srv.URL, "GET", "/api/v2/logs/"+old, tokLogs, nil), 404, "inexistent_log", "")
	})
	t.Run("serve with Redis: writer settles for 1s; memory: no settle", func(t *testing.T) {
		cfg := config.Default()
		if w := NewEventWriter(cfg, sessions.NewMemory(), nil, "h"); w.Settle != 0 || w.MaxLen != 10000 || w.MaxAge != 720*time.Hour {
			t.Errorf("memory writer %+v", w)
		}
		cfg.Store.Type = "redis"
		if w := NewEventWriter(cfg, sessions.NewMemory(), nil, "h"); w.Settle != time.Second {
			t.Errorf("redis writer settle %v", w.Settle)
		}
	})
	t.Run("a real login is served with its DPoP details", func(t *testing.T) {
		h := logsHarness(t, nil, nil)
		h.login()
		r := api(t, h.srv.URL, "GET", "/api/v2/logs?q=type:s&per_page=1", tokLogs, nil)
		l := r.list()
		if len(l) != 1 {
			t.Fatalf("%s", r.raw)
		}
		ev := l[0].(map[string]any)
		if ev["connection"] != "corp" || ev["client_id"] != appClient || ev["details"].(map[string]any)["dpop_signing_alg"] != "ES256" || !regexp.MustCompile(`^\d{56}$`).MatchString(ev["log_id"].(string)) {
			t.Errorf("event %s", r.raw)
		}
	})
}
