package sessions

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// A session index is a bounded set of members (opaque ids, each with an expiry) kept in one
// record of KindIndex: the broker finds a user's sessions, or the sessions created from one
// upstream session, by reading one key, never by scanning the keyspace, so it works on Redis
// Cluster. It is built on Get, Create and Swap alone, so every Store has it.
//
// The record's value is compact JSON, {"m":[["ID",EXPIRY],...]}, EXPIRY in Unix milliseconds,
// earliest expiry first. Its TTL is the latest member expiry, so an index whose members have
// all expired disappears by itself. A record that does not decode (or holds an empty or
// overlong id, a duplicate id or a non-positive expiry) is read as an empty index and
// replaced whole by the next write; it is never partly trusted.

const (
	// MaxIndexMembers is the largest max IndexAdd accepts: it bounds an index record to
	// about 300 KB (members of MaxIndexMemberLen bytes), usually far less.
	MaxIndexMembers = 1000
	// MaxIndexMemberLen is the longest member id, in bytes.
	MaxIndexMemberLen = 256
)

// indexAttempts bounds the read-then-write rounds of IndexAdd and IndexRemove; indexPause is
// the longest randomized pause between two of them.
const (
	indexAttempts = 16
	indexPause    = 5 * time.Millisecond
)

// IndexID returns the store id of the index named by parts: base64url (no padding) of
// SHA-256 over the parts joined by "\x00" (43 characters; a valid id and its own hash tag,
// since it has no '.'). Parts should not contain "\x00", or two lists of parts may name one
// index.
func IndexID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// IndexMember is one member of an index and when it stops counting.
type IndexMember struct {
	ID      string
	Expires time.Time
}

// indexEntry is one stored member: its id and expiry in Unix milliseconds, encoded as a JSON
// array ["ID",EXPIRY].
type indexEntry struct {
	id  string
	exp int64
}

func (e indexEntry) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{e.id, e.exp})
}

func (e *indexEntry) UnmarshalJSON(b []byte) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(b, &parts); err != nil {
		return err
	}
	if len(parts) != 2 {
		return fmt.Errorf("index entry has %d fields, want 2", len(parts))
	}
	if err := json.Unmarshal(parts[0], &e.id); err != nil {
		return err
	}
	return json.Unmarshal(parts[1], &e.exp)
}

type indexRecord struct {
	M []indexEntry `json:"m"`
}

// expiry returns e's expiry as a time.
func (e indexEntry) expiry() time.Time { return time.UnixMilli(e.exp) }

// live reports whether e still counts at now (its expiry is after now).
func (e indexEntry) live(now time.Time) bool { return e.expiry().After(now) }

// ceilMilli returns t in Unix milliseconds, rounded up, so that a stored member never stops
// counting before the expiry it was given.
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// checkIndexMember rejects member ids that are empty or longer than MaxIndexMemberLen.
func checkIndexMember(id string) error {
	switch {
	case id == "":
		return errors.New("sessions: empty index member")
	case len(id) > MaxIndexMemberLen:
		return fmt.Errorf("sessions: index member of %d bytes, at most %d", len(id), MaxIndexMemberLen)
	}
	return nil
}

// decodeIndex returns the live members of a stored index (expiry after now), earliest expiry
// first (ties by id). A value that does not decode, or holds an invalid entry, is an empty
// index (see the comment at the top of this file).
func decodeIndex(value []byte, now time.Time) []indexEntry {
	var rec indexRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil
	}
	seen := make(map[string]bool, len(rec.M))
	out := make([]indexEntry, 0, len(rec.M))
	for _, e := range rec.M {
		if checkIndexMember(e.id) != nil || e.exp <= 0 || seen[e.id] {
			return nil
		}
		seen[e.id] = true
		if e.live(now) {
			out = append(out, e)
		}
	}
	sortIndex(out)
	return out
}

// sortIndex orders entries by expiry, earliest first; entries of equal expiry keep their
// stored order, which is the order they were added in (IndexAdd puts a new member after every
// member that expires no later), so of equal expiries the earliest added is evicted first.
func sortIndex(es []indexEntry) {
	slices.SortStableFunc(es, func(a, b indexEntry) int { return cmp.Compare(a.exp, b.exp) })
}

// encodeIndex returns the record value of entries (sorted, all live at now) and its TTL:
// the latest expiry minus now, rounded up to the millisecond.
func encodeIndex(entries []indexEntry, now time.Time) ([]byte, time.Duration, error) {
	v, err := json.Marshal(indexRecord{M: entries})
	if err != nil {
		return nil, 0, err
	}
	latest := entries[0].exp
	for _, e := range entries {
		latest = max(latest, e.exp)
	}
	ttl := time.UnixMilli(latest).Sub(now)
	if r := ttl % time.Millisecond; r != 0 {
		ttl += time.Millisecond - r
	}
	return v, ttl, nil
}

// readIndex reads the index id: its stored value (to compare in Swap), whether it exists,
// and its live members.
func readIndex(ctx context.Context, st Store, id string, now time.Time) (old []byte, found bool, live []indexEntry, err error) {
	old, err = st.Get(ctx, KindIndex, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, false, nil, nil
	case err != nil:
		return nil, false, nil, err
	}
	return old, true, decodeIndex(old, now), nil
}

// writeIndex stores entries (all live at now; none: delete) as the index id, but only if it
// still holds old (found) or is still absent (not found). It reports false, with no error,
// when another writer came first.
func writeIndex(ctx context.Context, st Store, id string, old []byte, found bool, entries []indexEntry, now time.Time) (bool, error) {
	if len(entries) == 0 {
		if !found {
			return true, nil
		}
		err := st.Swap(ctx, KindIndex, id, old, nil, []Ref{{Kind: KindIndex, ID: id}})
		if errors.Is(err, ErrConflict) {
			return false, nil
		}
		return err == nil, err
	}
	v, ttl, err := encodeIndex(entries, now)
	if err != nil {
		return false, err
	}
	if !found {
		err = st.Create(ctx, KindIndex, id, v, ttl)
		if errors.Is(err, ErrExists) {
			return false, nil
		}
		return err == nil, err
	}
	err = st.Swap(ctx, KindIndex, id, old, []Item{{Kind: KindIndex, ID: id, Value: v, TTL: ttl}}, nil)
	if errors.Is(err, ErrConflict) {
		return false, nil
	}
	return err == nil, err
}

// indexWait pauses for a random time below indexPause before the next attempt, or returns
// the context's error.
func indexWait(ctx context.Context) error {
	t := time.NewTimer(rand.N(indexPause) + time.Microsecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// IndexAdd adds member to the index id (or moves its expiry to exp), dropping members whose
// expiry is not after now; when more than max members remain it drops those that expire
// first and returns them (evicted; the caller decides what dropping means, e.g. ending
// those sessions). Members expiring at the same time are evicted in id order, member itself
// last, but member is evicted too when it expires before all the others kept. The record's
// TTL is the latest member expiry minus now.
//
// Concurrent adders never lose each other's members: IndexAdd reads the index, then writes
// it with Create (missing) or Swap (compare-and-swap against what it read), and reads again
// when another writer came first, at most 16 times with a short randomized pause; when the
// attempts run out it returns an error wrapping ErrConflict, having changed nothing. max
// outside 1..MaxIndexMembers, exp not after now, or an empty or overlong member is an error
// and nothing is written. Store errors are returned wrapped (errors.Is finds
// ErrUnavailable, ErrFull).
func IndexAdd(ctx context.Context, st Store, id, member string, exp, now time.Time, max int) (evicted []string, err error) {
	switch {
	case max < 1 || max > MaxIndexMembers:
		return nil, fmt.Errorf("sessions: index add: max %d outside 1..%d", max, MaxIndexMembers)
	case !exp.After(now):
		return nil, fmt.Errorf("sessions: index add: expiry %v not after now %v", exp, now)
	}
	if err := checkIndexMember(member); err != nil {
		return nil, fmt.Errorf("sessions: index add: %w", err)
	}
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("sessions: index add: %w", err)
	}
	add := indexEntry{id: member, exp: ceilMilli(exp)}
	for attempt := range indexAttempts {
		if attempt > 0 {
			if err := indexWait(ctx); err != nil {
				return nil, fmt.Errorf("sessions: index add: %w", err)
			}
		}
		old, found, live, err := readIndex(ctx, st, id, now)
		if err != nil {
			return nil, fmt.Errorf("sessions: index add: %w", err)
		}
		live = slices.DeleteFunc(live, func(e indexEntry) bool { return e.id == add.id })
		// Insert member after every entry that expires no later, so that at equal expiries
		// it is evicted last.
		i := 0
		for i < len(live) && live[i].exp <= add.exp {
			i++
		}
		live = slices.Insert(live, i, add)
		var drop []string
		for len(live) > max {
			drop = append(drop, live[0].id)
			live = live[1:]
		}
		ok, err := writeIndex(ctx, st, id, old, found, live, now)
		if err != nil {
			return nil, fmt.Errorf("sessions: index add: %w", err)
		}
		if ok {
			return drop, nil
		}
	}
	return nil, fmt.Errorf("sessions: index add: %d attempts: %w", indexAttempts, ErrConflict)
}

// IndexRemove removes members from the index id (members that are not there are fine),
// dropping members whose expiry is not after now; the record is deleted when no member
// remains (Swap with the record in del). Like IndexAdd it compares and swaps, at most 16
// times, and returns an error wrapping ErrConflict when the attempts run out. An empty or
// overlong member is an error and nothing is written. An index that holds none of members
// is not written, unless no member of it is live any more: then it is deleted.
func IndexRemove(ctx context.Context, st Store, id string, now time.Time, members ...string) error {
	gone := make(map[string]bool, len(members))
	for _, m := range members {
		if err := checkIndexMember(m); err != nil {
			return fmt.Errorf("sessions: index remove: %w", err)
		}
		gone[m] = true
	}
	if err := checkID(id); err != nil {
		return fmt.Errorf("sessions: index remove: %w", err)
	}
	for attempt := range indexAttempts {
		if attempt > 0 {
			if err := indexWait(ctx); err != nil {
				return fmt.Errorf("sessions: index remove: %w", err)
			}
		}
		old, found, live, err := readIndex(ctx, st, id, now)
		if err != nil {
			return fmt.Errorf("sessions: index remove: %w", err)
		}
		n := len(live)
		live = slices.DeleteFunc(live, func(e indexEntry) bool { return gone[e.id] })
		if !found || (len(live) == n && n > 0) {
			return nil // nothing to remove (an index of expired members only is deleted)
		}
		ok, err := writeIndex(ctx, st, id, old, found, live, now)
		if err != nil {
			return fmt.Errorf("sessions: index remove: %w", err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("sessions: index remove: %d attempts: %w", indexAttempts, ErrConflict)
}

// IndexMembers returns the live members of the index id (expiry after now), earliest expiry
// first (ties by id); an absent index, or one that does not decode, is an empty list, not an
// error.
func IndexMembers(ctx context.Context, st Store, id string, now time.Time) ([]IndexMember, error) {
	_, _, live, err := readIndex(ctx, st, id, now)
	if err != nil {
		return nil, fmt.Errorf("sessions: index members: %w", err)
	}
	out := make([]IndexMember, len(live))
	for i, e := range live {
		out[i] = IndexMember{ID: e.id, Expires: e.expiry()}
	}
	return out, nil
}
