package upstream

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/upstream/upstreamtest"
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

// TestEndToEndUpstreamtest logs in against the shared in-process IdP that requires DPoP with
// server nonces: one nonce retry (DC-9), bound token (DC-10), RFC 9207 iss (IS-2), userinfo
// with ath (DC-7).
func TestEndToEndUpstreamtest(t *testing.T) {
	p, err := upstreamtest.Start(upstreamtest.Options{
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
		t.Fatalf("IS-2: %v", err)
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
