package logs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestRedactParamsRemovesCredentialValues(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "management token in a query", in: "access_token=MGMT-TOKEN&per_page=5", want: "access_token=[redacted]&per_page=5"},
		{name: "every credential name", in: "token=a&id_token=b&id_token_hint=c&refresh_token=d&code=e&code_verifier=f&client_secret=g&client_assertion=h&assertion=i&password=j&secret=k&api_key=l&key=m",
			want: "token=[redacted]&id_token=[redacted]&id_token_hint=[redacted]&refresh_token=[redacted]&code=[redacted]&code_verifier=[redacted]&client_secret=[redacted]&client_assertion=[redacted]&assertion=[redacted]&password=[redacted]&secret=[redacted]&api_key=[redacted]&key=[redacted]"},
		{name: "names are case-insensitive", in: "Access_Token=x&CLIENT_SECRET=y", want: "Access_Token=[redacted]&CLIENT_SECRET=[redacted]"},
		{name: "percent-encoded name", in: "access%5Ftoken=x", want: "access%5Ftoken=[redacted]"},
		{name: "secret-sounding names", in: "x_api_token=1&upstreamPassword=2&my-secret=3", want: "x_api_token=[redacted]&upstreamPassword=[redacted]&my-secret=[redacted]"},
		{name: "in a URL", in: "https://app.example/cb?state=s1&code=SECRETCODE#frag", want: "https://app.example/cb?state=s1&code=[redacted]#frag"},
		{name: "in free text", in: `upstream said (code=abc) and "token=xyz"`, want: `upstream said (code=[redacted]) and "token=[redacted]"`},
		{name: "semicolon separator", in: "a=1;token=t", want: "a=1;token=[redacted]"},
		{name: "URL-encoded query inside a value", in: "returnTo=" + url.QueryEscape("https://app/cb?code=SECRETCODE&x=1"),
			want: "returnTo=" + url.QueryEscape("https://app/cb?code=[redacted]&x=1")},
		{name: "a whole encoded URL", in: url.QueryEscape("https://app/cb?access_token=SECRET"), want: url.QueryEscape("https://app/cb?access_token=[redacted]")},
		{name: "other parameters kept", in: "q=type:f&page=2&client_id=app&state=abc&code_challenge_method=S256", want: "q=type:f&page=2&client_id=app&state=abc&code_challenge_method=S256"},
		{name: "empty value kept", in: "token=&a=1", want: "token=&a=1"},
		{name: "base64 padding is not a name", in: "sort=abc==&x=1", want: "sort=abc==&x=1"},
		{name: "no parameters", in: "plain text", want: "plain text"},
		{name: "already redacted", in: "token=[redacted]", want: "token=[redacted]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := redactParams(tc.in); got != tc.want {
				t.Fatalf("redactParams(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

// Configured secrets never reach stdout or the store, in any field, as is or URL-encoded;
// a short secret is removed only where it is the whole value.
func TestWriteRedactsConfiguredSecrets(t *testing.T) {
	const (
		mgmt   = "mgmt-token-0123456789abcdefghijklmnopqrstuv" // 40+ characters
		client = "client+secret/with=specials"
		short  = "abc"
	)
	tests := []struct {
		name   string
		ev     Event
		leak   []string // must not appear
		expect []string // must appear (what is kept)
	}{
		{name: "secret as a whole detail value", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"header": mgmt}}, leak: []string{mgmt}, expect: []string{`"header":"[redacted]"`}},
		{name: "secret inside a query", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"request": map[string]any{"query": "per_page=5&x=" + mgmt}}}, leak: []string{mgmt}, expect: []string{"per_page=5"}},
		{name: "URL-encoded secret", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"q": "x=" + url.QueryEscape(client)}}, leak: []string{url.QueryEscape(client), client}},
		{name: "path-encoded secret", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"path": "/api/v2/" + url.PathEscape(client)}}, leak: []string{url.PathEscape(client)}, expect: []string{"/api/v2/[redacted]"}},
		{name: "secret in a top-level field", ev: Event{Type: TypeFailedLogin, UserAgent: "curl " + mgmt, UserName: client}, leak: []string{mgmt, client}, expect: []string{`"user_agent":"curl [redacted]"`}},
		{name: "secret in a list", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"list": []any{"a", mgmt}, "strs": []string{client}}}, leak: []string{mgmt, client}},
		{name: "secret as a detail key", ev: Event{Type: TypeFailedAPI, Details: map[string]any{mgmt: 1, "kept": true}}, leak: []string{mgmt}, expect: []string{`"kept":true`}},
		{name: "short secret as a whole value", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"v": short, "w": "abcdef"}}, leak: []string{`"abc"`}, expect: []string{`"w":"abcdef"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			secrets := &Secrets{}
			secrets.Set("config", mgmt, short, "")
			secrets.Set("connections", client)
			store := sessions.NewMemory()
			defer store.Close()
			w, buf := newWriter(store)
			w.Secrets = secrets
			ev := tc.ev
			if err := w.Write(t.Context(), &ev); err != nil {
				t.Fatal(err)
			}
			e, err := store.Log(t.Context(), ev.LogID)
			if err != nil {
				t.Fatal(err)
			}
			for name, out := range map[string]string{"stdout": buf.String(), "store": string(e.Event)} {
				for _, s := range tc.leak {
					if strings.Contains(out, s) {
						t.Errorf("%s carries %q: %s", name, s, out)
					}
				}
				for _, s := range tc.expect {
					if !strings.Contains(out, s) {
						t.Errorf("%s lacks %q: %s", name, s, out)
					}
				}
			}
		})
	}
	t.Run("replacing a group forgets its old values", func(t *testing.T) {
		secrets := &Secrets{}
		secrets.Set("connections", "old-connection-secret")
		secrets.Set("connections", "new-connection-secret")
		w, buf := newWriter(nil)
		w.Secrets = secrets
		if err := w.Write(t.Context(), &Event{Type: TypeFailedAPI, Details: map[string]any{"a": "old-connection-secret", "b": "new-connection-secret"}}); err != nil {
			t.Fatal(err)
		}
		if out := buf.String(); !strings.Contains(out, `"a":"old-connection-secret"`) || !strings.Contains(out, `"b":"[redacted]"`) {
			t.Fatalf("stdout = %s", out)
		}
	})
}

// Redact (and so every event's details) removes credential-like query parameters without any
// configured secret.
func TestRedactRemovesCredentialQueryParameters(t *testing.T) {
	in := map[string]any{"request": map[string]any{"method": "GET", "path": "/api/v2/logs", "query": "access_token=MGMT&per_page=5"}}
	red := Redact(in)
	b, _ := json.Marshal(red)
	if bytes.Contains(b, []byte("MGMT")) || !bytes.Contains(b, []byte(`access_token=[redacted]\u0026per_page=5`)) {
		t.Fatalf("Redact = %s", b)
	}
	if got := encodeDetails(in, nil); !bytes.Equal(got, b) {
		t.Fatalf("encodeDetails = %s, Redact = %s", got, b)
	}
}

// Configured secrets are found in any percent-encoding (non-canonical "%4F" for "O",
// lower-case hex digits, encoded twice) and, where a value was cut at a length limit, as the
// beginning of a secret before the cut mark.
func TestScrubFindsEncodedAndCutSecrets(t *testing.T) {
	const (
		ops   = "OPS-TOKEN-0123456789abcdefghijklmnop"
		slash = "conn/secret+with=specials-0123"
		short = "s3cr"
	)
	secrets := &Secrets{}
	secrets.Set("config", ops, short)
	secrets.Set("connections", slash)
	w := &Writer{Secrets: secrets}
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "non-canonical percent-encoding of one letter", in: "foo=%4FPS-TOKEN-0123456789abcdefghijklmnop&x=1", want: "foo=[redacted]&x=1"},
		{name: "every byte percent-encoded, lower-case hex", in: "a=" + lowerHexAll(ops), want: "a=[redacted]"},
		{name: "lower-case hex of a canonical encoding", in: "/api/v2/conn%2fsecret%2bwith%3dspecials-0123/x", want: "/api/v2/[redacted]/x"},
		{name: "encoded twice", in: "r=" + url.QueryEscape("foo=%4FPS-TOKEN-0123456789abcdefghijklmnop"), want: "r=foo%3D[redacted]"},
		{name: "encoded secret inside free text", in: "curl/8 (%4fPS-TOKEN-0123456789abcdefghijklmnop) x", want: "curl/8 ([redacted]) x"},
		{name: "the whole value encodes a short secret", in: "%73%33cr", want: "[redacted]"},
		{name: "a short secret inside a value is kept", in: "x%73%33cr", want: "x%73%33cr"},
		{name: "secret cut before the cut mark", in: "foo=" + strings.Repeat("a", 20) + "OPS-TOKEN-01234…", want: "foo=" + strings.Repeat("a", 20) + "[redacted]…"},
		{name: "encoded secret cut before the cut mark", in: "foo=%4FPS-TOK…", want: "foo=[redacted]…"},
		{name: "cut secret inside a longer text", in: "connection OPS-TOKEN-0123… is not enabled", want: "connection [redacted]… is not enabled"},
		{name: "cut secret before a later cut mark", in: "a OPS-TOKEN-0… b x… c", want: "a [redacted]… b x… c"},
		{name: "fewer than 4 bytes of a secret before a cut mark are kept", in: "Mozilla/5.0 OPS…", want: "Mozilla/5.0 OPS…"},
		{name: "text not beginning a secret is kept", in: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit…", want: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit…"},
		{name: "a percent sign that encodes nothing", in: "100% sure %zz %4", want: "100% sure %zz %4"},
		{name: "plain secret", in: "x " + ops + " y", want: "x [redacted] y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := w.Scrub(tc.in); got != tc.want {
				t.Fatalf("Scrub(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

// lowerHexAll percent-encodes every byte of s with lower-case hex digits.
func lowerHexAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02x", s[i])
	}
	return b.String()
}

// Scrubbing a whole value and then cutting it (what the broker does with request input)
// never leaves a piece of a secret, wherever the cut falls; cutting first and scrubbing the
// cut value (the second line of defence) leaves at most minCutPrefix-1 bytes of it.
func TestScrubThenCutNeverLeavesAPieceOfASecret(t *testing.T) {
	const secret = "OPS-TOKEN-0123456789abcdefghijklmnop"
	secrets := &Secrets{}
	secrets.Set("config", secret)
	w := &Writer{Secrets: secrets}
	cut := func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + cutMark
	}
	for _, enc := range []struct {
		name string
		form string
	}{
		{name: "as is", form: secret},
		{name: "non-canonical percent-encoding", form: "%4F" + secret[1:]},
	} {
		in := "foo=" + strings.Repeat("a", 40) + enc.form + "&x=1"
		for n := 40; n < len(in); n++ {
			if got := cut(w.Scrub(in), n); strings.Contains(got, "OPS-") || strings.Contains(got, "PS-TOKEN") {
				t.Fatalf("%s: scrub then cut at %d = %q", enc.name, n, got)
			}
			got := w.Scrub(cut(in, n))
			for k := minCutPrefix; k <= len(secret); k++ {
				if strings.Contains(got, secret[:k]) || strings.Contains(got, secret[1:k]) && k > minCutPrefix {
					t.Fatalf("%s: cut at %d then scrub = %q keeps %d bytes of the secret", enc.name, n, got, k)
				}
			}
		}
	}
}
