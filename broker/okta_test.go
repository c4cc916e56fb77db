package broker

import (
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// TestOktaStrategy: a strategy okta connection derives its issuer from options.domain (an
// explicit http:// origin is accepted for loopback only) and logs in with Okta's behaviour:
// use_dpop_nonce on the first token request, a DPoP-bound answer, userinfo with ath.
func TestOktaStrategy(t *testing.T) {
	h := newHarness(t, harnessOpts{
		up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true},
		mutate: func(c *config.Config) {
			o := &c.Connections[0].Options
			c.Connections[0].Strategy = "okta"
			o.Domain, o.Issuer = o.Issuer, "" // org authorization server at the upstream's origin
		},
	})
	if q := h.login(); q.Get("code") == "" {
		t.Fatalf("login failed: %v", q)
	}
	ev := h.lastEventOf("s")
	if ev.Strategy != "okta" || !strings.HasPrefix(ev.UserID, "okta|corp|") {
		t.Errorf("strategy %q user %q, want okta", ev.Strategy, ev.UserID)
	}
	fetch, _ := ev.Details["upstream_userinfo_fetch"].(map[string]any)
	if ev.Details["dpop_returned_from_upstream"] != true || ev.Details["dpop_nonce_used"] != true || fetch["dpop_bound"] != true {
		t.Errorf("okta login details = %v", ev.Details)
	}
	if n := h.up.Stats.TokenRequests.Load(); n != 2 {
		t.Errorf("token requests = %d, want 2 (nonce challenge then success)", n)
	}
}
