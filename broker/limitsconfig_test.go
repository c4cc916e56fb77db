package broker

import (
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
)

// TestUserinfoManagementAndRefreshLimitersBuiltByDefault: the limiters of /userinfo, the
// management API and refresh-token families are built from a configuration that does not
// mention them, none with rate_limits.enabled false, and a rate of "0" builds none.
func TestUserinfoManagementAndRefreshLimitersBuiltByDefault(t *testing.T) {
	configtest.SetEnv(t)
	cfg, err := config.Parse([]byte(configtest.ValidYAML))
	if err != nil {
		t.Fatal(err)
	}
	g, err := newGuard(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.userinfoIP == nil || g.userinfoSession == nil || g.mgmtIP == nil || g.mgmtToken == nil || g.refreshFamily == nil {
		t.Fatalf("a default limiter is missing: %+v", g)
	}
	off, err := config.Parse([]byte(configtest.ValidYAML + "rate_limits: { enabled: false }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := newGuard(off, nil); g.userinfoIP != nil || g.userinfoSession != nil || g.mgmtIP != nil || g.mgmtToken != nil || g.refreshFamily != nil {
		t.Fatal("limiters built with rate_limits.enabled false")
	}
	cfg.RateLimits.Userinfo.PerSession.Rate = "0"
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatal(config.FieldErrors(errs))
	}
	if g, _ := newGuard(cfg, nil); g.userinfoSession != nil || g.userinfoIP == nil {
		t.Fatalf("0 must mean unlimited: %+v", g)
	}
}
