package broker

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestSingleSignOnWritesSessionForNewAppOrSlide: a single sign-on login rewrites the session
// record when the app is not yet recorded in it, when the browser's device is not the one
// recorded, or when its idle window last slid a twentieth of the idle timeout ago or more
// (docs/sessions.md); the same app again from the same device within that window gets its
// code with the record left as it was.
func TestSingleSignOnWritesSessionForNewAppOrSlide(t *testing.T) {
	for _, tc := range []struct {
		name      string
		client    string
		advance   time.Duration // after the upstream login; the idle timeout is 30m, a twentieth 90s
		userAgent string        // of the single sign-on login when set (another device)
		wantWrite bool
	}{
		// 85 s, not 89: the session's last use is in whole seconds, so leave a few seconds
		// before the 90 s boundary (the clock stands still but for Advance: see below).
		{name: "same app within a twentieth of the idle timeout", client: appClient, advance: 85 * time.Second},
		{name: "same app a twentieth of the idle timeout later", client: appClient, advance: 90 * time.Second, wantWrite: true},
		{name: "another app at once", client: spaClient, wantWrite: true},
		{name: "same app at once from another device", client: appClient, userAgent: "Other/1.0", wantWrite: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{up: dpopUp, upstreamOnClock: true, mutate: func(c *config.Config) {
				c.Sessions.IdleTimeout, c.Sessions.AbsoluteTimeout = 30*time.Minute, time.Hour
			}})
			// The clock stands still: the time the requests take on a loaded machine must not
			// carry "85 s later" over the 90 s boundary.
			h.clock.Stop()
			b := h.browser()
			first, _ := h.idTokenOf(appClient, h.codeIn(b, appClient, nil))
			sid, _ := first["sid"].(string)
			before, err := h.store.Get(t.Context(), sessions.KindSession, sid+".s")
			if err != nil {
				t.Fatal(err)
			}
			h.clock.Advance(tc.advance)
			if tc.userAgent != "" {
				other := *b
				other.Transport = userAgentTransport{next: b.Transport, userAgent: tc.userAgent}
				b = &other
			}
			ssoAt := h.clock.Now().Unix()
			again, _ := h.idTokenOf(tc.client, h.codeIn(b, tc.client, func(q url.Values) { q.Del("connection") }))
			if h.upstreamLogins() != 1 || again["sid"] != sid {
				t.Fatalf("upstream logins %d, sid %v: want a single sign-on login of session %s", h.upstreamLogins(), again["sid"], sid)
			}
			after, err := h.store.Get(t.Context(), sessions.KindSession, sid+".s")
			if err != nil {
				t.Fatal(err)
			}
			if wrote := !bytes.Equal(before, after); wrote != tc.wantWrite {
				t.Fatalf("session record rewritten = %v, want %v", wrote, tc.wantWrite)
			}
			var sess sessionRecord
			if err := json.Unmarshal(after, &sess); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(sess.Clients, tc.client) {
				t.Errorf("clients %v: want %s recorded", sess.Clients, tc.client)
			}
			if now := h.clock.Now().Unix(); tc.wantWrite && (sess.Seen < ssoAt || sess.Seen > now) {
				t.Errorf("seen %d, want the single sign-on login's time (%d to %d)", sess.Seen, ssoAt, now)
			}
			if tc.userAgent != "" && sess.LastUserAgent != tc.userAgent {
				t.Errorf("last user agent %q, want %q", sess.LastUserAgent, tc.userAgent)
			}
		})
	}
}

// userAgentTransport sends every request with the User-Agent userAgent (another device).
type userAgentTransport struct {
	next      http.RoundTripper // nil: http.DefaultTransport
	userAgent string
}

func (t userAgentTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", t.userAgent)
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(r)
}
