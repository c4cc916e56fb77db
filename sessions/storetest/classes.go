package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Conformance of the event log's retention classes (sessions.LogClass): each class keeps its
// own entries under its own retention, and every read sees them all as one log ordered by id.

// appendClass appends {"n":N} under logID(N) to class for each n, keeping maxLen of class.
func appendClass(t *testing.T, s sessions.Store, class sessions.LogClass, maxLen int, ns ...int) {
	t.Helper()
	for _, n := range ns {
		if err := s.AppendLog(ctx(t), class, logID(n), fmt.Appendf(nil, `{"n":%d}`, n), maxLen); err != nil {
			t.Fatalf("AppendLog(%v, %d): %v", class, n, err)
		}
	}
}

// classesOf returns "n:class" for each entry, in order.
func classesOf(t *testing.T, es []sessions.LogEntry) []string {
	t.Helper()
	ns := entryNs(t, es)
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = fmt.Sprintf("%d:%v", ns[i], e.Class)
	}
	return out
}

func wantClasses(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// classNs returns the n of each entry of class in es, in order.
func classNs(t *testing.T, es []sessions.LogEntry, class sessions.LogClass) []int {
	t.Helper()
	var out []int
	ns := entryNs(t, es)
	for i, e := range es {
		if e.Class == class {
			out = append(out, ns[i])
		}
	}
	return out
}

// wantClassKept checks the entries of class in es (read newest first when desc) against the
// ns appended to it with retention maxLen, as wantKept does, and that es is in id order.
func wantClassKept(t *testing.T, what string, es []sessions.LogEntry, desc bool, class sessions.LogClass, maxLen int, appended []int) {
	t.Helper()
	all := entryNs(t, es)
	wantKept(t, what, all, desc, 0, 1<<20, all)
	wantKept(t, fmt.Sprintf("%s, %v entries", what, class), classNs(t, es, class), desc, maxLen, maxLen, appended)
}

// testLogFloodKeepsAudit: hundreds of unauthenticated entries (80 times their retention),
// older and newer than the audit entries, under a small retention of their own, never remove
// an audit entry.
func testLogFloodKeepsAudit(t *testing.T, s sessions.Store) {
	appendClass(t, s, sessions.LogAudit, 3, 100, 200, 300)
	var flood []int
	for n := 1; n <= 399; n++ {
		if n%100 == 0 {
			continue
		}
		appendClass(t, s, sessions.LogUnauthenticated, 5, n)
		flood = append(flood, n)
	}
	es, err := s.LogsAfter(ctx(t), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	wantClassKept(t, "LogsAfter after the flood", es, false, sessions.LogAudit, 3, []int{100, 200, 300})
	wantClassKept(t, "LogsAfter after the flood", es, false, sessions.LogUnauthenticated, 5, flood)
	unauth := classNs(t, es, sessions.LogUnauthenticated)
	for _, n := range []int{100, 200, 300} {
		if e, err := s.Log(ctx(t), logID(n)); err != nil || e.Class != sessions.LogAudit {
			t.Fatalf("Log(%d) after the flood = %+v, %v", n, e, err)
		}
	}
	// The audit class keeps its own maxLen: appending to it does not trim the other class.
	appendClass(t, s, sessions.LogAudit, 1, 400)
	es, err = s.LogsBefore(ctx(t), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	wantClassKept(t, "LogsBefore after an audit append with maxLen 1", es, true, sessions.LogAudit, 1, []int{100, 200, 300, 400})
	slices.Reverse(unauth)
	if got := classNs(t, es, sessions.LogUnauthenticated); !slices.Equal(got, unauth) {
		t.Fatalf("unauthenticated entries after an audit append = %v, want %v", got, unauth)
	}
}

// testLogClassesMerge: every read interleaves both classes by id and reports each entry's
// class; paging on the last id visits every entry of both classes once.
func testLogClassesMerge(t *testing.T, s sessions.Store) {
	c := ctx(t)
	appendClass(t, s, sessions.LogAudit, 100, 10, 30, 50)
	appendClass(t, s, sessions.LogUnauthenticated, 100, 60, 20, 40)
	all := []string{"10:audit", "20:unauthenticated", "30:audit", "40:unauthenticated", "50:audit", "60:unauthenticated"}

	es, err := s.LogsAfter(c, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "LogsAfter", classesOf(t, es), all...)
	es, err = s.LogsAfter(c, logID(20), 3)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "LogsAfter(20, 3)", classesOf(t, es), all[2:5]...)
	es, err = s.LogsBefore(c, logID(45), 2)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "LogsBefore(45, 2)", classesOf(t, es), "40:unauthenticated", "30:audit")
	wantLogs(t, s, "", 4, 60, 50, 40, 30)
	wantLogs(t, s, logID(30), 10, 20, 10)
	wantLogs(t, s, "9", 1, 60)

	for _, step := range []int{1, 2, 4} {
		wantPaged(t, s, step, 10, all)
	}
	for _, tc := range []struct {
		n     int
		class sessions.LogClass
	}{{n: 10, class: sessions.LogAudit}, {n: 40, class: sessions.LogUnauthenticated}} {
		e, err := s.Log(c, logID(tc.n))
		if err != nil || e.ID != logID(tc.n) || e.Class != tc.class || string(e.Event) != fmt.Sprintf(`{"n":%d}`, tc.n) {
			t.Fatalf("Log(%d) = %+v, %v; want class %v", tc.n, e, err, tc.class)
		}
	}
}

// testTrimLogsByClass: TrimLogs removes old entries of its class only.
func testTrimLogsByClass(t *testing.T, s sessions.Store) {
	c := ctx(t)
	appendClass(t, s, sessions.LogAudit, 100, 10, 30, 50)
	appendClass(t, s, sessions.LogUnauthenticated, 100, 20, 40, 60)
	if err := s.TrimLogs(c, sessions.LogUnauthenticated, logID(45)); err != nil {
		t.Fatal(err)
	}
	es, err := s.LogsAfter(c, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "after trimming unauthenticated below 45", classesOf(t, es), "10:audit", "30:audit", "50:audit", "60:unauthenticated")
	if err := s.TrimLogs(c, sessions.LogAudit, logID(35)); err != nil {
		t.Fatal(err)
	}
	es, err = s.LogsAfter(c, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "after trimming audit below 35", classesOf(t, es), "50:audit", "60:unauthenticated")
}

// testLogClassInvalid: a class other than LogAudit, LogUnauthenticated and LogAdmin is
// refused.
func testLogClassInvalid(t *testing.T, s sessions.Store) {
	c := ctx(t)
	bad := sessions.LogAdmin + 1
	if err := s.AppendLog(c, bad, logID(1), []byte(`{"n":1}`), 10); err == nil || errors.Is(err, sessions.ErrUnavailable) {
		t.Errorf("AppendLog with class %v = %v, want a validation error", bad, err)
	}
	if err := s.TrimLogs(c, bad, logID(1)); err == nil || errors.Is(err, sessions.ErrUnavailable) {
		t.Errorf("TrimLogs with class %v = %v, want a validation error", bad, err)
	}
	wantLogs(t, s, "", 10)
}

// testPutAllAndLogIsAudit: the event of PutAllAndLog is an audit entry, which a flood of
// unauthenticated entries does not remove.
func testPutAllAndLogIsAudit(t *testing.T, s sessions.Store) {
	lb, ok := s.(sessions.LogBatcher)
	if !ok {
		t.Skip("store does not implement sessions.LogBatcher")
	}
	it := sessions.Item{Kind: sessions.KindSession, ID: "tag.s", Value: []byte("sess"), TTL: longTTL}
	err := lb.PutAllAndLog(ctx(t), logID(5), []byte(`{"n":5}`), 10, it)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("PutAllAndLog unsupported by this deployment")
	}
	if err != nil {
		t.Fatal(err)
	}
	var unauth []int
	for n := 1; n <= 20; n++ {
		if n != 5 {
			appendClass(t, s, sessions.LogUnauthenticated, 2, n)
			unauth = append(unauth, n)
		}
	}
	es, err := s.LogsAfter(ctx(t), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	wantClassKept(t, "LogsAfter", es, false, sessions.LogAudit, 10, []int{5})
	wantClassKept(t, "LogsAfter", es, false, sessions.LogUnauthenticated, 2, unauth)
}

// testLogFloodKeepsAdmin: hundreds of audit and unauthenticated entries (about 50 and 100
// times their retention), older and newer than the admin entries, each class under a small
// retention of its own, never remove an admin entry; appending to the admin class trims only
// the admin class.
func testLogFloodKeepsAdmin(t *testing.T, s sessions.Store) {
	appendClass(t, s, sessions.LogAdmin, 3, 100, 200, 300)
	var audit, unauth []int
	for n := 1; n <= 399; n++ {
		switch {
		case n%100 == 0:
		case n%2 == 0:
			appendClass(t, s, sessions.LogAudit, 4, n)
			audit = append(audit, n)
		default:
			appendClass(t, s, sessions.LogUnauthenticated, 2, n)
			unauth = append(unauth, n)
		}
	}
	es, err := s.LogsAfter(ctx(t), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	const what = "LogsAfter after the flood"
	wantClassKept(t, what, es, false, sessions.LogAdmin, 3, []int{100, 200, 300})
	wantClassKept(t, what, es, false, sessions.LogAudit, 4, audit)
	wantClassKept(t, what, es, false, sessions.LogUnauthenticated, 2, unauth)
	others := func(es []sessions.LogEntry) []int {
		var out []int
		for _, e := range es {
			if e.Class != sessions.LogAdmin {
				out = append(out, entryNs(t, []sessions.LogEntry{e})[0])
			}
		}
		return out
	}
	before := others(es)
	for _, n := range []int{100, 200, 300} {
		if e, err := s.Log(ctx(t), logID(n)); err != nil || e.Class != sessions.LogAdmin {
			t.Fatalf("Log(%d) after the flood = %+v, %v", n, e, err)
		}
	}
	appendClass(t, s, sessions.LogAdmin, 1, 400)
	es, err = s.LogsBefore(ctx(t), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	wantClassKept(t, "LogsBefore after an admin append with maxLen 1", es, true, sessions.LogAdmin, 1, []int{100, 200, 300, 400})
	slices.Reverse(before)
	if got := others(es); !slices.Equal(got, before) {
		t.Fatalf("audit and unauthenticated entries after an admin append = %v, want %v", got, before)
	}
}

// testLogThreeClassesMerge: with entries of all three classes interleaved, every read
// (Logs, LogsAfter, LogsBefore, Log, and paging on the last id by any step) returns them in
// id order with the class each was appended to; TrimLogs of the admin class trims only it.
func testLogThreeClassesMerge(t *testing.T, s sessions.Store) {
	c := ctx(t)
	appendClass(t, s, sessions.LogAdmin, 100, 30, 10, 70)
	appendClass(t, s, sessions.LogAudit, 100, 20, 60, 90)
	appendClass(t, s, sessions.LogUnauthenticated, 100, 80, 40, 50)
	all := []string{"10:admin", "20:audit", "30:admin", "40:unauthenticated", "50:unauthenticated",
		"60:audit", "70:admin", "80:unauthenticated", "90:audit"}

	es, err := s.LogsAfter(c, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "LogsAfter", classesOf(t, es), all...)
	es, err = s.LogsAfter(c, logID(30), 4)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "LogsAfter(30, 4)", classesOf(t, es), all[3:7]...)
	es, err = s.LogsBefore(c, logID(75), 3)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "LogsBefore(75, 3)", classesOf(t, es), "70:admin", "60:audit", "50:unauthenticated")
	wantLogs(t, s, "", 4, 90, 80, 70, 60)
	wantLogs(t, s, logID(30), 10, 20, 10)

	for _, step := range []int{1, 2, 3, 5} {
		wantPaged(t, s, step, 20, all)
	}
	for _, tc := range []struct {
		n     int
		class sessions.LogClass
	}{{n: 10, class: sessions.LogAdmin}, {n: 60, class: sessions.LogAudit}, {n: 80, class: sessions.LogUnauthenticated}} {
		e, err := s.Log(c, logID(tc.n))
		if err != nil || e.ID != logID(tc.n) || e.Class != tc.class || string(e.Event) != fmt.Sprintf(`{"n":%d}`, tc.n) {
			t.Fatalf("Log(%d) = %+v, %v; want class %v", tc.n, e, err, tc.class)
		}
	}

	if err := s.TrimLogs(c, sessions.LogAdmin, logID(65)); err != nil {
		t.Fatal(err)
	}
	es, err = s.LogsAfter(c, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	wantClasses(t, "after trimming admin below 65", classesOf(t, es),
		"20:audit", "40:unauthenticated", "50:unauthenticated", "60:audit", "70:admin", "80:unauthenticated", "90:audit")
}

// wantPaged reads the whole log page by page, step entries a page (at most pages pages), with
// LogsAfter from the oldest and with LogsBefore from the newest: both must list all (oldest
// first, as "id:class") in order, whatever class each entry is in.
func wantPaged(t *testing.T, s sessions.Store, step, pages int, all []string) {
	t.Helper()
	c := ctx(t)
	read := func(page func(cur string) ([]sessions.LogEntry, error)) []string {
		var got []string
		cur := ""
		for range pages {
			es, err := page(cur)
			if err != nil {
				t.Fatal(err)
			}
			if len(es) == 0 {
				break
			}
			got = append(got, classesOf(t, es)...)
			cur = es[len(es)-1].ID
		}
		return got
	}
	up := read(func(cur string) ([]sessions.LogEntry, error) { return s.LogsAfter(c, cur, step) })
	down := read(func(cur string) ([]sessions.LogEntry, error) { return s.LogsBefore(c, cur, step) })
	wantClasses(t, fmt.Sprintf("paged ascending by %d", step), up, all...)
	slices.Reverse(down)
	wantClasses(t, fmt.Sprintf("paged descending by %d (reversed)", step), down, all...)
}
