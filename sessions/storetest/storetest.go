package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

const (
	shortTTL  = 150 * time.Millisecond
	longTTL   = time.Minute
	expiryMax = time.Minute // bound on waiting for a short TTL to lapse (a bound for loaded machines only)
)

// Run runs every conformance check; newStore must return an empty, isolated store for each
// subtest (and register its Close with t.Cleanup if needed). The store must also implement
// sessions.Connections.
func Run(t *testing.T, newStore func(t *testing.T) sessions.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s sessions.Store)
	}{
		{name: "Create then ErrExists", fn: testCreateExists},
		{name: "Put overwrites", fn: testPutOverwrite},
		{name: "Get missing is ErrNotFound", fn: testGetNotFound},
		{name: "TTL expiry", fn: testTTLExpiry},
		{name: "Take is single use", fn: testTakeSingleUse},
		{name: "Take under 32 concurrent takers", fn: testTakeConcurrent},
		{name: "Create (SET NX) under concurrency, exactly one wins", fn: testCreateConcurrent},
		{name: "PutAll stores all", fn: testPutAll},
		{name: "PutAll refuses mixed hash tags", fn: testPutAllMixed},
		{name: "Delete is idempotent", fn: testDelete},
		{name: "Kinds are separate namespaces", fn: testKinds},
		{name: "Invalid ids refused", fn: testInvalidIDs},
		{name: "Large values", fn: testLargeValue},
		{name: "Binary values", fn: testBinaryValue},
		{name: "Values are copied", fn: testValueCopied},
		{name: "Logs order and paging", fn: testLogsOrder},
		{name: "Logs maxLen retention", fn: testLogsRetention},
		{name: "Logs invalid input", fn: testLogsInvalid},
		{name: "Ping", fn: testPing},
		{name: "LogsAfter and LogsBefore paging", fn: testLogsAfterBefore},
		{name: "Log by id", fn: testLogByID},
		{name: "TrimLogs by id bound", fn: testTrimLogs},
		{name: "Log cursors validated", fn: testLogCursorsInvalid},
		{name: "Log paging by LogsAfter and LogsBefore while three writers append: every stored entry once, in order", fn: testLogPagingConcurrent},
		{name: "Connections create, duplicate id, duplicate name", fn: testConnCreate},
		{name: "Connections concurrent creates of one name, exactly one wins", fn: testConnCreateConcurrent},
		{name: "Connections update", fn: testConnUpdate},
		{name: "Connections delete frees the name", fn: testConnDelete},
		{name: "Connections delete keeps a tombstone until the id is created again", fn: testConnTombstone},
		{name: "Connections version increases on every write", fn: testConnVersion},
		{name: "Connections list sorted by name", fn: testConnList},
		{name: "Connections seed is idempotent", fn: testConnSeed},
		{name: "Connections copy values and live apart from TTL records", fn: testConnDurable},
		{name: "Connections invalid input", fn: testConnInvalid},
		{name: "Clients create, update, list by id, delete with a tombstone, each write counted in the version", fn: testClientLifecycle},
		{name: "Clients live apart from connections", fn: testClientsApartFromConnections},
		{name: "Clients concurrent creates of one id, exactly one wins", fn: testClientsConcurrentCreate},
		{name: "Clients invalid input", fn: testClientsInvalid},
		{name: "PutAllAndLog stores records and event together or reports unsupported", fn: testPutAllAndLog},
		{name: "SwapAndLog swaps and logs together, neither on conflict, or reports unsupported", fn: testSwapAndLog},
		{name: "GetMany reads several records in order, nil where none", fn: testGetMany},
		{name: "Connections watch reports every connection and client write with its version, and vouches for the time between", fn: testConnWatch},
		{name: "Log classes: a flood of unauthenticated entries never evicts audit entries", fn: testLogFloodKeepsAudit},
		{name: "Log classes are merged in id order by every read", fn: testLogClassesMerge},
		{name: "TrimLogs trims one class", fn: testTrimLogsByClass},
		{name: "Log classes: unknown class refused", fn: testLogClassInvalid},
		{name: "PutAllAndLog appends to the audit class", fn: testPutAllAndLogIsAudit},
		{name: "Log classes: a flood of audit and unauthenticated entries never evicts admin entries", fn: testLogFloodKeepsAdmin},
		{name: "Log classes: admin, audit and unauthenticated entries merged in id order by every read", fn: testLogThreeClassesMerge},
		{name: "Swap with the current value writes and deletes its batch", fn: testSwapReplaces},
		{name: "Swap may delete the record it compares", fn: testSwapDeletesCompared},
		{name: "Swap with another value, or of a missing or taken record, is ErrConflict and changes nothing", fn: testSwapConflicts},
		{name: "Swap of an expired record is ErrConflict", fn: testSwapExpired},
		{name: "Swap refuses mixed hash tags, invalid items and overlaps", fn: testSwapRefusesBadBatches},
		{name: "Swap under 32 concurrent swappers, exactly one wins", fn: testSwapConcurrent},
		{name: "Swap never writes after a concurrent Take", fn: testSwapVersusTake},
		{name: "Index lists members earliest expiry first and removes them", fn: testIndexAddListRemove},
		{name: "Index drops members whose expiry is not after now", fn: testIndexPrunesExpired},
		{name: "Index at max evicts and returns the members expiring first", fn: testIndexEvictsEarliestAtMax},
		{name: "Index add of a present member moves its expiry", fn: testIndexMovesExpiry},
		{name: "Index remove of the last member deletes the record", fn: testIndexRemoveLastDeletes},
		{name: "Index under 16 concurrent adders keeps every member", fn: testIndexConcurrentAdders},
		{name: "Index under concurrent adders and removers keeps exactly the added members", fn: testIndexConcurrentAddRemove},
		{name: "Index record lives until its latest member expires", fn: testIndexRecordTTL},
		{name: "Index refuses bad input and writes nothing", fn: testIndexRefusesBadInput},
		{name: "Tallies sum the counters of every append per minute and per hour", fn: testTallySums},
		{name: "Tallies: an invalid tally or a refused batch writes neither event nor counter", fn: testTallyRefused},
		{name: "Tallies: minute buckets live a day, hour buckets a week", fn: testTallyTTL},
		{name: "Tallies read every bucket of a range, oldest first, and refuse too many", fn: testTallyRange},
		{name: "Tallies under 16 concurrent appenders lose no increment", fn: testTallyConcurrent},
		{name: "Index record is compact JSON; an undecodable one reads as empty and is replaced", fn: testIndexRecordFormat},
		{name: "Log cursors: one lease holder at a time moves the position, which never moves back", fn: testLogCursorLease},
		{name: "Log cursors: a lease not renewed lapses and another holder takes the position", fn: testLogCursorLeaseExpires},
		{name: "Log cursors: of 16 concurrent takers of a free lease exactly one wins", fn: testLogCursorConcurrent},
		{name: "Log cursors: malformed names, holders, TTLs and positions refused", fn: testLogCursorInvalid},
		{name: "CountLogsAfter counts the entries of every class above the bound", fn: testCountLogsAfter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
	t.Run("Connections version: the same write on stores at one version reaches different versions", func(t *testing.T) {
		testConnVersionNamesContent(t, newStore)
	})
}

func ctx(t *testing.T) context.Context { return t.Context() }

func mustGet(t *testing.T, s sessions.Store, kind sessions.Kind, id string, want []byte) {
	t.Helper()
	got, err := s.Get(ctx(t), kind, id)
	if err != nil {
		t.Fatalf("Get(%s, %q): %v", kind, id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%s, %q) = %q, want %q", kind, id, got, want)
	}
}

func mustPut(t *testing.T, s sessions.Store, kind sessions.Kind, id string, value []byte) {
	t.Helper()
	if err := s.Put(ctx(t), kind, id, value, longTTL); err != nil {
		t.Fatalf("Put(%s, %q): %v", kind, id, err)
	}
}

func mustNotFound(t *testing.T, s sessions.Store, kind sessions.Kind, id string) {
	t.Helper()
	if v, err := s.Get(ctx(t), kind, id); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("Get(%s, %q) = %q, %v; want ErrNotFound", kind, id, v, err)
	}
}

func testCreateExists(t *testing.T, s sessions.Store) {
	if err := s.Create(ctx(t), sessions.KindCode, "c1", []byte("first"), longTTL); err != nil {
		t.Fatalf("Create: %v", err)
	}
	err := s.Create(ctx(t), sessions.KindCode, "c1", []byte("second"), longTTL)
	if !errors.Is(err, sessions.ErrExists) {
		t.Fatalf("second Create = %v, want ErrExists", err)
	}
	mustGet(t, s, sessions.KindCode, "c1", []byte("first"))
}

func testPutOverwrite(t *testing.T, s sessions.Store) {
	for _, v := range []string{"one", "two"} {
		if err := s.Put(ctx(t), sessions.KindSession, "s1", []byte(v), longTTL); err != nil {
			t.Fatalf("Put(%q): %v", v, err)
		}
	}
	mustGet(t, s, sessions.KindSession, "s1", []byte("two"))
}

func testGetNotFound(t *testing.T, s sessions.Store) {
	mustNotFound(t, s, sessions.KindSession, "nobody")
	if _, err := s.Take(ctx(t), sessions.KindCode, "nobody"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("Take missing = %v, want ErrNotFound", err)
	}
}

// waitGone polls until (kind, id) is no longer readable; bounded by expiryMax.
func waitGone(t *testing.T, s sessions.Store, kind sessions.Kind, id string) {
	t.Helper()
	deadline := time.Now().Add(expiryMax)
	for {
		_, err := s.Get(ctx(t), kind, id)
		if errors.Is(err, sessions.ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("Get while waiting for expiry: %v", err)
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s %q still present %v after its %v TTL", kind, id, expiryMax, shortTTL)
}

func testTTLExpiry(t *testing.T, s sessions.Store) {
	c := ctx(t)
	if err := s.Put(c, sessions.KindSession, "keep", []byte("k"), longTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(c, sessions.KindSession, "short", []byte("p"), shortTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(c, sessions.KindJTI, "short", []byte("c"), shortTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAll(c, sessions.Item{Kind: sessions.KindTransaction, ID: "short.a", Value: []byte("a"), TTL: shortTTL}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, s, sessions.KindSession, "short")
	waitGone(t, s, sessions.KindJTI, "short")
	waitGone(t, s, sessions.KindTransaction, "short.a")
	if _, err := s.Take(c, sessions.KindJTI, "short"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("Take expired = %v, want ErrNotFound", err)
	}
	// An expired record does not block Create.
	if err := s.Create(c, sessions.KindJTI, "short", []byte("again"), longTTL); err != nil {
		t.Fatalf("Create over expired record: %v", err)
	}
	mustGet(t, s, sessions.KindJTI, "short", []byte("again"))
	mustGet(t, s, sessions.KindSession, "keep", []byte("k"))
}

func testTakeSingleUse(t *testing.T, s sessions.Store) {
	c := ctx(t)
	if err := s.Put(c, sessions.KindCode, "once", []byte("v"), longTTL); err != nil {
		t.Fatal(err)
	}
	v, err := s.Take(c, sessions.KindCode, "once")
	if err != nil || string(v) != "v" {
		t.Fatalf("first Take = %q, %v", v, err)
	}
	if _, err := s.Take(c, sessions.KindCode, "once"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("second Take = %v, want ErrNotFound", err)
	}
	mustNotFound(t, s, sessions.KindCode, "once")
}

// race runs fn on n goroutines released together and returns how many returned nil; any
// error other than allowed fails the test.
func race(t *testing.T, n int, allowed error, fn func(i int) error) int {
	t.Helper()
	var wins atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			err := fn(i)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, allowed):
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("unexpected error: %v", err)
	}
	return int(wins.Load())
}

func testTakeConcurrent(t *testing.T, s sessions.Store) {
	for round := range 20 {
		id := fmt.Sprintf("tx%d.r", round)
		if err := s.Put(ctx(t), sessions.KindTransaction, id, []byte("secret"), longTTL); err != nil {
			t.Fatal(err)
		}
		var got atomic.Value
		wins := race(t, 32, sessions.ErrNotFound, func(int) error {
			v, err := s.Take(ctx(t), sessions.KindTransaction, id)
			if err == nil {
				got.Store(string(v))
			}
			return err
		})
		if wins != 1 {
			t.Fatalf("round %d: %d takers won, want exactly 1", round, wins)
		}
		if got.Load() != "secret" {
			t.Fatalf("round %d: winner got %v", round, got.Load())
		}
	}
}

func testCreateConcurrent(t *testing.T, s sessions.Store) {
	for round := range 20 {
		id := fmt.Sprintf("jti%d", round)
		var winner atomic.Int32
		wins := race(t, 32, sessions.ErrExists, func(i int) error {
			err := s.Create(ctx(t), sessions.KindJTI, id, []byte{byte(i)}, longTTL)
			if err == nil {
				winner.Store(int32(i))
			}
			return err
		})
		if wins != 1 {
			t.Fatalf("round %d: %d creators won, want exactly 1", round, wins)
		}
		mustGet(t, s, sessions.KindJTI, id, []byte{byte(winner.Load())})
	}
}

func testPutAll(t *testing.T, s sessions.Store) {
	items := []sessions.Item{
		{Kind: sessions.KindSession, ID: "u1.sess", Value: []byte("session"), TTL: longTTL},
		{Kind: sessions.KindCode, ID: "u1.code", Value: []byte("code"), TTL: longTTL},
		{Kind: sessions.KindRefresh, ID: "u1", Value: []byte("rt"), TTL: longTTL},
	}
	if err := s.PutAll(ctx(t), items...); err != nil {
		t.Fatalf("PutAll: %v", err)
	}
	for _, it := range items {
		mustGet(t, s, it.Kind, it.ID, it.Value)
	}
	if err := s.PutAll(ctx(t)); err != nil {
		t.Fatalf("empty PutAll: %v", err)
	}
}

func testPutAllMixed(t *testing.T, s sessions.Store) {
	c := ctx(t)
	if err := s.Put(c, sessions.KindSession, "a.x", []byte("old"), longTTL); err != nil {
		t.Fatal(err)
	}
	err := s.PutAll(c,
		sessions.Item{Kind: sessions.KindSession, ID: "a.x", Value: []byte("new"), TTL: longTTL},
		sessions.Item{Kind: sessions.KindCode, ID: "b.y", Value: []byte("new"), TTL: longTTL},
	)
	if err == nil {
		t.Fatal("PutAll with tags a and b succeeded")
	}
	if errors.Is(err, sessions.ErrUnavailable) {
		t.Fatalf("mixed-tag refusal reported as ErrUnavailable: %v", err)
	}
	mustGet(t, s, sessions.KindSession, "a.x", []byte("old"))
	mustNotFound(t, s, sessions.KindCode, "b.y")
	// An invalid item anywhere in the batch also changes nothing.
	err = s.PutAll(c,
		sessions.Item{Kind: sessions.KindCode, ID: "a.z", Value: []byte("v"), TTL: longTTL},
		sessions.Item{Kind: sessions.KindCode, ID: "a.w", Value: []byte("v"), TTL: 0},
	)
	if err == nil {
		t.Fatal("PutAll with a zero TTL succeeded")
	}
	mustNotFound(t, s, sessions.KindCode, "a.z")
}

func testDelete(t *testing.T, s sessions.Store) {
	c := ctx(t)
	if err := s.Put(c, sessions.KindSession, "d", []byte("v"), longTTL); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := s.Delete(c, sessions.KindSession, "d"); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	mustNotFound(t, s, sessions.KindSession, "d")
	if err := s.Delete(c, sessions.KindSession, "never"); err != nil {
		t.Fatalf("Delete missing: %v", err)
	}
}

func testKinds(t *testing.T, s sessions.Store) {
	c := ctx(t)
	if err := s.Put(c, sessions.KindSession, "same", []byte("sess"), longTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(c, sessions.KindCode, "same", []byte("code"), longTTL); err != nil {
		t.Fatal(err)
	}
	// "same" and "same." are different ids.
	if err := s.Put(c, sessions.KindCode, "same.", []byte("dot"), longTTL); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, sessions.KindSession, "same", []byte("sess"))
	mustGet(t, s, sessions.KindCode, "same", []byte("code"))
	mustGet(t, s, sessions.KindCode, "same.", []byte("dot"))
}

func testInvalidIDs(t *testing.T, s sessions.Store) {
	c := ctx(t)
	for _, id := range []string{"", "a{b", "a}b", "{tag}x", ".notag"} {
		ops := map[string]error{
			"Create": s.Create(c, sessions.KindCode, id, []byte("v"), longTTL),
			"Put":    s.Put(c, sessions.KindCode, id, []byte("v"), longTTL),
			"PutAll": s.PutAll(c, sessions.Item{Kind: sessions.KindCode, ID: id, Value: []byte("v"), TTL: longTTL}),
			"Delete": s.Delete(c, sessions.KindCode, id),
		}
		_, ops["Get"] = s.Get(c, sessions.KindCode, id)
		_, ops["Take"] = s.Take(c, sessions.KindCode, id)
		for op, err := range ops {
			if err == nil || errors.Is(err, sessions.ErrUnavailable) || errors.Is(err, sessions.ErrNotFound) {
				t.Errorf("%s(%q) = %v, want a validation error", op, id, err)
			}
		}
	}
	if err := s.Put(c, sessions.KindCode, "ok", []byte("v"), 0); err == nil {
		t.Error("Put with zero TTL succeeded")
	}
	if err := s.Create(c, sessions.KindCode, "ok", []byte("v"), -time.Second); err == nil {
		t.Error("Create with negative TTL succeeded")
	}
}

func testLargeValue(t *testing.T, s sessions.Store) {
	v := make([]byte, 4<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range v {
		v[i] = byte(r.Uint32())
	}
	if err := s.Put(ctx(t), sessions.KindSession, "big", v, longTTL); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, sessions.KindSession, "big", v)
	got, err := s.Take(ctx(t), sessions.KindSession, "big")
	if err != nil || !bytes.Equal(got, v) {
		t.Fatalf("Take big: len %d, %v", len(got), err)
	}
}

func testBinaryValue(t *testing.T, s sessions.Store) {
	v := make([]byte, 0, 512)
	for i := range 256 {
		v = append(v, byte(i), 0)
	}
	c := ctx(t)
	if err := s.Create(c, sessions.KindNonce, "bin", v, longTTL); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, sessions.KindNonce, "bin", v)
	if err := s.Put(c, sessions.KindNonce, "empty", []byte{}, longTTL); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, sessions.KindNonce, "empty", nil)
	ev := append([]byte(`{"x":"`), 0, 0xff, '"', '}')
	if err := s.AppendLog(c, sessions.LogAudit, logID(1), ev, 10); err != nil {
		t.Fatal(err)
	}
	got, err := s.Logs(c, "", 10)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0], ev) {
		t.Fatalf("Logs = %q, %v; want [%q]", got, err, ev)
	}
}

func testValueCopied(t *testing.T, s sessions.Store) {
	c := ctx(t)
	v := []byte("original")
	if err := s.Put(c, sessions.KindSession, "cp", v, longTTL); err != nil {
		t.Fatal(err)
	}
	copy(v, "CHANGED!")
	got, err := s.Get(c, sessions.KindSession, "cp")
	if err != nil || string(got) != "original" {
		t.Fatalf("Get after caller mutated its slice = %q, %v", got, err)
	}
	copy(got, "CHANGED!")
	mustGet(t, s, sessions.KindSession, "cp", []byte("original"))
}

func logID(n int) string { return fmt.Sprintf("%056d", n) }

func wantLogs(t *testing.T, s sessions.Store, before string, limit int, want ...int) {
	t.Helper()
	got, err := s.Logs(ctx(t), before, limit)
	if err != nil {
		t.Fatalf("Logs(%q, %d): %v", before, limit, err)
	}
	gs := make([]string, len(got))
	for i, g := range got {
		gs[i] = string(g)
	}
	ws := make([]string, len(want))
	for i, w := range want {
		ws[i] = fmt.Sprintf(`{"n":%d}`, w)
	}
	if fmt.Sprint(gs) != fmt.Sprint(ws) {
		t.Fatalf("Logs(%q, %d) = %v, want %v", before, limit, gs, ws)
	}
}

func testLogsOrder(t *testing.T, s sessions.Store) {
	c := ctx(t)
	wantLogs(t, s, "", 10)
	// Appended out of order: the log is ordered by id, not by arrival.
	for _, n := range []int{3, 1, 5, 2, 4} {
		if err := s.AppendLog(c, sessions.LogAudit, logID(n), fmt.Appendf(nil, `{"n":%d}`, n), 100); err != nil {
			t.Fatal(err)
		}
	}
	wantLogs(t, s, "", 10, 5, 4, 3, 2, 1)
	wantLogs(t, s, "", 2, 5, 4)
	wantLogs(t, s, logID(4), 2, 3, 2)
	wantLogs(t, s, logID(2), 10, 1)
	wantLogs(t, s, logID(1), 10)
	wantLogs(t, s, "", 0)
	// before need not be an existing id.
	wantLogs(t, s, logID(3)+"0", 10, 3, 2, 1)
	wantLogs(t, s, logID(3)[:20], 10)
	wantLogs(t, s, "9", 1, 5)
}

// testLogsRetention: AppendLog keeps the maxLen newest entries, and at most
// sessions.MaxLogKept(maxLen) (exactly maxLen in memory; the Redis log is sharded, see
// sessions.LogShardCap); an old id arriving late once the log is full is dropped at once.
func testLogsRetention(t *testing.T, s sessions.Store) {
	c := ctx(t)
	var all []int
	for n := 1; n <= 200; n++ {
		if err := s.AppendLog(c, sessions.LogAudit, logID(n), fmt.Appendf(nil, `{"n":%d}`, n), 4); err != nil {
			t.Fatal(err)
		}
		all = append(all, n)
	}
	wantNewest(t, s, 4, 4, all...)
	before := logNs(t, s)
	if err := s.AppendLog(c, sessions.LogAudit, logID(0), []byte(`{"n":0}`), 4); err != nil {
		t.Fatal(err)
	}
	if got := logNs(t, s); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("after a late old id: Logs = %v, want %v", got, before)
	}
	// A smaller maxLen keeps the newest 2 (on Redis it trims the shard appended to).
	if err := s.AppendLog(c, sessions.LogAudit, logID(201), []byte(`{"n":201}`), 2); err != nil {
		t.Fatal(err)
	}
	wantNewest(t, s, 2, 4, append(all, 201)...)
}

// logNs returns the n of every event of Logs, newest first.
func logNs(t *testing.T, s sessions.Store) []int {
	t.Helper()
	got, err := s.Logs(ctx(t), "", 100000)
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	out := make([]int, len(got))
	for i, g := range got {
		var e struct{ N int }
		if err := json.Unmarshal(g, &e); err != nil {
			t.Fatalf("Logs event %q: %v", g, err)
		}
		out[i] = e.N
	}
	return out
}

// wantNewest checks the log after the ns appended (in any order, to the audit class): Logs
// returns, newest first, only appended entries, among them the keep newest, and at most
// sessions.MaxLogKept(bound) (bound the largest maxLen of the appends).
func wantNewest(t *testing.T, s sessions.Store, keep, bound int, appended ...int) {
	t.Helper()
	wantKept(t, "Logs", logNs(t, s), true, keep, bound, appended)
}

// wantKept checks the ns got (descending when desc, else ascending) of one class against the
// ns appended to it: every one appended, the keep greatest there, at most
// sessions.MaxLogKept(bound) in all.
func wantKept(t *testing.T, what string, got []int, desc bool, keep, bound int, appended []int) {
	t.Helper()
	sorted := slices.Sorted(slices.Values(got))
	if desc {
		slices.Reverse(sorted)
	}
	if !slices.Equal(got, sorted) || len(slices.Compact(slices.Clone(sorted))) != len(got) {
		t.Fatalf("%s = %v: not in id order, or repeated", what, got)
	}
	for _, n := range got {
		if !slices.Contains(appended, n) {
			t.Fatalf("%s = %v: %d never appended", what, got, n)
		}
	}
	newest := slices.Sorted(slices.Values(appended))
	for _, n := range newest[max(0, len(newest)-keep):] {
		if !slices.Contains(got, n) {
			t.Fatalf("%s = %v: lost %d, one of the %d newest", what, got, n, keep)
		}
	}
	if m := sessions.MaxLogKept(bound); len(got) > m {
		t.Fatalf("%s = %v: %d entries, more than MaxLogKept(%d) = %d", what, got, len(got), bound, m)
	}
}

func testLogsInvalid(t *testing.T, s sessions.Store) {
	c := ctx(t)
	for _, id := range []string{"", "12", logID(1) + "0", "x" + logID(1)[1:]} {
		if err := s.AppendLog(c, sessions.LogAudit, id, []byte("{}"), 10); err == nil {
			t.Errorf("AppendLog(%q) succeeded", id)
		}
	}
	if err := s.AppendLog(c, sessions.LogAudit, logID(1), []byte("{}"), 0); err == nil {
		t.Error("AppendLog with maxLen 0 succeeded")
	}
	wantLogs(t, s, "", 10)
}

func testPing(t *testing.T, s sessions.Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}
