package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config/configtest"
)

// urlRuleCase is one configuration change and the problem it must (or must not) cause.
type urlRuleCase struct {
	name      string
	mut       func(c *Config)
	key       string // the key the problem is reported under
	wantError string // "" = no problem under key
}

// checkURLRules validates configtest.ValidYAML changed by each case.
func checkURLRules(t *testing.T, cases []urlRuleCase) {
	t.Helper()
	configtest.SetEnv(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(configtest.ValidYAML))
			if err != nil {
				t.Fatal(err)
			}
			tc.mut(cfg)
			errs := cfg.Validate()
			var got []FieldError
			for _, e := range errs {
				if e.Key == tc.key {
					got = append(got, e)
				}
			}
			switch {
			case tc.wantError == "" && len(got) > 0:
				t.Fatalf("%s refused: %v", tc.key, FieldErrors(got))
			case tc.wantError != "" && !slices.Contains(got, FieldError{Key: tc.key, Reason: tc.wantError}):
				t.Fatalf("got %v\nwant %s: %s", FieldErrors(errs), tc.key, tc.wantError)
			}
		})
	}
}

func TestBrokerURLsRequireHTTPSOffLoopbackOnOneOrigin(t *testing.T) {
	issuer := func(u string) func(*Config) { return func(c *Config) { c.Issuer = u } }
	public := func(u string) func(*Config) { return func(c *Config) { c.PublicURL = u } }
	both := func(iss, pub string) func(*Config) {
		return func(c *Config) { c.Issuer, c.PublicURL = iss, pub }
	}
	insecure := func(f func(*Config)) func(*Config) {
		return func(c *Config) { f(c); c.AllowInsecureHTTP = true }
	}
	const httpsOnly = " must use https (plain http only on a loopback host: 127.0.0.1, [::1] or localhost; allow_insecure_http accepts it elsewhere, for development only)"
	checkURLRules(t, []urlRuleCase{
		{name: "https issuer", mut: issuer("https://login.example.com/"), key: "issuer"},
		{name: "http issuer on 127.0.0.1", mut: issuer("http://127.0.0.1:8080/"), key: "issuer"},
		{name: "http issuer anywhere in 127.0.0.0/8", mut: issuer("http://127.8.9.10:8080/"), key: "issuer"},
		{name: "http issuer on ::1", mut: issuer("http://[::1]:8080/"), key: "issuer"},
		{name: "http issuer on localhost", mut: issuer("http://localhost:8080/"), key: "issuer"},
		{name: "http issuer on a LAN address is refused", mut: issuer("http://192.168.1.10:8080/"),
			key: "issuer", wantError: `"http://192.168.1.10:8080/"` + httpsOnly},
		{name: "http issuer on a name is refused", mut: issuer("http://login.example.com/"),
			key: "issuer", wantError: `"http://login.example.com/"` + httpsOnly},
		{name: "a name that merely starts like localhost is not loopback", mut: issuer("http://localhost.example.com/"),
			key: "issuer", wantError: `"http://localhost.example.com/"` + httpsOnly},
		{name: "shortened loopback IP is not a loopback literal", mut: issuer("http://127.1:8080/"),
			key: "issuer", wantError: `"http://127.1:8080/"` + httpsOnly},
		{name: "http issuer on a LAN address with allow_insecure_http", mut: insecure(issuer("http://192.168.1.10:8080/")), key: "issuer"},
		{name: "http public_url on a LAN address is refused", mut: both("http://192.168.1.10:8080/", "http://192.168.1.10:8080/broker"),
			key: "public_url", wantError: `"http://192.168.1.10:8080/broker"` + httpsOnly},
		{name: "public_url under the issuer's origin", mut: both("https://login.example.com/", "https://login.example.com/broker"), key: "public_url"},
		{name: "public_url with the default port spelled out", mut: both("https://login.example.com/", "https://LOGIN.example.com:443"), key: "public_url"},
		{name: "public_url with another scheme is refused", mut: public("https://127.0.0.1:8080"),
			key: "public_url", wantError: `"https://127.0.0.1:8080" must be on the issuer's origin http://127.0.0.1:8080 (same scheme, host and port; only the path may differ)`},
		{name: "public_url on another host is refused", mut: both("https://login.example.com/", "https://broker.internal.example.com"),
			key: "public_url", wantError: `"https://broker.internal.example.com" must be on the issuer's origin https://login.example.com:443 (same scheme, host and port; only the path may differ)`},
		{name: "public_url on another port is refused", mut: both("https://login.example.com/", "https://login.example.com:8443"),
			key: "public_url", wantError: `"https://login.example.com:8443" must be on the issuer's origin https://login.example.com:443 (same scheme, host and port; only the path may differ)`},
		{name: "public_url on localhost for a 127.0.0.1 issuer is refused", mut: public("http://localhost:8080"),
			key: "public_url", wantError: `"http://localhost:8080" must be on the issuer's origin http://127.0.0.1:8080 (same scheme, host and port; only the path may differ)`},
		{name: "allow_insecure_http does not excuse a host mismatch", mut: insecure(both("http://192.168.1.10:8080/", "http://192.168.1.11:8080")),
			key: "public_url", wantError: `"http://192.168.1.11:8080" must be on the issuer's origin http://192.168.1.10:8080 (same scheme, host and port; only the path may differ)`},
	})
}

func TestRedirectURIsAreHTTPSLoopbackHTTPOrReverseDomainSchemes(t *testing.T) {
	for _, list := range []struct {
		key string
		set func(c *Config, uri string)
	}{
		{key: "clients[0].redirect_uris[0]", set: func(c *Config, u string) { c.Clients[0].RedirectURIs = []string{u} }},
		{key: "clients[0].post_logout_redirect_uris[0]", set: func(c *Config, u string) { c.Clients[0].PostLogoutRedirectURIs = []string{u} }},
	} {
		var cases []urlRuleCase
		for _, tc := range []struct {
			uri       string
			insecure  bool // allow_insecure_http
			wantError string
		}{
			{uri: "https://app.example.com/callback"},
			{uri: "https://app.example.com/callback?tenant=a"},
			{uri: "http://127.0.0.1:8082/callback"},
			{uri: "http://127.0.0.1/callback"},
			{uri: "http://[::1]:49152/callback"},
			{uri: "http://localhost:3000/callback"},
			{uri: "com.example.app:/oauth2redirect"},
			{uri: "com.example.app://callback"},
			{uri: "http://app.example.com/callback", wantError: `"http://app.example.com/callback" must use https (plain http only on a loopback host such as http://127.0.0.1:PORT/, RFC 8252 §7.3)`},
			{uri: "http://10.0.0.5:8082/callback", wantError: `"http://10.0.0.5:8082/callback" must use https (plain http only on a loopback host such as http://127.0.0.1:PORT/, RFC 8252 §7.3)`},
			{uri: "http://10.0.0.5:8082/callback", insecure: true},
			{uri: "myapp:/callback", wantError: `"myapp:/callback": a private-use URI scheme must be a reverse domain name such as com.example.app (RFC 8252 §7.1)`},
			{uri: "com.example.app:", wantError: `"com.example.app:" has nothing after the scheme (e.g. com.example.app:/callback)`},
			{uri: "javascript:alert(document.cookie)", wantError: `"javascript:alert(document.cookie)": the javascript: scheme is never accepted for a redirect URI`},
			{uri: "JavaScript:alert(1)", insecure: true, wantError: `"JavaScript:alert(1)": the javascript: scheme is never accepted for a redirect URI`},
			{uri: "data:text/html,<script>alert(1)</script>", insecure: true, wantError: `"data:text/html,<script>alert(1)</script>": the data: scheme is never accepted for a redirect URI`},
			{uri: "vbscript:msgbox(1)", wantError: `"vbscript:msgbox(1)": the vbscript: scheme is never accepted for a redirect URI`},
			{uri: "file:///etc/passwd", wantError: `"file:///etc/passwd": the file: scheme is never accepted for a redirect URI`},
			{uri: "blob:https://app.example.com/0b1c", wantError: `"blob:https://app.example.com/0b1c": the blob: scheme is never accepted for a redirect URI`},
			{uri: "about:blank", wantError: `"about:blank": the about: scheme is never accepted for a redirect URI`},
			{uri: "https://app.example.com/cb#frag", wantError: `"https://app.example.com/cb#REDACTED" must not contain a fragment`},
			{uri: "https://app.example.com/cb#", wantError: `"https://app.example.com/cb#" must not contain a fragment`},
			{uri: "https://user:pw@app.example.com/cb", wantError: `"https://REDACTED@app.example.com/cb" must not contain user information`},
			{uri: "//app.example.com/cb", wantError: `"//app.example.com/cb" must be an absolute URI`},
			{uri: "/callback", wantError: `"/callback" must be an absolute URI`},
			{uri: "https:///callback", wantError: `"https:///callback" has no host`},
		} {
			cases = append(cases, urlRuleCase{
				name: list.key + " " + tc.uri,
				mut: func(c *Config) {
					list.set(c, tc.uri)
					c.AllowInsecureHTTP = tc.insecure
				},
				key: list.key, wantError: tc.wantError,
			})
		}
		checkURLRules(t, cases)
	}
}

func TestAllowedOriginsAreHTTPSOrLoopbackHTTPOrigins(t *testing.T) {
	const key = "clients[0].allowed_origins[0]"
	var cases []urlRuleCase
	for _, tc := range []struct {
		origin    string
		insecure  bool
		wantError string
	}{
		{origin: "https://spa.example.com"},
		{origin: "https://spa.example.com:8443"},
		{origin: "http://127.0.0.1:3000"},
		{origin: "http://localhost:3000"},
		{origin: "http://spa.example.com", wantError: `"http://spa.example.com" must use https (plain http only on a loopback host such as http://127.0.0.1:3000)`},
		{origin: "http://spa.example.com", insecure: true},
		{origin: "https://spa.example.com/app", wantError: `"https://spa.example.com/app" must be an origin such as https://app.example.com`},
		{origin: "https://spa.example.com?x", wantError: `"https://spa.example.com?REDACTED" must be an origin such as https://app.example.com`},
		{origin: "https://spa.example.com#", wantError: `"https://spa.example.com#" must be an origin such as https://app.example.com`},
		{origin: "null", wantError: `"null" must be an origin such as https://app.example.com`},
		{origin: "javascript:alert(1)", insecure: true, wantError: `"javascript:alert(1)" must be an origin such as https://app.example.com`},
	} {
		cases = append(cases, urlRuleCase{
			name: tc.origin,
			mut: func(c *Config) {
				c.Clients[0].AllowedOrigins = []string{tc.origin}
				c.AllowInsecureHTTP = tc.insecure
			},
			key: key, wantError: tc.wantError,
		})
	}
	checkURLRules(t, cases)
}

// TestBackchannelLogoutURIIsAnHTTPSURLWithoutFragmentOrUserinfo: backchannel_logout_uri
// follows the URL rules of the broker's own calls (https, http on a loopback host or under
// allow_insecure_http), may carry a query but no fragment (OpenID Connect Back-Channel Logout
// 1.0 §2.2) and no user information; it is optional.
func TestBackchannelLogoutURIIsAnHTTPSURLWithoutFragmentOrUserinfo(t *testing.T) {
	const key = "clients[0].backchannel_logout_uri"
	const httpsOnly = " must use https (plain http only on a loopback host such as http://127.0.0.1:PORT/; allow_insecure_http accepts it elsewhere, for development only)"
	var cases []urlRuleCase
	for _, tc := range []struct {
		name      string
		uri       string
		insecure  bool // allow_insecure_http
		wantError string
	}{
		{name: "absent", uri: ""},
		{name: "https", uri: "https://app.example.com/backchannel-logout"},
		{name: "https with port and query", uri: "https://app.internal.example:8443/logout?tenant=a"},
		{name: "http on 127.0.0.1", uri: "http://127.0.0.1:8082/backchannel-logout"},
		{name: "http on ::1", uri: "http://[::1]:8082/bcl"},
		{name: "http on localhost", uri: "http://localhost:3000/bcl"},
		{name: "http on a name is refused", uri: "http://app.example.com/bcl", wantError: `"http://app.example.com/bcl"` + httpsOnly},
		{name: "http on a LAN address is refused", uri: "http://10.0.0.5:8082/bcl", wantError: `"http://10.0.0.5:8082/bcl"` + httpsOnly},
		{name: "http on a LAN address with allow_insecure_http", uri: "http://10.0.0.5:8082/bcl", insecure: true},
		{name: "fragment is refused", uri: "https://app.example.com/bcl#x", wantError: `"https://app.example.com/bcl#REDACTED" must not contain a fragment`},
		{name: "empty fragment is refused", uri: "https://app.example.com/bcl#", wantError: `"https://app.example.com/bcl#" must not contain a fragment`},
		{name: "user information is refused", uri: "https://user:pw@app.example.com/bcl", wantError: `"https://REDACTED@app.example.com/bcl" must not contain user information`},
		{name: "user information is refused under allow_insecure_http", uri: "http://user@10.0.0.5/bcl", insecure: true, wantError: `"http://REDACTED@10.0.0.5/bcl" must not contain user information`},
		{name: "relative is refused", uri: "/bcl", wantError: `"/bcl" must be an absolute https URL (http only on a loopback host)`},
		{name: "scheme-relative is refused", uri: "//app.example.com/bcl", wantError: `"//app.example.com/bcl" must be an absolute https URL (http only on a loopback host)`},
		{name: "private-use scheme is refused", uri: "com.example.app:/bcl", wantError: `"com.example.app:/bcl" must be an absolute https URL (http only on a loopback host)`},
		{name: "javascript is refused", uri: "javascript:alert(1)", insecure: true, wantError: `"javascript:alert(1)" must be an absolute https URL (http only on a loopback host)`},
		{name: "no host is refused", uri: "https:///bcl", wantError: `"https:///bcl" has no host`},
		{name: "not a URL", uri: "https://app.example.com:port/bcl", wantError: `"https://app.example.com:port/bcl" is not a URL`},
	} {
		cases = append(cases, urlRuleCase{
			name: tc.name,
			mut: func(c *Config) {
				c.Clients[0].BackchannelLogoutURI = tc.uri
				c.AllowInsecureHTTP = tc.insecure
			},
			key: key, wantError: tc.wantError,
		})
	}
	checkURLRules(t, cases)
}

// TestBackchannelLogoutKeysAreReadFromYAML: both client keys of Back-Channel Logout are known
// keys of the file and land in the client; a value of the wrong shape names the key.
func TestBackchannelLogoutKeysAreReadFromYAML(t *testing.T) {
	configtest.SetEnv(t)
	const clientLine = `    redirect_uris: ["http://127.0.0.1:8082/callback"]`
	for _, tc := range []struct {
		name         string
		add          string
		wantURI      string
		wantRequired bool
		wantError    FieldError // zero: parses
	}{
		{name: "both keys", add: "\n    backchannel_logout_uri: https://app.example.com/bcl\n    backchannel_logout_session_required: true",
			wantURI: "https://app.example.com/bcl", wantRequired: true},
		{name: "uri alone", add: "\n    backchannel_logout_uri: http://127.0.0.1:8082/bcl", wantURI: "http://127.0.0.1:8082/bcl"},
		{name: "session_required not a boolean", add: "\n    backchannel_logout_session_required: sometimes",
			wantError: FieldError{Key: "clients[0].backchannel_logout_session_required", Reason: `"sometimes" is not a boolean (use true or false)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(strings.Replace(configtest.ValidYAML, clientLine, clientLine+tc.add, 1)))
			if tc.wantError != (FieldError{}) {
				if fe, ok := err.(FieldErrors); !ok || !slices.Contains(fe, tc.wantError) {
					t.Fatalf("got %v, want %v", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Clients[0]
			if c.BackchannelLogoutURI != tc.wantURI || c.BackchannelLogoutSessionRequired != tc.wantRequired {
				t.Fatalf("client %+v, want backchannel_logout_uri %q, session_required %v", c, tc.wantURI, tc.wantRequired)
			}
			if errs := cfg.Validate(); len(errs) != 0 {
				t.Fatalf("Validate: %v", FieldErrors(errs))
			}
		})
	}
}

// TestInsecureHTTPSwitchIsWarned: with allow_insecure_http, Warnings names the switch and
// every URL that uses plain http off loopback; without it, nothing.
func TestInsecureHTTPSwitchIsWarned(t *testing.T) {
	cfg := insecureHTTPConfig(t)
	want := []FieldError{
		{Key: "allow_insecure_http", Reason: "is true: plain http is accepted on non-loopback hosts (2 URLs use it); codes, tokens and cookies then cross the network unencrypted: development only"},
		{Key: "issuer", Reason: "plain http on a non-loopback host, accepted only because allow_insecure_http is true"},
		{Key: "clients[0].redirect_uris[1]", Reason: "plain http on a non-loopback host, accepted only because allow_insecure_http is true"},
	}
	if got := cfg.Warnings(); !slices.Equal(got, want) {
		t.Fatalf("Warnings() = %v\nwant %v", got, want)
	}
	cfg.Clients[0].BackchannelLogoutURI = "http://192.168.1.10:8082/backchannel-logout"
	want[0].Reason = strings.Replace(want[0].Reason, "(2 URLs", "(3 URLs", 1)
	want = append(want, FieldError{Key: "clients[0].backchannel_logout_uri", Reason: "plain http on a non-loopback host, accepted only because allow_insecure_http is true"})
	if got := cfg.Warnings(); !slices.Equal(got, want) {
		t.Fatalf("Warnings() with a backchannel_logout_uri = %v\nwant %v", got, want)
	}
	cfg.AllowInsecureHTTP = false
	if w := cfg.Warnings(); len(w) != 0 {
		t.Fatalf("warnings without the switch: %v", w)
	}
}

// insecureHTTPConfig is a valid configuration whose issuer and second redirect URI use plain
// http on a LAN address, accepted by allow_insecure_http.
func insecureHTTPConfig(t *testing.T) *Config {
	t.Helper()
	configtest.SetEnv(t)
	cfg, err := Parse([]byte(strings.Replace(configtest.ValidYAML, `issuer: "http://127.0.0.1:8080/"`,
		"issuer: \"http://192.168.1.10:8080/\"\nallow_insecure_http: true", 1)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Clients[0].RedirectURIs = append(cfg.Clients[0].RedirectURIs, "http://192.168.1.10:8082/callback")
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatalf("Validate: %v", FieldErrors(errs))
	}
	return cfg
}

// redactURL keeps a URL's scheme, host and path and hides what may carry credentials: user
// information, query and fragment, in URLs that parse and in those that do not.
func TestRedactURLHidesUserinfoQueryAndFragment(t *testing.T) {
	for _, tc := range []struct {
		name, raw, want string
	}{
		{name: "plain URL unchanged", raw: "https://hooks.example.net/hook", want: "https://hooks.example.net/hook"},
		{name: "user and password", raw: "http://user:PASSWORDINURL@hooks.example.net/hook", want: "http://REDACTED@hooks.example.net/hook"},
		{name: "user information with an @", raw: "https://a@b:PASSWORDINURL@hooks.example.net", want: "https://REDACTED@hooks.example.net"},
		{name: "query", raw: "https://hooks.example.net/hook?apikey=PASSWORDINURL", want: "https://hooks.example.net/hook?REDACTED"},
		{name: "query and fragment", raw: "https://h.example/p?k=PASSWORDINURL#PASSWORDINURL", want: "https://h.example/p?REDACTED#REDACTED"},
		{name: "fragment before a ?", raw: "https://h.example/p#x?PASSWORDINURL", want: "https://h.example/p#REDACTED"},
		{name: "empty query and fragment kept", raw: "https://h.example/p?#", want: "https://h.example/p?#"},
		{name: "everything", raw: "http://user:PASSWORDINURL@hooks.example.net/hook?apikey=PASSWORDINURL#PASSWORDINURL",
			want: "http://REDACTED@hooks.example.net/hook?REDACTED#REDACTED"},
		{name: "unparsable URL", raw: "http://user:PASSWORDINURL@hooks.example.net/%zz?apikey=PASSWORDINURL", want: "http://REDACTED@hooks.example.net/%zz?REDACTED"},
		{name: "opaque URL with user information", raw: "https:user:PASSWORDINURL@hooks.example.net", want: "https:REDACTED@hooks.example.net"},
		{name: "no scheme: the user name reads as one", raw: "user:PASSWORDINURL@hooks.example.net/x", want: "user:REDACTED@hooks.example.net/x"},
		{name: "@ in the path only", raw: "https://h.example/@me", want: "https://h.example/@me"},
		{name: "private-use scheme", raw: "com.example.app:/callback?code=PASSWORDINURL", want: "com.example.app:/callback?REDACTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := redactURL(tc.raw); got != tc.want {
				t.Errorf("redactURL(%q) = %q, want %q", tc.raw, got, tc.want)
			}
		})
	}
}

// No validation message echoes the user information, query or fragment of a URL it
// refuses, whatever the key: they may carry credentials, and the messages reach the reload
// log and the output of config validate.
func TestValidationMessagesRedactURLCredentials(t *testing.T) {
	const secret = "PASSWORDINURL"
	bad := "http://user:" + secret + "@hooks.example.net/hook?apikey=" + secret + "#" + secret
	unparsable := "https://user:" + secret + "@hooks.example.net/%zz?apikey=" + secret
	for _, tc := range []struct {
		name string
		key  string
		mut  func(c *Config)
	}{
		{name: "issuer", key: "issuer", mut: func(c *Config) { c.Issuer = bad }},
		{name: "issuer that does not parse", key: "issuer", mut: func(c *Config) { c.Issuer = unparsable }},
		{name: "public_url", key: "public_url", mut: func(c *Config) { c.PublicURL = bad }},
		{name: "public_url off the issuer's origin", key: "public_url", mut: func(c *Config) {
			c.PublicURL = "https://other.example.com/p?apikey=" + secret
		}},
		{name: "redirect_uris", key: "clients[0].redirect_uris[0]", mut: func(c *Config) { c.Clients[0].RedirectURIs[0] = bad }},
		{name: "redirect_uris private-use scheme", key: "clients[0].redirect_uris[0]", mut: func(c *Config) {
			c.Clients[0].RedirectURIs[0] = "myapp:/cb?k=" + secret
		}},
		{name: "post_logout_redirect_uris", key: "clients[0].post_logout_redirect_uris[0]", mut: func(c *Config) {
			c.Clients[0].PostLogoutRedirectURIs = []string{bad}
		}},
		{name: "allowed_origins", key: "clients[0].allowed_origins[0]", mut: func(c *Config) { c.Clients[0].AllowedOrigins = []string{bad} }},
		{name: "backchannel_logout_uri", key: "clients[0].backchannel_logout_uri", mut: func(c *Config) { c.Clients[0].BackchannelLogoutURI = bad }},
		{name: "log_streams url", key: "log_streams[0].url", mut: func(c *Config) {
			c.LogStreams = []LogStream{{Name: "siem", URL: bad, Auth: LogStreamAuth{Type: LogStreamBearer, Token: strings.Repeat("t", 32)}}}
		}},
		{name: "log_streams url that does not parse", key: "log_streams[0].url", mut: func(c *Config) {
			c.LogStreams = []LogStream{{Name: "siem", URL: unparsable, Auth: LogStreamAuth{Type: LogStreamBearer, Token: strings.Repeat("t", 32)}}}
		}},
		{name: "console.url", key: "console.url", mut: func(c *Config) { c.Console.URL = bad }},
		{name: "upstream issuer", key: "connections[0].options.issuer", mut: func(c *Config) { c.Connections[0].Options.Issuer = bad }},
		{name: "okta domain", key: "connections[0].options.domain", mut: func(c *Config) {
			c.Connections[0].Strategy = "okta"
			c.Connections[0].Options.Issuer, c.Connections[0].Options.DiscoveryURL = "", ""
			c.Connections[0].Options.Domain = "https://user:" + secret + "@example.okta.com"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			configtest.SetEnv(t)
			cfg, err := Parse([]byte(configtest.ValidYAML))
			if err != nil {
				t.Fatal(err)
			}
			tc.mut(cfg)
			errs := cfg.Validate()
			reported := false
			for _, e := range errs {
				reported = reported || e.Key == tc.key
				if strings.Contains(e.Error(), secret) {
					t.Errorf("message echoes the credential: %v", e)
				}
			}
			if !reported {
				t.Errorf("no problem under %s: %v", tc.key, FieldErrors(errs))
			}
		})
	}
}
