package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs/logtest"
)

var demoIdPListening = regexp.MustCompile(`(?m)^  issuer (http://\S+)$`)

// `broker demo-idp` serves the demo's upstream IdP alone: its discovery document names the
// issuer it was given (or its own loopback address) with DPoP, and /healthz answers 200.
func TestDemoIdPServesTheDemoIdentityProviderAlone(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantIssuer string // "" = the printed loopback address
	}{
		{name: "default issuer from the listen address", args: []string{"--listen", "127.0.0.1:0"}},
		{name: "issuer given for a container", args: []string{"--listen", "127.0.0.1:0", "--issuer", "http://127.0.0.1:8081"}, wantIssuer: "http://127.0.0.1:8081"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(demoIdPSecretEnv, strings.Repeat("s", minDemoIdPSecret))
			ctx, cancel := context.WithCancel(context.Background())
			out, errOut, done := &logtest.Buffer{}, &logtest.Buffer{}, make(chan int, 1)
			go func() { done <- run(ctx, append([]string{"demo-idp"}, tc.args...), out, errOut) }()
			defer func() {
				cancel()
				if code := <-done; code != 0 {
					t.Errorf("demo-idp exited %d after Ctrl-C\n%s%s", code, out.String(), errOut.String())
				}
			}()
			var issuer, addr string
			for deadline := time.Now().Add(60 * time.Second); issuer == "" && time.Now().Before(deadline); {
				if m := demoIdPListening.FindStringSubmatch(out.String()); m != nil {
					issuer = m[1]
					_, rest, _ := strings.Cut(out.String(), " listening on ")
					addr, _, _ = strings.Cut(rest, "\n")
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if issuer == "" {
				t.Fatalf("demo-idp did not print its issuer\n%s%s", out.String(), errOut.String())
			}
			if want := tc.wantIssuer; want == "" && issuer != "http://"+addr || want != "" && issuer != want {
				t.Fatalf("issuer %q (listening on %s), want %q", issuer, addr, tc.wantIssuer)
			}
			get := func(path string) (int, []byte) {
				t.Helper()
				resp, err := http.Get("http://" + addr + path)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = resp.Body.Close() }()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, body
			}
			if code, _ := get("/healthz"); code != http.StatusOK {
				t.Errorf("/healthz: %d", code)
			}
			code, body := get("/.well-known/openid-configuration")
			var doc struct {
				Issuer   string   `json:"issuer"`
				DPoPAlgs []string `json:"dpop_signing_alg_values_supported"`
			}
			if err := json.Unmarshal(body, &doc); code != http.StatusOK || err != nil || doc.Issuer != issuer || len(doc.DPoPAlgs) == 0 {
				t.Errorf("discovery: %d %v %+v", code, err, doc)
			}
		})
	}
}

// demo-idp refuses to start without the broker's client secret, or with an --issuer that is
// not an http(s) URL, and an extra argument is a usage mistake.
func TestDemoIdPRefusesAMissingSecretOrAMalformedURL(t *testing.T) {
	for _, tc := range []struct {
		name, secret string
		args         []string
		code         int
		want         string
	}{
		{name: "no secret", args: []string{"--listen", "127.0.0.1:0"}, code: 1, want: "$DEMO_IDP_CLIENT_SECRET must hold"},
		{name: "short secret", secret: "short", args: []string{"--listen", "127.0.0.1:0"}, code: 1, want: "at least 32 characters"},
		{name: "issuer with a query", secret: strings.Repeat("s", 32), args: []string{"--listen", "127.0.0.1:0", "--issuer", "http://127.0.0.1:8081/?x=1"}, code: 1, want: "must be an http(s) URL"},
		{name: "issuer not http", secret: strings.Repeat("s", 32), args: []string{"--listen", "127.0.0.1:0", "--issuer", "ftp://idp"}, code: 1, want: "must be an http(s) URL"},
		{name: "extra argument", args: []string{"now"}, code: 2, want: "usage: broker demo-idp ["},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(demoIdPSecretEnv, tc.secret)
			code, _, errOut := runCmd(t, append([]string{"demo-idp"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}
