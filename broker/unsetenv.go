package broker

import (
	"strings"
)

// A configuration names secrets by environment variable (${VAR} in a value, private_key_env
// for a key). Where the variables are not set (a CI job checking the file, a laptop without
// the production secrets), those values cannot be judged; `serve` refuses to start without
// them, while `config validate` lists them apart (SplitUnsetEnv) and still checks the rest.

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
