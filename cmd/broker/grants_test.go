package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigValidateRefusesClientNamedLikeAnAPI: `config validate` names a client_id that
// equals an API audience (its ID tokens would carry that audience) and a grant of a scope the
// API does not define.
func TestConfigValidateRefusesClientNamedLikeAnAPI(t *testing.T) {
	f := filepath.Join(t.TempDir(), "grants.yaml")
	_ = os.WriteFile(f, []byte(`
issuer: "http://127.0.0.1:8080/"
apis:
  - audience: "https://api.example.com"
    scopes: [{ name: "read:data" }]
clients:
  - client_id: "https://api.example.com"
    client_secret: s
    redirect_uris: ["http://127.0.0.1:8082/callback"]
    connections: [c]
    apis: [{ audience: "https://api.example.com", scopes: ["admin:all"] }]
connections:
  - { name: c, strategy: oidc, options: { issuer: "https://idp.example.com", client_id: b, client_secret: s } }
`), 0o600)
	code, out, _ := runCmd(t, "config", "validate", f)
	for _, want := range []string{
		`clients[0].client_id: "https://api.example.com" is the audience of apis[0]: a client_id must differ from every API audience`,
		`clients[0].apis[0].scopes[0]: scope "admin:all" is not defined by API "https://api.example.com" (apis[0].scopes)`,
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Fatalf("exit %d, want 1 with %q:\n%s", code, want, out)
		}
	}
}
