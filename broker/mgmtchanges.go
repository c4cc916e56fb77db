package broker

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// What a management write changed, recorded in its sapi event as details.changes: one entry
// per changed field (its dotted path, e.g. options.dpop_signing_alg), with the value before
// and after as short text, so the event says what changed and not only which call was made.
// A secret (secretMember, or a private key) is recorded as changed, never its values.

// Bounds of details.changes: the fields one event lists and the length of a value (about
// 3 KiB in all, well inside the event size limit, logs.Writer.MaxEventBytes).
const (
	maxRecordedChanges = 16
	maxChangeValue     = 96
)

// recordChanges sets c's details.changes to the fields that differ between before and after,
// the flatJSON of a document (e.g. a config.Connection) before and after the write; nothing
// when none differ.
func recordChanges(c *mgmtCall, before, after map[string]string) {
	if ch := flatChanges(before, after); len(ch) > 0 {
		if c.details == nil {
			c.details = map[string]any{}
		}
		c.details["changes"] = ch
	}
}

// fieldChanges lists the fields that differ between before and after, by path, at most
// maxRecordedChanges (then a last entry {"field": "…", "more": n}).
func fieldChanges(before, after any) []any { return flatChanges(flatJSON(before), flatJSON(after)) }

// flatChanges is fieldChanges of documents already flattened (flatJSON: b before, a after).
func flatChanges(b, a map[string]string) []any {
	keys := map[string]bool{}
	for k := range b {
		keys[k] = true
	}
	for k := range a {
		keys[k] = true
	}
	var out []any
	more := 0
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		bv, inB := b[k]
		av, inA := a[k]
		if inB == inA && bv == av {
			continue
		}
		if len(out) == maxRecordedChanges {
			more++
			continue
		}
		ch := map[string]any{"field": k}
		if secretField(k) {
			ch["changed"] = true
		} else {
			if inB {
				ch["from"] = clip(bv, maxChangeValue)
			}
			if inA {
				ch["to"] = clip(av, maxChangeValue)
			}
		}
		out = append(out, ch)
	}
	if more > 0 {
		out = append(out, map[string]any{"field": "…", "more": more})
	}
	return out
}

// secretField reports whether a field path names a secret: a member secretMember finds, or a
// private key, at any depth.
func secretField(path string) bool {
	for _, seg := range strings.Split(path, ".") {
		if secretMember(seg) || strings.Contains(strings.ToLower(seg), "private_key") {
			return true
		}
	}
	return false
}

// flatJSON is v's JSON as dotted paths to leaf values written as short text (strings as
// they are, other values as JSON; arrays whole); empty values (null, "", [], {}) are left out.
func flatJSON(v any) map[string]string {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var generic any
	if json.Unmarshal(raw, &generic) != nil {
		return nil
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, e)
			}
		case nil:
		case string:
			if t != "" {
				out[prefix] = t
			}
		case []any:
			if len(t) > 0 {
				b, _ := json.Marshal(t)
				out[prefix] = string(b)
			}
		default:
			b, _ := json.Marshal(t)
			out[prefix] = string(b)
		}
	}
	walk("", generic)
	return out
}
