package interop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// spaHandler serves the interop pages (spa/: index.html for TestSPABrowser, sso.html for the
// single sign-on tests), auth0-spa-js's ESM build from node_modules, and /config.json from cfg
// (set once the broker and APIs listen).
func spaHandler(cfg *atomic.Pointer[[]byte]) http.Handler {
	files := map[string]struct{ path, ctype string }{
		"/":           {path: filepath.Join(interopDir, "spa", "index.html"), ctype: "text/html; charset=utf-8"},
		"/index.html": {path: filepath.Join(interopDir, "spa", "index.html"), ctype: "text/html; charset=utf-8"},
		"/app.js":     {path: filepath.Join(interopDir, "spa", "app.js"), ctype: "text/javascript; charset=utf-8"},
		"/sso.html":   {path: filepath.Join(interopDir, "spa", "sso.html"), ctype: "text/html; charset=utf-8"},
		"/sso.js":     {path: filepath.Join(interopDir, "spa", "sso.js"), ctype: "text/javascript; charset=utf-8"},
		"/vendor/auth0-spa-js.production.esm.js": {
			path:  filepath.Join(interopDir, "node_modules", "@auth0", "auth0-spa-js", "dist", "auth0-spa-js.production.esm.js"),
			ctype: "text/javascript; charset=utf-8",
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == "/config.json" {
			b := cfg.Load()
			if b == nil {
				http.Error(w, "not configured yet", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(*b)
			return
		}
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", f.ctype)
		http.ServeFile(w, r, f.path)
	})
}

// needChromium skips (fails under INTEROP_REQUIRED=1) without Debian's chromium.
func needChromium(t *testing.T) {
	t.Helper()
	needNode(t) // the browser is driven from Node (playwright-core)
	if _, err := os.Stat(chromiumPath); err != nil {
		if required {
			t.Fatalf("%s is missing (INTEROP_REQUIRED=1): install Debian's chromium (make chromium)", chromiumPath)
		}
		t.Skipf("%s is missing: install Debian's chromium to run the browser test", chromiumPath)
	}
}

// spaResult is the JSON line spa-browser.mjs prints.
type spaResult struct {
	Status    string                    `json:"status"`
	User      map[string]any            `json:"user"`
	Token     map[string]any            `json:"token"`
	API       map[string]map[string]any `json:"api"`
	Silent    map[string]any            `json:"silent"`
	Error     string                    `json:"error"`
	URL       string                    `json:"url"`
	Authorize map[string]any            `json:"authorize"`
	Requests  []spaRequest              `json:"requests"`
}

type spaRequest struct {
	Method          string `json:"method"`
	Origin          string `json:"origin"`
	Path            string `json:"path"`
	Status          int    `json:"status"`
	DPoP            bool   `json:"dpop"`
	Scheme          string `json:"authorization_scheme"`
	ContentType     string `json:"content_type"`
	NonceAnswered   bool   `json:"dpop_nonce_answered"`
	WWWAuthenticate string `json:"www_authenticate"`
}

// TestSPABrowser: Auth0's auth0-spa-js with useDpop in headless Chromium logs in through the broker
// (which demands DPoP nonces) and calls DPoP-required APIs with createFetcher().fetchWithAuth:
// cmd/example-api (server nonces) and express-oauth2-jwt-bearer.
func TestSPABrowser(t *testing.T) {
	t.Parallel()
	needPeers(t)
	needChromium(t)

	var cfg atomic.Pointer[[]byte]
	page := httptest.NewServer(spaHandler(&cfg)) // 127.0.0.1: a potentially trustworthy origin
	t.Cleanup(page.Close)
	w := setupAS(t, 1, asOptions{requireNonce: true, spaOrigin: page.URL})

	type api struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	var apis []api
	if ex := startExampleAPI(t, w, exampleAPIOptions{required: true, nonce: true, corsOrigin: page.URL}); ex != "" {
		apis = append(apis, api{Name: "example-api", URL: ex + exampleAPIPath})
	}
	_, jb := startNode(t, "api-jwtbearer.mjs", "--port", "0", "--issuer-base-url", w.issuer,
		"--audience", apiAudience, "--dpop-required", "true", "--cors-origin", page.URL)
	apis = append(apis, api{Name: "express-oauth2-jwt-bearer", URL: jb + "/api/whoami"})
	b, err := json.Marshal(map[string]any{
		"domain": w.base(), "clientId": spaClientID, "audience": apiAudience, "scope": tokenScope, "apis": apis,
		"silentCheck": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store(&b)

	shotDir := filepath.Join(interopDir, ".cache")
	if err := os.MkdirAll(shotDir, 0o755); err != nil {
		shotDir = t.TempDir()
	}
	shot := filepath.Join(shotDir, "browser-spa.png")
	cmd := exec.Command("node", "spa-browser.mjs", "--url", page.URL+"/", "--broker", w.base(),
		"--screenshot", shot, "--chromium", chromiumPath, "--timeout-ms", fmt.Sprint(browserBudget.Milliseconds()))
	cmd.Dir = interopDir
	br := start(t, "spa-browser.mjs", cmd, nil)
	select {
	case <-br.exited:
	case <-time.After(browserBudget + time.Minute): // spa-browser.mjs stops itself after its budget
		t.Fatalf("spa-browser.mjs still running %v after it started\n%s", browserBudget+time.Minute, br.out)
	}
	if br.err != nil {
		t.Fatalf("spa-browser.mjs failed: %v\n%s", br.err, br.out)
	}
	var res spaResult
	found := false
	for _, l := range br.out.Lines() {
		if strings.HasPrefix(l, "{") && json.Unmarshal([]byte(l), &res) == nil {
			found = true
			break
		}
	}
	if !found {
		t.Fatalf("spa-browser.mjs printed no result\n%s", br.out)
	}
	t.Logf("page status %q on %s (screenshot %s)", res.Status, res.URL, shot)
	for _, r := range res.Requests {
		t.Logf("  %s %s%s → %d dpop=%v auth=%s nonce=%v %s", r.Method, r.Origin, r.Path, r.Status, r.DPoP, r.Scheme, r.NonceAnswered, r.WWWAuthenticate)
	}
	// The broker's redirect back carries iss (RFC 9207 §2); spa-js ignores the extra
	// parameter and completes handleRedirectCallback.
	if res.Error != "" || res.Status != "done" {
		t.Fatalf("page: status %q, error %q, API results %v\n%s", res.Status, res.Error, res.API, br.out)
	}

	// Silent authentication before the login (prompt=none, response_mode=web_message): the
	// broker posts login_required to the page's origin (OIDC Core 3.1.2.6); spa-js would
	// otherwise report its timeout.
	if res.Silent["error"] != "login_required" {
		t.Errorf("getTokenSilently before login = %v, want error login_required posted by the broker", res.Silent)
	}
	// /authorize: PKCE S256 and dpop_jkt (thumbprint of spa-js's ES256 key), the API audience.
	jkt, _ := res.Authorize["dpop_jkt"].(string)
	if jkt == "" || res.Authorize["code_challenge_method"] != "S256" || res.Authorize["audience"] != apiAudience {
		t.Errorf("/authorize params = %v, want dpop_jkt, code_challenge_method S256, audience %s", res.Authorize, apiAudience)
	}
	// Token: DPoP-bound to the same key (ID token checked by spa-js: iss with slash, RS256, nonce).
	if res.Token["token_type"] != "DPoP" || res.Token["cnf_jkt"] != jkt {
		t.Errorf("token = %v, want token_type DPoP and cnf_jkt = dpop_jkt %s", res.Token, jkt)
	}
	if res.User["email"] != "alice@example.com" {
		t.Errorf("getUser() = %v, want alice's claims from the broker's ID token", res.User)
	}
	// The broker demanded a nonce: exactly one use_dpop_nonce then one successful token request.
	var tokenCalls []spaRequest
	for _, r := range res.Requests {
		if r.Origin == w.base() && r.Path == "/oauth/token" && r.Method == http.MethodPost {
			tokenCalls = append(tokenCalls, r)
		}
	}
	if len(tokenCalls) != 2 || tokenCalls[0].Status != http.StatusBadRequest || tokenCalls[1].Status != http.StatusOK ||
		!tokenCalls[0].DPoP || !tokenCalls[1].DPoP || !tokenCalls[0].NonceAnswered {
		t.Errorf("token requests = %+v, want 400 (use_dpop_nonce, DPoP-Nonce exposed) then 200, both with a DPoP proof", tokenCalls)
	}
	for _, c := range tokenCalls {
		if !strings.HasPrefix(c.ContentType, "application/json") {
			t.Errorf("token request content type %q, want application/json (useFormData: false)", c.ContentType)
		}
	}
	// fetchWithAuth against example-api (server nonces): 401 use_dpop_nonce + DPoP-Nonce, one retry.
	if len(apis) > 0 && apis[0].Name == "example-api" {
		var calls []spaRequest
		for _, r := range res.Requests {
			if r.Path == exampleAPIPath {
				calls = append(calls, r)
			}
		}
		if len(calls) != 2 || calls[0].Status != http.StatusUnauthorized || !strings.Contains(calls[0].WWWAuthenticate, `error="use_dpop_nonce"`) ||
			!calls[0].NonceAnswered || calls[1].Status != http.StatusOK || calls[1].Scheme != "DPoP" || !calls[1].DPoP {
			t.Errorf("example-api calls = %+v, want 401 use_dpop_nonce with DPoP-Nonce, then 200 with Authorization: DPoP and a proof", calls)
		}
	}
	for _, a := range apis {
		r := res.API[a.Name]
		body, _ := r["body"].(map[string]any)
		if fmt.Sprint(r["status"]) != "200" || body["sub"] == nil {
			t.Errorf("%s answered %v, want 200 with the token's sub", a.Name, r)
		}
	}
	if ev := waitEventType(t, w.brokers[0].proc, "seacft"); ev.Details["dpop"] == nil {
		t.Errorf("seacft without details.dpop: %s", eventJSON(ev))
	}
}
