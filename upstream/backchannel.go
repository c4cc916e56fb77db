package upstream

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/discovery"
)

// Back-channel logout from the upstream (OpenID Connect Back-Channel Logout 1.0): the upstream
// POSTs a logout token to the broker when the user's session there ends, and
// VerifyLogoutToken decides whether it is one.

// Stable error codes of a refused or unverifiable logout token.
const (
	// CodeLogoutTokenInvalid: the token breaks a rule of Back-Channel Logout 1.0 §2.4/§2.6;
	// the description names the rule.
	CodeLogoutTokenInvalid = "logout_token_invalid"
	// CodeJWKS: the upstream's JWK Set could not be fetched, so the token cannot be checked
	// now (it may be fine: the caller answers "try again later").
	CodeJWKS = "jwks_unavailable"
	// CodeJWKSRefetchThrottled: the token names a key the connection's copy of the JWK Set
	// does not hold, and the set may not be fetched again yet (jwksRefetch): the upstream may
	// have rotated its keys, so the token cannot be checked now; Error.RetryAfter says when
	// it can.
	CodeJWKSRefetchThrottled = "jwks_refetch_throttled"
)

// MaxLogoutTokenLifetime is how far ahead of now a logout token's exp may be: a token
// that stays valid longer is refused (Back-Channel Logout 1.0 §4 asks for short expiration
// times), so that remembering its jti this long (the caller's replay window) covers every
// moment it can be accepted.
const MaxLogoutTokenLifetime = 24 * time.Hour

// BackchannelLogoutEvent is the member of a logout token's events claim that makes it one
// (Back-Channel Logout 1.0 §2.4).
const BackchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// Bounds of what a logout token may carry.
const (
	maxLogoutTokenBytes = 8 << 10
	maxLogoutJTI        = 256 // characters of jti
	maxLogoutID         = 256 // characters of sub and sid
)

// LogoutToken is what a verified logout token says: the upstream session (SessionID, its
// sid) and/or user (Subject, its sub) that ended, and the token's identity (JTI, for replay
// detection until Expiry).
type LogoutToken struct {
	Issuer    string
	Subject   string // "" when the token names only a session
	SessionID string // "" when the token names only a user
	JTI       string
	IssuedAt  time.Time
	Expiry    time.Time
}

// logoutTokenError is a refusal under rule. public says what is wrong without any
// configured value (the upstream's issuer, the client_id, the algorithms): it is all the
// unauthenticated sender is told (Error.Public). format and args, when format is not "",
// give the detail for the event (Description), which may name them; else it is public.
func logoutTokenError(rule, public, format string, args ...any) *Error {
	detail := public
	if format != "" {
		detail = fmt.Sprintf(format, args...)
	}
	return &Error{Code: CodeLogoutTokenInvalid, Description: "logout token " + rule + ": " + detail,
		Public: "logout token " + rule + ": " + public}
}

// VerifyLogoutToken checks raw, the logout_token of a back-channel logout request, as
// Back-Channel Logout 1.0 §2.6 says (docs/conformance.md#bcl-in-signature and the rows after
// it): validated like an ID token (the upstream's issuer, aud
// the connection's client_id, an alg of the connection's ID-token algorithms, exp with the
// clock skew, iat present and not in the future), with typ logout+jwt or JWT when present,
// an events claim holding the back-channel logout event as a JSON object, no nonce, sid
// and/or sub, and a jti. The claims are checked first (each refusal names its rule), then
// go-oidc verifies the signature and the same claims with the upstream's JWK Set.
//
// The JWK Set is the connection's own copy for logout tokens (logoutKeys): a token naming an
// unknown kid fetches it again at most once per jwksRefetch, so forged tokens cannot turn
// into requests to the upstream, and in between such a token cannot be checked yet. Refusals
// are *Error with CodeLogoutTokenInvalid (Error.Public names the rule without configured
// values); a discovery or JWK Set failure (CodeDiscovery, CodeJWKS) or a throttled fetch for
// an unknown kid (CodeJWKSRefetchThrottled, with Error.RetryAfter) means the token could
// not be checked now.
func (c *Connection) VerifyLogoutToken(ctx context.Context, raw string) (*LogoutToken, error) {
	switch {
	case raw == "":
		return nil, logoutTokenError("presence", "the logout_token is empty", "")
	case len(raw) > maxLogoutTokenBytes:
		return nil, logoutTokenError("size", fmt.Sprintf("the token is longer than %d bytes", maxLogoutTokenBytes), "")
	case strings.Count(raw, ".") == 4:
		return nil, logoutTokenError("format", "encrypted logout tokens are not supported (the broker registers no encryption key)", "")
	}
	jws, err := jose.ParseSignedCompact(raw, joseAlgs)
	if err != nil {
		return nil, logoutTokenError("format", "not a signed JWT with an asymmetric alg (JWS compact serialization)",
			"not a signed JWT with an asymmetric alg (JWS compact serialization): %v", err)
	}
	hdr := jws.Signatures[0].Header
	doc, err := c.discover(ctx)
	if err != nil {
		return nil, err
	}
	algs := c.idTokenAlgs(doc)
	if !slices.Contains(algs, hdr.Algorithm) {
		return nil, logoutTokenError("alg", "the alg is not one of the connection's ID token algorithms",
			"alg %s is not one of the connection's ID token algorithms %v", clipText(hdr.Algorithm, 32), algs)
	}
	if err := checkLogoutType(hdr.ExtraHeaders[jose.HeaderType]); err != nil {
		return nil, err
	}
	now, skew := c.opts.Now(), c.opts.ClockSkew
	if err := c.checkLogoutClaims(jws.UnsafePayloadWithoutVerification(), doc.Issuer, now, skew); err != nil {
		return nil, err
	}
	keys, err := c.logoutKeys.keysFor(ctx, c.plain, doc.JWKSURI, hdr.KeyID, hdr.Algorithm, c.opts.Now)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, logoutTokenError("signature", "the upstream's JWK Set has no key for the token's kid and alg",
			"the upstream's JWK Set has no %s key with kid %q", hdr.Algorithm, clipText(hdr.KeyID, 64))
	}
	v := oidc.NewVerifier(doc.Issuer, &oidc.StaticKeySet{PublicKeys: keys}, &oidc.Config{
		ClientID:             c.cfg.ClientID,
		SupportedSigningAlgs: algs,
		Now:                  func() time.Time { return now.Add(-skew) }, // exp leeway
	})
	lt, err := v.VerifyLogout(ctx, raw)
	if err != nil {
		var te *oidc.TokenExpiredError
		if errors.As(err, &te) {
			return nil, logoutTokenError("exp", "the token has expired", "the token expired at %s", te.Expiry.UTC().Format(time.RFC3339))
		}
		if strings.Contains(err.Error(), "signature") {
			return nil, logoutTokenError("signature", "no key of the upstream's JWK Set verifies it", "")
		}
		return nil, logoutTokenError("verification", "the token does not verify as the upstream's ID tokens would", "%v", err)
	}
	return &LogoutToken{
		Issuer: lt.Issuer, Subject: lt.Subject, SessionID: lt.SessionID, JTI: lt.TokenID,
		IssuedAt: lt.IssuedAt, Expiry: lt.Expiry,
	}, nil
}

// joseAlgs are verifiableAlgs as go-jose names them: a logout token is parsed with any of
// them, then its alg is checked against the connection's (so the refusal can say why).
var joseAlgs = func() []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(verifiableAlgs))
	for i, a := range verifiableAlgs {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}()

// checkLogoutType applies the explicit typing of Back-Channel Logout 1.0 §2.4 and §4.1
// (cross-JWT confusion; RFC 8725 §3.11): a typ header,
// when present, is logout+jwt (application/ prefix optional, RFC 7515 §4.1.9; compared
// without case) or JWT, which upstreams that predate explicit typing send. Any other type
// (at+jwt, dpop+jwt, …) is a token of another kind and refused.
func checkLogoutType(typ any) error {
	if typ == nil {
		return nil
	}
	s, ok := typ.(string)
	if ok {
		switch strings.TrimPrefix(strings.ToLower(s), "application/") {
		case "logout+jwt", "jwt":
			return nil
		}
	}
	return logoutTokenError("typ", "typ is neither logout+jwt nor JWT", "typ %q is neither logout+jwt nor JWT", clipText(fmt.Sprint(typ), 64))
}

// checkLogoutClaims checks the claims of a logout token (Back-Channel Logout 1.0 §2.4, §2.6;
// the signature is checked afterwards): iss is issuer, aud names the connection's
// client_id, exp has not passed and iat is not in the future (both with skew), events holds
// the back-channel logout event with a JSON object as its value, nonce is absent, sid and/or
// sub are non-empty strings, and jti is a non-empty string of at most maxLogoutJTI
// characters.
func (c *Connection) checkLogoutClaims(payload []byte, issuer string, now time.Time, skew time.Duration) error {
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return logoutTokenError("format", "the payload is not a JSON object", "")
	}
	if iss, _ := stringClaim(claims, "iss"); iss != issuer {
		return logoutTokenError("iss", "iss is not the upstream's issuer", "iss %q is not the upstream's issuer %q", clipText(iss, 256), issuer)
	}
	var aud oidcAudience
	if err := json.Unmarshal(claims["aud"], &aud); err != nil || !slices.Contains([]string(aud), c.cfg.ClientID) {
		return logoutTokenError("aud", "aud does not name the connection's client_id", "aud does not name the connection's client_id %q", c.cfg.ClientID)
	}
	exp, ok := dateClaim(claims, "exp")
	switch {
	case !ok:
		return logoutTokenError("exp", "exp is missing or not a number", "")
	case exp.Before(now.Add(-skew)):
		return logoutTokenError("exp", "the token has expired", "the token expired at %s", exp.UTC().Format(time.RFC3339))
	case exp.After(now.Add(MaxLogoutTokenLifetime)):
		return logoutTokenError("exp", fmt.Sprintf("exp is more than %g hours ahead: a logout token must be short-lived (Back-Channel Logout 1.0 §4)", MaxLogoutTokenLifetime.Hours()),
			"exp %s is more than %g hours ahead: a logout token must be short-lived (Back-Channel Logout 1.0 §4)", exp.UTC().Format(time.RFC3339), MaxLogoutTokenLifetime.Hours())
	}
	iat, ok := dateClaim(claims, "iat")
	switch {
	case !ok:
		return logoutTokenError("iat", "iat is missing or not a number", "")
	case iat.After(now.Add(skew)):
		return logoutTokenError("iat", "iat is in the future", "iat %s is in the future", iat.UTC().Format(time.RFC3339))
	}
	if err := checkLogoutEvents(claims["events"]); err != nil {
		return err
	}
	if _, has := claims["nonce"]; has {
		return logoutTokenError("nonce", "a logout token must not contain a nonce (it would be an ID token)", "")
	}
	var named int
	for _, k := range []string{"sid", "sub"} {
		v, present := stringClaim(claims, k)
		switch {
		case !present:
			continue
		case v == "":
			return logoutTokenError(k, k+" is empty or not a string", "")
		case len(v) > maxLogoutID:
			return logoutTokenError(k, fmt.Sprintf("%s is longer than %d characters", k, maxLogoutID), "")
		}
		named++
	}
	if named == 0 {
		return logoutTokenError("sid/sub", "the token has neither sid nor sub", "")
	}
	switch jti, present := stringClaim(claims, "jti"); {
	case !present || jti == "":
		return logoutTokenError("jti", "jti is missing or not a non-empty string", "")
	case len(jti) > maxLogoutJTI:
		return logoutTokenError("jti", fmt.Sprintf("jti is longer than %d characters", maxLogoutJTI), "")
	}
	return nil
}

// checkLogoutEvents checks the events claim (Back-Channel Logout 1.0 §2.4): a JSON object
// with the member BackchannelLogoutEvent, whose value is a JSON object.
func checkLogoutEvents(raw json.RawMessage) error {
	if raw == nil {
		return logoutTokenError("events", "the events claim is missing", "")
	}
	var events map[string]json.RawMessage
	if json.Unmarshal(raw, &events) != nil || events == nil {
		return logoutTokenError("events", "events is not a JSON object", "")
	}
	member, ok := events[BackchannelLogoutEvent]
	if !ok {
		return logoutTokenError("events", "events has no member "+BackchannelLogoutEvent, "")
	}
	var value map[string]json.RawMessage
	if json.Unmarshal(member, &value) != nil || value == nil {
		return logoutTokenError("events", "the value of "+BackchannelLogoutEvent+" is not a JSON object", "")
	}
	return nil
}

// stringClaim returns claim k: its value when it is a string, and whether it is present.
func stringClaim(claims map[string]json.RawMessage, k string) (string, bool) {
	raw, ok := claims[k]
	if !ok {
		return "", false
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	return s, true
}

// dateClaim reads a NumericDate claim (RFC 7519 §2).
func dateClaim(claims map[string]json.RawMessage, k string) (time.Time, bool) {
	var f float64
	if json.Unmarshal(claims[k], &f) != nil {
		return time.Time{}, false
	}
	return numericDate(f)
}

// oidcAudience is aud: one string or an array of strings (RFC 7519 §4.1.3).
type oidcAudience []string

func (a *oidcAudience) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*a = oidcAudience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("aud is neither a string nor an array of strings: %w", err)
	}
	*a = l
	return nil
}

// clipText bounds text from a token before it goes into an error description.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// jwksRefetch is how often a logout token naming a kid the connection does not hold may
// fetch the upstream's JWK Set again (key rotation). Forged tokens with made-up kids thus
// cost the upstream at most one request per connection and replica in this time; a token
// with an unknown kid in between cannot be checked yet (CodeJWKSRefetchThrottled).
const jwksRefetch = time.Minute

// Bounds of an upstream JWK Set.
const (
	maxJWKSBytes = discovery.MaxDocumentSize
	maxJWKSKeys  = 64
)

// logoutKeys is a connection's copy of its upstream's JWK Set for logout tokens. The ID-token
// check at login uses go-oidc's remote key set, which fetches the set again whenever a
// signature does not verify: fine behind a login transaction, but a logout token can be
// sent by anyone, so it gets this copy, whose fetches are bounded by jwksRefetch.
type logoutKeys struct {
	fetching sync.Mutex // one fetch at a time

	mu      sync.Mutex // guards the fields below
	url     string     // the jwks_uri the keys came from
	keys    []jose.JSONWebKey
	gen     int       // counts fetches, so a waiting caller sees that one happened
	fetched time.Time // of the last fetch, successful or not (zero: none yet)
	err     error     // of the last fetch
}

// keysFor returns the public keys of the upstream's JWK Set at url that may have signed a
// token with kid and alg (every key for alg when kid is ""): from the copy held, or, when it
// has none and the last fetch is at least jwksRefetch old (or there was none), from a fetch
// made now. No keys and no error: a fetch made for this call (or while it waited) does not
// hold the key, so the upstream does not publish it. An error means the token cannot be
// checked now: the set could not be fetched and no key was known (CodeJWKS), or the copy
// does not hold the key and may not be fetched again yet (CodeJWKSRefetchThrottled: the
// upstream may have rotated its keys since). Both carry Error.RetryAfter when the next fetch
// is throttled, so that made-up kids cannot turn a genuine token of a rotated key into a
// final refusal.
func (k *logoutKeys) keysFor(ctx context.Context, hc *http.Client, url, kid, alg string, now func() time.Time) ([]crypto.PublicKey, error) {
	k.mu.Lock()
	if k.url != url { // the discovery document moved the set: start again
		k.url, k.keys, k.gen, k.fetched, k.err = url, nil, k.gen+1, time.Time{}, nil
	}
	keys, gen, fetched, lastErr := k.keys, k.gen, k.fetched, k.err
	k.mu.Unlock()
	if m := matchKeys(keys, kid, alg); len(m) > 0 {
		return m, nil
	}
	if age := now().Sub(fetched); !fetched.IsZero() && age < jwksRefetch {
		wait := jwksRefetch - age
		var ue *Error
		if lastErr != nil && len(keys) == 0 && errors.As(lastErr, &ue) {
			again := *ue
			again.RetryAfter = wait
			return nil, &again
		}
		if lastErr != nil && len(keys) == 0 {
			return nil, lastErr
		}
		return nil, &Error{Code: CodeJWKSRefetchThrottled, RetryAfter: wait, Description: fmt.Sprintf(
			"the upstream's JWK Set, fetched %s ago, has no %s key with kid %q; it is fetched again at most once per %s (the upstream may have rotated its keys): retry in %s",
			age.Round(time.Second), clipText(alg, 32), clipText(kid, 64), jwksRefetch, wait.Round(time.Second))}
	}
	k.fetching.Lock()
	defer k.fetching.Unlock()
	k.mu.Lock()
	if k.gen != gen || k.url != url { // fetched by another caller while this one waited
		keys, lastErr = k.keys, k.err
		k.mu.Unlock()
		if m := matchKeys(keys, kid, alg); len(m) > 0 || lastErr == nil {
			return m, nil
		}
		return nil, lastErr
	}
	k.mu.Unlock()
	got, err := fetchJWKS(ctx, hc, url)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gen++
	k.fetched, k.err = now(), err
	if err != nil {
		if m := matchKeys(k.keys, kid, alg); len(m) > 0 {
			return m, nil // the copy held still stands
		}
		return nil, err
	}
	k.keys = got
	return matchKeys(got, kid, alg), nil
}

// matchKeys returns the public keys of keys that may verify a signature by kid with alg.
func matchKeys(keys []jose.JSONWebKey, kid, alg string) []crypto.PublicKey {
	var out []crypto.PublicKey
	for _, key := range keys {
		if (kid == "" || key.KeyID == kid) && (key.Algorithm == "" || key.Algorithm == alg) {
			out = append(out, key.Key)
		}
	}
	return out
}

// fetchJWKS fetches and decodes the JWK Set at url (RFC 7517 §5): public signature keys
// of the types go-oidc verifies (RSA, EC, Ed25519); others are skipped.
func fetchJWKS(ctx context.Context, hc *http.Client, url string) ([]jose.JSONWebKey, error) {
	fail := func(format string, args ...any) error {
		return &Error{Code: CodeJWKS, Description: "the upstream's JWK Set " + url + ": " + fmt.Sprintf(format, args...)}
	}
	if url == "" {
		return nil, fail("the discovery document has no jwks_uri")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fail("bad URL: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fail("%v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	switch {
	case err != nil:
		return nil, fail("reading: %v", err)
	case resp.StatusCode != http.StatusOK:
		return nil, fail("HTTP %d, want 200", resp.StatusCode)
	case len(body) > maxJWKSBytes:
		return nil, fail("larger than %d bytes", maxJWKSBytes)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return nil, fail("content type %q is not JSON", resp.Header.Get("Content-Type"))
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(body), &set); err != nil {
		return nil, fail("not a JWK Set: %v", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var key jose.JSONWebKey
		if key.UnmarshalJSON(raw) != nil || !key.Valid() || !key.IsPublic() || key.Use != "" && key.Use != "sig" {
			continue
		}
		switch key.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			continue
		}
		if keys = append(keys, key); len(keys) == maxJWKSKeys {
			break
		}
	}
	return keys, nil
}
