package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// watchWait bounds the wait for one event of a watch (a bound for loaded machines only).
const watchWait = 30 * time.Second

// Watch is a running sessions.ConnectionsWatcher watch whose events a test reads in order.
type Watch struct {
	events chan sessions.ConnectionsEvent
	cancel context.CancelFunc
	done   chan error
}

// StartWatch starts watching s (a sessions.ConnectionsWatcher) until the test ends. Events
// beyond a generous buffer are dropped (a test that reads none for long loses Through
// events, never a failure of the store).
func StartWatch(t *testing.T, s sessions.Store) *Watch {
	t.Helper()
	cw, ok := s.(sessions.ConnectionsWatcher)
	if !ok {
		t.Fatalf("%T does not implement sessions.ConnectionsWatcher", s)
	}
	x, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	w := &Watch{events: make(chan sessions.ConnectionsEvent, 1024), cancel: cancel, done: make(chan error, 1)}
	go func() {
		w.done <- cw.WatchConnections(x, func(e sessions.ConnectionsEvent) {
			select {
			case w.events <- e:
			default:
			}
		})
	}()
	t.Cleanup(func() { _ = w.Stop(t) })
	return w
}

// Next returns the next event for which want is true, skipping the others, or fails the
// test after watchWait.
func (w *Watch) Next(t *testing.T, what string, want func(sessions.ConnectionsEvent) bool) sessions.ConnectionsEvent {
	t.Helper()
	deadline := time.NewTimer(watchWait)
	defer deadline.Stop()
	for {
		select {
		case e := <-w.events:
			if want(e) {
				return e
			}
		case err := <-w.done:
			w.done <- err
			t.Fatalf("watch ended (%v) while waiting for %s", err, what)
		case <-deadline.C:
			t.Fatalf("no %s within %s", what, watchWait)
		}
	}
}

// Stop ends the watch and returns what WatchConnections returned.
func (w *Watch) Stop(t *testing.T) error {
	w.cancel()
	return w.Wait(t)
}

// Wait returns what WatchConnections returned once it has, or fails the test after
// watchWait.
func (w *Watch) Wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.done:
		w.done <- err
		return err
	case <-time.After(watchWait):
		t.Errorf("WatchConnections did not return within %s", watchWait)
		return nil
	}
}

// Changed matches the events that report a change.
func Changed(e sessions.ConnectionsEvent) bool { return e.Changed }

// ThroughAfter matches the events that vouch for the records up to at least at.
func ThroughAfter(at time.Time) func(sessions.ConnectionsEvent) bool {
	return func(e sessions.ConnectionsEvent) bool { return !e.Through.IsZero() && !e.Through.Before(at) }
}

// testConnWatch: a watch begins with a change of unknown version; every successful write of
// a connection or a client is reported in order with the version it reached, a refused one
// not at all; between writes the watch vouches for later and later instants (Through); it
// ends when its context does.
func testConnWatch(t *testing.T, s sessions.Store) {
	c, cl, x := conns(t, s), clients(t, s), ctx(t)
	start := time.Now()
	w := StartWatch(t, s)
	last := w.Next(t, "the first event", func(sessions.ConnectionsEvent) bool { return true })
	if !last.Changed || last.Version != 0 {
		t.Fatalf("first event = %+v, want a change of unknown version", last)
	}
	if !ThroughAfter(start)(last) {
		w.Next(t, "an event vouching for the time the watch started", ThroughAfter(start))
	}
	writes := []struct {
		name string
		op   func() error
	}{
		{name: "create connection", op: func() error { return c.CreateConnection(x, "con_w1", "watched", []byte("d1")) }},
		{name: "update connection", op: func() error { return c.UpdateConnection(x, "con_w1", []byte("d2")) }},
		{name: "create client", op: func() error { return cl.CreateClient(x, "cl_w1", []byte("c1")) }},
		{name: "seed client", op: func() error { _, err := cl.SeedClient(x, "cl_w2", []byte("c2")); return err }},
		{name: "update client", op: func() error { return cl.UpdateClient(x, "cl_w1", []byte("c3")) }},
		{name: "delete client", op: func() error { return cl.DeleteClient(x, "cl_w2", []byte("gone")) }},
		{name: "delete connection", op: func() error { return c.DeleteConnection(x, "con_w1", nil) }},
	}
	for _, wr := range writes {
		// con_taken is created (reported), then created again: refused, not reported.
		if err := c.CreateConnection(x, "con_taken", "taken", []byte("t")); err != nil && !errors.Is(err, sessions.ErrExists) {
			t.Fatalf("create of the refused connection: %v", err)
		}
		if err := c.CreateConnection(x, "con_taken", "taken", []byte("t")); !errors.Is(err, sessions.ErrExists) {
			t.Fatalf("second create of one id = %v, want ErrExists", err)
		}
		want := version(t, c)
		if e := w.Next(t, "the report of the first create of con_taken", Changed); e.Version != want {
			t.Fatalf("after the first create of con_taken: event %+v, want version %d", e, want)
		}
		if err := wr.op(); err != nil {
			t.Fatalf("%s: %v", wr.name, err)
		}
		want = version(t, c)
		if e := w.Next(t, "the report of "+wr.name, Changed); e.Version != want {
			t.Fatalf("%s: event %+v, want version %d (a refused write reported?)", wr.name, e, want)
		}
		if err := c.DeleteConnection(x, "con_taken", nil); err != nil {
			t.Fatal(err)
		}
		want = version(t, c)
		if last = w.Next(t, "the report of the delete of con_taken", Changed); last.Version != want {
			t.Fatalf("delete of con_taken: event %+v, want version %d", last, want)
		}
	}
	if now := time.Now(); !ThroughAfter(now)(last) {
		w.Next(t, "an event vouching for the time after the writes", ThroughAfter(now))
	}
	if err := w.Stop(t); !errors.Is(err, context.Canceled) {
		t.Errorf("WatchConnections after its context ended = %v, want context.Canceled", err)
	}
}
