package sessions

import (
	"bytes"
	"context"
	"fmt"
)

// Clients stores the broker's client (application) documents durably (no TTL), beside the
// connections and with the same rules: doc is opaque to the store, every write is atomic,
// a delete may keep a tombstone for seeding from configuration, and every successful write
// increases the one counter ConnectionsVersion reports, so a replica that caches connections
// and clients reloads both when that number changes. Client ids are the only key (client
// names need not be unique). Both NewMemory and NewRedis return stores that implement it;
// on Redis the keys share the connections' hash tag {conn}.
type Clients interface {
	// CreateClient stores doc under id, or returns ErrExists (and changes nothing) when id is
	// taken; of concurrent creators of one id exactly one wins.
	CreateClient(ctx context.Context, id string, doc []byte) error
	// SeedClient creates the client unless id is stored (created false, err nil).
	SeedClient(ctx context.Context, id string, doc []byte) (created bool, err error)
	// GetClient returns the document stored under id, or ErrNotFound.
	GetClient(ctx context.Context, id string) ([]byte, error)
	// ListClients returns every document, sorted by id.
	ListClients(ctx context.Context) ([][]byte, error)
	// UpdateClient replaces the document under id, or returns ErrNotFound.
	UpdateClient(ctx context.Context, id string, doc []byte) error
	// DeleteClient removes the client, or returns ErrNotFound; a non-empty tombstone is kept
	// under id in the same write until the id is created again (ClientTombstone).
	DeleteClient(ctx context.Context, id string, tombstone []byte) error
	// ClientTombstone returns the tombstone the last DeleteClient of id kept, or ErrNotFound.
	ClientTombstone(ctx context.Context, id string) ([]byte, error)
}

var (
	_ Clients = (*memory)(nil)
	_ Clients = (*redisStore)(nil)
)

// checkClientID rejects empty or over-long client ids.
func checkClientID(op, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("sessions: %s: empty client id", op)
	case len(id) > maxConnKey:
		return fmt.Errorf("sessions: %s: client id longer than %d bytes", op, maxConnKey)
	}
	return nil
}

func (m *memory) CreateClient(_ context.Context, id string, doc []byte) error {
	if err := checkClientID("create client", id); err != nil {
		return err
	}
	if err := m.createDoc(&m.clients, id, id, doc); err != nil {
		return fmt.Errorf("sessions: create client: %w", err)
	}
	return nil
}

func (m *memory) SeedClient(_ context.Context, id string, doc []byte) (bool, error) {
	if err := checkClientID("seed client", id); err != nil {
		return false, err
	}
	return seeded("seed client", m.createDoc(&m.clients, id, id, doc))
}

func (m *memory) GetClient(_ context.Context, id string) ([]byte, error) {
	if err := checkClientID("get client", id); err != nil {
		return nil, err
	}
	return m.getDoc(&m.clients, "get client", id)
}

func (m *memory) ListClients(context.Context) ([][]byte, error) {
	return m.listDocs(&m.clients)
}

func (m *memory) UpdateClient(_ context.Context, id string, doc []byte) error {
	if err := checkClientID("update client", id); err != nil {
		return err
	}
	return m.changeDoc(&m.clients, "update client", id, func(c memConn) {
		c.doc = bytes.Clone(doc)
		m.clients.byID[id] = c
	})
}

func (m *memory) DeleteClient(_ context.Context, id string, tombstone []byte) error {
	if err := checkClientID("delete client", id); err != nil {
		return err
	}
	return m.deleteDoc(&m.clients, "delete client", id, tombstone)
}

func (m *memory) ClientTombstone(_ context.Context, id string) ([]byte, error) {
	if err := checkClientID("client tombstone", id); err != nil {
		return nil, err
	}
	return m.tombstone(&m.clients, "client tombstone", id)
}

func (s *redisStore) clientKeys() connKeys { return s.docKeys("client") }

func (s *redisStore) CreateClient(ctx context.Context, id string, doc []byte) error {
	if err := checkClientID("create client", id); err != nil {
		return err
	}
	if err := s.runDocs(ctx, s.clientKeys(), "create client", connCreateScript, id, id, doc); err != nil {
		return fmt.Errorf("sessions: create client: %w", err)
	}
	return nil
}

func (s *redisStore) SeedClient(ctx context.Context, id string, doc []byte) (bool, error) {
	if err := checkClientID("seed client", id); err != nil {
		return false, err
	}
	return seeded("seed client", s.runDocs(ctx, s.clientKeys(), "seed client", connCreateScript, id, id, doc))
}

func (s *redisStore) GetClient(ctx context.Context, id string) ([]byte, error) {
	if err := checkClientID("get client", id); err != nil {
		return nil, err
	}
	v, err := s.c.HGet(ctx, s.clientKeys().doc, id).Bytes()
	if err != nil {
		return nil, mapErr("get client", err)
	}
	return v, nil
}

func (s *redisStore) ListClients(ctx context.Context) ([][]byte, error) {
	return s.listDocs(ctx, s.clientKeys(), "list clients")
}

func (s *redisStore) UpdateClient(ctx context.Context, id string, doc []byte) error {
	if err := checkClientID("update client", id); err != nil {
		return err
	}
	if err := s.runDocs(ctx, s.clientKeys(), "update client", connUpdateScript, id, doc); err != nil {
		return fmt.Errorf("sessions: update client: %w", err)
	}
	return nil
}

func (s *redisStore) DeleteClient(ctx context.Context, id string, tombstone []byte) error {
	if err := checkClientID("delete client", id); err != nil {
		return err
	}
	if err := s.runDocs(ctx, s.clientKeys(), "delete client", connDeleteScript, id, tombstone); err != nil {
		return fmt.Errorf("sessions: delete client: %w", err)
	}
	return nil
}

func (s *redisStore) ClientTombstone(ctx context.Context, id string) ([]byte, error) {
	if err := checkClientID("client tombstone", id); err != nil {
		return nil, err
	}
	v, err := s.c.HGet(ctx, s.clientKeys().gone, id).Bytes()
	if err != nil {
		return nil, mapErr("client tombstone", err)
	}
	return v, nil
}
