package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// Connections stores the broker's upstream connection documents durably (no TTL), so every
// replica sharing the store sees a management change at once. Both NewMemory and NewRedis
// return stores that implement it; on Redis every key carries the hash tag {conn}, so each
// write is one atomic script on one Cluster slot.
//
// A connection has an immutable id and an immutable, unique name; doc is opaque to the
// store. Every successful write increases ConnectionsVersion, so a replica that caches the
// connections reloads them only when that one number changes:
//
//	if v, _ := c.ConnectionsVersion(ctx); v != cached { docs, _ := c.ListConnections(ctx); ... }
//
// (reading the version before the list means a concurrent write is seen at the next check).
// The client records (Clients) count in the same version. ConnectionsWatcher (watch.go) tells
// such a replica when to check.
type Connections interface {
	// CreateConnection stores doc under id and name. It returns ErrExists (and changes
	// nothing) when id or name is taken; of concurrent creators of one name exactly one wins.
	CreateConnection(ctx context.Context, id, name string, doc []byte) error
	// SeedConnection creates the connection unless it exists, for connections seeded from
	// configuration at every start: created is false and err nil when id is already stored
	// (whatever its name and doc); when name belongs to a different id it returns ErrExists.
	SeedConnection(ctx context.Context, id, name string, doc []byte) (created bool, err error)
	// GetConnection returns the document stored under id, or ErrNotFound.
	GetConnection(ctx context.Context, id string) ([]byte, error)
	// ConnectionByName returns the id and document of the connection named name, or
	// ErrNotFound.
	ConnectionByName(ctx context.Context, name string) (id string, doc []byte, err error)
	// ListConnections returns every document, sorted by connection name.
	ListConnections(ctx context.Context) ([][]byte, error)
	// UpdateConnection replaces the document under id (its name stays), or returns
	// ErrNotFound.
	UpdateConnection(ctx context.Context, id string, doc []byte) error
	// DeleteConnection removes the connection and frees its name, or returns ErrNotFound. A
	// non-empty tombstone is kept under id in the same atomic write (ConnectionTombstone)
	// until a connection with that id is created again, so that seeding from configuration
	// can tell an operator's delete from a connection that was never stored.
	DeleteConnection(ctx context.Context, id string, tombstone []byte) error
	// ConnectionTombstone returns the tombstone the last DeleteConnection of id kept, or
	// ErrNotFound.
	ConnectionTombstone(ctx context.Context, id string) ([]byte, error)
	// ConnectionsVersion returns a counter that every successful write above, and every
	// successful write of Clients, increases by a random step in [1, 2^31) (versionStep; 0
	// before the first write). It is one GET on Redis. The step makes a version name its
	// content: two writes made from one version (one of them lost by a failover to a stale
	// replica, the other made after it) reach different versions but for a chance of 2^-31,
	// so a replica holding the lost write's version sees that the records changed. The
	// counter still only grows: a version smaller than one read before means the store lost
	// records.
	ConnectionsVersion(ctx context.Context) (int64, error)
}

var (
	_ Connections = (*memory)(nil)
	_ Connections = (*redisStore)(nil)
)

// versionStep returns the random amount a write adds to ConnectionsVersion: in [1, 2^31),
// so the counter (int64) overflows only after 2^32 writes.
func versionStep() int64 { return 1 + rand.Int64N(1<<31-1) }

// maxConnKey bounds connection ids and names.
const maxConnKey = 512

// checkConnKey rejects empty or over-long ids and names.
func checkConnKey(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("sessions: empty connection %s", what)
	case len(s) > maxConnKey:
		return fmt.Errorf("sessions: connection %s longer than %d bytes", what, maxConnKey)
	}
	return nil
}

func checkConnIDName(id, name string) error {
	return errors.Join(checkConnKey("id", id), checkConnKey("name", name))
}

var (
	errIDTaken   = fmt.Errorf("id taken: %w", ErrExists)
	errNameTaken = fmt.Errorf("name taken: %w", ErrExists)
)

// memConn is one connection (or client) held by the memory backend.
type memConn struct {
	name string
	doc  []byte
}

// memDocs is one collection of durable documents of the memory backend (connections or
// clients): by id, name → id, and the tombstones of deleted ids. Every write to any
// collection counts in memory.connVer (versionStep).
type memDocs struct {
	byID   map[string]memConn
	byName map[string]string
	gone   map[string][]byte
}

// init creates the maps of d. mu must be held.
func (d *memDocs) init() {
	if d.byID == nil {
		d.byID = make(map[string]memConn)
		d.byName = make(map[string]string)
	}
}

// createDoc stores doc under id and name in d, or returns errIDTaken / errNameTaken.
func (m *memory) createDoc(d *memDocs, id, name string, doc []byte) error {
	var v int64
	err := m.run(func() error {
		d.init()
		if _, ok := d.byID[id]; ok {
			return errIDTaken
		}
		if _, ok := d.byName[name]; ok {
			return errNameTaken
		}
		d.byID[id] = memConn{name: name, doc: bytes.Clone(doc)}
		d.byName[name] = id
		delete(d.gone, id)
		m.connVer += versionStep()
		v = m.connVer
		return nil
	})
	if err == nil {
		m.wroteDocs(v)
	}
	return err
}

// getDoc returns the document stored under id in d; op names the operation in errors.
func (m *memory) getDoc(d *memDocs, op, id string) ([]byte, error) {
	return inOpen(m, func() ([]byte, error) {
		c, ok := d.byID[id]
		if !ok {
			return nil, fmt.Errorf("sessions: %s: %w", op, ErrNotFound)
		}
		return bytes.Clone(c.doc), nil
	})
}

// listDocs returns every document of d, sorted by name.
func (m *memory) listDocs(d *memDocs) ([][]byte, error) {
	return inOpen(m, func() ([][]byte, error) {
		cs := make([]memConn, 0, len(d.byID))
		for _, c := range d.byID {
			cs = append(cs, c)
		}
		slices.SortFunc(cs, func(a, b memConn) int { return strings.Compare(a.name, b.name) })
		out := make([][]byte, len(cs))
		for i, c := range cs {
			out[i] = bytes.Clone(c.doc)
		}
		return out, nil
	})
}

// deleteDoc removes id from d and frees its name, keeping tombstone when non-empty.
func (m *memory) deleteDoc(d *memDocs, op, id string, tombstone []byte) error {
	return m.changeDoc(d, op, id, func(c memConn) {
		delete(d.byID, id)
		delete(d.byName, c.name)
		if len(tombstone) > 0 {
			if d.gone == nil {
				d.gone = make(map[string][]byte)
			}
			d.gone[id] = bytes.Clone(tombstone)
		}
	})
}

// tombstone returns the tombstone of id in d.
func (m *memory) tombstone(d *memDocs, op, id string) ([]byte, error) {
	return inOpen(m, func() ([]byte, error) {
		t, ok := d.gone[id]
		if !ok {
			return nil, fmt.Errorf("sessions: %s: %w", op, ErrNotFound)
		}
		return bytes.Clone(t), nil
	})
}

// changeDoc applies change to the document id of d (with mu held) and counts the write, or
// returns ErrNotFound; op names the operation in errors.
func (m *memory) changeDoc(d *memDocs, op, id string, change func(c memConn)) error {
	var v int64
	err := m.run(func() error {
		c, ok := d.byID[id]
		if !ok {
			return fmt.Errorf("sessions: %s: %w", op, ErrNotFound)
		}
		change(c)
		m.connVer += versionStep()
		v = m.connVer
		return nil
	})
	if err == nil {
		m.wroteDocs(v)
	}
	return err
}

func (m *memory) CreateConnection(_ context.Context, id, name string, doc []byte) error {
	err := checkConnIDName(id, name)
	if err == nil {
		err = m.createDoc(&m.conns, id, name, doc)
	}
	if err != nil {
		return fmt.Errorf("sessions: create connection: %w", err)
	}
	return nil
}

func (m *memory) SeedConnection(_ context.Context, id, name string, doc []byte) (bool, error) {
	if err := checkConnIDName(id, name); err != nil {
		return false, fmt.Errorf("sessions: seed connection: %w", err)
	}
	return seeded("seed connection", m.createDoc(&m.conns, id, name, doc))
}

// seeded turns the result of creating a document into a seed's (op names it in errors): an
// id already stored is no error.
func seeded(op string, err error) (bool, error) {
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errIDTaken):
		return false, nil
	default:
		return false, fmt.Errorf("sessions: %s: %w", op, err)
	}
}

func (m *memory) GetConnection(_ context.Context, id string) ([]byte, error) {
	if err := checkConnKey("id", id); err != nil {
		return nil, fmt.Errorf("sessions: get connection: %w", err)
	}
	return m.getDoc(&m.conns, "get connection", id)
}

func (m *memory) ConnectionByName(_ context.Context, name string) (string, []byte, error) {
	if err := checkConnKey("name", name); err != nil {
		return "", nil, fmt.Errorf("sessions: connection by name: %w", err)
	}
	var id string
	doc, err := inOpen(m, func() ([]byte, error) {
		var ok bool
		if id, ok = m.conns.byName[name]; !ok {
			return nil, fmt.Errorf("sessions: connection by name: %w", ErrNotFound)
		}
		return bytes.Clone(m.conns.byID[id].doc), nil
	})
	if err != nil {
		return "", nil, err
	}
	return id, doc, nil
}

func (m *memory) ListConnections(context.Context) ([][]byte, error) {
	return m.listDocs(&m.conns)
}

func (m *memory) UpdateConnection(_ context.Context, id string, doc []byte) error {
	if err := checkConnKey("id", id); err != nil {
		return fmt.Errorf("sessions: update connection: %w", err)
	}
	return m.changeDoc(&m.conns, "update connection", id, func(c memConn) {
		c.doc = bytes.Clone(doc)
		m.conns.byID[id] = c
	})
}

func (m *memory) DeleteConnection(_ context.Context, id string, tombstone []byte) error {
	if err := checkConnKey("id", id); err != nil {
		return fmt.Errorf("sessions: delete connection: %w", err)
	}
	return m.deleteDoc(&m.conns, "delete connection", id, tombstone)
}

func (m *memory) ConnectionTombstone(_ context.Context, id string) ([]byte, error) {
	if err := checkConnKey("id", id); err != nil {
		return nil, fmt.Errorf("sessions: connection tombstone: %w", err)
	}
	return m.tombstone(&m.conns, "connection tombstone", id)
}

func (m *memory) ConnectionsVersion(context.Context) (int64, error) {
	return inOpen(m, func() (int64, error) { return m.connVer, nil })
}
