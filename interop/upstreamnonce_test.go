package interop

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// switchUpstreamNonce asks upstream.mjs to swap in a provider with (true) or without (false)
// DPoP server nonces, like a new deployment behind the same issuer.
func switchUpstreamNonce(t *testing.T, upstreamURL string, require bool) {
	t.Helper()
	q := "false"
	if require {
		q = "true"
	}
	resp, err := http.Post(upstreamURL+"/__dpop_nonce?require="+q, "text/plain", nil)
	if err != nil {
		t.Fatalf("switch upstream nonces: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("switch upstream nonces: %d %s", resp.StatusCode, body)
	}
}

// waitLogin waits (bounded) for the n-th (1-based) s or f event and returns it.
func waitLogin(t *testing.T, p *proc, n int) loginEvent {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		var logins []loginEvent
		for _, ev := range p.Events() {
			if ev.Type == "s" || ev.Type == "f" {
				logins = append(logins, ev)
			}
		}
		if len(logins) >= n {
			return logins[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no login event #%d (s or f) on the broker's stdout within %v", n, eventTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// TestLoginAfterUpstreamStopsUsingNonces: oidc-provider demands DPoP nonces, then is replaced
// behind the same issuer by a deployment without them (no nonce secret: it refuses any proof
// carrying a nonce with invalid_dpop_proof "DPoP nonces are not supported"), while the broker
// keeps running with the old nonce remembered. The next login succeeds: the broker drops the
// stale nonce and retries once without it (details.dpop_nonce_dropped). When nonces come back,
// the broker answers the new challenge as usual.
func TestLoginAfterUpstreamStopsUsingNonces(t *testing.T) {
	t.Parallel()
	w := setup(t, scenario{mode: "nonce", alg: "ES256", fetchUserinfo: true})
	status, body, raw := w.login(t)
	wantSuccess(t, status, body, raw)
	ev := waitLogin(t, w.broker.proc, 1)
	wantType(t, ev, "s")
	wantDetail(t, ev, "dpop_nonce_used", true)
	wantDetail(t, ev, "dpop_nonce_retries", 1)

	switchUpstreamNonce(t, w.upstreamURL, false)
	before := getStats(t, w.upstreamURL)
	status, body, raw = w.login(t)
	wantSuccess(t, status, body, raw)
	ev = waitLogin(t, w.broker.proc, 2)
	wantType(t, ev, "s")
	wantDetail(t, ev, "dpop_nonce_dropped", true)
	wantDetail(t, ev, "dpop_nonce_used", false)
	wantDetail(t, ev, "dpop_nonce_retries", 0)
	wantDetail(t, ev, "dpop_returned_from_upstream", true)
	wantUserinfoFetch(t, ev, true)
	after := getStats(t, w.upstreamURL)
	if got, withNonce := after.TokenRequests-before.TokenRequests, after.NonceProofs-before.NonceProofs; got != 2 || withNonce != 1 {
		t.Errorf("upstream saw %d token requests (%d with a nonce), want 2: the stale nonce refused, then one without", got, withNonce)
	}

	switchUpstreamNonce(t, w.upstreamURL, true)
	status, body, raw = w.login(t)
	wantSuccess(t, status, body, raw)
	ev = waitLogin(t, w.broker.proc, 3)
	wantType(t, ev, "s")
	wantDetail(t, ev, "dpop_nonce_used", true)
	wantDetail(t, ev, "dpop_nonce_retries", 1)
	if _, ok := ev.Details["dpop_nonce_dropped"]; ok {
		t.Errorf("details.dpop_nonce_dropped on a login with nothing stale (event %s)", eventJSON(ev))
	}
}
