package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// appendN appends {"n":N} under logID(N) for each n, with a large maxLen.
func appendN(t *testing.T, s sessions.Store, ns ...int) {
	t.Helper()
	for _, n := range ns {
		if err := s.AppendLog(ctx(t), sessions.LogAudit, logID(n), fmt.Appendf(nil, `{"n":%d}`, n), 1000); err != nil {
			t.Fatalf("AppendLog(%d): %v", n, err)
		}
	}
}

// entryNs checks that every entry's payload matches its id and returns the ns.
func entryNs(t *testing.T, es []sessions.LogEntry) []int {
	t.Helper()
	ns := make([]int, len(es))
	for i, e := range es {
		var n int
		if _, err := fmt.Sscanf(string(e.Event), `{"n":%d}`, &n); err != nil {
			t.Fatalf("entry %d payload %q: %v", i, e.Event, err)
		}
		if e.ID != logID(n) {
			t.Fatalf("entry %d id %q carries payload of %q", i, e.ID, logID(n))
		}
		ns[i] = n
	}
	return ns
}

func wantAfter(t *testing.T, s sessions.Store, after string, limit int, want ...int) {
	t.Helper()
	es, err := s.LogsAfter(ctx(t), after, limit)
	if err != nil {
		t.Fatalf("LogsAfter(%q, %d): %v", after, limit, err)
	}
	if got := entryNs(t, es); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("LogsAfter(%q, %d) = %v, want %v", after, limit, got, want)
	}
}

func wantBefore(t *testing.T, s sessions.Store, before string, limit int, want ...int) {
	t.Helper()
	es, err := s.LogsBefore(ctx(t), before, limit)
	if err != nil {
		t.Fatalf("LogsBefore(%q, %d): %v", before, limit, err)
	}
	if got := entryNs(t, es); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("LogsBefore(%q, %d) = %v, want %v", before, limit, got, want)
	}
}

func testLogsAfterBefore(t *testing.T, s sessions.Store) {
	wantAfter(t, s, "", 10)
	wantBefore(t, s, "", 10)
	appendN(t, s, 30, 10, 50, 20, 40)
	wantAfter(t, s, "", 10, 10, 20, 30, 40, 50)
	wantAfter(t, s, logID(20), 2, 30, 40)
	wantAfter(t, s, logID(25), 10, 30, 40, 50) // the cursor need not be stored
	wantAfter(t, s, logID(50), 10)
	wantAfter(t, s, logID(0), 1, 10)
	wantAfter(t, s, "", 0)
	wantBefore(t, s, "", 2, 50, 40)
	wantBefore(t, s, logID(30), 10, 20, 10)
	wantBefore(t, s, logID(35), 1, 30)
	wantBefore(t, s, logID(10), 10)
	wantBefore(t, s, "", 0)

	// Paging on the last id visits every entry once, in both directions.
	var up, down []int
	cur := ""
	for range 10 {
		es, err := s.LogsAfter(ctx(t), cur, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		up = append(up, entryNs(t, es)...)
		cur = es[len(es)-1].ID
	}
	cur = ""
	for range 10 {
		es, err := s.LogsBefore(ctx(t), cur, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		down = append(down, entryNs(t, es)...)
		cur = es[len(es)-1].ID
	}
	if fmt.Sprint(up) != "[10 20 30 40 50]" || fmt.Sprint(down) != "[50 40 30 20 10]" {
		t.Fatalf("paged ascending %v, descending %v", up, down)
	}
}

func testLogByID(t *testing.T, s sessions.Store) {
	c := ctx(t)
	appendN(t, s, 10, 20, 30)
	got, err := s.Log(c, logID(20))
	if err != nil || string(got.Event) != `{"n":20}` || got.ID != logID(20) || got.Class != sessions.LogAudit {
		t.Fatalf("Log(20) = %+v, %v", got, err)
	}
	for _, n := range []int{0, 11, 21, 31} {
		if v, err := s.Log(c, logID(n)); !errors.Is(err, sessions.ErrNotFound) {
			t.Fatalf("Log(%d) = %+v, %v; want ErrNotFound", n, v, err)
		}
	}
	// Dropped by retention: no longer found (in memory at the first append with maxLen 2;
	// on Redis once two newer entries went to its shard).
	for n := 40; ; n++ {
		if err := s.AppendLog(c, sessions.LogAudit, logID(n), fmt.Appendf(nil, `{"n":%d}`, n), 2); err != nil {
			t.Fatal(err)
		}
		_, err := s.Log(c, logID(20))
		if errors.Is(err, sessions.ErrNotFound) {
			break
		}
		if err != nil || n == 400 {
			t.Fatalf("Log(20) after appends up to %d with maxLen 2 = %v, want ErrNotFound", n, err)
		}
	}
	// Every entry still in the log is found by its id.
	for _, n := range logNs(t, s) {
		if e, err := s.Log(c, logID(n)); err != nil || string(e.Event) != fmt.Sprintf(`{"n":%d}`, n) {
			t.Fatalf("Log(%d) = %+v, %v", n, e, err)
		}
	}
}

func testTrimLogs(t *testing.T, s sessions.Store) {
	c := ctx(t)
	if err := s.TrimLogs(c, sessions.LogAudit, logID(5)); err != nil {
		t.Fatalf("TrimLogs on an empty log: %v", err)
	}
	appendN(t, s, 10, 20, 30, 40, 50)
	if err := s.TrimLogs(c, sessions.LogAudit, logID(30)); err != nil {
		t.Fatal(err)
	}
	wantAfter(t, s, "", 10, 30, 40, 50) // the bound itself is kept
	if err := s.TrimLogs(c, sessions.LogAudit, logID(25)); err != nil {
		t.Fatal(err)
	}
	wantAfter(t, s, "", 10, 30, 40, 50)
	if err := s.TrimLogs(c, sessions.LogAudit, logID(41)); err != nil {
		t.Fatal(err)
	}
	wantAfter(t, s, "", 10, 50)
	if err := s.TrimLogs(c, sessions.LogAudit, strings.Repeat("9", sessions.LogIDLen)); err != nil {
		t.Fatal(err)
	}
	wantAfter(t, s, "", 10)
	appendN(t, s, 60)
	wantBefore(t, s, "", 10, 60)
}

func testLogCursorsInvalid(t *testing.T, s sessions.Store) {
	c := ctx(t)
	for _, id := range []string{"12", logID(1) + "0", "x" + logID(1)[1:]} {
		_, errA := s.LogsAfter(c, id, 10)
		_, errB := s.LogsBefore(c, id, 10)
		_, errL := s.Log(c, id)
		errT := s.TrimLogs(c, sessions.LogAudit, id)
		for op, err := range map[string]error{"LogsAfter": errA, "LogsBefore": errB, "Log": errL, "TrimLogs": errT} {
			if err == nil || errors.Is(err, sessions.ErrUnavailable) || errors.Is(err, sessions.ErrNotFound) {
				t.Errorf("%s(%q) = %v, want a validation error", op, id, err)
			}
		}
	}
	if _, err := s.Log(c, ""); err == nil || errors.Is(err, sessions.ErrNotFound) {
		t.Errorf(`Log("") = %v, want a validation error`, err)
	}
	if err := s.TrimLogs(c, sessions.LogAudit, ""); err == nil {
		t.Error(`TrimLogs("") succeeded`)
	}
}

// conns returns s as sessions.Connections or fails the test.
func conns(t *testing.T, s sessions.Store) sessions.Connections {
	t.Helper()
	c, ok := s.(sessions.Connections)
	if !ok {
		t.Fatalf("%T does not implement sessions.Connections", s)
	}
	return c
}

func mustConn(t *testing.T, c sessions.Connections, id string, want string) {
	t.Helper()
	got, err := c.GetConnection(ctx(t), id)
	if err != nil || string(got) != want {
		t.Fatalf("GetConnection(%q) = %q, %v; want %q", id, got, err, want)
	}
}

func mustByName(t *testing.T, c sessions.Connections, name, wantID, wantDoc string) {
	t.Helper()
	id, doc, err := c.ConnectionByName(ctx(t), name)
	if err != nil || id != wantID || string(doc) != wantDoc {
		t.Fatalf("ConnectionByName(%q) = %q, %q, %v; want %q, %q", name, id, doc, err, wantID, wantDoc)
	}
}

func version(t *testing.T, c sessions.Connections) int64 {
	t.Helper()
	v, err := c.ConnectionsVersion(ctx(t))
	if err != nil {
		t.Fatalf("ConnectionsVersion: %v", err)
	}
	return v
}

func testConnCreate(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	if err := c.CreateConnection(x, "con_1", "acme", []byte("doc1")); err != nil {
		t.Fatalf("CreateConnection: %v", err)
	}
	mustConn(t, c, "con_1", "doc1")
	mustByName(t, c, "acme", "con_1", "doc1")
	if err := c.CreateConnection(x, "con_1", "other", []byte("doc2")); !errors.Is(err, sessions.ErrExists) {
		t.Fatalf("CreateConnection with a taken id = %v, want ErrExists", err)
	}
	if err := c.CreateConnection(x, "con_2", "acme", []byte("doc2")); !errors.Is(err, sessions.ErrExists) {
		t.Fatalf("CreateConnection with a taken name = %v, want ErrExists", err)
	}
	mustConn(t, c, "con_1", "doc1")
	if _, err := c.GetConnection(x, "con_2"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("GetConnection of the refused id = %v, want ErrNotFound", err)
	}
	if _, _, err := c.ConnectionByName(x, "other"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("ConnectionByName of the refused name = %v, want ErrNotFound", err)
	}
	// Names are case-sensitive and exact.
	if err := c.CreateConnection(x, "con_3", "ACME", []byte("doc3")); err != nil {
		t.Fatalf("CreateConnection ACME: %v", err)
	}
}

func testConnCreateConcurrent(t *testing.T, s sessions.Store) {
	c := conns(t, s)
	for round := range 20 {
		name := fmt.Sprintf("conn-%d", round)
		var winner atomic.Int32
		wins := race(t, 32, sessions.ErrExists, func(i int) error {
			err := c.CreateConnection(ctx(t), fmt.Sprintf("con_r%d_%d", round, i), name, []byte{byte(i)})
			if err == nil {
				winner.Store(int32(i))
			}
			return err
		})
		if wins != 1 {
			t.Fatalf("round %d: %d creators of one name won, want exactly 1", round, wins)
		}
		w := winner.Load()
		mustByName(t, c, name, fmt.Sprintf("con_r%d_%d", round, w), string([]byte{byte(w)}))
	}
	docs, err := c.ListConnections(ctx(t))
	if err != nil || len(docs) != 20 {
		t.Fatalf("ListConnections after 20 rounds = %d docs, %v; want 20", len(docs), err)
	}
}

func testConnUpdate(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	if err := c.UpdateConnection(x, "con_1", []byte("v")); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("UpdateConnection of a missing id = %v, want ErrNotFound", err)
	}
	if _, err := c.GetConnection(x, "con_1"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("UpdateConnection of a missing id created it: %v", err)
	}
	if err := c.CreateConnection(x, "con_1", "acme", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateConnection(x, "con_1", []byte("v2")); err != nil {
		t.Fatalf("UpdateConnection: %v", err)
	}
	mustConn(t, c, "con_1", "v2")
	mustByName(t, c, "acme", "con_1", "v2")
}

// testConnTombstone: a delete may leave a tombstone (written with the delete), which creating
// or seeding that id again clears.
func testConnTombstone(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	for _, id := range []string{"con_1", "con_2"} {
		if err := c.CreateConnection(x, id, "n-"+id, []byte("v1")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.ConnectionTombstone(x, "con_1"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("ConnectionTombstone of a live connection = %v, want ErrNotFound", err)
	}
	v0, _ := c.ConnectionsVersion(x)
	if err := c.DeleteConnection(x, "con_1", []byte("hash-1")); err != nil {
		t.Fatalf("DeleteConnection with a tombstone: %v", err)
	}
	if v, _ := c.ConnectionsVersion(x); v <= v0 {
		t.Fatalf("version %d after delete, want more than %d", v, v0)
	}
	if tomb, err := c.ConnectionTombstone(x, "con_1"); err != nil || string(tomb) != "hash-1" {
		t.Fatalf("ConnectionTombstone = %q, %v; want hash-1", tomb, err)
	}
	if _, err := c.GetConnection(x, "con_1"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("GetConnection after delete = %v, want ErrNotFound", err)
	}
	// Seeding the id again creates it and clears the tombstone.
	if created, err := c.SeedConnection(x, "con_1", "n-con_1", []byte("v2")); err != nil || !created {
		t.Fatalf("SeedConnection after delete = %v, %v; want created", created, err)
	}
	if _, err := c.ConnectionTombstone(x, "con_1"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("ConnectionTombstone after re-seeding = %v, want ErrNotFound", err)
	}
	// So does creating it.
	if err := c.DeleteConnection(x, "con_2", []byte("hash-2")); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateConnection(x, "con_2", "n-con_2", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ConnectionTombstone(x, "con_2"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("ConnectionTombstone after re-creating = %v, want ErrNotFound", err)
	}
}

func testConnDelete(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	if err := c.CreateConnection(x, "con_1", "acme", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteConnection(x, "con_1", nil); err != nil {
		t.Fatalf("DeleteConnection: %v", err)
	}
	if _, err := c.GetConnection(x, "con_1"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("GetConnection after delete = %v, want ErrNotFound", err)
	}
	if _, _, err := c.ConnectionByName(x, "acme"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("ConnectionByName after delete = %v, want ErrNotFound", err)
	}
	if err := c.DeleteConnection(x, "con_1", []byte("t")); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("second DeleteConnection = %v, want ErrNotFound", err)
	}
	if _, err := c.ConnectionTombstone(x, "con_1"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("ConnectionTombstone after a delete without one (and a refused one) = %v, want ErrNotFound", err)
	}
	// The name is free again, and so is the id.
	if err := c.CreateConnection(x, "con_2", "acme", []byte("v2")); err != nil {
		t.Fatalf("CreateConnection reusing a deleted name: %v", err)
	}
	mustByName(t, c, "acme", "con_2", "v2")
	if err := c.CreateConnection(x, "con_1", "other", []byte("v3")); err != nil {
		t.Fatalf("CreateConnection reusing a deleted id: %v", err)
	}
	docs, err := c.ListConnections(x)
	if err != nil || fmt.Sprintf("%s", docs) != "[v2 v3]" {
		t.Fatalf("ListConnections = %s, %v; want [v2 v3]", docs, err)
	}
}

func testConnVersion(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	if v := version(t, c); v != 0 {
		t.Fatalf("ConnectionsVersion of an empty store = %d, want 0", v)
	}
	steps := []struct {
		name   string
		op     func() error
		writes bool
	}{
		{name: "create", op: func() error { return c.CreateConnection(x, "con_1", "a", []byte("1")) }, writes: true},
		{name: "duplicate create", op: func() error { return c.CreateConnection(x, "con_1", "b", nil) }, writes: false},
		{name: "update", op: func() error { return c.UpdateConnection(x, "con_1", []byte("2")) }, writes: true},
		{name: "update same doc", op: func() error { return c.UpdateConnection(x, "con_1", []byte("2")) }, writes: true},
		{name: "update missing", op: func() error { return c.UpdateConnection(x, "con_9", nil) }, writes: false},
		{name: "seed new", op: func() error { _, err := c.SeedConnection(x, "con_2", "b", []byte("3")); return err }, writes: true},
		{name: "seed existing", op: func() error { _, err := c.SeedConnection(x, "con_2", "b", []byte("4")); return err }, writes: false},
		{name: "delete", op: func() error { return c.DeleteConnection(x, "con_1", nil) }, writes: true},
		{name: "delete missing", op: func() error { return c.DeleteConnection(x, "con_1", nil) }, writes: false},
		{name: "create again", op: func() error { return c.CreateConnection(x, "con_1", "a", []byte("5")) }, writes: true},
	}
	prev := int64(0)
	for _, st := range steps {
		err := st.op()
		v := version(t, c)
		switch {
		case st.writes && err != nil:
			t.Fatalf("%s: %v", st.name, err)
		case st.writes && v <= prev:
			t.Fatalf("%s: version %d did not increase from %d", st.name, v, prev)
		case !st.writes && v != prev:
			t.Fatalf("%s (no change): version moved from %d to %d", st.name, prev, v)
		}
		prev = v
	}
}

func testConnList(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	docs, err := c.ListConnections(x)
	if err != nil || len(docs) != 0 {
		t.Fatalf("ListConnections of an empty store = %q, %v", docs, err)
	}
	for _, r := range []struct{ id, name string }{{id: "con_a", name: "charlie"}, {id: "con_b", name: "alpha"}, {id: "con_c", name: "bravo"}, {id: "con_d", name: "Zulu"}} {
		if err := c.CreateConnection(x, r.id, r.name, []byte(r.name)); err != nil {
			t.Fatal(err)
		}
	}
	docs, err = c.ListConnections(x)
	if err != nil || fmt.Sprintf("%s", docs) != "[Zulu alpha bravo charlie]" {
		t.Fatalf("ListConnections = %s, %v; want byte order of names [Zulu alpha bravo charlie]", docs, err)
	}
}

func testConnSeed(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	created, err := c.SeedConnection(x, "con_1", "acme", []byte("from config"))
	if err != nil || !created {
		t.Fatalf("first SeedConnection = %v, %v; want true, nil", created, err)
	}
	v0 := version(t, c)
	if err := c.UpdateConnection(x, "con_1", []byte("changed by API")); err != nil {
		t.Fatal(err)
	}
	v := version(t, c)
	if v <= v0 {
		t.Fatalf("version after an update = %d, want more than %d", v, v0)
	}
	for i := range 3 {
		created, err := c.SeedConnection(x, "con_1", "acme", []byte("from config"))
		if err != nil || created {
			t.Fatalf("SeedConnection #%d of a stored id = %v, %v; want false, nil", i+2, created, err)
		}
	}
	mustConn(t, c, "con_1", "changed by API")
	if got := version(t, c); got != v {
		t.Fatalf("version after idempotent seeds = %d, want %d (unchanged)", got, v)
	}
	// The same name under another id is a conflict, not a silent no-op.
	created, err = c.SeedConnection(x, "con_2", "acme", []byte("x"))
	if !errors.Is(err, sessions.ErrExists) || created {
		t.Fatalf("SeedConnection with a name owned by another id = %v, %v; want false, ErrExists", created, err)
	}
}

func testConnDurable(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	doc := []byte("original")
	if err := c.CreateConnection(x, "con_1", "acme", doc); err != nil {
		t.Fatal(err)
	}
	copy(doc, "CHANGED!")
	got, err := c.GetConnection(x, "con_1")
	if err != nil || string(got) != "original" {
		t.Fatalf("GetConnection after caller mutated its slice = %q, %v", got, err)
	}
	copy(got, "CHANGED!")
	mustConn(t, c, "con_1", "original")
	// Binary documents round-trip.
	bin := []byte{0, 1, 0xff, '"', 0}
	if err := c.UpdateConnection(x, "con_1", bin); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetConnection(x, "con_1"); err != nil || !bytes.Equal(got, bin) {
		t.Fatalf("binary document = %q, %v", got, err)
	}
	// Connection records live apart from the TTL'd records of the same id.
	if err := s.Put(x, sessions.KindSession, "con_1", []byte("session"), longTTL); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(x, sessions.KindSession, "con_1"); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetConnection(x, "con_1"); err != nil || !bytes.Equal(got, bin) {
		t.Fatalf("GetConnection after deleting a session of the same id = %q, %v", got, err)
	}
}

func testConnInvalid(t *testing.T, s sessions.Store) {
	c, x := conns(t, s), ctx(t)
	long := strings.Repeat("n", 513)
	for _, r := range []struct{ id, name string }{{id: "", name: "a"}, {id: "con_1", name: ""}, {id: long, name: "a"}, {id: "con_1", name: long}} {
		_, errSeed := c.SeedConnection(x, r.id, r.name, nil)
		ops := map[string]error{
			"Create": c.CreateConnection(x, r.id, r.name, nil),
			"Seed":   errSeed,
		}
		for op, err := range ops {
			if err == nil || errors.Is(err, sessions.ErrUnavailable) || errors.Is(err, sessions.ErrExists) {
				t.Errorf("%s(%q, %q) = %v, want a validation error", op, r.id, r.name, err)
			}
		}
	}
	_, errGet := c.GetConnection(x, "")
	_, _, errByName := c.ConnectionByName(x, "")
	_, errTomb := c.ConnectionTombstone(x, "")
	for op, err := range map[string]error{
		"Get": errGet, "ByName": errByName, "Tombstone": errTomb,
		"Update": c.UpdateConnection(x, "", nil), "Delete": c.DeleteConnection(x, "", nil),
	} {
		if err == nil || errors.Is(err, sessions.ErrUnavailable) || errors.Is(err, sessions.ErrNotFound) {
			t.Errorf("%s with an empty key = %v, want a validation error", op, err)
		}
	}
	if v := version(t, c); v != 0 {
		t.Fatalf("refused writes moved the version to %d", v)
	}
}

// testPutAllAndLog checks the optional sessions.LogBatcher: the items and the event are all
// stored (retention applied), or the store says errors.ErrUnsupported and nothing changed;
// a batch with mixed hash tags or a bad log id changes nothing.
func testPutAllAndLog(t *testing.T, s sessions.Store) {
	lb, ok := s.(sessions.LogBatcher)
	if !ok {
		t.Skip("store does not implement sessions.LogBatcher")
	}
	items := []sessions.Item{
		{Kind: sessions.KindSession, ID: "tag.s", Value: []byte("sess"), TTL: time.Minute},
		{Kind: sessions.KindCode, ID: "tag.code", Value: []byte("code"), TTL: time.Minute},
	}
	appendN(t, s, 1, 2)
	err := lb.PutAllAndLog(ctx(t), logID(3), []byte(`{"n":3}`), 2, items...)
	if errors.Is(err, errors.ErrUnsupported) {
		mustNotFound(t, s, sessions.KindSession, "tag.s")
		wantLogs(t, s, "", 10, 2, 1)
		return
	}
	if err != nil {
		t.Fatalf("PutAllAndLog: %v", err)
	}
	mustGet(t, s, sessions.KindSession, "tag.s", []byte("sess"))
	mustGet(t, s, sessions.KindCode, "tag.code", []byte("code"))
	wantNewest(t, s, 2, 2, 1, 2, 3) // maxLen 2 kept the two greatest ids

	mixed := append(slices.Clone(items[:1]), sessions.Item{Kind: sessions.KindCode, ID: "other.code", Value: []byte("x"), TTL: time.Minute})
	if err := lb.PutAllAndLog(ctx(t), logID(4), []byte(`{"n":4}`), 10, mixed...); err == nil {
		t.Error("mixed hash tags accepted")
	}
	if err := lb.PutAllAndLog(ctx(t), "not-a-log-id", []byte(`{}`), 10, sessions.Item{Kind: sessions.KindCode, ID: "new.code", Value: []byte("x"), TTL: time.Minute}); err == nil {
		t.Error("bad log id accepted")
	}
	mustNotFound(t, s, sessions.KindCode, "other.code")
	mustNotFound(t, s, sessions.KindCode, "new.code")
	wantNewest(t, s, 2, 2, 1, 2, 3)
}

// testSwapAndLog checks the optional sessions.LogBatcher's SwapAndLog: a swap that happens
// writes its batch and appends the event (retention applied); one that conflicts, or a batch
// that is refused, writes neither; or the store says errors.ErrUnsupported and nothing changed.
func testSwapAndLog(t *testing.T, s sessions.Store) {
	lb, ok := s.(sessions.LogBatcher)
	if !ok {
		t.Skip("store does not implement sessions.LogBatcher")
	}
	mustPut(t, s, sessions.KindCode, "tag.code", []byte("code"))
	appendN(t, s, 1, 2)
	put := []sessions.Item{{Kind: sessions.KindCode, ID: "tag.used", Value: []byte("used"), TTL: time.Minute}}
	del := []sessions.Ref{{Kind: sessions.KindCode, ID: "tag.code"}}
	err := lb.SwapAndLog(ctx(t), sessions.KindCode, "tag.code", []byte("code"), put, del, logID(3), []byte(`{"n":3}`), 2)
	if errors.Is(err, errors.ErrUnsupported) {
		mustGet(t, s, sessions.KindCode, "tag.code", []byte("code"))
		mustNotFound(t, s, sessions.KindCode, "tag.used")
		wantLogs(t, s, "", 10, 2, 1)
		return
	}
	if err != nil {
		t.Fatalf("SwapAndLog: %v", err)
	}
	mustNotFound(t, s, sessions.KindCode, "tag.code")
	mustGet(t, s, sessions.KindCode, "tag.used", []byte("used"))
	wantNewest(t, s, 2, 2, 1, 2, 3) // maxLen 2 kept the two greatest ids

	for _, tc := range []struct {
		name  string
		id    string
		old   string
		put   []sessions.Item
		logID string
		want  error
	}{
		{name: "record gone", id: "tag.code", old: "code", put: put, logID: logID(4), want: sessions.ErrConflict},
		{name: "other value", id: "tag.used", old: "stale", put: put[:0], logID: logID(4), want: sessions.ErrConflict},
		{name: "mixed hash tags", id: "tag.used", old: "used", logID: logID(4),
			put: []sessions.Item{{Kind: sessions.KindCode, ID: "other.code", Value: []byte("x"), TTL: time.Minute}}},
		{name: "bad log id", id: "tag.used", old: "used", logID: "not-a-log-id",
			put: []sessions.Item{{Kind: sessions.KindCode, ID: "tag.new", Value: []byte("x"), TTL: time.Minute}}},
	} {
		err := lb.SwapAndLog(ctx(t), sessions.KindCode, tc.id, []byte(tc.old), tc.put, nil, tc.logID, []byte(`{"n":4}`), 10)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: SwapAndLog = %v, want %v", tc.name, err, tc.want)
		}
	}
	mustGet(t, s, sessions.KindCode, "tag.used", []byte("used"))
	mustNotFound(t, s, sessions.KindCode, "other.code")
	mustNotFound(t, s, sessions.KindCode, "tag.new")
	wantNewest(t, s, 2, 2, 1, 2, 3)
}

// testGetMany checks the optional sessions.MultiGetter: every ref's live record in order,
// nil for a missing or expired one, and a refused id refuses the whole call.
func testGetMany(t *testing.T, s sessions.Store) {
	mg, ok := s.(sessions.MultiGetter)
	if !ok {
		t.Skip("store does not implement sessions.MultiGetter")
	}
	mustPut(t, s, sessions.KindCode, "a.code", []byte("code"))
	mustPut(t, s, sessions.KindSession, "b.s", []byte("sess"))
	got, err := mg.GetMany(ctx(t), sessions.Ref{Kind: sessions.KindCode, ID: "a.code"},
		sessions.Ref{Kind: sessions.KindSession, ID: "missing.s"}, sessions.Ref{Kind: sessions.KindSession, ID: "b.s"})
	if err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	if len(got) != 3 || string(got[0]) != "code" || got[1] != nil || string(got[2]) != "sess" {
		t.Fatalf("GetMany = %q, want [code <nil> sess]", got)
	}
	if _, err := mg.GetMany(ctx(t), sessions.Ref{Kind: sessions.KindCode, ID: "a.code"}, sessions.Ref{Kind: sessions.KindCode, ID: "{x}"}); err == nil {
		t.Error("GetMany accepted an id with braces")
	}
}

// testConnVersionNamesContent: the same write made on stores at one version reaches a
// different version on each (the random step, sessions.ConnectionsVersion), so a replica
// holding the version of a write that a failover lost does not take the write made after it
// for the same records. Eight stores: a repeated step among them has a chance under 2^-26.
func testConnVersionNamesContent(t *testing.T, newStore func(t *testing.T) sessions.Store) {
	seen := map[int64]int{}
	for i := range 8 {
		c := conns(t, newStore(t))
		if err := c.CreateConnection(ctx(t), "con_1", "acme", []byte("doc")); err != nil {
			t.Fatalf("store %d: CreateConnection: %v", i, err)
		}
		v := version(t, c)
		if j, ok := seen[v]; ok {
			t.Fatalf("stores %d and %d reached version %d by the same write from version 0", j, i, v)
		}
		seen[v] = i
	}
}
