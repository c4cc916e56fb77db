package logs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestRetentionClassDefaultsFailuresToUnauthenticated(t *testing.T) {
	tests := []struct {
		name  string
		typ   string
		class Class
		want  Class
	}{
		{name: "success login", typ: TypeSuccessLogin, want: ClassAudit},
		{name: "code exchange", typ: TypeSuccessExchange, want: ClassAudit},
		{name: "refresh", typ: TypeSuccessRefresh, want: ClassAudit},
		{name: "logout", typ: TypeSuccessLogout, want: ClassAudit},
		{name: "revocation", typ: TypeSuccessRevocation, want: ClassAudit},
		{name: "back-channel logout delivered", typ: TypeBackchannelLogoutSucceeded, want: ClassAudit},
		{name: "back-channel logout failed without a decision", typ: TypeBackchannelLogoutFailed, want: ClassUnauthenticated},
		{name: "back-channel logout failed after a logout", typ: TypeBackchannelLogoutFailed, class: ClassAudit, want: ClassAudit},
		{name: "management write", typ: TypeSuccessAPI, want: ClassAdmin},
		{name: "failed login", typ: TypeFailedLogin, want: ClassUnauthenticated},
		{name: "failed exchange", typ: TypeFailedExchange, want: ClassUnauthenticated},
		{name: "failed logout", typ: TypeFailedLogout, want: ClassUnauthenticated},
		{name: "failed management call", typ: TypeFailedAPI, want: ClassUnauthenticated},
		{name: "refresh reuse without a decision", typ: TypeFailedRotatingRefresh, want: ClassUnauthenticated},
		{name: "unknown type", typ: "zzz", want: ClassUnauthenticated},
		{name: "no type", typ: "", want: ClassUnauthenticated},
		{name: "failure after authentication", typ: TypeFailedAPI, class: ClassAudit, want: ClassAudit},
		{name: "success marked unauthenticated", typ: TypeSuccessLogin, class: ClassUnauthenticated, want: ClassUnauthenticated},
		{name: "failed management write by a token allowed to make it", typ: TypeFailedAPI, class: ClassAdmin, want: ClassAdmin},
		{name: "management write marked audit", typ: TypeSuccessAPI, class: ClassAudit, want: ClassAudit},
		{name: "out-of-range class decides by type", typ: TypeFailedLogin, class: Class(9), want: ClassUnauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := &Event{Type: tc.typ, Class: tc.class}
			if got := ev.RetentionClass(); got != tc.want {
				t.Fatalf("RetentionClass() = %v, want %v", got, tc.want)
			}
		})
	}
}

// auditTrail writes one s, seacft and sapi event and returns their ids.
func auditTrail(t *testing.T, w *Writer, clock *fakeClock) []string {
	t.Helper()
	var ids []string
	for _, typ := range []string{TypeSuccessLogin, TypeSuccessExchange, TypeSuccessAPI} {
		clock.Add(time.Second)
		ev := &Event{Type: typ, ClientID: "app", IP: "192.0.2.1"}
		if err := w.Write(t.Context(), ev); err != nil {
			t.Fatalf("Write %s: %v", typ, err)
		}
		ids = append(ids, ev.LogID)
	}
	return ids
}

// A thousand failed logins, under a small retention of their own, leave the audit trail
// whole: search, checkpoint paging and Get still find every audit event, merged in id order
// with the unauthenticated events that are kept.
func TestUnauthenticatedFloodNeverEvictsAuditEvents(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		store := newStore()
		w := quietWriter(store, clock)
		w.MaxLen, w.UnauthenticatedMaxLen = 5, 10
		audit := auditTrail(t, w, clock)
		var flood []string
		for i := range 1000 {
			clock.Add(time.Millisecond)
			ev := &Event{Type: TypeFailedLogin, IP: fmt.Sprintf("198.51.100.%d", i%250), Details: map[string]any{"error": "invalid_client"}}
			if err := w.Write(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			flood = append(flood, ev.LogID)
		}
		// The 3 audit events then the 10 newest failures (a few more on Redis, see
		// retainedIDs), in id order.
		want := retainedIDs(t, store, retained{"audit", audit, 5}, retained{"unauthenticated", flood, 10})
		for _, id := range audit {
			if _, err := w.Get(t.Context(), id); err != nil {
				t.Fatalf("Get(audit %s): %v", id, err)
			}
		}
		if paged := checkpointPages(t, w, 4, 100); !slices.Equal(paged, want) {
			t.Fatalf("checkpoint paging saw %d events, want %d in id order", len(paged), len(want))
		}
		evs, err := w.Search(t.Context(), Query{Q: "type:s"})
		if err != nil || len(evs) != 1 || evs[0].LogID != audit[0] {
			t.Fatalf("search type:s = %v, %v", evs, err)
		}
		evs, err = w.Search(t.Context(), Query{PerPage: 100})
		if err != nil || len(evs) != len(want) || evs[0].LogID != flood[999] || evs[len(evs)-1].LogID != audit[0] {
			t.Fatalf("newest-first search = %d events, %v", len(evs), err)
		}
		evs, err = w.Search(t.Context(), Query{PerPage: 5, Page: 1, Sort: "date:1"})
		if err != nil || len(evs) != 5 || evs[0].LogID != want[5] || evs[4].LogID != want[9] {
			t.Fatalf("oldest-first page 1 = %d events, %v", len(evs), err)
		}
		wantFollowed(t, w, want)
	})
}

// Each class ages out under its own max age; reads hide an aged-out event before the trim
// removes it.
func TestUnauthenticatedEventsAgeOutOnTheirOwn(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		store := newStore()
		w := quietWriter(store, clock)
		w.MaxAge, w.AdminMaxAge, w.UnauthenticatedMaxAge = 48*time.Hour, 48*time.Hour, time.Hour
		audit := auditTrail(t, w, clock)
		failed := &Event{Type: TypeFailedLogin, IP: "192.0.2.9"}
		if err := w.Write(t.Context(), failed); err != nil {
			t.Fatal(err)
		}
		clock.Add(2 * time.Hour)
		if _, err := w.Get(t.Context(), failed.LogID); !errors.Is(err, sessions.ErrNotFound) {
			t.Fatalf("Get of an unauthenticated event past its max age = %v, want ErrNotFound", err)
		}
		evs, err := w.Search(t.Context(), Query{})
		if err != nil || len(evs) != 3 {
			t.Fatalf("search after 2h = %d events, %v; want the 3 audit events", len(evs), err)
		}
		if evs, err := w.Search(t.Context(), Query{Take: 10}); err != nil || len(evs) != 3 {
			t.Fatalf("checkpoint read after 2h = %d events, %v; want the 3 audit events", len(evs), err)
		}
		if err := w.Trim(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := storedIDs(t, store); !slices.Equal(got, audit) {
			t.Fatalf("after Trim the store holds %d entries, want the 3 audit events", len(got))
		}
		clock.Add(47 * time.Hour)
		if err := w.Trim(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := storedIDs(t, store); len(got) != 0 {
			t.Fatalf("after 49h the store holds %d entries, want none", len(got))
		}
	})
}

// The batched login write (PutAllAndLog) stores audit events only: an unauthenticated or
// admin event is refused as unsupported, so the caller falls back to Write.
func TestWriteWithRefusesUnauthenticatedEvents(t *testing.T) {
	w := quietWriter(sessions.NewMemory(), newClock())
	called := false
	err := w.WriteWith(t.Context(), &Event{Type: TypeFailedLogin}, func(_ context.Context, _ string, _ []byte, _ int, _ sessions.Tally) error {
		called = true
		return nil
	})
	if !errors.Is(err, errors.ErrUnsupported) || called {
		t.Fatalf("WriteWith(f) = %v (store called: %v), want ErrUnsupported without a store call", err, called)
	}
	err = w.WriteWith(t.Context(), &Event{Type: TypeSuccessAPI}, func(_ context.Context, _ string, _ []byte, _ int, _ sessions.Tally) error {
		called = true
		return nil
	})
	if !errors.Is(err, errors.ErrUnsupported) || called {
		t.Fatalf("WriteWith(sapi) = %v (store called: %v), want ErrUnsupported without a store call", err, called)
	}
	ev := &Event{Type: TypeSuccessLogin}
	if err := w.WriteWith(t.Context(), ev, func(c context.Context, id string, data []byte, maxLen int, _ sessions.Tally) error {
		called = true
		return w.Store.AppendLog(c, sessions.LogAudit, id, data, maxLen)
	}); err != nil || !called {
		t.Fatalf("WriteWith(s) = %v (store called: %v)", err, called)
	}
}

// A flood of audit events (an end user rotating a refresh token thousands of times) under a
// small audit retention leaves the admin class whole, and every read path (newest- and
// oldest-first search, checkpoint paging, Get, Follow) merges the three classes in id order.
func TestAuditFloodNeverEvictsAdminEvents(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		store := newStore()
		w := quietWriter(store, clock)
		w.MaxLen, w.UnauthenticatedMaxLen, w.AdminMaxLen = 6, 3, 4
		var admin []string
		for _, ev := range []*Event{
			{Type: TypeSuccessAPI, Details: map[string]any{"request": map[string]any{"method": "PATCH"}}},
			{Type: TypeFailedAPI, Class: ClassAdmin, Details: map[string]any{"response": map[string]any{"statusCode": 400}}},
		} {
			clock.Add(time.Second)
			if err := w.Write(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			admin = append(admin, ev.LogID)
		}
		var audit, unauth []string
		for i := range 1000 {
			clock.Add(time.Millisecond)
			ev := &Event{Type: TypeSuccessRefresh, ClientID: "spa", IP: "192.0.2.1"}
			if i%10 == 9 {
				ev = &Event{Type: TypeFailedLogin, IP: fmt.Sprintf("198.51.100.%d", i%250)}
			}
			if err := w.Write(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type == TypeFailedLogin {
				unauth = append(unauth, ev.LogID)
			} else {
				audit = append(audit, ev.LogID)
			}
		}
		// The 2 admin events then the 6 newest audit and 3 newest unauthenticated events (a
		// few more on Redis, see retainedIDs), in id order.
		want := retainedIDs(t, store, retained{"admin", admin, 4}, retained{"audit", audit, 6}, retained{"unauthenticated", unauth, 3})
		if want[0] != admin[0] || want[1] != admin[1] {
			t.Fatalf("store holds %d entries, want the 2 admin events first", len(want))
		}
		for _, id := range admin {
			e, err := store.Log(t.Context(), id)
			if err != nil || e.Class != sessions.LogAdmin {
				t.Fatalf("store entry %s = class %v, %v; want the admin class", id, e.Class, err)
			}
			if _, err := w.Get(t.Context(), id); err != nil {
				t.Fatalf("Get(admin %s): %v", id, err)
			}
		}
		if paged := checkpointPages(t, w, 2, 100); !slices.Equal(paged, want) {
			t.Fatalf("checkpoint paging saw %d events, want %d in id order", len(paged), len(want))
		}
		evs, err := w.Search(t.Context(), Query{Q: "type:*api"})
		if err != nil || len(evs) != 2 || evs[0].LogID != admin[1] || evs[1].LogID != admin[0] {
			t.Fatalf("search for the management events = %v, %v", evs, err)
		}
		evs, err = w.Search(t.Context(), Query{PerPage: 100})
		if err != nil || len(evs) != len(want) || evs[0].LogID != want[len(want)-1] || evs[len(evs)-1].LogID != admin[0] {
			t.Fatalf("newest-first search = %d events, %v", len(evs), err)
		}
		evs, err = w.Search(t.Context(), Query{PerPage: 3, Page: 0, Sort: "date:1"})
		if err != nil || len(evs) != 3 || evs[0].LogID != admin[0] || evs[2].LogID != want[2] {
			t.Fatalf("oldest-first page 0 = %d events, %v", len(evs), err)
		}
		wantFollowed(t, w, want)
		recent, err := w.Recent(t.Context(), "", 100)
		if err != nil || len(recent) != len(want) || recent[len(recent)-1].LogID != admin[0] {
			t.Fatalf("Recent = %d events, %v; want %d ending with the first admin event", len(recent), err, len(want))
		}
	})
}

// The admin class ages out under its own max age, which may be longer than the audit
// class's.
func TestAdminEventsAgeOutOnTheirOwn(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		store := newStore()
		w := quietWriter(store, clock)
		w.MaxAge, w.AdminMaxAge = time.Hour, 48*time.Hour
		sapi := &Event{Type: TypeSuccessAPI}
		login := &Event{Type: TypeSuccessLogin}
		for _, ev := range []*Event{sapi, login} {
			if err := w.Write(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		clock.Add(2 * time.Hour)
		if _, err := w.Get(t.Context(), login.LogID); !errors.Is(err, sessions.ErrNotFound) {
			t.Fatalf("Get of an audit event past its max age = %v, want ErrNotFound", err)
		}
		if evs, err := w.Search(t.Context(), Query{}); err != nil || len(evs) != 1 || evs[0].LogID != sapi.LogID {
			t.Fatalf("search after 2h = %v, %v; want the admin event", evs, err)
		}
		if err := w.Trim(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := storedIDs(t, store); !slices.Equal(got, []string{sapi.LogID}) {
			t.Fatalf("after Trim the store holds %v, want the admin event", got)
		}
		clock.Add(47 * time.Hour)
		if _, err := w.Get(t.Context(), sapi.LogID); !errors.Is(err, sessions.ErrNotFound) {
			t.Fatalf("Get of an admin event past its max age = %v, want ErrNotFound", err)
		}
		if err := w.Trim(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := storedIDs(t, store); len(got) != 0 {
			t.Fatalf("after 49h the store holds %d entries, want none", len(got))
		}
	})
}

// checkpointPages reads the log as `broker logs --follow` does: from the oldest, take
// events at a time, each page from the last id seen (at most pages pages). It returns the ids.
// retained is what a class was sent: its ids, oldest first, and its maxLen.
type retained struct {
	class  string
	ids    []string
	maxLen int
}

// retainedIDs returns the ids in the store, oldest first, after checking them against what
// each class was sent: each keeps its maxLen newest, and at most sessions.MaxLogKept(maxLen)
// (exactly maxLen in memory; on Redis, whose sharded log trims each shard to
// sessions.LogShardCap(maxLen)); nothing else is stored.
func retainedIDs(t *testing.T, store sessions.Store, classes ...retained) []string {
	t.Helper()
	got := storedIDs(t, store)
	seen := 0
	for _, c := range classes {
		var kept []string
		for _, id := range got {
			if slices.Contains(c.ids, id) {
				kept = append(kept, id)
			}
		}
		seen += len(kept)
		newest := c.ids[max(0, len(c.ids)-c.maxLen):]
		if len(kept) < len(newest) || !slices.Equal(kept[len(kept)-len(newest):], newest) || len(kept) > sessions.MaxLogKept(c.maxLen) {
			t.Fatalf("store holds %d %s entries, want its %d newest and at most %d", len(kept), c.class, c.maxLen, sessions.MaxLogKept(c.maxLen))
		}
	}
	if seen != len(got) {
		t.Fatalf("store holds %d entries, %d of them sent", len(got), seen)
	}
	return got
}

func checkpointPages(t *testing.T, w *Writer, take, pages int) []string {
	t.Helper()
	var ids []string
	from := ""
	for range pages {
		evs, err := w.Search(t.Context(), Query{From: from, Take: take})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			ids = append(ids, ev.LogID)
		}
		from = evs[len(evs)-1].LogID
	}
	return ids
}

// wantFollowed follows the log from the oldest event until it has seen len(want) events, which
// must be want in id order.
func wantFollowed(t *testing.T, w *Writer, want []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var followed []string
	err := w.Follow(ctx, "", Filter{}, time.Millisecond, func(ev Event) error {
		if followed = append(followed, ev.LogID); len(followed) == len(want) {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || !slices.Equal(followed, want) {
		t.Fatalf("Follow saw %d events (%v), want %d in id order", len(followed), err, len(want))
	}
}
