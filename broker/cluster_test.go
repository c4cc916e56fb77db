package broker

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// TestLoginReplayCheckAndLogSearchOnRedisCluster: the broker on a real 3-master Redis Cluster
// (sessions.NewRedis with several addresses → go-redis ClusterClient): a whole login with
// token and userinfo, the DPoP proof replay check (RFC 9449 §11.1, conformance row
// dpop-proof-replay) across two replicas, and the login log written and searched through the
// management API. Every multi-key operation must stay in
// one hash slot or Redis answers CROSSSLOT.
func TestLoginReplayCheckAndLogSearchOnRedisCluster(t *testing.T) {
	addrs := redistest.StartCluster(t)
	open := func(prefix string) sessions.Store {
		st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: addrs, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	st := open("cluster")
	h := newHarness(t, harnessOpts{up: dpopUp, store: st, eventStore: st, mutate: func(c *config.Config) {
		withMgmt(c)
		c.Store.Type = "redis" // Settle for several writers, as serve configures it
		c.Store.Redis.Addrs = addrs
		c.Clients[1].AllowedOrigins = []string{spaOrigin}
	}})
	// A second replica on the same cluster (its own client), same configuration.
	b2, err := New(h.cfg, Deps{Store: open("cluster"), Events: &logs.Writer{Store: st, Now: h.clock.Now}, Now: h.clock.Now, Keys: testKeys(t, "RS256")})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(b2.Handler())
	t.Cleanup(srv2.Close)

	var sID string
	t.Run("login, token and userinfo on the cluster", func(t *testing.T) {
		q := h.login()
		status, tok, _ := h.token(h.codeForm(q.Get("code")), true)
		if status != http.StatusOK || tok["id_token"] == nil {
			t.Fatalf("token: %d %v", status, tok)
		}
		userinfo := func() httpResult {
			req, _ := http.NewRequest(http.MethodGet, srv2.URL+"/userinfo", nil) // the other replica
			req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
			return h.do(req)
		}
		if r := userinfo(); r.status != http.StatusOK || r.body["email"] != "alice@example.com" {
			t.Errorf("userinfo at replica 2: %d %v", r.status, r.body)
		}
		// The code is single use on the cluster too, and its replay ends the session.
		if status, body, _ := h.token(h.codeForm(q.Get("code")), true); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
			t.Errorf("second redemption: %d %v, want 400 invalid_grant", status, body)
		}
		if r := userinfo(); r.status != http.StatusUnauthorized {
			t.Errorf("userinfo after the code's replay: %d %v, want 401", r.status, r.body)
		}
		ev := h.lastEventOf(logs.TypeSuccessLogin)
		if ev.Details["dpop_returned_from_upstream"] != true {
			t.Errorf("s event: %+v", ev)
		}
		sID = ev.LogID
	})

	t.Run("one proof at two replicas: exactly one success", func(t *testing.T) {
		a, _, _ := testSigners(t)
		p := h.tokenProof(a)
		codes := []string{h.codeFor(spaClient, nil), h.codeFor(spaClient, nil)}
		bases := []string{h.srv.URL, srv2.URL}
		results := make([]httpResult, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				form := h.codeGrant(spaClient, codes[i])
				form.Set("client_id", spaClient)
				req, _ := http.NewRequest(http.MethodPost, bases[i]+"/oauth/token", strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("DPoP", p)
				results[i] = h.do(req)
			})
		}
		wg.Wait()
		ok, replay := 0, 0
		for _, r := range results {
			switch {
			case r.status == http.StatusOK && r.str("token_type") == "DPoP":
				ok++
			case r.status == http.StatusBadRequest && r.str("error") == "invalid_dpop_proof":
				replay++
			}
		}
		if ok != 1 || replay != 1 {
			t.Fatalf("same proof twice on the cluster: %+v, want one DPoP token and one invalid_dpop_proof", results)
		}
		// And sequentially on one replica.
		r := h.tok(tokReq{client: spaClient, form: h.codeGrant(spaClient, h.codeFor(spaClient, nil)), proof: p})
		wantOAuth(t, r, http.StatusBadRequest, "invalid_dpop_proof", "")
	})

	t.Run("log write and search on the cluster", func(t *testing.T) {
		if sID == "" {
			t.Skip("no login event from the first subtest")
		}
		// A failed login through the other replica lands in the same log.
		resp, _ := get(t, h.browser(), srv2.URL+"/authorize?"+url.Values{
			"response_type": {"code"}, "client_id": {appClient}, "redirect_uri": {h.app.URL + "/cb"},
			"scope": {"openid"}, "state": {"s"}, "code_challenge": {s256(testVerifier)},
			"code_challenge_method": {"S256"}, "connection": {"nope"},
		}.Encode())
		if resp.Request.URL.Query().Get("error") != "invalid_request" {
			t.Fatalf("unknown connection: ended at %s", resp.Request.URL)
		}
		search := func(q string) []string {
			return logIDs(t, api(t, h.srv.URL, "GET", "/api/v2/logs?per_page=100&q="+url.QueryEscape(q), tokLogs, nil))
		}
		if ids := search("type:s AND connection:corp"); len(ids) == 0 || !containsID(ids, sID) {
			t.Errorf("type:s search %v lacks the login %s", ids, sID)
		}
		fIDs := search("type:f AND details.error:invalid_request")
		if len(fIDs) != 1 {
			t.Fatalf("type:f search: %v, want the one failed login", fIDs)
		}
		r := api(t, srv2.URL, "GET", "/api/v2/logs/"+fIDs[0], tokLogs, nil)
		if r.status != http.StatusOK || r.obj()["type"] != "f" {
			t.Errorf("GET /api/v2/logs/%s at replica 2: %d %s", fIDs[0], r.status, r.raw)
		}
		// Checkpoint mode walks every event once, ascending (after the 1 s settle horizon that
		// a redis store gets for several writers).
		h.clock.Advance(2 * time.Second)
		var all []string
		from := ""
		for page := 0; page < 50; page++ {
			ids := logIDs(t, api(t, h.srv.URL, "GET", fmt.Sprintf("/api/v2/logs?take=2&from=%s", from), tokLogs, nil))
			if len(ids) == 0 {
				break
			}
			all = append(all, ids...)
			from = ids[len(ids)-1]
		}
		n, err := countEvents(h.events)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != n || !containsID(all, sID) || !containsID(all, fIDs[0]) {
			t.Errorf("checkpoint walk got %d events %v, the log holds %d", len(all), all, n)
		}
		for i := 1; i < len(all); i++ {
			if all[i-1] >= all[i] {
				t.Errorf("checkpoint order broken at %d: %s then %s", i, all[i-1], all[i])
			}
		}
	})
}

func containsID(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// countEvents counts the stored events (bounded by logs.MaxReachable).
func countEvents(w *logs.Writer) (int, error) {
	evs, err := w.Recent(context.Background(), "", logs.MaxReachable)
	return len(evs), err
}
