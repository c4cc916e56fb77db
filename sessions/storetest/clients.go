package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// clients returns s as sessions.Clients or fails the test.
func clients(t *testing.T, s sessions.Store) sessions.Clients {
	t.Helper()
	c, ok := s.(sessions.Clients)
	if !ok {
		t.Fatalf("%T does not implement sessions.Clients", s)
	}
	return c
}

// testClientLifecycle: create, duplicate id, get, update, list by id, delete with a tombstone
// that creating the id again clears; every write moves the connections version, a refused
// one does not.
func testClientLifecycle(t *testing.T, s sessions.Store) {
	c, x := clients(t, s), ctx(t)
	v := version(t, conns(t, s))
	steps := []struct {
		name    string
		op      func() error
		wantErr error // nil: succeeds
	}{
		{name: "create b", op: func() error { return c.CreateClient(x, "app-b", []byte("b1")) }},
		{name: "create a", op: func() error { return c.CreateClient(x, "app-a", []byte("a1")) }},
		{name: "create taken id", op: func() error { return c.CreateClient(x, "app-a", []byte("other")) }, wantErr: sessions.ErrExists},
		{name: "update", op: func() error { return c.UpdateClient(x, "app-a", []byte("a2")) }},
		{name: "update missing", op: func() error { return c.UpdateClient(x, "app-z", []byte("z")) }, wantErr: sessions.ErrNotFound},
		{name: "seed existing", op: func() error {
			created, err := c.SeedClient(x, "app-b", []byte("b9"))
			if err == nil && created {
				return errors.New("seeding a stored id created it")
			}
			return err
		}},
		{name: "delete with tombstone", op: func() error { return c.DeleteClient(x, "app-b", []byte("hash-b")) }},
		{name: "delete missing", op: func() error { return c.DeleteClient(x, "app-b", nil) }, wantErr: sessions.ErrNotFound},
	}
	writes := map[string]bool{"create b": true, "create a": true, "update": true, "delete with tombstone": true}
	for _, st := range steps {
		err := st.op()
		switch {
		case st.wantErr == nil && err != nil:
			t.Fatalf("%s: %v", st.name, err)
		case st.wantErr != nil && !errors.Is(err, st.wantErr):
			t.Fatalf("%s = %v, want %v", st.name, err, st.wantErr)
		}
		next := version(t, conns(t, s))
		if writes[st.name] != (next > v) || next < v {
			t.Fatalf("%s: version moved from %d to %d (a write: %v)", st.name, v, next, writes[st.name])
		}
		v = next
	}
	if got, err := c.GetClient(x, "app-a"); err != nil || string(got) != "a2" {
		t.Fatalf("GetClient = %q, %v; want a2", got, err)
	}
	if _, err := c.GetClient(x, "app-b"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("GetClient after delete = %v, want ErrNotFound", err)
	}
	if tomb, err := c.ClientTombstone(x, "app-b"); err != nil || string(tomb) != "hash-b" {
		t.Fatalf("ClientTombstone = %q, %v; want hash-b", tomb, err)
	}
	if created, err := c.SeedClient(x, "app-b", []byte("b2")); err != nil || !created {
		t.Fatalf("SeedClient after delete = %v, %v; want created", created, err)
	}
	if _, err := c.ClientTombstone(x, "app-b"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("ClientTombstone after seeding again = %v, want ErrNotFound", err)
	}
	docs, err := c.ListClients(x)
	if err != nil || fmt.Sprintf("%s", docs) != "[a2 b2]" {
		t.Fatalf("ListClients = %s, %v; want [a2 b2] (by id)", docs, err)
	}
}

// testClientsApartFromConnections: a client and a connection may share an id or a name
// without touching each other.
func testClientsApartFromConnections(t *testing.T, s sessions.Store) {
	c, cn, x := clients(t, s), conns(t, s), ctx(t)
	if err := cn.CreateConnection(x, "same", "same", []byte("conn")); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateClient(x, "same", []byte("client")); err != nil {
		t.Fatalf("CreateClient with a connection's id: %v", err)
	}
	if err := c.DeleteClient(x, "same", []byte("t")); err != nil {
		t.Fatal(err)
	}
	mustConn(t, cn, "same", "conn")
	if docs, err := cn.ListConnections(x); err != nil || len(docs) != 1 {
		t.Fatalf("ListConnections = %d docs, %v; want 1", len(docs), err)
	}
	if _, err := cn.ConnectionTombstone(x, "same"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("a client's tombstone is visible as a connection's: %v", err)
	}
}

// testClientsConcurrentCreate: of concurrent creators of one id exactly one wins.
func testClientsConcurrentCreate(t *testing.T, s sessions.Store) {
	c := clients(t, s)
	for round := range 10 {
		id := fmt.Sprintf("app-%d", round)
		if wins := race(t, 16, sessions.ErrExists, func(i int) error {
			return c.CreateClient(ctx(t), id, []byte{byte(i)})
		}); wins != 1 {
			t.Fatalf("round %d: %d creators of one id won, want exactly 1", round, wins)
		}
	}
}

// testClientsInvalid: empty and over-long ids are refused without a store call.
func testClientsInvalid(t *testing.T, s sessions.Store) {
	c, x := clients(t, s), ctx(t)
	long := string(make([]byte, 513))
	for _, id := range []string{"", long} {
		if err := c.CreateClient(x, id, []byte("d")); err == nil || errors.Is(err, sessions.ErrExists) {
			t.Errorf("CreateClient(len %d) = %v, want a validation error", len(id), err)
		}
		if _, err := c.GetClient(x, id); err == nil || errors.Is(err, sessions.ErrNotFound) {
			t.Errorf("GetClient(len %d) = %v, want a validation error", len(id), err)
		}
	}
}
