package broker

import (
	"net/http"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// BenchmarkBrokeredLogin runs one full in-process login per iteration over loopback HTTP:
// app → /authorize → upstream /authorize → /login/callback (DPoP ES256 code exchange with
// server nonces, ID-token verification, userinfo) → app, then /oauth/token. Memory store.
func BenchmarkBrokeredLogin(b *testing.B) {
	for _, signing := range []string{"RS256", "ES256"} {
		b.Run("id_token="+signing, func(b *testing.B) {
			h := newHarness(b, harnessOpts{
				up:     demoidp.Options{DPoPAlgs: []string{"ES256"}, RequireDPoP: true, RequireNonce: true},
				mutate: func(c *config.Config) { c.Keys.Signing.Alg = signing },
			})
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, _ := get(b, h.browser(), h.authorizeURL(nil))
				code := resp.Request.URL.Query().Get("code")
				if code == "" {
					b.Fatalf("login failed at %s", resp.Request.URL)
				}
				if status, body, _ := h.token(h.codeForm(code), true); status != http.StatusOK {
					b.Fatalf("token: %d %v", status, body)
				}
			}
		})
	}
}
