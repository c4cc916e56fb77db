package discovery

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestCheckEndpointURL(t *testing.T) {
	for _, tc := range []struct {
		name    string
		url     string
		wantErr string // "" = accepted
	}{
		{name: "https", url: "https://idp.example.com/oauth2/token"},
		{name: "https with a port and a query", url: "https://idp.example.com:8443/authorize?tenant=a"},
		{name: "http on 127.0.0.1", url: "http://127.0.0.1:8081/token"},
		{name: "http on localhost", url: "http://localhost:8081/token"},
		{name: "http on [::1]", url: "http://[::1]:8081/token"},
		{name: "upper-case scheme", url: "HTTPS://idp.example.com/token"},
		{name: "http to a metadata address", url: "http://169.254.169.254/latest/meta-data/", wantErr: "must use https"},
		{name: "http to a private address", url: "http://10.0.0.5:8080/token", wantErr: "must use https"},
		{name: "http to an internal host name", url: "http://vault.internal/v1/secret", wantErr: "must use https"},
		{name: "http to a name that merely starts with localhost", url: "http://localhost.attacker.example/token", wantErr: "must use https"},
		{name: "another scheme", url: "ftp://idp.example.com/token", wantErr: "must use https"},
		{name: "file URL", url: "file:///etc/passwd", wantErr: "absolute URL with a host"},
		{name: "relative", url: "/token", wantErr: "absolute URL with a host"},
		{name: "scheme-relative", url: "//idp.example.com/token", wantErr: "absolute URL with a host"},
		{name: "opaque", url: "https:idp.example.com/token", wantErr: "absolute URL with a host"},
		{name: "no host", url: "https:///token", wantErr: "absolute URL with a host"},
		{name: "port only", url: "https://:443/token", wantErr: "absolute URL with a host"},
		{name: "user info", url: "https://user:pass@idp.example.com/token", wantErr: "must not carry user info"},
		{name: "user info hiding the host", url: "https://idp.example.com@127.0.0.1/token", wantErr: "must not carry user info"},
		{name: "fragment", url: "https://idp.example.com/token#x", wantErr: "must not have a fragment"},
		{name: "empty fragment", url: "https://idp.example.com/token#", wantErr: "must not have a fragment"},
		{name: "not a URL", url: "https://idp.example.com:port/", wantErr: "is not a URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckURL(tc.url)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("%q refused: %v", tc.url, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("%q: err %v, want %q", tc.url, err, tc.wantErr)
			}
		})
	}
}

// TestDocumentEndpointsMustBeHTTPSAbsoluteURLs: every endpoint the broker sends a browser to,
// posts secrets to or fetches from must be https (http only on loopback), absolute, without
// user info or fragment; a document breaking that is a discovery failure naming the member,
// and nothing is fetched from it.
func TestDocumentEndpointsMustBeHTTPSAbsoluteURLs(t *testing.T) {
	for _, member := range []string{"authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint", "end_session_endpoint", "pushed_authorization_request_endpoint"} {
		for _, bad := range []string{
			"http://169.254.169.254/latest/meta-data/iam/security-credentials/",
			"http://10.0.0.5:6379/",
			"https://user:pw@idp.example.com/x",
			"https://idp.example.com/x#frag",
			"/relative",
			"gopher://idp.example.com/x",
		} {
			t.Run(member+" "+bad, func(t *testing.T) {
				f := newFakeIdP(t, serveJSON(func(m map[string]any, _ string) { m[member] = bad }))
				_, err := (&Client{}).Get(context.Background(), f.srv.URL, "")
				if err == nil || !strings.Contains(err.Error(), "member "+member+": ") {
					t.Fatalf("err %v, want a discovery failure naming %s", err, member)
				}
				if n := f.hits.Load(); n != 1 {
					t.Fatalf("%d requests, want only the discovery document", n)
				}
			})
		}
	}
	t.Run("optional endpoints may be absent", func(t *testing.T) {
		f := newFakeIdP(t, serveJSON(func(m map[string]any, _ string) {
			delete(m, "userinfo_endpoint")
			delete(m, "end_session_endpoint")
		}))
		if _, err := (&Client{}).Get(context.Background(), f.srv.URL, ""); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("endpoints on other https hosts are accepted", func(t *testing.T) {
		f := newFakeIdP(t, serveJSON(func(m map[string]any, _ string) {
			m["token_endpoint"] = "https://oauth2.example.net/token"
			m["jwks_uri"] = "https://keys.example.net/certs?v=2"
		}))
		if _, err := (&Client{}).Get(context.Background(), f.srv.URL, ""); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDefaultClientRefusesRedirects: a Client without HTTP follows no redirect.
func TestDefaultClientRefusesRedirects(t *testing.T) {
	var internal atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		internal.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{})
	}))
	defer target.Close()
	f := newFakeIdP(t, func(w http.ResponseWriter, _ string) {
		w.Header().Set("Location", target.URL+WellKnownPath)
		w.WriteHeader(http.StatusFound)
	})
	_, err := (&Client{}).Get(context.Background(), f.srv.URL, "")
	if err == nil || !strings.Contains(err.Error(), "refused: the broker follows no redirects on upstream calls") || internal.Load() != 0 {
		t.Fatalf("err %v, %d requests to the redirect target", err, internal.Load())
	}
}
