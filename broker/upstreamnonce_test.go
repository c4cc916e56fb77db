package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// loginEvent runs one login for the confidential app and returns its s event.
func (h *harness) loginEvent() logs.Event {
	h.t.Helper()
	if q := h.login(); q.Get("code") == "" {
		h.t.Fatalf("app callback query = %v, want a code", q)
	}
	ev := h.lastEvent()
	if ev.Type != logs.TypeSuccessLogin {
		h.t.Fatalf("event type %q (details %v), want s", ev.Type, ev.Details)
	}
	return ev
}

// wantNonceDetails checks an s event's upstream nonce details (dpop_nonce_dropped absent = false).
func wantNonceDetails(t *testing.T, ev logs.Event, used bool, retries int, dropped bool) {
	t.Helper()
	gotDropped, _ := ev.Details["dpop_nonce_dropped"].(bool)
	if ev.Details["dpop_nonce_used"] != used || fmt.Sprint(ev.Details["dpop_nonce_retries"]) != fmt.Sprint(retries) || gotDropped != dropped {
		t.Errorf("details = %v, want dpop_nonce_used %v, dpop_nonce_retries %d, dpop_nonce_dropped %v", ev.Details, used, retries, dropped)
	}
}

// An upstream that stops using DPoP nonces without the broker restarting (reconfigured, or a
// new deployment behind the same issuer) refuses the nonce the broker remembers with
// invalid_dpop_proof. The login still succeeds: the broker drops the stale nonce, retries once
// without it, and says so in the s event. When the upstream demands nonces again, the broker
// answers the new challenge as usual.
func TestLoginSucceedsWhenUpstreamStopsUsingNonces(t *testing.T) {
	h := newHarness(t, harnessOpts{up: demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true}})
	wantNonceDetails(t, h.loginEvent(), true, 1, false)

	h.up.SetRequireNonce(false)
	rejected := h.up.Stats.ProofsRejected.Load()
	ev := h.loginEvent()
	wantNonceDetails(t, ev, false, 0, true)
	if ev.Details["dpop_returned_from_upstream"] != true {
		t.Errorf("dpop_returned_from_upstream = %v, want true", ev.Details["dpop_returned_from_upstream"])
	}
	if got := h.up.Stats.ProofsRejected.Load() - rejected; got != 2 {
		t.Errorf("upstream rejected %d proofs, want 2: the stale token-endpoint and userinfo nonces, once each", got)
	}
	wantNonceDetails(t, h.loginEvent(), false, 0, false) // nothing stale left

	h.up.SetRequireNonce(true)
	wantNonceDetails(t, h.loginEvent(), true, 1, false)
}

// A remembered upstream nonce is sent for at most dpop.DefaultNonceMaxAge after a response
// last confirmed it; after a longer pause the first proof goes without one, and an upstream
// that still wants nonces hands out a fresh one.
func TestUpstreamNonceOlderThanMaxAgeIsNotSent(t *testing.T) {
	h := newHarness(t, harnessOpts{
		up:              demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true, IDTokenTTL: time.Hour},
		upstreamOnClock: true,
	})
	wantNonceDetails(t, h.loginEvent(), true, 1, false)
	challenges := h.up.Stats.NonceChallenges.Load()
	wantNonceDetails(t, h.loginEvent(), true, 0, false) // the remembered nonce is sent
	if got := h.up.Stats.NonceChallenges.Load() - challenges; got != 0 {
		t.Fatalf("upstream challenged %d times although the broker's nonce was fresh", got)
	}

	h.clock.Advance(dpop.DefaultNonceMaxAge + time.Second)
	withNonce := h.up.Stats.NonceProofs.Load()
	wantNonceDetails(t, h.loginEvent(), true, 1, false)
	if got := h.up.Stats.NonceProofs.Load() - withNonce; got != 2 {
		t.Fatalf("upstream saw %d proofs with a nonce, want 2: only the retries after the challenges, "+
			"the first token and userinfo proofs without the expired nonces", got)
	}
}
