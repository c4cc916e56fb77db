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
//     secrets, the DPoP nonce secret, …) becomes "[redacted]" wherever it appears, as is,
//     URL-encoded, or in any other percent-encoding (a non-canonical "%4F" for "O", lower-case
//     hex digits, encoded twice or three times: the text is also matched once, twice and three
//     times percent-decoded); a secret shorter than minSecretSubstring only when it is the
//     whole value;
//   - where a value was cut at a length limit (the cut mark "…" follows the kept part), a
//     kept part that ends with the first minCutPrefix or more bytes of a secret loses them:
//     a secret cut in half is still a secret. The callers that cut request input scrub it
//     before cutting (Writer.Scrub); this catches the cuts made elsewhere.
//
// Details keys that name a secret, and JWT-shaped values, are handled by Redact's rules.

// Redacted replaces what is removed from an event.
const Redacted = "[redacted]"

const redacted = Redacted

// minSecretSubstring is the shortest secret searched for inside values; a shorter one is
// redacted only as a whole value (searching for it would mangle ordinary text).
const minSecretSubstring = 8

// minCutPrefix is the shortest beginning of a secret removed before a cut mark: shorter ones
// are too common in ordinary text, and reveal at most minCutPrefix-1 bytes of the secret.
const minCutPrefix = 4

// cutMark is what the broker appends where it cut a value at a length limit.
const cutMark = "…"

// maxDecodeDepth bounds how many times scrub percent-decodes a value to find a secret.
const maxDecodeDepth = 3

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
	long     []string          // those forms, longest first
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
	set.long = long
	if len(long) > 0 {
		args := make([]string, 0, 2*len(long))
		for _, f := range long {
			args = append(args, f, redacted)
		}
		set.replacer = strings.NewReplacer(args...)
	}
	return set
}

// Scrub returns v as Write would write it: credential-like parameter values and the
// Writer's Secrets (in any of the forms above) replaced by "[redacted]". A caller that cuts a
// request-derived value to a length limit before putting it in an event scrubs the whole
// value first, so that a secret the cut splits is still recognised. w may be nil.
func (w *Writer) Scrub(v string) string {
	if w == nil {
		return scrub(v, nil)
	}
	return scrub(v, w.Secrets.current())
}

// scrub returns v with credential-like parameter values and secrets replaced by "[redacted]".
// set may be nil.
func scrub(v string, set *secretSet) string {
	if v == "" {
		return v
	}
	if set != nil {
		v = set.scrub(v)
	}
	return redactParams(v)
}

// containsSecret reports whether scrub would change k because of a secret (for detail keys).
func containsSecret(k string, set *secretSet) bool {
	return set != nil && set.scrub(k) != k
}

// scrub replaces every secret in v (see the rules at the top of this file).
func (set *secretSet) scrub(v string) string {
	if set.whole[v] {
		return redacted
	}
	if set.replacer != nil {
		v = set.replacer.Replace(v)
	}
	hasCut, hasPct := len(set.long) > 0 && strings.Contains(v, cutMark), strings.IndexByte(v, '%') >= 0
	if !hasCut && !hasPct {
		return v
	}
	// Views of v: v itself, then v percent-decoded once, twice, …; from[i] and to[i] are the
	// bytes of v that byte i of a view came from. A secret found in a view is removed from v.
	var spans [][2]int
	view := v
	from, to := make([]int, len(v)), make([]int, len(v))
	for i := range v {
		from[i], to[i] = i, i+1
	}
	for depth := 0; ; depth++ {
		if depth > 0 {
			if set.whole[view] {
				return redacted // v is an encoding of a secret, however short
			}
			for _, f := range set.long {
				for off := 0; ; {
					i := strings.Index(view[off:], f)
					if i < 0 {
						break
					}
					i += off
					spans = append(spans, [2]int{from[i], to[i+len(f)-1]})
					off = i + len(f)
				}
			}
		}
		if hasCut {
			spans = set.cutSpans(view, from, to, spans)
		}
		if depth == maxDecodeDepth || strings.IndexByte(view, '%') < 0 {
			break
		}
		next, nfrom, nto := percentDecode(view, from, to)
		if next == view {
			break
		}
		view, from, to = next, nfrom, nto
	}
	return replaceSpans(v, spans)
}

// maxCutMarks bounds the cut marks of one value that cutSpans examines, the last ones: a cut
// mark the broker wrote ends its cut part, so input cannot push one out by adding its own
// marks before it, only after another cut part of the same value.
const maxCutMarks = 8

// cutSpans appends to spans, for each of the last maxCutMarks cut marks in view, the part
// before it that is the beginning (at least minCutPrefix bytes) of a secret, in v's
// coordinates.
func (set *secretSet) cutSpans(view string, from, to []int, spans [][2]int) [][2]int {
	end := len(view)
	for range maxCutMarks {
		end = strings.LastIndex(view[:end], cutMark) // view[:end] is a kept part
		if end < 0 {
			return spans
		}
		start := end // the earliest start of a secret's beginning that ends at end
		for _, f := range set.long {
			// The longest beginning of f that view[:end] ends with starts at the first
			// occurrence of f's first minCutPrefix bytes that f continues up to end.
			lo := max(0, end-len(f)+1)
			for p := lo; p+minCutPrefix <= end && p < start; {
				i := strings.Index(view[p:end], f[:minCutPrefix])
				if i < 0 || p+i >= start {
					break
				}
				p += i
				if strings.HasPrefix(f, view[p:end]) {
					start = p
					break
				}
				p++
			}
		}
		if start < end {
			spans = append(spans, [2]int{from[start], to[end-1]})
		}
	}
	return spans
}

// percentDecode decodes every "%XX" (either case of hex digit) of view, keeping any other
// byte, "+" included, as it is; it returns the decoded text and, for each of its bytes, the
// bytes of v it came from.
func percentDecode(view string, from, to []int) (string, []int, []int) {
	var b strings.Builder
	nfrom, nto := make([]int, 0, len(view)), make([]int, 0, len(view))
	for i := 0; i < len(view); i++ {
		if view[i] == '%' && i+2 < len(view) && ishex(view[i+1]) && ishex(view[i+2]) {
			b.WriteByte(unhex(view[i+1])<<4 | unhex(view[i+2]))
			nfrom, nto = append(nfrom, from[i]), append(nto, to[i+2])
			i += 2
			continue
		}
		b.WriteByte(view[i])
		nfrom, nto = append(nfrom, from[i]), append(nto, to[i])
	}
	return b.String(), nfrom, nto
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// replaceSpans replaces each of the byte ranges spans of v (overlapping or not) by
// "[redacted]".
func replaceSpans(v string, spans [][2]int) string {
	if len(spans) == 0 {
		return v
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	var b strings.Builder
	last := 0
	for i := 0; i < len(spans); {
		start, end := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= end; i++ {
			end = max(end, spans[i][1])
		}
		b.WriteString(v[last:start])
		b.WriteString(redacted)
		last = end
	}
	b.WriteString(v[last:])
	return b.String()
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
