package broker

import (
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// TestOktaStrategy: a strategy okta connection derives its issuer from options.domain (an
// explicit http:// origin is accepted for loopback only) and logs in with Okta's behaviour:
// use_dpop_nonce on the first token request, a DPoP-bound answer, userinfo with ath.
func TestOktaStrategy(t *testing.T) {
	h := newHarness(t, harnessOpts{
		up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true},
		mutate: func(c *Config) {
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

func TestOktaDomainValidation(t *testing.T) {
	for _, tc := range []struct{ name, domain, want string }{
		{name: "http off loopback refused", domain: "http://dev-1.okta.com", want: "only for loopback"},
		{name: "path refused", domain: "dev-1.okta.com/oauth2/default", want: "must be a host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			cfg.Connections = []ConnectionConfig{{Name: "okta", Strategy: "okta", Options: ConnectionOptions{
				Domain: tc.domain, ClientID: "c", ClientSecret: "s", Scope: "openid", Type: "back_channel",
			}}}
			var found bool
			for _, fe := range cfg.validate(false) {
				if fe.Key == "connections[0].options.domain" && strings.Contains(fe.Reason, tc.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no connections[0].options.domain error containing %q: %v", tc.want, cfg.validate(false))
			}
		})
	}
}
