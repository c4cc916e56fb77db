package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	// ConnectionsVersion returns a counter that every successful write above increases
	// (0 before the first write). It is one GET on Redis.
	ConnectionsVersion(ctx context.Context) (int64, error)
}

var (
	_ Connections = (*memory)(nil)
	_ Connections = (*redisStore)(nil)
)

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
	errIDTaken   = fmt.Errorf("connection id taken: %w", ErrExists)
	errNameTaken = fmt.Errorf("connection name taken: %w", ErrExists)
)

// memConn is one connection held by the memory backend.
type memConn struct {
	name string
	doc  []byte
}

// connsLocked returns the memory backend's connection maps, creating them. mu must be held.
func (m *memory) connsLocked() (byID map[string]memConn, byName map[string]string) {
	if m.conns == nil {
		m.conns = make(map[string]memConn)
		m.connNames = make(map[string]string)
	}
	return m.conns, m.connNames
}

func (m *memory) createConn(id, name string, doc []byte) error {
	if err := checkConnIDName(id, name); err != nil {
		return err
	}
	return m.run(func() error {
		byID, byName := m.connsLocked()
		if _, ok := byID[id]; ok {
			return errIDTaken
		}
		if _, ok := byName[name]; ok {
			return errNameTaken
		}
		byID[id] = memConn{name: name, doc: bytes.Clone(doc)}
		byName[name] = id
		delete(m.connGone, id)
		m.connVer++
		return nil
	})
}

func (m *memory) CreateConnection(_ context.Context, id, name string, doc []byte) error {
	if err := m.createConn(id, name, doc); err != nil {
		return fmt.Errorf("sessions: create connection: %w", err)
	}
	return nil
}

func (m *memory) SeedConnection(_ context.Context, id, name string, doc []byte) (bool, error) {
	return seeded(m.createConn(id, name, doc))
}

// seeded turns the result of creating a connection into SeedConnection's: an id already
// stored is no error.
func seeded(err error) (bool, error) {
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errIDTaken):
		return false, nil
	default:
		return false, fmt.Errorf("sessions: seed connection: %w", err)
	}
}

func (m *memory) GetConnection(_ context.Context, id string) ([]byte, error) {
	if err := checkConnKey("id", id); err != nil {
		return nil, fmt.Errorf("sessions: get connection: %w", err)
	}
	return inOpen(m, func() ([]byte, error) {
		c, ok := m.conns[id]
		if !ok {
			return nil, fmt.Errorf("sessions: get connection: %w", ErrNotFound)
		}
		return bytes.Clone(c.doc), nil
	})
}

func (m *memory) ConnectionByName(_ context.Context, name string) (string, []byte, error) {
	if err := checkConnKey("name", name); err != nil {
		return "", nil, fmt.Errorf("sessions: connection by name: %w", err)
	}
	var id string
	doc, err := inOpen(m, func() ([]byte, error) {
		var ok bool
		if id, ok = m.connNames[name]; !ok {
			return nil, fmt.Errorf("sessions: connection by name: %w", ErrNotFound)
		}
		return bytes.Clone(m.conns[id].doc), nil
	})
	if err != nil {
		return "", nil, err
	}
	return id, doc, nil
}

func (m *memory) ListConnections(context.Context) ([][]byte, error) {
	return inOpen(m, func() ([][]byte, error) {
		cs := make([]memConn, 0, len(m.conns))
		for _, c := range m.conns {
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

func (m *memory) UpdateConnection(_ context.Context, id string, doc []byte) error {
	return m.changeConn("update connection", id, func(c memConn) {
		c.doc = bytes.Clone(doc)
		m.conns[id] = c
	})
}

func (m *memory) DeleteConnection(_ context.Context, id string, tombstone []byte) error {
	return m.changeConn("delete connection", id, func(c memConn) {
		delete(m.conns, id)
		delete(m.connNames, c.name)
		if len(tombstone) > 0 {
			if m.connGone == nil {
				m.connGone = make(map[string][]byte)
			}
			m.connGone[id] = bytes.Clone(tombstone)
		}
	})
}

func (m *memory) ConnectionTombstone(_ context.Context, id string) ([]byte, error) {
	if err := checkConnKey("id", id); err != nil {
		return nil, fmt.Errorf("sessions: connection tombstone: %w", err)
	}
	return inOpen(m, func() ([]byte, error) {
		t, ok := m.connGone[id]
		if !ok {
			return nil, fmt.Errorf("sessions: connection tombstone: %w", ErrNotFound)
		}
		return bytes.Clone(t), nil
	})
}

// changeConn applies change to the stored connection id (with mu held) and counts the
// write, or returns ErrNotFound; op names the operation in errors.
func (m *memory) changeConn(op, id string, change func(c memConn)) error {
	if err := checkConnKey("id", id); err != nil {
		return fmt.Errorf("sessions: %s: %w", op, err)
	}
	return m.run(func() error {
		c, ok := m.conns[id]
		if !ok {
			return fmt.Errorf("sessions: %s: %w", op, ErrNotFound)
		}
		change(c)
		m.connVer++
		return nil
	})
}

func (m *memory) ConnectionsVersion(context.Context) (int64, error) {
	return inOpen(m, func() (int64, error) { return m.connVer, nil })
}
