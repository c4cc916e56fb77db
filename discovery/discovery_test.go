package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeIdP serves one discovery document; doc builds it from the server URL.
type fakeIdP struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newFakeIdP(t *testing.T, handler func(w http.ResponseWriter, base string)) *fakeIdP {
	t.Helper()
	f := &fakeIdP{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		if r.URL.Path != WellKnownPath && r.URL.Path != "/custom/disco" {
			http.NotFound(w, r)
			return
		}
		handler(w, "http://"+r.Host)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func baseDoc(base string) map[string]any {
	return map[string]any{
		"issuer":                                base,
		"authorization_endpoint":                base + "/authorize",
		"token_endpoint":                        base + "/token",
		"userinfo_endpoint":                     base + "/userinfo",
		"jwks_uri":                              base + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
		"dpop_signing_alg_values_supported":     []string{"ES256", "EdDSA"},
	}
}

func serveJSON(mutate func(m map[string]any, base string)) func(http.ResponseWriter, string) {
	return func(w http.ResponseWriter, base string) {
		m := baseDoc(base)
		if mutate != nil {
			mutate(m, base)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(m)
	}
}

func TestGet(t *testing.T) {
	tests := []struct {
		name    string
		handler func(http.ResponseWriter, string)
		issuer  func(base string) string // expected issuer passed to Get; default base
		wantErr string                   // substring; "" = success
	}{
		{name: "valid document", handler: serveJSON(nil)},
		{
			name:    "issuer mismatch: different host",
			handler: serveJSON(func(m map[string]any, _ string) { m["issuer"] = "https://evil.example" }),
			wantErr: "issuer mismatch",
		},
		{
			name:    "issuer mismatch: trailing slash in document",
			handler: serveJSON(func(m map[string]any, base string) { m["issuer"] = base + "/" }),
			wantErr: "issuer mismatch",
		},
		{
			name:    "issuer mismatch: trailing slash expected",
			handler: serveJSON(nil),
			issuer:  func(base string) string { return base + "/" },
			wantErr: "issuer mismatch",
		},
		{
			name: "trailing slash issuer matches exactly",
			handler: serveJSON(func(m map[string]any, base string) {
				m["issuer"] = base + "/"
			}),
			issuer: func(base string) string { return base + "/" },
		},
		{
			name:    "missing authorization_endpoint",
			handler: serveJSON(func(m map[string]any, _ string) { delete(m, "authorization_endpoint") }),
			wantErr: "required member authorization_endpoint is missing",
		},
		{
			name:    "missing token_endpoint",
			handler: serveJSON(func(m map[string]any, _ string) { delete(m, "token_endpoint") }),
			wantErr: "required member token_endpoint is missing",
		},
		{
			name:    "missing jwks_uri",
			handler: serveJSON(func(m map[string]any, _ string) { delete(m, "jwks_uri") }),
			wantErr: "required member jwks_uri is missing",
		},
		{
			name:    "missing issuer",
			handler: serveJSON(func(m map[string]any, _ string) { delete(m, "issuer") }),
			wantErr: "required member issuer is missing",
		},
		{
			name:    "missing response_types_supported",
			handler: serveJSON(func(m map[string]any, _ string) { delete(m, "response_types_supported") }),
			wantErr: "required member response_types_supported is missing",
		},
		{
			name:    "missing subject_types_supported",
			handler: serveJSON(func(m map[string]any, _ string) { delete(m, "subject_types_supported") }),
			wantErr: "required member subject_types_supported is missing",
		},
		{
			name:    "null id_token_signing_alg_values_supported",
			handler: serveJSON(func(m map[string]any, _ string) { m["id_token_signing_alg_values_supported"] = nil }),
			wantErr: "required member id_token_signing_alg_values_supported is missing",
		},
		{
			name:    "empty id_token_signing_alg_values_supported",
			handler: serveJSON(func(m map[string]any, _ string) { m["id_token_signing_alg_values_supported"] = []string{} }),
			wantErr: "required member id_token_signing_alg_values_supported is empty",
		},
		{
			name: "non-JSON content type refused",
			handler: func(w http.ResponseWriter, base string) {
				w.Header().Set("Content-Type", "text/html")
				_, _ = w.Write([]byte("<html>hello</html>"))
			},
			wantErr: "is not JSON",
		},
		{
			name: "JSON content type with non-JSON body refused",
			handler: func(w http.ResponseWriter, base string) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte("<html>hello</html>"))
			},
			wantErr: "not a JSON object",
		},
		{
			name: "non-200 refused",
			handler: func(w http.ResponseWriter, base string) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = w.Write([]byte("{}"))
			},
			wantErr: "answered HTTP 500",
		},
		{
			name: "oversized body refused",
			handler: serveJSON(func(m map[string]any, _ string) {
				m["padding"] = strings.Repeat("x", MaxDocumentSize)
			}),
			wantErr: "larger than",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIdP(t, tc.handler)
			issuer := f.srv.URL
			if tc.issuer != nil {
				issuer = tc.issuer(f.srv.URL)
			}
			c := &Client{}
			doc, err := c.Get(context.Background(), issuer, f.srv.URL+WellKnownPath)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if doc.Issuer != issuer || doc.Provider == nil {
				t.Fatalf("doc issuer %q provider %v", doc.Issuer, doc.Provider)
			}
			if doc.Provider.Endpoint().TokenURL != doc.TokenEndpoint {
				t.Fatalf("provider token URL %q, doc %q", doc.Provider.Endpoint().TokenURL, doc.TokenEndpoint)
			}
		})
	}
}

func TestGetDefaultURLAndCustomURL(t *testing.T) {
	// OIDC Discovery §4.1: the default URL is issuer + /.well-known/openid-configuration; a
	// configured URL wins.
	f := newFakeIdP(t, serveJSON(nil))
	c := &Client{}
	if _, err := c.Get(context.Background(), f.srv.URL, ""); err != nil {
		t.Fatalf("default URL: %v", err)
	}
	if _, err := c.Get(context.Background(), f.srv.URL, f.srv.URL+"/custom/disco"); err != nil {
		t.Fatalf("custom URL: %v", err)
	}
	if got := f.hits.Load(); got != 2 {
		t.Fatalf("hits = %d, want 2 (distinct cache keys)", got)
	}
}

func TestGetCaching(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	fail := atomic.Bool{}
	f := newFakeIdP(t, func(w http.ResponseWriter, base string) {
		if fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		serveJSON(nil)(w, base)
	})
	c := &Client{TTL: time.Minute, Now: clock}
	ctx := context.Background()

	// Concurrent first Gets share one fetch (no stampede).
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Get(ctx, f.srv.URL, "")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Get: %v", err)
		}
	}
	// Requests that arrive after the fetch finished hit the cache, so at most a few fetches
	// happen; with sharing exactly one.
	if got := f.hits.Load(); got != 1 {
		t.Fatalf("hits after concurrent Gets = %d, want 1", got)
	}

	if _, err := c.Get(ctx, f.srv.URL, ""); err != nil {
		t.Fatal(err)
	}
	if got := f.hits.Load(); got != 1 {
		t.Fatalf("cached Get fetched again: hits = %d", got)
	}

	advance(2 * time.Minute) // expired
	fail.Store(true)
	if _, err := c.Get(ctx, f.srv.URL, ""); err == nil {
		t.Fatal("want error from failing upstream after expiry")
	}
	if _, err := c.Get(ctx, f.srv.URL, ""); err == nil {
		t.Fatal("errors must not be cached: want a second fetch and error")
	}
	if got := f.hits.Load(); got != 3 {
		t.Fatalf("hits = %d, want 3 (errors not cached)", got)
	}
	fail.Store(false)
	if _, err := c.Get(ctx, f.srv.URL, ""); err != nil {
		t.Fatalf("recovered Get: %v", err)
	}
	if got := f.hits.Load(); got != 4 {
		t.Fatalf("hits = %d, want 4", got)
	}
}

func TestCheckDPoP(t *testing.T) {
	tests := []struct {
		name     string
		offered  []string
		alg      string
		wantWire string
		wantErr  error
		wantCode string
	}{
		{name: "member absent", offered: nil, alg: "ES256", wantErr: ErrDPoPNotSupported, wantCode: CodeDPoPNotSupported},
		{name: "empty list is a mismatch", offered: []string{}, alg: "ES256", wantErr: ErrDPoPAlgMismatch, wantCode: CodeDPoPAlgMismatch},
		{name: "alg not listed", offered: []string{"RS256", "PS256"}, alg: "ES256", wantErr: ErrDPoPAlgMismatch, wantCode: CodeDPoPAlgMismatch},
		{name: "ES256 exact", offered: []string{"RS256", "ES256"}, alg: "ES256", wantWire: "ES256"},
		{name: "RS256 exact", offered: []string{"RS256"}, alg: "RS256", wantWire: "RS256"},
		{name: "PS256 exact", offered: []string{"PS256"}, alg: "PS256", wantWire: "PS256"},
		{name: "alg match is case-sensitive", offered: []string{"es256"}, alg: "ES256", wantErr: ErrDPoPAlgMismatch, wantCode: CodeDPoPAlgMismatch},
		{name: "Ed25519 config, upstream lists Ed25519", offered: []string{"EdDSA", "Ed25519"}, alg: "Ed25519", wantWire: "Ed25519"},
		{name: "Ed25519 config, upstream lists EdDSA only", offered: []string{"ES256", "EdDSA"}, alg: "Ed25519", wantWire: "EdDSA"},
		{name: "EdDSA config, upstream lists Ed25519 only", offered: []string{"Ed25519"}, alg: "EdDSA", wantWire: "Ed25519"},
		{name: "EdDSA config, upstream lists EdDSA", offered: []string{"EdDSA"}, alg: "EdDSA", wantWire: "EdDSA"},
		{name: "Ed25519 config, no Ed label", offered: []string{"ES256"}, alg: "Ed25519", wantErr: ErrDPoPAlgMismatch, wantCode: CodeDPoPAlgMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Document{Issuer: "https://idp.example", DPoPSigningAlgValuesSupported: tc.offered}
			wire, err := d.CheckDPoP(tc.alg)
			if tc.wantErr == nil {
				if err != nil || wire != tc.wantWire {
					t.Fatalf("CheckDPoP = %q, %v; want %q", wire, err, tc.wantWire)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			var ce *CapabilityError
			if !errors.As(err, &ce) {
				t.Fatalf("err %T is not *CapabilityError", err)
			}
			if ce.Code() != tc.wantCode || ce.Alg != tc.alg || ce.Issuer != d.Issuer {
				t.Fatalf("capability error %+v code %q", ce, ce.Code())
			}
			if (tc.offered == nil) != (ce.Offered == nil) {
				t.Fatalf("Offered nil-ness: got %v want %v", ce.Offered, tc.offered)
			}
		})
	}
}

func TestCheckDPoPFromJSON(t *testing.T) {
	// RFC 9449 §5.1: "present but []" and "absent" must stay distinguishable after decoding.
	for _, tc := range []struct {
		name, body string
		code       string
	}{
		{name: "absent member", body: `{}`, code: CodeDPoPNotSupported},
		{name: "null member", body: `{"dpop_signing_alg_values_supported":null}`, code: CodeDPoPNotSupported},
		{name: "empty member", body: `{"dpop_signing_alg_values_supported":[]}`, code: CodeDPoPAlgMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d Document
			if err := json.Unmarshal([]byte(tc.body), &d); err != nil {
				t.Fatal(err)
			}
			_, err := d.CheckDPoP("ES256")
			var ce *CapabilityError
			if !errors.As(err, &ce) || ce.Code() != tc.code {
				t.Fatalf("err = %v, want code %s", err, tc.code)
			}
		})
	}
}

func TestSupportsS256AndAuthStyle(t *testing.T) {
	tests := []struct {
		name      string
		methods   []string
		auth      []string
		wantS256  bool
		wantStyle string
	}{
		{name: "S256 listed", methods: []string{"plain", "S256"}, auth: nil, wantS256: true, wantStyle: AuthClientSecretBasic},
		{name: "only plain", methods: []string{"plain"}, auth: []string{"client_secret_post"}, wantS256: false, wantStyle: AuthClientSecretPost},
		{name: "absent", methods: nil, auth: []string{"client_secret_post", "client_secret_basic"}, wantS256: false, wantStyle: AuthClientSecretBasic},
		{name: "auth methods list without secrets", methods: []string{"S256"}, auth: []string{"private_key_jwt"}, wantS256: true, wantStyle: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Document{CodeChallengeMethodsSupported: tc.methods, TokenEndpointAuthMethodsSupported: tc.auth}
			if got := d.SupportsS256(); got != tc.wantS256 {
				t.Errorf("SupportsS256 = %v", got)
			}
			if got := d.AuthStyle(); got != tc.wantStyle {
				t.Errorf("AuthStyle = %q, want %q", got, tc.wantStyle)
			}
		})
	}
}

func TestGetContextCanceled(t *testing.T) {
	f := newFakeIdP(t, serveJSON(nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&Client{}).Get(ctx, f.srv.URL, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
