package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// A configuration names secrets by environment variable: ${VAR} or ${VAR:-default} in any
// value (expanded by Parse), private_key_env for a key. Where the variables are not set (a CI
// job checking the file, a laptop without the production secrets), those values cannot be
// judged; `serve` refuses to start without them, while `config validate` lists them apart
// (SplitUnsetEnv) and still checks the rest.

const (
	unsetEnvPrefix = "environment variable "
	unsetEnvSuffix = " is not set"
)

// unsetEnvReason is the problem reported for a reference to variables that are not set (or
// empty, for private_key_env).
func unsetEnvReason(names ...string) string {
	return unsetEnvPrefix + strings.Join(names, ", ") + unsetEnvSuffix
}

// isUnsetEnv reports whether a problem is an unset environment variable.
func isUnsetEnv(p FieldError) bool {
	return strings.HasPrefix(p.Reason, unsetEnvPrefix) && strings.HasSuffix(p.Reason, unsetEnvSuffix)
}

// SplitUnsetEnv separates the problems that exist only because environment variables are not
// set where the check runs. unset holds one problem per key whose value (or key) comes from
// such a variable; every other problem reported under such a key, or under a key inside it, is
// dropped, because it judges a value that is not known here (an empty client_secret, a
// too-short management token, …). errs holds the rest.
func SplitUnsetEnv(problems []FieldError) (errs, unset []FieldError) {
	keys := map[string]bool{}
	for _, p := range problems {
		if isUnsetEnv(p) && !keys[p.Key] {
			keys[p.Key] = true
			unset = append(unset, p)
		}
	}
	for _, p := range problems {
		if !dependsOnUnset(p.Key, keys) {
			errs = append(errs, p)
		}
	}
	return errs, unset
}

// dependsOnUnset reports whether key is, or lies inside, one of the unset keys.
func dependsOnUnset(key string, unset map[string]bool) bool {
	for k := range unset {
		if key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[") {
			return true
		}
	}
	return false
}

// expandEnv replaces ${VAR} and ${VAR:-default}. An unset VAR without default is an error.
func expandEnv(s string) (string, error) {
	var b strings.Builder
	var missing []string
	for i := 0; i < len(s); {
		j := strings.Index(s[i:], "${")
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		b.WriteString(s[i : i+j])
		i += j
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", errors.New("unterminated ${ in value")
		}
		expr := s[i+2 : i+end]
		i += end + 1
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("${%s} is not a valid environment variable reference", expr)
		}
		v, ok := os.LookupEnv(name)
		switch {
		case ok && (v != "" || !hasDef):
			b.WriteString(v)
		case hasDef:
			b.WriteString(def)
		default:
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return "", errors.New(unsetEnvReason(missing...))
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
