package upstream

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

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
		code string                  // the refusal's code when not CodeLogoutTokenInvalid
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
		{name: "exp 23 hours ahead", opts: with(func(o *demoidp.LogoutTokenOptions) { o.TTL = 23 * time.Hour })},
		{name: "exp 25 hours ahead: longer than the jti is remembered (§4)", opts: with(func(o *demoidp.LogoutTokenOptions) { o.TTL = 25 * time.Hour }), rule: "exp"},
		{name: "exp 300 years ahead", opts: with(func(o *demoidp.LogoutTokenOptions) {
			o.Extra = map[string]any{"exp": time.Now().AddDate(300, 0, 0).Unix()}
		}), rule: "exp"},
		{name: "expired beyond the clock skew", opts: with(func(o *demoidp.LogoutTokenOptions) { o.TTL = -time.Minute }), rule: "exp"},
		{name: "expired within the clock skew", opts: with(func(o *demoidp.LogoutTokenOptions) { o.TTL = -10 * time.Second })},
		{name: "aud is another client", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Audience = "another-client" }), rule: "aud"},
		{name: "iss is another issuer", opts: with(func(o *demoidp.LogoutTokenOptions) { o.Issuer = "https://evil.example" }), rule: "iss"},
		{name: "signed by a key the upstream does not publish", opts: with(func(o *demoidp.LogoutTokenOptions) { o.ForeignKey = true }), rule: "signature"},
		{name: "kid the upstream does not publish, within a minute of the last fetch: cannot be checked yet",
			opts: with(func(o *demoidp.LogoutTokenOptions) { o.KeyID = "unknown" }), code: CodeJWKSRefetchThrottled},
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
			if tc.rule == "" && tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if lt.SessionID != tc.opts.SID || lt.Subject != tc.opts.Subject || lt.JTI == "" || lt.Issuer != p.URL || lt.Expiry.IsZero() || lt.IssuedAt.IsZero() {
					t.Errorf("token %+v, want sid %q sub %q with jti, iss, exp and iat", lt, tc.opts.SID, tc.opts.Subject)
				}
				return
			}
			var ue *Error
			if tc.code != "" {
				if !errors.As(err, &ue) || ue.Code != tc.code || ue.RetryAfter <= 0 || ue.RetryAfter > jwksRefetch {
					t.Fatalf("err %v, want %s with a Retry-After within %s", err, tc.code, jwksRefetch)
				}
				return
			}
			if !errors.As(err, &ue) || ue.Code != CodeLogoutTokenInvalid || !strings.HasPrefix(ue.Description, "logout token "+tc.rule+":") {
				t.Fatalf("err %v, want %s naming rule %q", err, CodeLogoutTokenInvalid, tc.rule)
			}
			// What the unauthenticated sender may be told names the rule, never the
			// configured issuer, client_id or algorithms.
			if !strings.HasPrefix(ue.Public, "logout token "+tc.rule+":") || strings.Contains(ue.Public, p.URL) ||
				strings.Contains(ue.Public, `"broker"`) || strings.Contains(ue.Public, "[") {
				t.Errorf("public description %q, want the rule %q without configured values", ue.Public, tc.rule)
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

// rotatingIdP is an upstream on 127.0.0.1 whose signing key the test rotates: its discovery
// document, its JWK Set (every key so far, as an IdP publishes during a rotation) and logout
// tokens signed with its current key.
type rotatingIdP struct {
	srv          *httptest.Server
	jwksRequests atomic.Int64

	mu   sync.Mutex
	keys []*demoidp.SigningKey // the last one signs
}

func startRotatingIdP(t *testing.T) *rotatingIdP {
	t.Helper()
	idp := &rotatingIdP{}
	mux := http.NewServeMux()
	idp.srv = httptest.NewServer(mux)
	t.Cleanup(idp.srv.Close)
	doc, err := json.Marshal(demoidp.Metadata{Issuer: idp.srv.URL, IDTokenAlgs: []string{"RS256"}}.Document())
	if err != nil {
		t.Fatal(err)
	}
	mux.HandleFunc("GET /.well-known/openid-configuration", demoidp.ServeJSON(doc))
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		idp.jwksRequests.Add(1)
		idp.mu.Lock()
		var set jose.JSONWebKeySet
		for _, k := range idp.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public, KeyID: k.KeyID, Algorithm: "RS256", Use: "sig"})
		}
		idp.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	idp.rotate(t, false)
	return idp
}

// rotate makes a new signing key current (fresh: not the process's shared test key).
func (idp *rotatingIdP) rotate(t *testing.T, fresh bool) {
	t.Helper()
	key, err := demoidp.RSAKey(fresh)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := demoidp.NewSigningKey(key, jose.RS256)
	if err != nil {
		t.Fatal(err)
	}
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.keys = append(idp.keys, sk)
}

// logoutToken is a valid logout token for client "broker" at now, signed with the current key
// (typ JWT, which the upstream's signer sets); kid replaces its kid header when not "".
func (idp *rotatingIdP) logoutToken(t *testing.T, now time.Time, kid string) string {
	t.Helper()
	idp.mu.Lock()
	sk := idp.keys[len(idp.keys)-1]
	idp.mu.Unlock()
	payload, err := json.Marshal(map[string]any{
		"iss": idp.srv.URL, "aud": "broker", "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": rand.Text(), "sid": "idp-sid", "events": map[string]any{BackchannelLogoutEvent: map[string]any{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	signer := sk.Signer
	if kid != "" {
		key, _ := demoidp.RSAKey(false)
		if signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid)); err != nil {
			t.Fatal(err)
		}
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestRotatedKeyLogoutTokenIsRetryableWhileTheRefetchWaits: a forged logout token with a
// made-up kid makes the broker fetch the upstream's JWK Set; when the upstream then rotates
// its key, a genuine token signed with the new key, within the minute in which the set may
// not be fetched again, is not refused: it cannot be checked yet (CodeJWKSRefetchThrottled,
// which the endpoint answers 503) with RetryAfter until the next fetch is allowed, and once
// that time has passed it is accepted. The fetch bound holds throughout.
func TestRotatedKeyLogoutTokenIsRetryableWhileTheRefetchWaits(t *testing.T) {
	idp := startRotatingIdP(t)
	clock := &movableClock{}
	c, err := New(Config{Name: "rot", Issuer: idp.srv.URL, ClientID: "broker", ClientSecret: "broker-secret"},
		Options{Discovery: &discovery.Client{Now: clock.now}, ClockSkew: 30 * time.Second, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ue *Error

	_, err = c.VerifyLogoutToken(ctx, idp.logoutToken(t, clock.now(), "made-up"))
	if !errors.As(err, &ue) || ue.Code != CodeLogoutTokenInvalid || !strings.HasPrefix(ue.Description, "logout token signature:") {
		t.Fatalf("forged token with a made-up kid: %v, want a signature refusal (the set was fetched for it)", err)
	}
	idp.rotate(t, true)
	clock.advance(10 * time.Second)
	genuine := idp.logoutToken(t, clock.now(), "")
	_, err = c.VerifyLogoutToken(ctx, genuine)
	if !errors.As(err, &ue) || ue.Code != CodeJWKSRefetchThrottled || ue.RetryAfter <= 40*time.Second || ue.RetryAfter > 50*time.Second {
		t.Fatalf("genuine token of the rotated key within the minute: %v, want %s with a Retry-After of about 50 s", err, CodeJWKSRefetchThrottled)
	}
	if n := idp.jwksRequests.Load(); n != 1 {
		t.Fatalf("JWK Set requests within the minute = %d, want 1", n)
	}
	clock.advance(ue.RetryAfter)
	lt, err := c.VerifyLogoutToken(ctx, genuine)
	if err != nil || lt.SessionID != "idp-sid" {
		t.Fatalf("genuine token of the rotated key after the Retry-After: %+v %v, want accepted", lt, err)
	}
	if n := idp.jwksRequests.Load(); n != 2 {
		t.Errorf("JWK Set requests = %d, want 2", n)
	}
}
