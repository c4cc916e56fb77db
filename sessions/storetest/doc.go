// Package storetest is the conformance suite every sessions.Store backend must pass: TTLs,
// single use under concurrency, atomic batches and Swap, the event log, connections, and the
// session index on top of them.
//
// Its parts:
//   - Run (storetest.go) runs every check, each on a fresh store from newStore (which must
//     also implement sessions.Connections): Create, Put, Get, Take and Delete with TTLs and
//     under concurrency, PutAll and Swap (swap.go), the event log with its paging, retention
//     (the newest maxLen kept, at most sessions.MaxLogKept(maxLen)) and classes (classes.go),
//     checkpoint paging while writers append (logpaging.go), sessions.Connections and the
//     optional sessions.LogBatcher and sessions.ConnectionsWatcher (watch.go, whose
//     StartWatch a backend's own tests use too), sessions.LogCursors (logcursor.go: leased
//     log positions and the count of entries after one), and the session index built on the Store
//     (sessions.IndexAdd, IndexRemove, IndexMembers: index.go).
//   - RunFull (full.go) checks a store at capacity: writes fail with sessions.ErrFull and
//     change nothing, stored records stay usable; Capacity says how to fill and free the
//     store, FillMemory fills a store limited by record count.
//   - RunKindLimit (kindlimit.go) checks a per-kind cap (sessions.MemoryOptions.KindLimits).
//
// A backend's test hands it a constructor:
//
//	func TestMemoryConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) sessions.Store {
//			s := sessions.NewMemory()
//			t.Cleanup(func() { _ = s.Close() })
//			return s
//		})
//	}
package storetest
