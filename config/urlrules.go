package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/dpop-broker/dpop-broker/discovery"
)

// URL rules for the broker's own URLs (issuer, public_url) and the URLs apps register
// (redirect_uris, post_logout_redirect_uris, allowed_origins, backchannel_logout_uri):
//
//   - https everywhere; plain http only on a loopback host: 127.0.0.0/8, ::1 or localhost
//     (RFC 8252 §7.3 for native apps' redirect URIs; RFC 8252 §8.3 recommends the IP literal).
//     allow_insecure_http (development only) accepts http on other hosts too.
//   - backchannel_logout_uri is called by the broker itself, never by a browser: http or https
//     only, absolute, with no fragment (OpenID Connect Back-Channel Logout 1.0 §2.2) and no
//     user information (credentials belong in no configured URL, and would reach logs).
//     log_streams[].url, also called by the broker alone, follows the same rule.
//   - A validation message quotes the URL with its user information, query and fragment
//     redacted (redactURL): they may carry credentials.
//   - Redirect URIs may also use a private-use scheme, which must be a reverse domain name
//     (contain a dot, RFC 8252 §7.1), so javascript:, data:, file: and the like never pass,
//     whatever allow_insecure_http says.
//   - public_url must be on the issuer's origin: only the path may differ. Tokens carry the
//     issuer while the endpoints are served under public_url; a different scheme would
//     downgrade the endpoints, a different host or port would send apps and cookies elsewhere.

// redactURL is raw as validation messages echo it: user information, query and fragment
// replaced by REDACTED, since they may carry credentials (a webhook's user:password or
// ?apikey=) that would otherwise reach the reload log and the output of config validate. It
// works on the text, so that a URL that does not parse is redacted too: the authority is
// what follows "scheme:" (and "//") up to the first '/', and its user information what
// precedes its last '@'.
func redactURL(raw string) string {
	head, tail := raw, ""
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		head = raw[:i]
		switch q, frag, hasFrag := strings.Cut(raw[i:], "#"); {
		case q != "":
			tail = "?" + redactedPart(q[1:])
			if hasFrag {
				tail += "#" + redactedPart(frag)
			}
		default: // the fragment comes first
			tail = "#" + redactedPart(frag)
		}
	}
	rest, prefix := head, ""
	if i := strings.IndexByte(rest, ':'); i >= 0 && !strings.ContainsAny(rest[:i], "/@") {
		prefix, rest = rest[:i+1], rest[i+1:]
	}
	if strings.HasPrefix(rest, "//") {
		prefix, rest = prefix+"//", rest[2:]
	}
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = "REDACTED" + authority[i:]
	}
	return prefix + authority + path + tail
}

// redactedPart is REDACTED, or "" for an empty part (so that "?" and "#" stay as written).
func redactedPart(s string) string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// insecureHTTP reports whether u is plain http on a host that is not loopback
// (discovery.LoopbackHost, the upstream URLs' rule).
func insecureHTTP(u *url.URL) bool {
	return u.Scheme == "http" && !discovery.LoopbackHost(u.Hostname())
}

// neverRedirectSchemes run code or read local data in the browser; they are refused even
// when they would otherwise pass as a private-use scheme.
var neverRedirectSchemes = map[string]bool{
	"javascript": true, "data": true, "vbscript": true, "file": true, "blob": true,
	"about": true, "filesystem": true, "view-source": true, "jar": true,
}

// brokerURL parses issuer or public_url and checks its scheme; syntax problems are
// reported by validator.issuer, so it returns nil for them without adding an error.
func (v *validator) brokerURL(key, raw string, allowHTTP bool) *url.URL {
	u, err := url.Parse(raw)
	if raw == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil
	}
	if insecureHTTP(u) && !allowHTTP {
		v.add(key, "%q must use https (plain http only on a loopback host: 127.0.0.1, [::1] or localhost; allow_insecure_http accepts it elsewhere, for development only)", redactURL(raw))
	}
	return u
}

// brokerURLs checks the scheme of issuer and public_url, and that public_url is on the
// issuer's origin (scheme, host and port; only the path may differ).
func (c *Config) brokerURLs(v *validator) {
	iss := v.brokerURL("issuer", c.Issuer, c.AllowInsecureHTTP)
	pub := v.brokerURL("public_url", c.PublicURL, c.AllowInsecureHTTP)
	if iss == nil || pub == nil {
		return
	}
	if want := urlOrigin(iss); urlOrigin(pub) != want {
		v.add("public_url", "%q must be on the issuer's origin %s (same scheme, host and port; only the path may differ)", redactURL(c.PublicURL), want)
	}
}

// urlOrigin is scheme://host:port of an http(s) URL, lower case, with the default port made
// explicit so that https://a and https://a:443 compare equal.
func urlOrigin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return strings.ToLower(u.Scheme + "://" + net.JoinHostPort(u.Hostname(), port))
}

// redirectURIProblem returns why a redirect URI (or post-logout redirect URI) is
// unacceptable, or "". allowHTTP is allow_insecure_http.
func redirectURIProblem(raw string, allowHTTP bool) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a URL", redactURL(raw))
	case !u.IsAbs():
		return fmt.Sprintf("%q must be an absolute URI", redactURL(raw))
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Sprintf("%q must not contain a fragment", redactURL(raw))
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host == "":
		return fmt.Sprintf("%q has no host", redactURL(raw))
	case u.User != nil:
		return fmt.Sprintf("%q must not contain user information", redactURL(raw))
	case u.Scheme == "https":
		return ""
	case u.Scheme == "http":
		if insecureHTTP(u) && !allowHTTP {
			return fmt.Sprintf("%q must use https (plain http only on a loopback host such as http://127.0.0.1:PORT/, RFC 8252 §7.3)", redactURL(raw))
		}
		return ""
	case neverRedirectSchemes[u.Scheme]:
		return fmt.Sprintf("%q: the %s: scheme is never accepted for a redirect URI", redactURL(raw), u.Scheme)
	case !strings.Contains(u.Scheme, "."):
		return fmt.Sprintf("%q: a private-use URI scheme must be a reverse domain name such as com.example.app (RFC 8252 §7.1)", redactURL(raw))
	case u.Opaque == "" && u.Path == "" && u.Host == "":
		return fmt.Sprintf("%q has nothing after the scheme (e.g. %s:/callback)", redactURL(raw), u.Scheme)
	}
	return ""
}

// backchannelLogoutURIProblem returns why a backchannel_logout_uri is unacceptable, or "":
// an absolute http(s) URL (query allowed, OpenID Connect Back-Channel Logout 1.0 §2.2) without
// fragment or user information, https or http on a loopback host (allowHTTP: anywhere).
func backchannelLogoutURIProblem(raw string, allowHTTP bool) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a URL", redactURL(raw))
	case u.Scheme != "http" && u.Scheme != "https" || u.Opaque != "":
		return fmt.Sprintf("%q must be an absolute https URL (http only on a loopback host)", redactURL(raw))
	case u.Host == "":
		return fmt.Sprintf("%q has no host", redactURL(raw))
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Sprintf("%q must not contain a fragment", redactURL(raw))
	case u.User != nil:
		return fmt.Sprintf("%q must not contain user information", redactURL(raw))
	case insecureHTTP(u) && !allowHTTP:
		return fmt.Sprintf("%q must use https (plain http only on a loopback host such as http://127.0.0.1:PORT/; allow_insecure_http accepts it elsewhere, for development only)", redactURL(raw))
	}
	return ""
}

// originProblem returns why an allowed_origins entry is unacceptable, or "": it must be a
// web origin (scheme://host[:port], no path), https, or http on a loopback host.
func originProblem(raw string, allowHTTP bool) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil ||
		strings.Contains(raw, "#") {
		return fmt.Sprintf("%q must be an origin such as https://app.example.com", redactURL(raw))
	}
	if insecureHTTP(u) && !allowHTTP {
		return fmt.Sprintf("%q must use https (plain http only on a loopback host such as http://127.0.0.1:3000)", redactURL(raw))
	}
	return ""
}

// insecureHTTPKeys returns the keys whose URL uses plain http on a non-loopback host, which
// only allow_insecure_http accepts.
func (c *Config) insecureHTTPKeys() []string {
	var keys []string
	check := func(key, raw string) {
		if u, err := url.Parse(raw); err == nil && insecureHTTP(u) && u.Host != "" {
			keys = append(keys, key)
		}
	}
	check("issuer", c.Issuer)
	check("public_url", c.PublicURL)
	for i, cl := range c.Clients {
		for j, r := range cl.RedirectURIs {
			check(fmt.Sprintf("clients[%d].redirect_uris[%d]", i, j), r)
		}
		for j, r := range cl.PostLogoutRedirectURIs {
			check(fmt.Sprintf("clients[%d].post_logout_redirect_uris[%d]", i, j), r)
		}
		for j, o := range cl.AllowedOrigins {
			check(fmt.Sprintf("clients[%d].allowed_origins[%d]", i, j), o)
		}
		check(fmt.Sprintf("clients[%d].backchannel_logout_uri", i), cl.BackchannelLogoutURI)
	}
	for i, s := range c.LogStreams {
		check(fmt.Sprintf("log_streams[%d].url", i), s.URL)
	}
	return keys
}

// Warnings returns what is accepted but unsafe outside development, each naming its key:
// today the uses of allow_insecure_http. `config validate` prints them; broker.New logs each
// as a warning at every start.
func (c *Config) Warnings() []FieldError {
	if !c.AllowInsecureHTTP {
		return nil
	}
	keys := c.insecureHTTPKeys()
	w := []FieldError{{Key: "allow_insecure_http", Reason: fmt.Sprintf(
		"is true: plain http is accepted on non-loopback hosts (%d URLs use it); codes, tokens and cookies then cross the network unencrypted: development only", len(keys))}}
	for _, k := range keys {
		w = append(w, FieldError{Key: k, Reason: "plain http on a non-loopback host, accepted only because allow_insecure_http is true"})
	}
	return w
}
