package logs

import (
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Every string an event carries (its fields and every string in its details) passes through
// scrub before the event is logged or stored:
//
//   - the value of a credential-like parameter in a query string or URL ("access_token=…",
//     "client_secret=…", "code=…"; see credentialParam) becomes "[redacted]";
//   - a configured secret (Secrets: management tokens, client secrets, connection client
//     secrets, the DPoP nonce secret, …) becomes "[redacted]" wherever it appears, as is or
//     URL-encoded; a secret shorter than minSecretSubstring only when it is the whole value.
//
// Details keys that name a secret, and JWT-shaped values, are handled by Redact's rules.

// redacted replaces what is removed.
const redacted = "[redacted]"

// minSecretSubstring is the shortest secret searched for inside values; a shorter one is
// redacted only as a whole value (searching for it would mangle ordinary text).
const minSecretSubstring = 8

// Secrets holds the secret values that must never appear in an event, in this process's
// memory only (they are never stored or logged). Values are set by group ("config",
// "connections", …), each Set replacing that group's values. The zero value holds none; it
// is safe for concurrent use.
type Secrets struct {
	mu     sync.Mutex
	groups map[string][]string
	set    atomic.Pointer[secretSet]
}

// Set replaces the values of group (empty values are ignored).
func (s *Secrets) Set(group string, values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups == nil {
		s.groups = map[string][]string{}
	}
	s.groups[group] = slices.Clone(values)
	s.set.Store(newSecretSet(s.groups))
}

// current returns the compiled set (nil when s is nil or holds nothing).
func (s *Secrets) current() *secretSet {
	if s == nil {
		return nil
	}
	return s.set.Load()
}

// secretSet is the compiled form of Secrets.
type secretSet struct {
	whole    map[string]bool   // every form of every secret
	replacer *strings.Replacer // forms of at least minSecretSubstring bytes, longest first
}

func newSecretSet(groups map[string][]string) *secretSet {
	set := &secretSet{whole: map[string]bool{}}
	var long []string
	for _, vs := range groups {
		for _, v := range vs {
			if v == "" {
				continue
			}
			for _, form := range []string{v, url.QueryEscape(v), url.PathEscape(v)} {
				if set.whole[form] {
					continue
				}
				set.whole[form] = true
				if len(form) >= minSecretSubstring {
					long = append(long, form)
				}
			}
		}
	}
	if len(set.whole) == 0 {
		return nil
	}
	// At one position the first listed pattern wins: longest first, so that a secret that
	// contains another is removed whole.
	slices.SortFunc(long, func(a, b string) int { return len(b) - len(a) })
	if len(long) > 0 {
		args := make([]string, 0, 2*len(long))
		for _, f := range long {
			args = append(args, f, redacted)
		}
		set.replacer = strings.NewReplacer(args...)
	}
	return set
}

// scrub returns v with credential-like parameter values and secrets replaced by "[redacted]".
// set may be nil.
func scrub(v string, set *secretSet) string {
	if v == "" {
		return v
	}
	if set != nil {
		if set.whole[v] {
			return redacted
		}
		if set.replacer != nil {
			v = set.replacer.Replace(v)
		}
	}
	return redactParams(v)
}

// containsSecret reports whether scrub would change k because of a secret (for detail keys).
func containsSecret(k string, set *secretSet) bool {
	if set == nil {
		return false
	}
	return set.whole[k] || set.replacer != nil && set.replacer.Replace(k) != k
}

// credentialParams are parameter names whose values are credentials (OAuth 2.0, OpenID
// Connect, RFC 7523, RFC 8693, and common API conventions); credentialParam also treats any
// name that Redact would drop as a detail key (…token…, …secret…, password, key, …) as one.
var credentialParams = map[string]bool{
	"access_token": true, "token": true, "id_token": true, "id_token_hint": true, "refresh_token": true,
	"code": true, "code_verifier": true, "client_secret": true, "client_assertion": true, "assertion": true,
	"subject_token": true, "actor_token": true, "device_code": true, "logout_token": true,
	"password": true, "passwd": true, "pwd": true, "secret": true, "api_key": true, "apikey": true,
	"key": true, "sig": true, "signature": true, "auth": true, "authorization": true, "dpop": true,
	"session": true, "sessionid": true, "jwt": true, "otp": true,
}

// credentialParam reports whether a parameter name (as it appears, maybe percent-encoded)
// names a credential.
func credentialParam(name string) bool {
	if n, err := url.QueryUnescape(name); err == nil {
		name = n
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return false
	}
	return credentialParams[name] || credentialParams[strings.ReplaceAll(name, "-", "_")] || secretName(name)
}

// isParamNameByte reports a byte that may be part of a parameter name (letters, digits,
// "_", "-", ".", "%" for percent-encoding, "[" and "]" for array-style names).
func isParamNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == '%' || c == '[' || c == ']'
}

// isParamValueEnd reports a byte that ends a parameter value inside a query string, URL or
// free text: the separators of RFC 3986 queries and fragments, white space, quotes and
// brackets around a URL.
func isParamValueEnd(c byte) bool {
	switch c {
	case '&', ';', '#', ' ', '\t', '\n', '\r', '"', '\'', '<', '>', ')', ']', '}', ',', '\\':
		return true
	}
	return false
}

// maxParamNesting bounds how many levels of URL-encoded queries inside parameter values
// redactParams opens (a redirect URI carrying a query carrying a URL …).
const maxParamNesting = 3

// redactParams replaces the value of every credential-like "name=value" in s by
// "[redacted]": s may be a raw query ("a=1&access_token=x"), a URL, or text that quotes one.
// A name starts after one of "?&;#", white space, quotes or brackets, or at the start of s.
// The value of another parameter is searched too once URL-decoded (a redirect URI with a
// code in its query), up to maxParamNesting levels deep.
func redactParams(s string) string {
	return redactParamsDepth(s, 0)
}

func redactParamsDepth(s string, depth int) string {
	if strings.IndexByte(s, '=') < 0 && (depth >= maxParamNesting || !strings.Contains(s, "%")) {
		return s
	}
	var b strings.Builder
	last := 0 // s[:last] has been copied to b
	replace := func(from, to int, with string) {
		b.WriteString(s[last:from])
		b.WriteString(with)
		last = to
	}
	for i := 0; i < len(s); {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			break
		}
		eq += i
		start := eq
		for start > i && isParamNameByte(s[start-1]) {
			start--
		}
		end := eq + 1
		if strings.HasPrefix(s[end:], redacted) {
			end += len(redacted) // already redacted (its "]" would end a value)
		}
		for end < len(s) && !isParamValueEnd(s[end]) {
			end++
		}
		val := s[eq+1 : end]
		// The name must begin s or follow a separator (not continue a longer token such as
		// a base64 value with padding).
		begins := start == 0 || !isParamNameByte(s[start-1]) && s[start-1] != '='
		switch {
		case !begins || start == eq || val == "" || val == redacted:
		case credentialParam(s[start:eq]):
			replace(eq+1, end, redacted)
		case depth < maxParamNesting && strings.Contains(val, "%"):
			if dec, err := url.QueryUnescape(val); err == nil && dec != val {
				if red := redactParamsDepth(dec, depth+1); red != dec {
					replace(eq+1, end, url.QueryEscape(red))
				}
			}
		}
		i = max(end, eq+1)
	}
	if last == 0 {
		if depth < maxParamNesting && strings.IndexByte(s, '=') < 0 && strings.Contains(s, "%") {
			// s itself may be an encoded query or URL ("…%3Fcode%3D…").
			if dec, err := url.QueryUnescape(s); err == nil && dec != s {
				if red := redactParamsDepth(dec, depth+1); red != dec {
					return url.QueryEscape(red)
				}
			}
		}
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}
