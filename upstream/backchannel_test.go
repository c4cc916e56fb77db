package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// movableClock is a clock the test moves forward.
type movableClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *movableClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *movableClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// startLogoutIdP starts a demo IdP for the test, with a clock and a connection to it.
func startLogoutIdP(t *testing.T) (*demoidp.Provider, *movableClock, *Connection) {
	t.Helper()
	p, err := demoidp.Start(demoidp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	clock := &movableClock{}
	return p, clock, logoutConn(t, p, clock, nil)
}

// logoutConn is a connection to the demo IdP p for checking its logout tokens, on clock.
func logoutConn(t *testing.T, p *demoidp.Provider, clock *movableClock, mut func(*Config)) *Connection {
	t.Helper()
	cfg := Config{Name: "bcl", Issuer: p.URL, ClientID: "broker", ClientSecret: "broker-secret"}
	if mut != nil {
		mut(&cfg)
	}
	c, err := New(cfg, Options{Discovery: &discovery.Client{Now: clock.now}, ClockSkew: 30 * time.Second, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVerifyLogoutToken applies Back-Channel Logout 1.0 §2.6 to logout tokens of a real
// IdP: a token that keeps every rule is accepted with what it names; one that breaks a rule is
// refused with logout_token_invalid and a description naming that rule.
func TestVerifyLogoutToken(t *testing.T) {
	p, clock, c := startLogoutIdP(t)
	esOnly := logoutConn(t, p, clock, func(cfg *Config) { cfg.IDTokenAlgs = []string{"ES256"} })
	valid := demoidp.LogoutTokenOptions{SID: "idp-sid", Subject: "alice"}
	with := func(mut func(o *demoidp.LogoutTokenOptions)) demoidp.LogoutTokenOptions {
		o := valid
		mut(&o)
		return o
	}
	for _, tc := range []struct {
		name string
		conn *Connection
		opts demoidp.LogoutTokenOptions
		raw  func(tok string) string // rewrites the signed token
		rule string                  // "" = accepted; else the rule the description names
	}{
		{name: "sid and sub, typ logout+jwt", opts: valid},
		{name: "sid only", opts: demoidp.LogoutTokenOptions{SID: "idp-sid"}},
		{name: "sub only", opts: demoidp.LogoutTokenOptions{Subject: "alice"}},
		{name: "no typ header", opts: with(func(o *demoidp.LogoutTokenOptions) { o.NoType = true })},
		{name: "typ JWT of an upstream that predates explicit typing", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Type = "JWT" })},
		{name: "typ application/logout+jwt", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Type = "application/logout+jwt" })},
		{name: "typ at+jwt is another kind of token (§4.1)", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Type = "at+jwt" }), rule: "typ"},
		{name: "typ dpop+jwt is another kind of token (§4.1)", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Type = "dpop+jwt" }), rule: "typ"},
		{name: "no events claim", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Omit = []string{"events"} }), rule: "events"},
		{name: "events is not an object", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Events = "logout" }), rule: "events"},
		{name: "events without the back-channel logout member", opts: with(func(o *demoidp.LogoutTokenOptions) {
			o.Events = map[string]any{"http://schemas.openid.net/event/other": map[string]any{}}
		}), rule: "events"},
		{name: "the member's value is not an object", opts: with(func(o *demoidp.LogoutTokenOptions) {
			o.Events = map[string]any{BackchannelLogoutEvent: "yes"}
		}), rule: "events"},
		{name: "the member's value is null", opts: with(func(o *demoidp.LogoutTokenOptions) {
			o.Events = map[string]any{BackchannelLogoutEvent: nil}
		}), rule: "events"},
		{name: "with a nonce (an ID token)", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Extra = map[string]any{"nonce": "n"} }), rule: "nonce"},
		{name: "neither sid nor sub", opts: demoidp.LogoutTokenOptions{}, rule: "sid/sub"},
		{name: "sid not a string", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Extra = map[string]any{"sid": 7} }), rule: "sid"},
		{name: "no jti", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Omit = []string{"jti"} }), rule: "jti"},
		{name: "jti longer than 256 characters", opts: with(func(o *demoidp.LogoutTokenOptions) { o.JTI = strings.Repeat("j", 257) }), rule: "jti"},
		{name: "no iat", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Omit = []string{"iat"} }), rule: "iat"},
		{name: "iat in the future", opts: with(func(o *demoidp.LogoutTokenOptions) {
			o.Extra = map[string]any{"iat": time.Now().Add(time.Hour).Unix()}
		}), rule: "iat"},
		{name: "no exp", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Omit = []string{"exp"} }), rule: "exp"},
		{name: "expired beyond the clock skew", opts: with(func(o *demoidp.LogoutTokenOptions) { o.TTL = -time.Minute }), rule: "exp"},
		{name: "expired within the clock skew", opts: with(func(o *demoidp.LogoutTokenOptions) { o.TTL = -10 * time.Second })},
		{name: "aud is another client", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Audience = "another-client" }), rule: "aud"},
		{name: "iss is another issuer", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Issuer = "https://evil.example" }), rule: "iss"},
		{name: "signed by a key the upstream does not publish", opts: with(func(o *demoidp.LogoutTokenOptions) { o.ForeignKey = true }), rule: "signature"},
		{name: "kid the upstream does not publish", opts: with(func(o *demoidp.LogoutTokenOptions) { o.KeyID = "unknown" }), rule: "signature"},
		{name: "payload changed after signing (another sid)", opts: valid, raw: func(tok string) string {
			parts := strings.Split(tok, ".")
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			changed := strings.Replace(string(payload), "idp-sid", "idp-sie", 1)
			return parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(changed)) + "." + parts[2]
		}, rule: "signature"},
		{name: "alg not among the connection's ID token algorithms", conn: esOnly, opts: valid, rule: "alg"},
		{name: "unsigned (alg none)", opts: valid, raw: func(tok string) string {
			return "eyJhbGciOiJub25lIiwidHlwIjoibG9nb3V0K2p3dCJ9." + strings.Split(tok, ".")[1] + "."
		}, rule: "format"},
		{name: "encrypted (JWE)", opts: valid, raw: func(string) string { return "a.b.c.d.e" }, rule: "format"},
		{name: "empty", opts: valid, raw: func(string) string { return "" }, rule: "presence"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := p.LogoutToken(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.raw != nil {
				tok = tc.raw(tok)
			}
			conn := c
			if tc.conn != nil {
				conn = tc.conn
			}
			lt, err := conn.VerifyLogoutToken(context.Background(), tok)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if lt.SessionID != tc.opts.SID || lt.Subject != tc.opts.Subject || lt.JTI == "" || lt.Issuer != p.URL || lt.Expiry.IsZero() || lt.IssuedAt.IsZero() {
					t.Errorf("token %+v, want sid %q sub %q with jti, iss, exp and iat", lt, tc.opts.SID, tc.opts.Subject)
				}
				return
			}
			var ue *Error
			if !errors.As(err, &ue) || ue.Code != CodeLogoutTokenInvalid || !strings.HasPrefix(ue.Description, "logout token "+tc.rule+":") {
				t.Fatalf("err %v, want %s naming rule %q", err, CodeLogoutTokenInvalid, tc.rule)
			}
		})
	}
}

// TestForgedLogoutTokensFetchUpstreamKeysAtMostOncePerMinute: logout tokens can be sent by
// anyone, so neither forged signatures nor made-up kids turn into JWK Set requests to the
// upstream beyond one per jwksRefetch, even when they arrive at once; a new kid after that
// time is looked up again (key rotation).
func TestForgedLogoutTokensFetchUpstreamKeysAtMostOncePerMinute(t *testing.T) {
	p, clock, c := startLogoutIdP(t)
	ctx := context.Background()
	verify := func(o demoidp.LogoutTokenOptions) error {
		tok, err := p.LogoutToken(o)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.VerifyLogoutToken(ctx, tok)
		return err
	}
	if err := verify(demoidp.LogoutTokenOptions{SID: "s"}); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	if n := p.Stats.JWKSRequests.Load(); n != 1 {
		t.Fatalf("JWK Set requests after the first token = %d, want 1", n)
	}
	flood := func() {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				o := demoidp.LogoutTokenOptions{SID: "s", KeyID: "made-up-" + string(rune('a'+i))}
				if i%2 == 0 {
					o = demoidp.LogoutTokenOptions{SID: "s", ForeignKey: true}
				}
				if err := verify(o); err == nil {
					t.Error("forged token accepted")
				}
			})
		}
		wg.Wait()
	}
	flood()
	if n := p.Stats.JWKSRequests.Load(); n != 1 {
		t.Fatalf("JWK Set requests after forged tokens within a minute = %d, want still 1", n)
	}
	clock.advance(jwksRefetch)
	flood()
	if n := p.Stats.JWKSRequests.Load(); n != 2 {
		t.Fatalf("JWK Set requests after forged tokens a minute later = %d, want 2 (one look for the new kids)", n)
	}
	if err := verify(demoidp.LogoutTokenOptions{SID: "s"}); err != nil {
		t.Fatalf("valid token after the flood: %v", err)
	}
}
