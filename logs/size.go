package logs

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// An event's size is bounded: Writer.MaxEventBytes (default DefaultMaxEventBytes) caps the
// JSON the store keeps and stdout prints, so that a request that carries a large value (a
// management call's body, a long header) cannot make one event weigh hundreds of kilobytes
// and the log gigabytes. The event's own fields (log_id, date, type, ip, user_id, client_id,
// connection, …) are never cut; the user agent, user name and client name are clipped, and the
// details shrunk by ShrinkValue's steps, each top-level detail kept by name; the details then
// carry event_clipped: {"bytes": N}, N the size of the details before. Details that cannot
// fit even so are replaced by that mark alone.

// DefaultMaxEventBytes is the largest serialized event when Writer.MaxEventBytes is 0.
const DefaultMaxEventBytes = 16 << 10

// ClippedKey is the detail an event whose details were shrunk to fit carries.
const ClippedKey = "event_clipped"

// maxFieldBytes bounds the free-text fields clipped in an event that is too large.
const maxFieldBytes = 1024

// clipEncoded is s clipped (Clip) so that its JSON string, escapes included, has at most n
// bytes.
func clipEncoded(s string, n int) string {
	out := s
	for cut := n; jsonLen(out) > n && cut > 0; cut /= 2 {
		out = Clip(s, cut)
	}
	return out
}

// shrinkStep is one round of ShrinkValue: strings cut to str bytes, arrays and objects to
// items elements (members in name order), containers nested deeper than depth replaced by
// the cut mark.
type shrinkStep struct{ str, items, depth int }

var shrinkSteps = []shrinkStep{{1024, 64, 8}, {256, 16, 6}, {64, 8, 4}, {16, 4, 2}, {0, 0, 0}}

// ShrinkValue returns v, a JSON value as encoding/json decodes one (maps, slices, strings,
// numbers, booleans, nil), made to fit in maxBytes of JSON, and whether it had to be changed.
// It tries ever stronger steps (shorter strings, fewer elements, less depth; every cut marked
// with the cut mark, and an object's dropped members counted under the member "…"), and
// gives the cut mark alone when nothing fits. v itself is not modified.
func ShrinkValue(v any, maxBytes int) (any, bool) {
	if jsonLen(v) <= maxBytes {
		return v, false
	}
	for _, st := range shrinkSteps {
		if out := shrink(v, st, 0); jsonLen(out) <= maxBytes {
			return out, true
		}
	}
	return cutMark, true
}

// jsonLen is the length of v's JSON (as the Writer encodes it), or a huge value when v does not
// encode.
func jsonLen(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return int(^uint(0) >> 1)
	}
	return len(b)
}

// shrink applies st to v at depth.
func shrink(v any, st shrinkStep, depth int) any {
	switch x := v.(type) {
	case string:
		if st.str == 0 && x != "" {
			return cutMark
		}
		return Clip(x, max(st.str, 1))
	case map[string]any:
		if depth >= st.depth {
			return cutMark
		}
		keys := slices.Sorted(maps.Keys(x))
		out := make(map[string]any, min(len(keys), st.items)+1)
		for _, k := range keys[:min(len(keys), st.items)] {
			out[Clip(k, max(st.str, 64))] = shrink(x[k], st, depth+1)
		}
		if n := len(keys) - st.items; n > 0 {
			out[cutMark] = n
		}
		return out
	case []any:
		if depth >= st.depth {
			return cutMark
		}
		out := make([]any, 0, min(len(x), st.items)+1)
		for _, e := range x[:min(len(x), st.items)] {
			out = append(out, shrink(e, st, depth+1))
		}
		if n := len(x) - st.items; n > 0 {
			out = append(out, fmt.Sprintf("%s %d more", cutMark, n))
		}
		return out
	}
	return v
}

// fitDetails shrinks the redacted details red (top-level names kept) so that their JSON is at
// most budget bytes, marking them with ClippedKey; original is the size of their JSON before.
func fitDetails(red map[string]any, original, budget int) json.RawMessage {
	mark := map[string]any{"bytes": original}
	for _, st := range shrinkSteps {
		out := make(map[string]any, len(red)+1)
		for k, v := range red {
			out[k] = shrink(v, st, 1)
		}
		out[ClippedKey] = mark
		if b, err := json.Marshal(out); err == nil && len(b) <= budget {
			return b
		}
	}
	b, _ := json.Marshal(map[string]any{ClippedKey: mark})
	return b
}
