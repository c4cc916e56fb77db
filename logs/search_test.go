package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// fakeClock is a settable clock shared by a test and its Writers.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// backends runs fn once on the memory store and once on a private redis-server; newStore
// returns an empty store each call (a fresh key prefix on Redis).
func backends(t *testing.T, fn func(t *testing.T, newStore func() sessions.Store)) {
	t.Run("memory", func(t *testing.T) {
		fn(t, func() sessions.Store {
			s := sessions.NewMemory()
			t.Cleanup(func() { _ = s.Close() })
			return s
		})
	})
	t.Run("redis", func(t *testing.T) {
		addr := redistest.Start(t)
		var n atomic.Int64
		fn(t, func() sessions.Store {
			s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}, Prefix: fmt.Sprintf("logs%d", n.Add(1))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		})
	})
}

func quietWriter(store sessions.Store, clock *fakeClock) *Writer {
	w := &Writer{Logger: slog.New(slog.DiscardHandler), Store: store, Hostname: "h"}
	if clock != nil {
		w.Now = clock.Now
	}
	return w
}

// writeN writes n audit-class events, advancing clock by a second before each; event i has
// client_id "c<i>", type f when i is odd and s otherwise. It returns their ids in order.
func writeN(t *testing.T, w *Writer, clock *fakeClock, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for i := range n {
		clock.Add(time.Second)
		typ := TypeSuccessLogin
		if i%2 == 1 {
			typ = TypeFailedLogin
		}
		ev := &Event{Type: typ, ClientID: fmt.Sprint("c", i), Connection: "corp", Details: map[string]any{"i": i}, Class: ClassAudit}
		if typ == TypeFailedLogin {
			ev.Details["error"] = "access_denied"
		}
		if err := w.Write(t.Context(), ev); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
		ids = append(ids, ev.LogID)
	}
	return ids
}

func clientIDs(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ClientID
	}
	return out
}

func cs(ns ...int) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = fmt.Sprint("c", n)
	}
	return out
}

func TestSearchMode(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		w := quietWriter(newStore(), clock)
		ids := writeN(t, w, clock, 30)
		tests := []struct {
			name string
			q    Query
			want []string
		}{
			{name: "default newest first, 50 per page", q: Query{}, want: func() []string {
				var s []string
				for i := 29; i >= 0; i-- {
					s = append(s, fmt.Sprint("c", i))
				}
				return s
			}()},
			{name: "type:f page 0", q: Query{Q: "type:f", PerPage: 3}, want: cs(29, 27, 25)},
			{name: "type:f page 1", q: Query{Q: "type:f", PerPage: 3, Page: 1}, want: cs(23, 21, 19)},
			{name: "type:f last partial page", q: Query{Q: "type:f", PerPage: 4, Page: 3}, want: cs(5, 3, 1)},
			{name: "past the end", q: Query{Q: "type:f", PerPage: 4, Page: 4}, want: cs()},
			{name: "sort date:1", q: Query{Q: "type:s", PerPage: 3, Sort: "date:1"}, want: cs(0, 2, 4)},
			{name: "sort date:1 page 2", q: Query{Q: "type:s", PerPage: 3, Page: 2, Sort: "date:1"}, want: cs(12, 14, 16)},
			{name: "sort date:-1 explicit", q: Query{Q: "type:s", PerPage: 2, Sort: "date:-1"}, want: cs(28, 26)},
			{name: "AND of type and client_id", q: Query{Q: "type:f AND client_id:c7"}, want: cs(7)},
			{name: "details.error", q: Query{Q: "details.error:access_denied", PerPage: 2}, want: cs(29, 27)},
			{name: "connection", q: Query{Q: "connection:corp", PerPage: 1}, want: cs(29)},
			{name: "no match", q: Query{Q: "connection:other"}, want: cs()},
			// Before and After: log-id bounds, both exclusive.
			{name: "older than an event, newest first", q: Query{Before: ids[10], PerPage: 3}, want: cs(9, 8, 7)},
			{name: "newer than an event, newest first", q: Query{After: ids[26]}, want: cs(29, 28, 27)},
			{name: "between two events, newest first", q: Query{After: ids[3], Before: ids[7]}, want: cs(6, 5, 4)},
			{name: "between two events, oldest first", q: Query{After: ids[3], Before: ids[7], Sort: "date:1"}, want: cs(4, 5, 6)},
			{name: "bounds and q", q: Query{Q: "type:f", After: ids[3], Before: ids[10]}, want: cs(9, 7, 5)},
			{name: "a time range as ids", q: Query{After: MinLogID(time.Date(2024, 1, 15, 10, 30, 5, 0, time.UTC)),
				Before: MinLogID(time.Date(2024, 1, 15, 10, 30, 8, 0, time.UTC))}, want: cs(6, 5, 4)},
			{name: "no event older than the oldest", q: Query{Before: ids[0]}, want: cs()},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := w.Search(t.Context(), tc.q)
				if err != nil {
					t.Fatalf("Search(%+v): %v", tc.q, err)
				}
				if !slices.Equal(clientIDs(got), tc.want) {
					t.Fatalf("Search(%+v) = %v, want %v", tc.q, clientIDs(got), tc.want)
				}
			})
		}
	})
}

func TestSearchInvalid(t *testing.T) {
	w := quietWriter(sessions.NewMemory(), newClock())
	for _, q := range []Query{
		{PerPage: MaxPerPage + 1},
		{PerPage: -1},
		{Page: -1},
		{Page: 10, PerPage: 100}, // at most 1000 results reachable
		{Page: 1000, PerPage: 1},
		{Page: 1 << 60, PerPage: 100},
		{Sort: "user_id:1"},
		{Q: "bogus:x"},
		{Take: MaxTake + 1},
		{Take: -1},
		{From: "123"},
		{From: "not-an-id-but-long-enough-to-be-confusing-xxxxxxxxxxxxxxx"},
	} {
		if _, err := w.Search(t.Context(), q); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("Search(%+v) = %v, want ErrInvalidQuery", q, err)
		}
	}
	if _, err := (&Writer{}).Search(t.Context(), Query{}); err == nil {
		t.Error("Search without a store succeeded")
	}
}

func TestSearchReachesOnly1000(t *testing.T) {
	clock := newClock()
	w := quietWriter(sessions.NewMemory(), clock)
	writeN(t, w, clock, MaxReachable+20)
	last, err := w.Search(t.Context(), Query{Page: 9, PerPage: 100, Sort: "date:1"})
	if err != nil || len(last) != 100 || last[99].ClientID != "c999" {
		t.Fatalf("page 9 of 100 = %d events (last %v), %v; want c900..c999", len(last), clientIDs(last[len(last)-1:]), err)
	}
	// A page straddling the limit is cut at the 1000th result.
	part, err := w.Search(t.Context(), Query{Page: 33, PerPage: 30, Sort: "date:1"})
	if err != nil || !slices.Equal(clientIDs(part), cs(990, 991, 992, 993, 994, 995, 996, 997, 998, 999)) {
		t.Fatalf("page 33 of 30 = %v, %v; want c990..c999", clientIDs(part), err)
	}
	// Checkpoint mode reaches everything.
	evs, err := w.Search(t.Context(), Query{From: last[99].LogID, Take: 100})
	if err != nil || len(evs) != 20 || evs[0].ClientID != "c1000" {
		t.Fatalf("checkpoint after c999 = %v, %v", clientIDs(evs), err)
	}
}

// checkpointAll pages through the log in checkpoint mode, take per page, and returns the ids
// seen in order; it stops at the first empty page.
func checkpointAll(t *testing.T, w *Writer, from string, take int, q string) []string {
	t.Helper()
	var ids []string
	for range 10000 {
		evs, err := w.Search(t.Context(), Query{From: from, Take: take, Q: q, Checkpoint: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return ids
		}
		for _, e := range evs {
			ids = append(ids, e.LogID)
		}
		from = evs[len(evs)-1].LogID
	}
	t.Fatal("checkpoint paging did not end")
	return nil
}

func TestCheckpointMode(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		w := quietWriter(newStore(), clock)
		if evs, err := w.Search(t.Context(), Query{Checkpoint: true}); err != nil || len(evs) != 0 {
			t.Fatalf("checkpoint on an empty log = %v, %v", evs, err)
		}
		ids := writeN(t, w, clock, 23)
		t.Run("from empty starts at the oldest, ascending", func(t *testing.T) {
			evs, err := w.Search(t.Context(), Query{Take: 5})
			if err != nil || !slices.Equal(clientIDs(evs), cs(0, 1, 2, 3, 4)) {
				t.Fatalf("first page = %v, %v", clientIDs(evs), err)
			}
		})
		t.Run("default take 50", func(t *testing.T) {
			evs, err := w.Search(t.Context(), Query{Checkpoint: true})
			if err != nil || len(evs) != 23 {
				t.Fatalf("take 0 = %d events, %v", len(evs), err)
			}
		})
		t.Run("strictly after from", func(t *testing.T) {
			evs, err := w.Search(t.Context(), Query{From: ids[20], Take: 10})
			if err != nil || !slices.Equal(clientIDs(evs), cs(21, 22)) {
				t.Fatalf("after c20 = %v, %v", clientIDs(evs), err)
			}
		})
		t.Run("paging visits each once", func(t *testing.T) {
			if got := checkpointAll(t, w, "", 4, ""); !slices.Equal(got, ids) {
				t.Fatalf("paged %d ids, want the %d written in order", len(got), len(ids))
			}
		})
		t.Run("page and sort ignored", func(t *testing.T) {
			evs, err := w.Search(t.Context(), Query{Take: 2, Page: 5, Sort: "date:-1"})
			if err != nil || !slices.Equal(clientIDs(evs), cs(0, 1)) {
				t.Fatalf("checkpoint with page/sort = %v, %v", clientIDs(evs), err)
			}
		})
		t.Run("q applied in checkpoint mode", func(t *testing.T) {
			evs, err := w.Search(t.Context(), Query{Take: 3, Q: "type:f"})
			if err != nil || !slices.Equal(clientIDs(evs), cs(1, 3, 5)) {
				t.Fatalf("checkpoint type:f = %v, %v", clientIDs(evs), err)
			}
		})
	})
}

// Checkpoint paging has no duplicates and no gaps while 4 goroutines keep writing.
func TestCheckpointConcurrentAppends(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		w := quietWriter(newStore(), nil) // real clock: ids from concurrent Writes interleave
		const writers, perWriter = 4, 60
		var wg sync.WaitGroup
		var written sync.Map
		var finished atomic.Bool
		start := make(chan struct{})
		for g := range writers {
			wg.Go(func() {
				<-start
				for i := range perWriter {
					ev := &Event{Type: TypeSuccessLogin, ClientID: fmt.Sprintf("g%d-%d", g, i)}
					if err := w.Write(context.Background(), ev); err != nil {
						t.Errorf("Write: %v", err)
						return
					}
					written.Store(ev.LogID, true)
				}
			})
		}
		go func() { wg.Wait(); finished.Store(true) }()
		close(start)

		var seen []string
		from := ""
		for range 1_000_000 {
			done := finished.Load() // read before the page: a final empty page then means the end
			evs, err := w.Search(t.Context(), Query{From: from, Take: 7})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				seen = append(seen, e.LogID)
			}
			if len(evs) > 0 {
				from = evs[len(evs)-1].LogID
			} else if done {
				break
			}
		}
		wg.Wait()
		if !slices.IsSorted(seen) {
			t.Fatal("checkpoint pages not in ascending log_id order")
		}
		if len(slices.Compact(slices.Clone(seen))) != len(seen) {
			t.Fatal("checkpoint pages returned an event twice")
		}
		n := 0
		written.Range(func(id, _ any) bool {
			n++
			if i, ok := slices.BinarySearch(seen, id.(string)); !ok {
				t.Errorf("event %s written but never paged (gap) at %d of %d", id, i, len(seen))
			}
			return true
		})
		if n != writers*perWriter || len(seen) != n {
			t.Fatalf("written %d, paged %d, want %d each", n, len(seen), writers*perWriter)
		}
	})
}

// blockingStore holds AppendLog of the event of one client_id until released.
type blockingStore struct {
	sessions.Store
	block    string
	entered  chan struct{}
	release  chan struct{}
	enterOne sync.Once
}

func (b *blockingStore) AppendLog(ctx context.Context, class sessions.LogClass, id string, ev []byte, maxLen int) error {
	if bytes.Contains(ev, []byte(`"client_id":"`+b.block+`"`)) {
		b.enterOne.Do(func() { close(b.entered) })
		<-b.release
	}
	return b.Store.AppendLog(ctx, class, id, ev, maxLen)
}

// An event whose store write is still running holds back the later ones, so a checkpoint
// cursor cannot pass it (no gaps).
func TestCheckpointHoldsBackInFlight(t *testing.T) {
	clock := newClock()
	bs := &blockingStore{Store: sessions.NewMemory(), block: "slow", entered: make(chan struct{}), release: make(chan struct{})}
	w := quietWriter(bs, clock)
	writeN(t, w, clock, 2) // c0, c1
	slowDone := make(chan error, 1)
	go func() { slowDone <- w.Write(context.Background(), &Event{Type: TypeSuccessLogin, ClientID: "slow"}) }()
	<-bs.entered // "slow" has its id and is being stored
	clock.Add(time.Second)
	if err := w.Write(t.Context(), &Event{Type: TypeSuccessLogin, ClientID: "fast"}); err != nil {
		t.Fatal(err)
	}
	evs, err := w.Search(t.Context(), Query{Take: 10})
	if err != nil || !slices.Equal(clientIDs(evs), cs(0, 1)) {
		t.Fatalf("checkpoint while slow is in flight = %v, %v; want [c0 c1]", clientIDs(evs), err)
	}
	// Search mode is not held back.
	if evs, _ := w.Search(t.Context(), Query{PerPage: 1}); len(evs) != 1 || evs[0].ClientID != "fast" {
		t.Fatalf("search mode newest = %v, want fast", clientIDs(evs))
	}
	close(bs.release)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	evs, err = w.Search(t.Context(), Query{Take: 10})
	if err != nil || !slices.Equal(clientIDs(evs), []string{"c0", "c1", "slow", "fast"}) {
		t.Fatalf("checkpoint after slow is stored = %v, %v", clientIDs(evs), err)
	}
}

func TestSettleHoldsBackYoungEvents(t *testing.T) {
	clock := newClock()
	w := quietWriter(sessions.NewMemory(), clock)
	w.Settle = 2 * time.Second
	writeN(t, w, clock, 3) // at +1s, +2s, +3s; now = +3s
	evs, err := w.Search(t.Context(), Query{Take: 10})
	if err != nil || !slices.Equal(clientIDs(evs), cs(0)) {
		t.Fatalf("with Settle 2s at +3s = %v, %v; want [c0]", clientIDs(evs), err)
	}
	clock.Add(2 * time.Second)
	evs, err = w.Search(t.Context(), Query{From: evs[0].LogID, Take: 10})
	if err != nil || !slices.Equal(clientIDs(evs), cs(1, 2)) {
		t.Fatalf("after settling = %v, %v; want [c1 c2]", clientIDs(evs), err)
	}
}

// TestRetentionByCount: MaxLen keeps the newest events, exactly MaxLen of them in memory and
// at most sessions.MaxLogKept(MaxLen) on Redis (whose sharded log trims each shard to
// sessions.LogShardCap); a dropped event is gone for Get too.
func TestRetentionByCount(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		w := quietWriter(newStore(), clock)
		w.MaxLen = 5
		ids := writeN(t, w, clock, 80)
		evs, err := w.Search(t.Context(), Query{PerPage: MaxPerPage})
		if err != nil || len(evs) < 5 || !slices.Equal(clientIDs(evs[:5]), cs(79, 78, 77, 76, 75)) {
			t.Fatalf("MaxLen 5 keeps %v, %v; want the 5 newest first", clientIDs(evs), err)
		}
		if len(evs) > sessions.MaxLogKept(5) {
			t.Fatalf("MaxLen 5 keeps %d events, want at most %d", len(evs), sessions.MaxLogKept(5))
		}
		kept := map[string]bool{}
		for _, ev := range evs {
			kept[ev.LogID] = true
		}
		dropped := 0
		for _, id := range ids {
			_, err := w.Get(t.Context(), id)
			switch {
			case kept[id] && err != nil:
				t.Fatalf("Get of a kept event = %v", err)
			case !kept[id] && !errors.Is(err, sessions.ErrNotFound):
				t.Fatalf("Get of a dropped event = %v, want ErrNotFound", err)
			case !kept[id]:
				dropped++
			}
		}
		if dropped == 0 {
			t.Fatal("80 events under MaxLen 5 dropped none")
		}
	})
}

// storedIDs returns the ids physically in the store, oldest first.
func storedIDs(t *testing.T, s sessions.Store) []string {
	t.Helper()
	es, err := s.LogsAfter(t.Context(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

func TestRetentionByAge(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		store := newStore()
		w := quietWriter(store, clock)
		w.MaxAge = 48 * time.Hour
		ids := writeN(t, w, clock, 1) // e0 at t0+1s (this write trims: nothing old yet)
		clock.Add(time.Hour)
		ids = append(ids, writeN(t, w, clock, 1)...) // e1 at t0+1h+2s

		clock.Add(48*time.Hour - time.Hour) // t0+48h+2s: e0 is older than 48h
		if _, err := w.Get(t.Context(), ids[0]); !errors.Is(err, sessions.ErrNotFound) {
			t.Fatalf("Get of an event past MaxAge = %v, want ErrNotFound", err)
		}
		evs, err := w.Search(t.Context(), Query{})
		if err != nil || !slices.Equal(clientIDs(evs), cs(0)) || evs[0].LogID != ids[1] {
			t.Fatalf("search past MaxAge of e0 = %v, %v; want only e1", clientIDs(evs), err)
		}
		if got := storedIDs(t, store); len(got) != 2 {
			t.Fatalf("store holds %d events before the next write, want 2 (trim happens on write)", len(got))
		}
		ids = append(ids, writeN(t, w, clock, 1)...) // trims: last trim was 48h ago
		if got := storedIDs(t, store); !slices.Equal(got, ids[1:]) {
			t.Fatalf("after a write past MaxAge the store holds %d events, want e1, e2", len(got))
		}

		clock.Add(time.Hour) // t0+49h+3s: e1 is past MaxAge and the last trim an hour old
		ids = append(ids, writeN(t, w, clock, 1)...)
		if got := storedIDs(t, store); !slices.Equal(got, ids[2:]) {
			t.Fatalf("store holds %d events, want e2, e3", len(got))
		}

		// Negative MaxAge keeps everything.
		clock.Add(1000 * time.Hour)
		w.MaxAge = -1
		writeN(t, w, clock, 1)
		if got := storedIDs(t, store); len(got) != 3 {
			t.Fatalf("MaxAge < 0 kept %d events, want 3", len(got))
		}
		if evs, err := w.Search(t.Context(), Query{}); err != nil || len(evs) != 3 {
			t.Fatalf("MaxAge < 0 search = %d events, %v", len(evs), err)
		}
	})
}

func TestTrimAtMostOncePerMinute(t *testing.T) {
	clock := newClock()
	store := &countingStore{Store: sessions.NewMemory()}
	w := quietWriter(store, clock)
	for range 10 { // 10 writes within 10s: one trim
		writeN(t, w, clock, 1)
	}
	if n := store.trims.Load(); n != 1 {
		t.Fatalf("%d trims in 10s of writes, want 1", n)
	}
	clock.Add(time.Minute)
	writeN(t, w, clock, 1)
	if n := store.trims.Load(); n != 2 {
		t.Fatalf("%d trims after a minute more, want 2", n)
	}
	if err := w.Trim(t.Context()); err != nil || store.trims.Load() != 3 {
		t.Fatalf("Trim: %v, trims %d", err, store.trims.Load())
	}
}

// countingStore counts the trims of the audit class (each trim pass trims both classes).
type countingStore struct {
	sessions.Store
	trims atomic.Int32
}

func (c *countingStore) TrimLogs(ctx context.Context, class sessions.LogClass, before string) error {
	if class == sessions.LogAudit {
		c.trims.Add(1)
	}
	return c.Store.TrimLogs(ctx, class, before)
}

func TestGet(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		w := quietWriter(newStore(), clock)
		ids := writeN(t, w, clock, 3)
		ev, err := w.Get(t.Context(), ids[1])
		if err != nil || ev.LogID != ids[1] || ev.ClientID != "c1" || ev.Type != TypeFailedLogin || ev.Details["error"] != "access_denied" {
			t.Fatalf("Get = %+v, %v", ev, err)
		}
		missing := ids[1][:len(ids[1])-1] + "x"
		if _, err := w.Get(t.Context(), missing); !errors.Is(err, ErrInvalidQuery) {
			t.Fatalf("Get(malformed) = %v, want ErrInvalidQuery", err)
		}
		missing = MinLogID(clock.Now())
		if _, err := w.Get(t.Context(), missing); !errors.Is(err, sessions.ErrNotFound) {
			t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
		}
	})
}

// Events survive a broker restart: a new Writer on a new client of the same Redis sees them.
func TestRedisPersistsAcrossWriters(t *testing.T) {
	addr := redistest.Start(t)
	open := func() sessions.Store {
		s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	clock := newClock()
	s1 := open()
	ids := writeN(t, quietWriter(s1, clock), clock, 3)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open()
	t.Cleanup(func() { _ = s2.Close() })
	w2 := quietWriter(s2, clock)
	evs, err := w2.Search(t.Context(), Query{Take: 10})
	if err != nil || !slices.Equal(clientIDs(evs), cs(0, 1, 2)) {
		t.Fatalf("new Writer sees %v, %v", clientIDs(evs), err)
	}
	if ev, err := w2.Get(t.Context(), ids[2]); err != nil || ev.ClientID != "c2" {
		t.Fatalf("new Writer Get = %v, %v", ev, err)
	}
}

func TestFollow(t *testing.T) {
	backends(t, func(t *testing.T, newStore func() sessions.Store) {
		clock := newClock()
		w := quietWriter(newStore(), clock)
		writeN(t, w, clock, 2) // history Follow must not replay
		after, err := w.Latest(t.Context())
		if err != nil || after == "" {
			t.Fatalf("Latest = %q, %v", after, err)
		}
		f, err := ParseQuery("type:f")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		got := make(chan Event, 10)
		done := make(chan error, 1)
		go func() {
			done <- w.Follow(ctx, after, f, 5*time.Millisecond, func(ev Event) error { got <- ev; return nil })
		}()
		if err := w.Write(t.Context(), &Event{Type: TypeSuccessLogin, ClientID: "ok"}); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(t.Context(), &Event{Type: TypeFailedLogin, ClientID: "bad"}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-got:
			if ev.ClientID != "bad" || ev.Type != TypeFailedLogin {
				t.Fatalf("Follow delivered %+v, want the failed login", ev)
			}
		case <-time.After(time.Minute): // a bound only (loaded machines); delivery takes one poll
			t.Fatal("Follow did not deliver the failed login")
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Follow after cancel = %v, want context.Canceled", err)
		}
		if len(got) != 0 {
			t.Fatalf("Follow delivered %d more events (success or history)", len(got))
		}
	})
}

func TestFollowErrors(t *testing.T) {
	clock := newClock()
	w := quietWriter(sessions.NewMemory(), clock)
	writeN(t, w, clock, 3)
	stop := errors.New("stop")
	n := 0
	err := w.Follow(t.Context(), "", Filter{}, time.Millisecond, func(Event) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("Follow with a failing fn = %v after %d events, want stop after 2", err, n)
	}
	if err := w.Follow(t.Context(), "bad", Filter{}, 0, nil); !errors.Is(err, ErrInvalidQuery) {
		t.Fatalf("Follow(bad after) = %v", err)
	}
	if err := (&Writer{}).Follow(t.Context(), "", Filter{}, 0, nil); err == nil {
		t.Fatal("Follow without a store succeeded")
	}
}

func TestMinLogID(t *testing.T) {
	t0 := newClock().Now()
	id := MinLogID(t0)
	if !validLogID(id) {
		t.Fatalf("MinLogID = %q, not a log id", id)
	}
	if next := NewLogID(t0); next < id {
		t.Fatalf("NewLogID(t0) %q below MinLogID(t0) %q", next, id)
	}
	if prev := NewLogID(t0.Add(-time.Nanosecond)); prev >= id {
		t.Fatalf("NewLogID(t0-1ns) %q not below MinLogID(t0) %q", prev, id)
	}
	if got := MinLogID(time.Unix(0, 0).Add(-time.Hour)); got != fmt.Sprintf("%056d", 0) {
		t.Fatalf("MinLogID before 1970 = %q", got)
	}
}

// BenchmarkSearch10k measures the worst case at the default retention: a filter matching
// nothing scans all 10,000 events.
func BenchmarkSearch10k(b *testing.B) {
	clock := newClock()
	w := quietWriter(sessions.NewMemory(), clock)
	for i := range DefaultMaxLen {
		clock.Add(time.Millisecond)
		if err := w.Write(b.Context(), &Event{Type: TypeSuccessLogin, ClientID: fmt.Sprint("c", i), Details: map[string]any{"i": i}}); err != nil {
			b.Fatal(err)
		}
	}
	for _, q := range []Query{{Q: "client_id:none"}, {Q: "type:s"}, {Q: "client_id:none", Checkpoint: true}} {
		b.Run(fmt.Sprintf("%+v", q), func(b *testing.B) {
			for b.Loop() {
				if _, err := w.Search(b.Context(), q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The raw-JSON shortcut never hides a match: values JSON escapes (HTML characters, quotes,
// backslashes, non-ASCII) are found exactly, by prefix and by suffix.
func TestSearchEscapedValues(t *testing.T) {
	clock := newClock()
	w := quietWriter(sessions.NewMemory(), clock)
	values := []string{`A&B <C>`, `say "hi"`, `back\slash`, "Zoë ünïcode", "tab\there", "line\u2028sep"}
	for _, v := range values {
		clock.Add(time.Second)
		if err := w.Write(t.Context(), &Event{Type: TypeSuccessLogin, ClientName: v, UserName: v}); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range values {
		for _, q := range []string{
			QuoteTerm("client_name", v),
			QuoteTerm("user_name", v) + " AND type:s",
			`"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`, // bare term
		} {
			evs, err := w.Search(t.Context(), Query{Q: q})
			if err != nil || len(evs) != 1 || evs[0].ClientName != v {
				t.Errorf("Search(%s) = %v, %v; want the event of %q", q, clientIDs(evs), err, v)
			}
		}
	}
	evs, err := w.Search(t.Context(), Query{Q: `client_name:A\&B*`})
	if err != nil || len(evs) != 1 {
		t.Errorf("prefix with & = %d events, %v", len(evs), err)
	}
	evs, err = w.Search(t.Context(), Query{Q: `user_name:*ünïcode`})
	if err != nil || len(evs) != 1 {
		t.Errorf("suffix with non-ASCII = %d events, %v", len(evs), err)
	}
}
