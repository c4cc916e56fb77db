package demoidp

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// The provider as an IdP that sends OpenID Connect Back-Channel Logout 1.0: its ID tokens
// carry a sid (Options.SessionID, or one per login), and BackchannelLogout posts a logout
// token to a relying party's back-channel logout URI, with knobs that break one rule at a
// time for negative tests.

// BackchannelLogoutEvent is the member of a logout token's events claim (Back-Channel Logout
// 1.0 §2.4).
const BackchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// SetSessionID makes every later login carry sid (one session at this IdP for every browser);
// "" gives each later login a fresh random sid.
func (p *Provider) SetSessionID(sid string) { p.p.sessionID.Store(&sid) }

// LastSID returns the sid of the last ID token the provider issued ("" before the first).
func (p *Provider) LastSID() string {
	if s := p.p.lastSID.Load(); s != nil {
		return *s
	}
	return ""
}

// loginSessionID is the sid of a login now: the configured one, or a fresh random one.
func (p *provider) loginSessionID() string {
	if s := *p.sessionID.Load(); s != "" {
		return s
	}
	return rand.Text()
}

// LogoutTokenOptions say what a logout token carries. The zero value (with SID or Subject
// set) is a valid token: typ logout+jwt, iss the issuer, aud the client id, iat now, exp in
// two minutes, a fresh jti and events {BackchannelLogoutEvent: {}}, signed with the ID-token
// key. The other fields break it for negative tests.
type LogoutTokenOptions struct {
	// SID and Subject are the sid and sub claims; "" leaves a claim out.
	SID, Subject string
	// JTI is the jti; "" is a fresh random one (give the same one twice to replay).
	JTI string
	// Audience overrides aud (default the client id); Issuer overrides iss.
	Audience, Issuer string
	// Type is the typ header (default logout+jwt); NoType leaves the header out.
	Type   string
	NoType bool
	// TTL is exp from now (default 2 minutes; negative: already expired).
	TTL time.Duration
	// Events replaces the events claim (default {BackchannelLogoutEvent: {}}).
	Events any
	// Omit leaves these claims out (events, iat, exp, jti, …).
	Omit []string
	// Extra adds claims (nonce, …), replacing any of the same name.
	Extra map[string]any
	// ForeignKey signs with a key the provider does not publish, under its own kid (a forgery).
	ForeignKey bool
	// KeyID replaces the kid header (default the ID-token key's).
	KeyID string
}

// foreignKey is the key of ForeignKey, generated once per process.
var foreignKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return RSAKey(true) })

// LogoutToken returns a signed logout token (Back-Channel Logout 1.0 §2.4) as o says.
func (p *Provider) LogoutToken(o LogoutTokenOptions) (string, error) {
	pp := p.p
	now := pp.now()
	ttl := o.TTL
	if ttl == 0 {
		ttl = 2 * time.Minute
	}
	jti := o.JTI
	if jti == "" {
		jti = rand.Text()
	}
	c := map[string]any{
		"iss": pp.issuer, "aud": pp.opts.ClientID, "iat": now.Unix(), "exp": now.Add(ttl).Unix(), "jti": jti,
		"events": map[string]any{BackchannelLogoutEvent: map[string]any{}},
	}
	if o.Issuer != "" {
		c["iss"] = o.Issuer
	}
	if o.Audience != "" {
		c["aud"] = o.Audience
	}
	if o.Events != nil {
		c["events"] = o.Events
	}
	if o.SID != "" {
		c["sid"] = o.SID
	}
	if o.Subject != "" {
		c["sub"] = o.Subject
	}
	for k, v := range o.Extra {
		c[k] = v
	}
	for k := range c {
		if slices.Contains(o.Omit, k) {
			delete(c, k)
		}
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("demoidp: logout token claims: %w", err)
	}
	key := pp.key
	if o.ForeignKey {
		if key, err = foreignKey(); err != nil {
			return "", fmt.Errorf("demoidp: foreign key: %w", err)
		}
	}
	kid := pp.kid
	if o.KeyID != "" {
		kid = o.KeyID
	}
	so := (&jose.SignerOptions{}).WithHeader("kid", kid)
	if !o.NoType {
		typ := o.Type
		if typ == "" {
			typ = "logout+jwt"
		}
		so = so.WithType(jose.ContentType(typ))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, so)
	if err != nil {
		return "", fmt.Errorf("demoidp: logout token signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("demoidp: sign logout token: %w", err)
	}
	return jws.CompactSerialize()
}

// BackchannelLogout sends a logout token made as o says to a relying party's back-channel
// logout URI (Back-Channel Logout 1.0 §2.5: POST, form body logout_token). The caller closes
// the response body.
func (p *Provider) BackchannelLogout(uri string, o LogoutTokenOptions) (*http.Response, error) {
	tok, err := p.LogoutToken(o)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, uri, strings.NewReader(url.Values{"logout_token": {tok}}.Encode()))
	if err != nil {
		return nil, fmt.Errorf("demoidp: back-channel logout request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hc := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // the relying party's own answer is what counts
	}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("demoidp: back-channel logout to %s: %w", uri, err)
	}
	return resp, nil
}
