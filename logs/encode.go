package logs

import (
	"encoding/json"
	"math"
	"sync"
	"sync/atomic"
)

// Write encodes an event's details once, after redaction, and hands the same bytes to slog
// and to the store. Details built from plain values (strings, numbers, booleans, nil, and
// maps and slices of them: what the broker emits) are redacted by walking them; anything else
// takes Redact's JSON round trip. Both give the same JSON.

// encodeDetails returns the redacted details as a JSON object, or nil when nothing is left.
// set (may be nil) holds the secrets to scrub from strings.
func encodeDetails(details map[string]any, set *secretSet) json.RawMessage {
	if len(details) == 0 {
		return nil
	}
	red, ok := redactPlain(details, 0, set)
	if !ok {
		red = redactWith(details, set)
	}
	if len(red) == 0 {
		return nil
	}
	b, err := json.Marshal(red)
	if err != nil {
		return json.RawMessage(`{"redaction_error":"details not encodable as JSON"}`)
	}
	return b
}

// maxPlainDepth bounds the walk; deeper details take the JSON path.
const maxPlainDepth = 16

// redactPlain applies Redact's rules to m without a JSON round trip. ok is false when m holds
// a value of another type (a struct, a pointer, a NaN…): the caller then uses Redact.
func redactPlain(m map[string]any, depth int, set *secretSet) (map[string]any, bool) {
	if depth > maxPlainDepth {
		return nil, false
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		pv, isScalar, ok := plainValue(v, depth, set)
		if !ok {
			return nil, false
		}
		if !isScalar && cachedSecretName(k) || containsSecret(k, set) {
			continue
		}
		out[k] = pv
	}
	return out, true
}

// plainValue returns v redacted; scalar reports a number, boolean or null (kept under any
// name, as Redact keeps them).
func plainValue(v any, depth int, set *secretSet) (out any, scalar, ok bool) {
	switch x := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, json.Number:
		return v, true, true
	case float64:
		return v, true, !math.IsNaN(x) && !math.IsInf(x, 0)
	case float32:
		f := float64(x)
		return v, true, !math.IsNaN(f) && !math.IsInf(f, 0)
	case string:
		return redactString(x, set), false, true
	case map[string]any:
		r, ok := redactPlain(x, depth+1, set)
		return r, false, ok
	case map[string]string:
		r := make(map[string]any, len(x))
		for k, s := range x {
			if cachedSecretName(k) || containsSecret(k, set) {
				continue
			}
			r[k] = redactString(s, set)
		}
		return r, false, true
	case []any:
		r := make([]any, len(x))
		for i, e := range x {
			pe, _, ok := plainValue(e, depth+1, set)
			if !ok {
				return nil, false, false
			}
			r[i] = pe
		}
		return r, false, true
	case []string:
		r := make([]any, len(x))
		for i, s := range x {
			r[i] = redactString(s, set)
		}
		return r, false, true
	}
	return nil, false, false
}

// secretNames memoizes secretName for the detail names seen (a bounded number of them:
// names are chosen by code, but nested request bodies may bring arbitrary ones).
var (
	secretNames     sync.Map // string → bool
	secretNamesSize atomic.Int32
)

const maxSecretNames = 4096

func cachedSecretName(k string) bool {
	if v, ok := secretNames.Load(k); ok {
		return v.(bool)
	}
	s := secretName(k)
	if secretNamesSize.Load() < maxSecretNames {
		if _, loaded := secretNames.LoadOrStore(k, s); !loaded {
			secretNamesSize.Add(1)
		}
	}
	return s
}

// rawJSON is pre-encoded JSON as a slog value: JSON handlers embed it as is, text handlers
// print it as a string.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }
func (r rawJSON) String() string               { return string(r) }
