package sessions

import (
	"context"
	"math"
	"sync"
	"time"
)

// ConnectionsWatcher is an optional capability of a store that keeps connection and client
// records (Connections, Clients): it reports their writes as they happen, so that a replica
// caching them need not read ConnectionsVersion before every use. NewMemory and NewRedis
// return stores that implement it (Redis: PUBLISH from the write scripts and a subscription,
// redis_watch.go).
type ConnectionsWatcher interface {
	// WatchConnections calls report with the watch's events until ctx ends or the store is
	// closed, then returns why it stopped. Its first event, and the first after every gap
	// (a lost subscription), has Changed set: writes made while nothing watched are not
	// reported one by one. report must return quickly and must not call the store; it may
	// be called from several goroutines at once (the memory store reports each write from
	// the writer's goroutine).
	WatchConnections(ctx context.Context, report func(ConnectionsEvent)) error
}

// ConnectionsEvent is one report of a ConnectionsWatcher.
type ConnectionsEvent struct {
	// Changed: the records may have changed since the previous event: a write (Version is
	// the version it reached), or the watch started or started again after a gap (Version
	// 0).
	Changed bool
	Version int64
	// Through, when not zero, is how far the watch vouches for the records: every write that
	// finished before Through was reported before this event was delivered (on Redis
	// Cluster only those published on the subscription's node, or passed to it by the cluster
	// bus by then: a message the bus delays or drops is not covered). A
	// watch that reports every write before the write returns (the memory store) sets it far
	// in the future.
	Through time.Time
}

// Forever is the Through of a watch that reports every write before it returns (the latest
// instant UnixNano can express).
var Forever = time.Unix(0, math.MaxInt64)

var (
	_ ConnectionsWatcher = (*memory)(nil)
	_ ConnectionsWatcher = (*redisStore)(nil)
)

// memWatchers are the watches on a memory store. Their own mutex: reports are made after
// the store's mu is released.
type memWatchers struct {
	mu     sync.Mutex
	next   int
	fns    map[int]func(ConnectionsEvent)
	closed chan struct{} // closed by the store's Close
}

// init makes w's map and channel; w.mu is held.
func (w *memWatchers) init() {
	if w.fns == nil {
		w.fns, w.closed = map[int]func(ConnectionsEvent){}, make(chan struct{})
	}
}

// close ends every watch.
func (w *memWatchers) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.init()
	select {
	case <-w.closed:
	default:
		close(w.closed)
	}
}

func (m *memory) WatchConnections(ctx context.Context, report func(ConnectionsEvent)) error {
	w := &m.watchers
	w.mu.Lock()
	w.init()
	closed := w.closed
	id := w.next
	w.next++
	w.fns[id] = report
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.fns, id)
		w.mu.Unlock()
	}()
	report(ConnectionsEvent{Changed: true, Through: Forever})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-closed:
		return errClosed
	}
}

// wroteDocs reports a write of the connection or client records that reached version v to
// every watch, before the write returns. m.mu must not be held.
func (m *memory) wroteDocs(v int64) {
	w := &m.watchers
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.fns {
		f(ConnectionsEvent{Changed: true, Version: v, Through: Forever})
	}
}
