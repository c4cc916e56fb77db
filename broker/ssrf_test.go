package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// End to end: a management token holder with update:connections points a connection at an
// upstream it controls and tries to make the broker reach internal services through it.

// rogueIdP is an upstream the attacker controls: a demoidp provider (optional DPoP, the
// harness's client credentials) whose discovery document and answers the test rewrites.
type rogueIdP struct {
	URL        string
	srv        *httptest.Server
	tokenCalls atomic.Int64
}

type rogueOpts struct {
	host        string           // issuer host name (default 127.0.0.1); with cert: https
	cert        *tls.Certificate // serve https with it
	noKeepAlive bool             // close every connection after one answer (the broker dials again)
	editDoc     func(doc map[string]any)
	// intercept answers a request itself (returning true) instead of the provider.
	intercept func(w http.ResponseWriter, r *http.Request) bool
}

func newRogueIdP(t *testing.T, o rogueOpts) *rogueIdP {
	t.Helper()
	f := &rogueIdP{}
	var inner http.Handler
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/token" {
			f.tokenCalls.Add(1)
		}
		if o.intercept != nil && o.intercept(w, r) {
			return
		}
		if r.URL.Path == "/.well-known/openid-configuration" && o.editDoc != nil {
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, r)
			var doc map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			o.editDoc(doc)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(doc)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	host := o.host
	if host == "" {
		host = "127.0.0.1"
	}
	_, port, _ := net.SplitHostPort(f.srv.Listener.Addr().String())
	scheme := "http"
	if o.cert != nil {
		scheme = "https"
	}
	f.URL = scheme + "://" + net.JoinHostPort(host, port)
	opts := optionalDPoPUp
	opts.ClientID, opts.ClientSecret = upClientID, upSecret
	h, _, err := demoidp.NewHandler(f.URL, opts)
	if err != nil {
		t.Fatal(err)
	}
	inner = h
	if o.noKeepAlive {
		f.srv.Config.SetKeepAlivesEnabled(false)
	}
	if o.cert != nil {
		f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*o.cert}}
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	return f
}

// dpopOptions is a connection options object that enables DPoP (so the management API fetches
// the issuer's discovery document) without a client_secret (the stored one is kept).
func dpopOptions(issuer string) map[string]any {
	return map[string]any{"options": map[string]any{"issuer": issuer, "client_id": upClientID, "dpop_signing_alg": "ES256"}}
}

// wantGenericDiscoveryRefusal checks the management API's answer to a discovery failure: the
// one generic message, naming no address. It returns the fapi event's detail (the reason).
func wantGenericDiscoveryRefusal(t *testing.T, h *harness, r apiResp) string {
	t.Helper()
	wantAPIError(t, r, http.StatusBadRequest, "discovery_failed", errDiscoveryAPI.message)
	if msg := r.obj()["message"]; msg != errDiscoveryAPI.message {
		t.Fatalf("message %q, want exactly %q", msg, errDiscoveryAPI.message)
	}
	ev := h.lastEvent()
	e, _ := ev.Details["error"].(map[string]any)
	detail, _ := e["detail"].(string)
	if ev.Type != logs.TypeFailedAPI || detail == "" {
		t.Fatalf("want a fapi event with the reason in details.error.detail, got %s %v", ev.Type, ev.Details)
	}
	if strings.Contains(detail, upSecret) {
		t.Fatalf("the event detail carries the upstream client secret: %q", detail)
	}
	return detail
}

func TestManagementCannotMakeTheBrokerFollowAnUpstreamRedirect(t *testing.T) {
	h := mgmtHarness(t, nil) // loopback allowed: only the redirect refusal stands in the way
	internal := newCountingServer(t, nil)
	target := internal.URL + "/latest/meta-data/iam/security-credentials/"
	rogue := newRogueIdP(t, rogueOpts{intercept: func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, target, http.StatusFound)
		return true
	}})
	for _, tc := range []struct {
		name string
		call func() apiResp
	}{
		{name: "PATCH", call: func() apiResp {
			return api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+config.DeriveConnectionID("corp"), tokAll, dpopOptions(rogue.URL))
		}},
		{name: "POST", call: func() apiResp {
			body := dpopOptions(rogue.URL)
			body["name"], body["strategy"] = "rogue", "oidc"
			body["options"].(map[string]any)["client_secret"] = upSecret
			return api(t, h.srv.URL, "POST", "/api/v2/connections", tokAll, body)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			detail := wantGenericDiscoveryRefusal(t, h, tc.call())
			if !strings.Contains(detail, "upstream redirect to "+target+" refused") {
				t.Errorf("detail %q does not name the refused redirect", detail)
			}
			if n := internal.hits.Load(); n != 0 {
				t.Fatalf("the internal server received %d requests", n)
			}
		})
	}
	t.Run("login through a connection stored without the check", func(t *testing.T) {
		// Without dpop_signing_alg the API stores the issuer without fetching it; the next
		// login fetches discovery and meets the redirect.
		body := map[string]any{"options": map[string]any{"issuer": rogue.URL, "client_id": upClientID}}
		if r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+config.DeriveConnectionID("corp"), tokAll, body); r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		resp, _ := get(t, h.browser(), h.authorizeURL(nil))
		if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("error") != "temporarily_unavailable" || strings.Contains(q.Get("error_description"), "127.0.0.1") {
			t.Fatalf("app got %v", q)
		}
		ev := h.lastEventOf(logs.TypeFailedLogin)
		if desc, _ := ev.Details["error_description"].(string); ev.Details["error"] != "discovery_failed" || !strings.Contains(desc, "refused") {
			t.Fatalf("f event %v", ev.Details)
		}
		if n := internal.hits.Load(); n != 0 {
			t.Fatalf("the internal server received %d requests", n)
		}
	})
}

// TestTokenEndpointRedirectDoesNotCarryTheClientSecretOnward: a 307 from the token endpoint
// would make the broker repeat its POST (client secret, code, PKCE verifier) to the target.
func TestTokenEndpointRedirectDoesNotCarryTheClientSecretOnward(t *testing.T) {
	h := mgmtHarness(t, nil)
	internal := newCountingServer(t, nil)
	rogue := newRogueIdP(t, rogueOpts{intercept: func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/token" {
			return false
		}
		http.Redirect(w, r, internal.URL+"/v1/secret", http.StatusTemporaryRedirect)
		return true
	}})
	if r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+config.DeriveConnectionID("corp"), tokAll, dpopOptions(rogue.URL)); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	resp, _ := get(t, h.browser(), h.authorizeURL(nil))
	if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("error") != "server_error" || q.Get("code") != "" {
		t.Fatalf("app got %v", q)
	}
	ev := h.lastEventOf(logs.TypeFailedLogin)
	if desc, _ := ev.Details["error_description"].(string); ev.Details["error"] != "upstream_error" || !strings.Contains(desc, "the broker follows no redirects on upstream calls") {
		t.Fatalf("f event %v", ev.Details)
	}
	if rogue.tokenCalls.Load() != 1 || internal.hits.Load() != 0 {
		t.Fatalf("token calls %d, internal requests %d: want one token call, nothing forwarded", rogue.tokenCalls.Load(), internal.hits.Load())
	}
}

func TestDiscoveryDocumentPointingAtInternalEndpointsIsRefused(t *testing.T) {
	h := mgmtHarness(t, nil)
	for _, tc := range []struct {
		name, member, url string
	}{
		{name: "token endpoint on the metadata service over http", member: "token_endpoint", url: "http://169.254.169.254/latest/api/token"},
		{name: "token endpoint on a private host over http", member: "token_endpoint", url: "http://10.0.0.5:8200/v1/auth/token"},
		{name: "token endpoint with user info", member: "token_endpoint", url: "https://idp.example.com@127.0.0.1/token"},
		{name: "jwks_uri on an internal host name over http", member: "jwks_uri", url: "http://vault.internal/v1/keys"},
		{name: "userinfo endpoint not http(s)", member: "userinfo_endpoint", url: "gopher://127.0.0.1:6379/_INFO"},
		{name: "end_session_endpoint relative", member: "end_session_endpoint", url: "/logout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rogue := newRogueIdP(t, rogueOpts{editDoc: func(doc map[string]any) { doc[tc.member] = tc.url }})
			r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+config.DeriveConnectionID("other"), tokAll, dpopOptions(rogue.URL))
			if detail := wantGenericDiscoveryRefusal(t, h, r); !strings.Contains(detail, "member "+tc.member+": ") {
				t.Errorf("detail %q does not name %s", detail, tc.member)
			}
			if strings.Contains(r.raw, tc.url) || strings.Contains(r.raw, tc.member) {
				t.Errorf("the answer %s shows the document's content", r.raw)
			}
		})
	}

	// Endpoints that pass the URL rules (https, or http on loopback) but resolve to internal
	// addresses are refused when dialled: the broker never POSTs the code exchange there, nor
	// fetches keys or userinfo from there.
	for _, tc := range []struct {
		name, member, url string
		code              string // details.error of the f event
		refusal           string // in its description
	}{
		{name: "token endpoint on the metadata address over https", member: "token_endpoint", url: "https://169.254.169.254/latest/api/token",
			code: "upstream_error", refusal: "169.254.169.254 refused: link-local (cloud metadata) address"},
		{name: "token endpoint on a loopback address outside the allow-list", member: "token_endpoint", url: "http://127.0.0.2:6379/token",
			code: "upstream_error", refusal: "127.0.0.2 refused: loopback address"},
		{name: "jwks_uri on a private address over https", member: "jwks_uri", url: "https://10.0.0.5/keys",
			code: "id_token_invalid", refusal: "10.0.0.5 refused: private (RFC 1918) address"},
		{name: "userinfo endpoint on the IPv6 metadata address over https", member: "userinfo_endpoint", url: "https://[fd00:ec2::254]/userinfo",
			code: "userinfo_failed", refusal: "fd00:ec2::254 refused: unique-local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
				withMgmt(c)
				c.UpstreamAllowedNetworks = []string{"127.0.0.1/32"}
			}})
			rogue := newRogueIdP(t, rogueOpts{editDoc: func(doc map[string]any) { doc[tc.member] = tc.url }})
			body := dpopOptions(rogue.URL)
			body["options"].(map[string]any)["fetch_userinfo"] = true
			if r := api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+config.DeriveConnectionID("corp"), tokAll, body); r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			resp, _ := get(t, h.browser(), h.authorizeURL(nil))
			if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("error") != "server_error" || q.Get("code") != "" || strings.Contains(q.Get("error_description"), tc.url) {
				t.Fatalf("app got %v", q)
			}
			ev := h.lastEventOf(logs.TypeFailedLogin)
			if desc, _ := ev.Details["error_description"].(string); ev.Details["error"] != tc.code || !strings.Contains(desc, tc.refusal) {
				t.Fatalf("f event %v, want %s with the refusal %q", ev.Details, tc.code, tc.refusal)
			}
		})
	}
}

// TestRebindingUpstreamHostCannotReachInternalAddresses: the attacker's host name resolves to an
// allowed address while the connection is checked and the login starts, then to an internal
// one. The dial to the internal address is refused at connect time, at the token exchange (no
// client secret, code or verifier leaves) and at the next management check.
func TestRebindingUpstreamHostCannotReachInternalAddresses(t *testing.T) {
	const host = "idp.rebind.test"
	cert, pool := testCert(t, host)
	dns := newFakeDNS(t, host, "127.0.0.1")
	// The allow-list stands for the attacker's public address: 127.0.0.1 may be reached,
	// 127.0.0.2 (the internal service) may not.
	h := newHarness(t, harnessOpts{up: optionalDPoPUp,
		mutate: func(c *config.Config) {
			withMgmt(c)
			c.UpstreamAllowedNetworks = []string{"127.0.0.1/32"}
		},
		deps: func(d *Deps) {
			d.Resolver = dns.resolver()
			d.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		}})
	rogue := newRogueIdP(t, rogueOpts{host: host, cert: &cert, noKeepAlive: true})
	patch := func() apiResp {
		return api(t, h.srv.URL, "PATCH", "/api/v2/connections/"+config.DeriveConnectionID("corp"), tokAll, dpopOptions(rogue.URL))
	}
	if r := patch(); r.status != http.StatusOK {
		t.Fatalf("PATCH while %s resolves to 127.0.0.1: %d %s", host, r.status, r.raw)
	}

	browser := rebindBrowser(t, h, rogue, pool)
	callback := h.toCallback(browser, h.authorizeURL(nil))
	dns.set("127.0.0.2")
	resp, _ := get(t, browser, callback)
	if q := appResult(t, resp, h.app.URL+"/cb"); q.Get("error") != "server_error" || q.Get("code") != "" {
		t.Fatalf("app got %v", q)
	}
	ev := h.lastEventOf(logs.TypeFailedLogin)
	if desc, _ := ev.Details["error_description"].(string); ev.Details["error"] != "upstream_error" || !strings.Contains(desc, "upstream connection to 127.0.0.2 refused: loopback address") {
		t.Fatalf("f event %v", ev.Details)
	}
	if n := rogue.tokenCalls.Load(); n != 0 {
		t.Fatalf("the token endpoint received %d requests", n)
	}

	detail := wantGenericDiscoveryRefusal(t, h, patch())
	if !strings.Contains(detail, "upstream connection to 127.0.0.2 refused") {
		t.Fatalf("detail %q does not name the refused address", detail)
	}
}

// rebindBrowser is a browser that reaches the rogue IdP's host name at 127.0.0.1 (as the
// attacker's public address would be) and trusts its certificate.
func rebindBrowser(t *testing.T, h *harness, rogue *rogueIdP, pool *x509.CertPool) *http.Client {
	t.Helper()
	c := h.browser()
	idpHost := strings.TrimPrefix(rogue.URL, "https://")
	listening := rogue.srv.Listener.Addr().String()
	c.Transport = &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == idpHost {
				addr = listening
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestDiscoveryFailuresLookTheSameToTheAPICaller: whether the issuer's port is closed, open
// but not HTTP, answering 404, silent, refused by the address policy, redirecting or serving
// a bad document, the management API answers the same bytes, so it cannot be used to map
// internal hosts and ports. The reasons differ in the fapi event.
func TestDiscoveryFailuresLookTheSameToTheAPICaller(t *testing.T) {
	allowOne := func(timeout time.Duration) *harness {
		return newHarness(t, harnessOpts{up: optionalDPoPUp, mutate: func(c *config.Config) {
			withMgmt(c)
			c.UpstreamAllowedNetworks = []string{"127.0.0.1/32"}
			if timeout > 0 {
				c.UpstreamTimeout = timeout
			}
		}})
	}
	h := allowOne(0)
	slow := allowOne(time.Second)

	notHTTP := tcpServer(t, func(c net.Conn) {
		_, _ = c.Read(make([]byte, 4096)) // the request (or TLS ClientHello), so closing sends no reset
		_, _ = c.Write([]byte("-ERR unknown command 'GET'\r\n"))
	})
	silent := tcpServer(t, func(c net.Conn) { <-t.Context().Done() })
	notFound := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notFound.Close)
	internal := newCountingServer(t, nil)
	redirecting := newRogueIdP(t, rogueOpts{intercept: func(w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, internal.URL+"/", http.StatusFound)
		return true
	}})
	badDoc := newRogueIdP(t, rogueOpts{editDoc: func(doc map[string]any) { doc["token_endpoint"] = "http://169.254.169.254/" }})

	var first string
	for _, tc := range []struct {
		name   string
		h      *harness
		issuer string
		reason []string // any of them in the fapi event's detail
	}{
		{name: "closed port", h: h, issuer: closedPort(t), reason: []string{"connection refused"}},
		{name: "open port speaking another protocol", h: h, issuer: "http://" + notHTTP, reason: []string{"malformed HTTP"}},
		{name: "https to a plain-text port", h: h, issuer: "https://" + notHTTP, reason: []string{"tls"}},
		{name: "open HTTP port answering 404", h: h, issuer: notFound.URL, reason: []string{"answered HTTP 404"}},
		{name: "open port that never answers", h: slow, issuer: "http://" + silent, reason: []string{"Client.Timeout exceeded", "context deadline exceeded"}},
		{name: "loopback address outside the allow-list", h: h, issuer: "http://127.0.0.2:6379", reason: []string{"127.0.0.2 refused: loopback address"}},
		{name: "cloud metadata address", h: h, issuer: "https://169.254.169.254", reason: []string{"169.254.169.254 refused: link-local"}},
		{name: "redirect", h: h, issuer: redirecting.URL, reason: []string{"redirect to " + internal.URL + "/ refused"}},
		{name: "document with an internal endpoint", h: h, issuer: badDoc.URL, reason: []string{"member token_endpoint"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := api(t, tc.h.srv.URL, "PATCH", "/api/v2/connections/"+config.DeriveConnectionID("other"), tokAll, dpopOptions(tc.issuer))
			detail := wantGenericDiscoveryRefusal(t, tc.h, r)
			if first == "" {
				first = r.raw
			}
			if r.raw != first {
				t.Fatalf("answer\n%s\ndiffers from\n%s", r.raw, first)
			}
			if !slices.ContainsFunc(tc.reason, func(r string) bool { return strings.Contains(detail, r) }) {
				t.Errorf("detail %q does not give the reason %q", detail, tc.reason)
			}
		})
	}
	if n := internal.hits.Load(); n != 0 {
		t.Fatalf("the internal server received %d requests", n)
	}
}

// tcpServer accepts loopback connections and hands each to serve, then closes it. It returns
// the address.
func tcpServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}
