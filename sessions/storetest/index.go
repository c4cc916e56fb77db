package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Conformance of the session index (sessions.IndexAdd, IndexRemove, IndexMembers): a bounded
// set of members with expiries in one record, written only through Get, Create and Swap, so
// every backend has it. Expiries are relative to a now the test passes, except in the TTL
// test, which watches the record itself expire.

// errNoneAllowed is never returned: passed to race, it makes every error fail the test.
var errNoneAllowed = errors.New("storetest: no error allowed")

// indexBase returns the current time rounded to the millisecond (the precision of stored
// expiries), so that expiries computed from it read back equal.
func indexBase() time.Time { return time.UnixMilli(time.Now().UnixMilli()) }

// indexIDs returns the member ids of ms, in order.
func indexIDs(ms []sessions.IndexMember) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// wantIndexIDs checks the live members of index id at now, earliest expiry first.
func wantIndexIDs(t *testing.T, s sessions.Store, id string, now time.Time, want ...string) {
	t.Helper()
	ms, err := sessions.IndexMembers(ctx(t), s, id, now)
	if err != nil {
		t.Fatalf("IndexMembers: %v", err)
	}
	if got := indexIDs(ms); !slices.Equal(got, want) {
		t.Fatalf("IndexMembers = %q, want %q", got, want)
	}
}

// wantIndex checks the live members of index id at now with their expiries.
func wantIndex(t *testing.T, s sessions.Store, id string, now time.Time, want ...sessions.IndexMember) {
	t.Helper()
	got, err := sessions.IndexMembers(ctx(t), s, id, now)
	if err != nil {
		t.Fatalf("IndexMembers: %v", err)
	}
	if !slices.EqualFunc(got, want, func(a, b sessions.IndexMember) bool { return a.ID == b.ID && a.Expires.Equal(b.Expires) }) {
		t.Fatalf("IndexMembers = %v, want %v", got, want)
	}
}

// mustIndexAdd adds member (expiring at exp) with now and max and checks what was evicted.
func mustIndexAdd(t *testing.T, s sessions.Store, id, member string, exp, now time.Time, max int, wantEvicted ...string) {
	t.Helper()
	ev, err := sessions.IndexAdd(ctx(t), s, id, member, exp, now, max)
	if err != nil {
		t.Fatalf("IndexAdd(%q): %v", member, err)
	}
	if !slices.Equal(ev, wantEvicted) {
		t.Fatalf("IndexAdd(%q) evicted %q, want %q", member, ev, wantEvicted)
	}
}

func mustIndexRemove(t *testing.T, s sessions.Store, id string, now time.Time, members ...string) {
	t.Helper()
	if err := sessions.IndexRemove(ctx(t), s, id, now, members...); err != nil {
		t.Fatalf("IndexRemove(%q): %v", members, err)
	}
}

// testIndexAddListRemove: members are listed earliest expiry first, indexes are apart, and
// removing members (some missing) keeps the rest.
func testIndexAddListRemove(t *testing.T, s sessions.Store) {
	base := indexBase()
	alice, bob := sessions.IndexID("user", "alice"), sessions.IndexID("user", "bob")
	wantIndexIDs(t, s, alice, base) // absent: empty, not an error
	mustIndexAdd(t, s, alice, "s1", base.Add(3*time.Minute), base, 10)
	mustIndexAdd(t, s, alice, "s2", base.Add(time.Minute), base, 10)
	mustIndexAdd(t, s, alice, "s3", base.Add(2*time.Minute), base, 10)
	mustIndexAdd(t, s, bob, "s1", base.Add(time.Minute), base, 10)
	wantIndex(t, s, alice, base,
		sessions.IndexMember{ID: "s2", Expires: base.Add(time.Minute)},
		sessions.IndexMember{ID: "s3", Expires: base.Add(2 * time.Minute)},
		sessions.IndexMember{ID: "s1", Expires: base.Add(3 * time.Minute)})
	wantIndexIDs(t, s, bob, base, "s1")

	mustIndexRemove(t, s, alice, base, "s3", "never-added")
	wantIndexIDs(t, s, alice, base, "s2", "s1")
	mustIndexRemove(t, s, alice, base)
	wantIndexIDs(t, s, alice, base, "s2", "s1")
	mustIndexRemove(t, s, sessions.IndexID("user", "nobody"), base, "s1")
	wantIndexIDs(t, s, bob, base, "s1")
}

// testIndexPrunesExpired: a member whose expiry is not after now is not listed, and the next
// write drops it from the record; a remove that leaves only expired members deletes it.
func testIndexPrunesExpired(t *testing.T, s sessions.Store) {
	base := indexBase()
	id := sessions.IndexID("prune")
	mustIndexAdd(t, s, id, "a", base.Add(time.Minute), base, 10)
	mustIndexAdd(t, s, id, "b", base.Add(3*time.Minute), base, 10)
	for _, tc := range []struct {
		name string
		now  time.Time
		want []string
	}{
		{name: "before a's expiry", now: base.Add(time.Minute - time.Millisecond), want: []string{"a", "b"}},
		{name: "at a's expiry", now: base.Add(time.Minute), want: []string{"b"}},
		{name: "after a's expiry", now: base.Add(2 * time.Minute), want: []string{"b"}},
		{name: "at b's expiry", now: base.Add(3 * time.Minute), want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) { wantIndexIDs(t, s, id, tc.now, tc.want...) })
	}
	// A write at a later now drops a from the record: it is gone even read at base.
	mustIndexAdd(t, s, id, "c", base.Add(4*time.Minute), base.Add(2*time.Minute), 10)
	wantIndexIDs(t, s, id, base, "b", "c")
	// Removing c when b has expired too leaves no member: the record is deleted.
	mustIndexRemove(t, s, id, base.Add(3*time.Minute), "c")
	mustNotFound(t, s, sessions.KindIndex, id)
}

// testIndexEvictsEarliestAtMax: beyond max the members expiring first are dropped and
// returned, the new member too when it expires before every other; at equal expiries the
// members added earlier go first; a lower max drops several.
func testIndexEvictsEarliestAtMax(t *testing.T, s sessions.Store) {
	base := indexBase()
	id := sessions.IndexID("evict")
	for _, step := range []struct {
		name        string
		member      string
		expiresIn   time.Duration
		max         int
		wantEvicted []string
		want        []string
	}{
		{name: "first member", member: "m1", expiresIn: 3 * time.Minute, max: 3, want: []string{"m1"}},
		{name: "second member", member: "m2", expiresIn: time.Minute, max: 3, want: []string{"m2", "m1"}},
		{name: "third member reaches max", member: "m3", expiresIn: 2 * time.Minute, max: 3, want: []string{"m2", "m3", "m1"}},
		{name: "a fourth member evicts the one expiring first", member: "m4", expiresIn: 4 * time.Minute, max: 3,
			wantEvicted: []string{"m2"}, want: []string{"m3", "m1", "m4"}},
		{name: "a member expiring before all others is itself evicted", member: "m0", expiresIn: 30 * time.Second, max: 3,
			wantEvicted: []string{"m0"}, want: []string{"m3", "m1", "m4"}},
		{name: "at an equal expiry the member already there is evicted", member: "m5", expiresIn: 2 * time.Minute, max: 3,
			wantEvicted: []string{"m3"}, want: []string{"m5", "m1", "m4"}},
		{name: "a lower max evicts several, earliest expiry first", member: "m6", expiresIn: 5 * time.Minute, max: 1,
			wantEvicted: []string{"m5", "m1", "m4"}, want: []string{"m6"}},
		{name: "equal expiries keep the order they were added in", member: "zz", expiresIn: 6 * time.Minute, max: 3, want: []string{"m6", "zz"}},
		{name: "not the order of their ids", member: "aa", expiresIn: 6 * time.Minute, max: 3, want: []string{"m6", "zz", "aa"}},
		{name: "of equal expiries the earliest added is evicted first", member: "ab", expiresIn: 7 * time.Minute, max: 2,
			wantEvicted: []string{"m6", "zz"}, want: []string{"aa", "ab"}},
	} {
		ev, err := sessions.IndexAdd(ctx(t), s, id, step.member, base.Add(step.expiresIn), base, step.max)
		if err != nil {
			t.Fatalf("%s: IndexAdd: %v", step.name, err)
		}
		if !slices.Equal(ev, step.wantEvicted) {
			t.Fatalf("%s: evicted %q, want %q", step.name, ev, step.wantEvicted)
		}
		ms, err := sessions.IndexMembers(ctx(t), s, id, base)
		if err != nil {
			t.Fatalf("%s: IndexMembers: %v", step.name, err)
		}
		if got := indexIDs(ms); !slices.Equal(got, step.want) {
			t.Fatalf("%s: members %q, want %q", step.name, got, step.want)
		}
	}
}

// testIndexMovesExpiry: adding a member again moves its expiry (later or earlier) and does
// not count it twice against max.
func testIndexMovesExpiry(t *testing.T, s sessions.Store) {
	base := indexBase()
	id := sessions.IndexID("move")
	mustIndexAdd(t, s, id, "a", base.Add(time.Minute), base, 2)
	mustIndexAdd(t, s, id, "b", base.Add(2*time.Minute), base, 2)
	mustIndexAdd(t, s, id, "a", base.Add(3*time.Minute), base, 2)
	wantIndex(t, s, id, base,
		sessions.IndexMember{ID: "b", Expires: base.Add(2 * time.Minute)},
		sessions.IndexMember{ID: "a", Expires: base.Add(3 * time.Minute)})
	mustIndexAdd(t, s, id, "a", base.Add(30*time.Second), base, 2)
	wantIndex(t, s, id, base,
		sessions.IndexMember{ID: "a", Expires: base.Add(30 * time.Second)},
		sessions.IndexMember{ID: "b", Expires: base.Add(2 * time.Minute)})
	wantIndexIDs(t, s, id, base.Add(time.Minute), "b")
}

// testIndexRemoveLastDeletes: removing the last member deletes the record; the index can be
// used again afterwards.
func testIndexRemoveLastDeletes(t *testing.T, s sessions.Store) {
	base := indexBase()
	id := sessions.IndexID("last")
	mustIndexAdd(t, s, id, "a", base.Add(time.Minute), base, 10)
	mustIndexAdd(t, s, id, "b", base.Add(time.Minute), base, 10)
	mustIndexRemove(t, s, id, base, "a")
	if _, err := s.Get(ctx(t), sessions.KindIndex, id); err != nil {
		t.Fatalf("record after removing one of two members: %v", err)
	}
	mustIndexRemove(t, s, id, base, "b")
	mustNotFound(t, s, sessions.KindIndex, id)
	wantIndexIDs(t, s, id, base)
	mustIndexRemove(t, s, id, base, "b") // an absent index: nothing to do
	mustIndexAdd(t, s, id, "c", base.Add(time.Minute), base, 10)
	wantIndexIDs(t, s, id, base, "c")
}

// testIndexConcurrentAdders: 16 adders of distinct members released together all succeed
// and every member is there afterwards.
func testIndexConcurrentAdders(t *testing.T, s sessions.Store) {
	base := indexBase()
	for round := range 5 {
		id := sessions.IndexID("adders", fmt.Sprint(round))
		wins := race(t, 16, errNoneAllowed, func(i int) error {
			ev, err := sessions.IndexAdd(ctx(t), s, id, fmt.Sprintf("m%02d", i), base.Add(time.Duration(i+1)*time.Minute), base, 1000)
			if err == nil && len(ev) > 0 {
				err = fmt.Errorf("member %d evicted %q below max", i, ev)
			}
			return err
		})
		if wins != 16 {
			t.Fatalf("round %d: %d of 16 adders succeeded", round, wins)
		}
		want := make([]string, 16)
		for i := range want {
			want[i] = fmt.Sprintf("m%02d", i)
		}
		wantIndexIDs(t, s, id, base, want...)
	}
}

// testIndexConcurrentAddRemove: 8 removers of members already there and 8 adders of new ones
// released together all succeed: exactly the new members remain.
func testIndexConcurrentAddRemove(t *testing.T, s sessions.Store) {
	base := indexBase()
	for round := range 5 {
		id := sessions.IndexID("add-remove", fmt.Sprint(round))
		for i := range 8 {
			mustIndexAdd(t, s, id, fmt.Sprintf("old%d", i), base.Add(time.Minute), base, 1000)
		}
		wins := race(t, 16, errNoneAllowed, func(i int) error {
			if i < 8 {
				return sessions.IndexRemove(ctx(t), s, id, base, fmt.Sprintf("old%d", i))
			}
			_, err := sessions.IndexAdd(ctx(t), s, id, fmt.Sprintf("new%d", i-8), base.Add(time.Duration(i)*time.Minute), base, 1000)
			return err
		})
		if wins != 16 {
			t.Fatalf("round %d: %d of 16 adders and removers succeeded", round, wins)
		}
		wantIndexIDs(t, s, id, base, "new0", "new1", "new2", "new3", "new4", "new5", "new6", "new7")
	}
}

// testIndexRecordTTL: the record lives as long as its latest member: it outlives a member
// that expired while a later one remains, and disappears from the store once its last
// member has expired. Real short TTLs, polled generously.
func testIndexRecordTTL(t *testing.T, s sessions.Store) {
	id := sessions.IndexID("ttl")
	now := time.Now()
	mustIndexAdd(t, s, id, "short", now.Add(shortTTL), now, 10)
	now = time.Now()
	mustIndexAdd(t, s, id, "long", now.Add(longTTL), now, 10)
	deadline := time.Now().Add(expiryMax)
	for {
		ms, err := sessions.IndexMembers(ctx(t), s, id, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(indexIDs(ms), []string{"long"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members %v after %v, want only long", indexIDs(ms), expiryMax)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.Get(ctx(t), sessions.KindIndex, id); err != nil {
		t.Fatalf("record after its first member expired, with one of %v left: %v", longTTL, err)
	}
	// Removing the long member shortens the record's TTL to that of the member added now.
	now = time.Now()
	mustIndexAdd(t, s, id, "short2", now.Add(shortTTL), now, 10)
	mustIndexRemove(t, s, id, time.Now(), "long")
	waitGone(t, s, sessions.KindIndex, id)
	wantIndexIDs(t, s, id, time.Now())
}

// testIndexRefusesBadInput: an empty or overlong member, a max outside 1..MaxIndexMembers, an
// expiry not after now and an invalid index id are refused (not as an outage or a conflict)
// and nothing is written, to an existing index or a missing one.
func testIndexRefusesBadInput(t *testing.T, s sessions.Store) {
	base := indexBase()
	kept, fresh := sessions.IndexID("bad", "kept"), sessions.IndexID("bad", "fresh")
	mustIndexAdd(t, s, kept, "kept", base.Add(time.Minute), base, 10)
	stored, err := s.Get(ctx(t), sessions.KindIndex, kept)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", sessions.MaxIndexMemberLen+1)
	refused := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil || errors.Is(err, sessions.ErrUnavailable) || errors.Is(err, sessions.ErrConflict) {
			t.Fatalf("%s = %v, want a refusal", what, err)
		}
		mustGet(t, s, sessions.KindIndex, kept, stored)
		mustNotFound(t, s, sessions.KindIndex, fresh)
	}
	for _, tc := range []struct {
		name   string
		member string
		exp    time.Time
		max    int
	}{
		{name: "an empty member", member: "", exp: base.Add(time.Minute), max: 10},
		{name: "a member over the length limit", member: long, exp: base.Add(time.Minute), max: 10},
		{name: "max 0", member: "m", exp: base.Add(time.Minute), max: 0},
		{name: "a negative max", member: "m", exp: base.Add(time.Minute), max: -1},
		{name: "max above MaxIndexMembers", member: "m", exp: base.Add(time.Minute), max: sessions.MaxIndexMembers + 1},
		{name: "an expiry equal to now", member: "m", exp: base, max: 10},
		{name: "an expiry before now", member: "m", exp: base.Add(-time.Minute), max: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, id := range []string{kept, fresh} {
				ev, err := sessions.IndexAdd(ctx(t), s, id, tc.member, tc.exp, base, tc.max)
				if len(ev) > 0 {
					t.Fatalf("refused IndexAdd evicted %q", ev)
				}
				refused(t, "IndexAdd", err)
			}
		})
	}
	t.Run("an invalid index id", func(t *testing.T) {
		for _, id := range []string{"", "a{b}", ".x"} {
			_, err := sessions.IndexAdd(ctx(t), s, id, "m", base.Add(time.Minute), base, 10)
			refused(t, fmt.Sprintf("IndexAdd(%q)", id), err)
			refused(t, fmt.Sprintf("IndexRemove(%q)", id), sessions.IndexRemove(ctx(t), s, id, base, "m"))
			_, err = sessions.IndexMembers(ctx(t), s, id, base)
			refused(t, fmt.Sprintf("IndexMembers(%q)", id), err)
		}
	})
	t.Run("IndexRemove with an invalid member among valid ones", func(t *testing.T) {
		refused(t, "IndexRemove with an empty member", sessions.IndexRemove(ctx(t), s, kept, base, "kept", ""))
		refused(t, "IndexRemove with an overlong member", sessions.IndexRemove(ctx(t), s, kept, base, "kept", long))
	})
	t.Run("the limits themselves are accepted", func(t *testing.T) {
		edge := strings.Repeat("y", sessions.MaxIndexMemberLen)
		mustIndexAdd(t, s, fresh, edge, base.Add(time.Minute), base, sessions.MaxIndexMembers)
		wantIndexIDs(t, s, fresh, base, edge)
	})
}

// testIndexRecordFormat: the record is compact JSON, {"m":[["ID",UNIX_MILLIS],...]}; one that
// does not decode, or holds an invalid entry, reads as an empty index and is replaced whole by
// the next add, or deleted by the next remove.
func testIndexRecordFormat(t *testing.T, s sessions.Store) {
	base := indexBase()
	exp := base.Add(time.Minute)
	id := sessions.IndexID("format")
	mustIndexAdd(t, s, id, `a"b`, exp, base, 10)
	mustGet(t, s, sessions.KindIndex, id, fmt.Appendf(nil, `{"m":[["a\"b",%d]]}`, exp.UnixMilli()))

	later := exp.Add(time.Minute).UnixMilli()
	for _, tc := range []struct {
		name  string
		value string
	}{
		{name: "not JSON", value: "not json"},
		{name: "empty", value: ""},
		{name: "trailing data", value: fmt.Sprintf(`{"m":[["a",%d]]} x`, later)},
		{name: "an entry of one field", value: `{"m":[["a"]]}`},
		{name: "an entry of three fields", value: fmt.Sprintf(`{"m":[["a",%d,1]]}`, later)},
		{name: "an empty member", value: fmt.Sprintf(`{"m":[["",%d]]}`, later)},
		{name: "a duplicate member", value: fmt.Sprintf(`{"m":[["a",%d],["a",%d]]}`, later, later)},
		{name: "a fractional expiry", value: `{"m":[["a",1.5]]}`},
		{name: "a null entry", value: `{"m":[null]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Put(ctx(t), sessions.KindIndex, id, []byte(tc.value), longTTL); err != nil {
				t.Fatal(err)
			}
			wantIndexIDs(t, s, id, base)
			mustIndexAdd(t, s, id, "new", exp, base, 10)
			wantIndexIDs(t, s, id, base, "new")
			if err := s.Put(ctx(t), sessions.KindIndex, id, []byte(tc.value), longTTL); err != nil {
				t.Fatal(err)
			}
			mustIndexRemove(t, s, id, base, "new")
			mustNotFound(t, s, sessions.KindIndex, id)
		})
	}
}
