package logs

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode"
)

// safeKeys are detail names the broker emits on purpose; they are kept even though some
// contain a secret-sounding word ("token", "code").
var safeKeys = map[string]bool{
	"dpop_signing_alg":            true,
	"dpop_returned_from_upstream": true,
	"dpop_nonce_used":             true,
	"dpop_nonce_retries":          true,
	"dpop_bound":                  true,
	"idp_token_type":              true,
	"token_type":                  true,
	"id_token_signing_alg":        true,
	"token_endpoint_auth_method":  true,
	"code_challenge_method":       true,
	"code_exchange":               true,
	"upstream_userinfo_fetch":     true,
	"errorCode":                   true, // management API error code (fapi), e.g. insufficient_scope
	"error":                       true,
	"error_description":           true,
	"error_code":                  true,
	"status_code":                 true,
	"timings":                     true,
	"upstream_timings":            true,
}

// secretWords mark a detail name as possibly holding a secret.
var secretWords = map[string]bool{
	"token": true, "tokens": true, "code": true, "codes": true, "proof": true, "proofs": true,
	"secret": true, "secrets": true, "password": true, "passwd": true, "pwd": true,
	"private": true, "assertion": true, "jwt": true, "jws": true, "jwe": true, "verifier": true,
	"cookie": true, "cookies": true, "authorization": true, "credential": true,
	"credentials": true, "bearer": true, "apikey": true, "d": true, "key": true, "keys": true,
}

// metaSuffixes end names that describe a secret without holding it (its type, length, timing,
// presence…); such names are kept.
var metaSuffixes = map[string]bool{
	"type": true, "alg": true, "method": true, "ms": true, "us": true, "ns": true,
	"seconds": true, "duration": true, "count": true, "retries": true, "used": true,
	"present": true, "length": true, "len": true, "status": true, "bound": true,
	"thumbprint": true, "jkt": true, "kid": true, "exchange": true, "attempts": true,
}

// Redact returns a copy of details safe to log: values are normalized through JSON (so
// structs are seen as their fields), keys whose name suggests a secret are dropped at any
// depth unless their value is a number, boolean or null, string values that look like a JWT
// become "[redacted]", and so do the values of credential-like parameters in strings that
// hold a query or URL ("…?access_token=[redacted]"). Details that cannot be encoded are
// replaced by {"redaction_error": "..."}. Writer.Write also removes its Secrets.
func Redact(details map[string]any) map[string]any {
	return redactWith(details, nil)
}

// redactWith is Redact that also scrubs the secrets of set (may be nil).
func redactWith(details map[string]any, set *secretSet) map[string]any {
	if len(details) == 0 {
		return nil
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return map[string]any{"redaction_error": "details not encodable as JSON"}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var norm map[string]any
	if err := dec.Decode(&norm); err != nil {
		return map[string]any{"redaction_error": "details not decodable"}
	}
	return redactMap(norm, set)
}

func redactMap(m map[string]any, set *secretSet) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if secretName(k) && !scalar(v) || containsSecret(k, set) {
			continue
		}
		out[k] = redactValue(v, set)
	}
	return out
}

func redactValue(v any, set *secretSet) any {
	switch v := v.(type) {
	case map[string]any:
		return redactMap(v, set)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = redactValue(e, set)
		}
		return out
	case string:
		return redactString(v, set)
	}
	return v
}

// redactString is the rule for a string value: a JWT-like value becomes "[redacted]", any
// other is scrubbed (credential-like parameter values, secrets).
func redactString(v string, set *secretSet) string {
	if looksLikeJWT(v) {
		return redacted
	}
	return scrub(v, set)
}

// scalar reports a number, boolean or null: values that cannot hold a token or code.
func scalar(v any) bool {
	switch v.(type) {
	case json.Number, bool, nil:
		return true
	}
	return false
}

// secretName reports whether a detail name suggests a secret value.
func secretName(k string) bool {
	if safeKeys[k] {
		return false
	}
	words := splitWords(k)
	if len(words) == 0 {
		return false
	}
	if metaSuffixes[words[len(words)-1]] && len(words) > 1 {
		return false
	}
	for _, w := range words {
		if secretWords[w] {
			return true
		}
	}
	// Glued forms such as "accesstoken" or "clientSecretValue" after lower-casing.
	flat := strings.Join(words, "")
	for _, w := range []string{"token", "secret", "password", "private", "assertion", "proof", "credential"} {
		if strings.Contains(flat, w) {
			return true
		}
	}
	return false
}

// FoldName maps each rune of name to the smallest rune of its Unicode case-folding orbit,
// lower-cased, so that names encoding/json would match to the same field compare equal:
// ſ (U+017F) becomes s, K (U+212A) k, and CLIENT_SECRET client_secret.
func FoldName(name string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return unicode.ToLower(least)
	}, name)
}

// splitWords case-folds k (FoldName) and splits it on non-alphanumerics and camelCase boundaries.
func splitWords(k string) []string {
	var words []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			words = append(words, FoldName(string(cur)))
			cur = cur[:0]
		}
	}
	rs := []rune(k)
	for i, r := range rs {
		switch {
		case !unicode.IsLetter(r) && !unicode.IsDigit(r):
			flush()
		case unicode.IsUpper(r) && i > 0 && unicode.IsLower(rs[i-1]):
			flush()
			cur = append(cur, r)
		default:
			cur = append(cur, r)
		}
	}
	flush()
	return words
}

// looksLikeJWT reports a compact JWS/JWE: 3 or 5 base64url segments starting with "eyJ".
func looksLikeJWT(s string) bool {
	if !strings.HasPrefix(s, "eyJ") {
		return false
	}
	n := strings.Count(s, ".")
	if n != 2 && n != 4 {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '-' || r == '_' || r == '=' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
