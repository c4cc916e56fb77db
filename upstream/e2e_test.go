package upstream

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// authorizeAt follows the upstream /authorize redirect (no cookies, no UI) and returns the
// callback query.
func authorizeAt(t *testing.T, authURL string) url.Values {
	t.Helper()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("authorize answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

// TestEndToEndAgainstDemoIdP logs in against the shared in-process IdP that requires DPoP with
// server nonces: one nonce retry (RFC 9449 §8), bound token (§5), RFC 9207 iss, userinfo with
// ath (§7.1).
func TestEndToEndAgainstDemoIdP(t *testing.T) {
	p, err := demoidp.Start(demoidp.Options{
		DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true, IssParameter: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := New(Config{
		Name: "e2e", Issuer: p.URL, ClientID: "broker", ClientSecret: "broker-secret",
		DPoPSigningAlg: "ES256", FetchUserinfo: true,
	}, Options{Discovery: &discovery.Client{}, Signers: signers(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := c.Begin(ctx, redirectURI)
	if err != nil {
		t.Fatal(err)
	}
	q := authorizeAt(t, st.AuthURL)
	if q.Get("state") != st.State {
		t.Fatalf("state %q", q.Get("state"))
	}
	if err := st.CheckIss(q.Get("iss")); err != nil {
		t.Fatalf("RFC 9207 iss: %v", err)
	}
	res, err := c.Finish(ctx, st, redirectURI, q.Get("code"))
	if err != nil {
		t.Fatalf("Finish: %v (result %+v)", err, res)
	}
	if !res.DPoPBound || res.NonceRetries != 1 || !res.NonceUsed || res.Subject != "alice" || res.UserinfoStatus != UserinfoSuccess || !res.UserinfoBound {
		t.Fatalf("result %+v", res)
	}
	if got := p.Stats.NonceChallenges.Load(); got < 1 {
		t.Fatalf("nonce challenges %d", got)
	}
}

// An upstream that enables DPoP (RFC 9449 §5.1) after its discovery document was cached is picked up
// on the next login once the cached copy is older than staleCapability, not after the TTL.
func TestBeginRefetchesStaleCapability(t *testing.T) {
	var dpopOn atomic.Bool
	var fetches atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		doc := map[string]any{
			"issuer": srv.URL, "authorization_endpoint": srv.URL + "/authorize", "token_endpoint": srv.URL + "/token",
			"jwks_uri": srv.URL + "/jwks", "response_types_supported": []string{"code"},
			"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
			"code_challenge_methods_supported": []string{"S256"},
		}
		if dpopOn.Load() {
			doc["dpop_signing_alg_values_supported"] = []string{"ES256"}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	defer srv.Close()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	key, err := dpop.GenerateKey(dpop.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := dpop.NewSigner(key, dpop.AlgES256)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := New(Config{Name: "c", Issuer: srv.URL, ClientID: "broker", ClientSecret: "s", Type: "back_channel", DPoPSigningAlg: dpop.AlgES256},
		Options{Signers: map[string]*dpop.Signer{dpop.AlgES256: signer}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := conn.Begin(ctx, "http://127.0.0.1/cb"); CodeOf(err) != CodeDPoPNotSupported {
		t.Fatalf("before: err = %v, want %s", err, CodeDPoPNotSupported)
	}
	dpopOn.Store(true)
	if _, err := conn.Begin(ctx, "http://127.0.0.1/cb"); CodeOf(err) != CodeDPoPNotSupported {
		t.Fatalf("fresh cache must not refetch: err = %v", err)
	}
	if got := fetches.Load(); got != 1 {
		t.Fatalf("fetches = %d, want 1 (cached copy is fresh)", got)
	}
	now = now.Add(staleCapability + time.Second)
	if _, err := conn.Begin(ctx, "http://127.0.0.1/cb"); err != nil {
		t.Fatalf("after the upstream enabled DPoP: %v", err)
	}
	if got := fetches.Load(); got != 2 {
		t.Fatalf("fetches = %d, want 2", got)
	}
}

// loginOnce runs Begin, the upstream's /authorize and Finish against c.
func loginOnce(t *testing.T, c *Connection) (*Result, error) {
	t.Helper()
	ctx := context.Background()
	st, err := c.Begin(ctx, redirectURI)
	if err != nil {
		t.Fatal(err)
	}
	q := authorizeAt(t, st.AuthURL)
	return c.Finish(ctx, st, redirectURI, q.Get("code"))
}

// An upstream that stops using DPoP nonces (reconfigured, or redeployed behind the same
// issuer) refuses the nonces the connection remembers; the next login still succeeds: the
// stale nonces are dropped at the token endpoint and at userinfo, each retried once.
func TestLoginSucceedsAfterUpstreamStopsUsingNonces(t *testing.T) {
	p, err := demoidp.Start(demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := New(Config{
		Name: "switch", Issuer: p.URL, ClientID: "broker", ClientSecret: "broker-secret",
		DPoPSigningAlg: "ES256", FetchUserinfo: true,
	}, Options{Discovery: &discovery.Client{}, Signers: signers(t)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := loginOnce(t, c)
	if err != nil || res.NonceRetries != 1 || !res.NonceUsed || res.NonceDropped {
		t.Fatalf("login with nonces: err %v result %+v", err, res)
	}

	p.SetRequireNonce(false)
	rejected := p.Stats.ProofsRejected.Load()
	res, err = loginOnce(t, c)
	if err != nil {
		t.Fatalf("login after the upstream stopped using nonces: %v (result %+v)", err, res)
	}
	if !res.NonceDropped || res.NonceUsed || res.NonceRetries != 0 || !res.DPoPBound || res.UserinfoStatus != UserinfoSuccess {
		t.Fatalf("result %+v, want the stale nonces dropped and a bound token without nonce", res)
	}
	if got := p.Stats.ProofsRejected.Load() - rejected; got != 2 {
		t.Fatalf("upstream rejected %d proofs, want 2 (the stale token-endpoint and userinfo nonces, once each)", got)
	}

	res, err = loginOnce(t, c)
	if err != nil || res.NonceDropped || res.NonceUsed {
		t.Fatalf("next login: err %v result %+v, want no nonce sent and none dropped", err, res)
	}
}
