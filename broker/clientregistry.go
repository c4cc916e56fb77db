package broker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// Clients (the downstream applications) live in the store beside the connections
// (sessions.Clients), seeded from the YAML by the same rule (registry.go): a YAML client is
// created when its client_id is not stored, unless the management API deleted it while the
// YAML entry was the same (tombstone = config_hash); a stored one is overwritten only when
// its YAML entry changed. Client writes move the same version counter (and are reported by the
// same watch), so the registry's one snapshot holds both and every replica sees a change as
// soon as it sees a connection change.
//
// The stored document never holds a client secret, only its SHA-256 (client_secret_sha256):
// secrets created by the management API are random and shown once, and nobody who reads the
// store (or a backup of it) can authenticate as an app. A lookup that misses (an unknown
// client_id, a secret that does not match) checks the store's version before it answers, so
// a client created, changed or given a new secret on another replica is usable here at once.
// Those checks are coalesced (registry.afterMiss: at most one store read per missRecheck
// per replica, since anyone can send unknown ids): such a client's first request here may
// wait up to missRecheck for it.

// storedClient is the document stored per client.
type storedClient struct {
	config.Client
	// SecretSHA256 is the hex SHA-256 of the client secret ("" for a public client).
	SecretSHA256 string `json:"client_secret_sha256,omitempty"`
	// ConfigHash is the hash of the YAML entry this document was last seeded from ("" for
	// clients created through the API).
	ConfigHash string `json:"config_hash,omitempty"`
}

// regClient is one client of a snapshot.
type regClient struct {
	cfg    *config.Client // ClientSecret is always empty: see secret
	secret []byte         // SHA-256 of the secret; nil for a public client
	raw    []byte         // the stored document
}

// secretSHA256 returns the stored form of secret.
func secretSHA256(secret string) string {
	if secret == "" {
		return ""
	}
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// storedClientFor returns the document of a YAML client entry (the secret replaced by its
// hash, the authentication method made explicit) and its config_hash.
func storedClientFor(cl *config.Client) storedClient {
	c := *cl
	c.TokenEndpointAuthMethod = cl.AuthMethod()
	c.ClientSecret = ""
	doc := storedClient{Client: c, SecretSHA256: secretSHA256(cl.ClientSecret)}
	b, _ := json.Marshal(doc) // plain struct: never fails
	h := sha256.Sum256(b)
	doc.ConfigHash = hex.EncodeToString(h[:16])
	return doc
}

// secretMatches reports, in constant time, whether presented is the client's secret.
func (c *regClient) secretMatches(presented string) bool {
	h := sha256.Sum256([]byte(presented))
	return len(c.secret) == sha256.Size && subtle.ConstantTimeCompare(h[:], c.secret) == 1
}

// seedClients applies the YAML clients to the store (the seeding rule above); a store failure
// aborts it.
func (g *registry) seedClients(ctx context.Context) error {
	for i := range g.clientSeed {
		doc := storedClientFor(&g.clientSeed[i])
		id := doc.ClientID
		raw, err := json.Marshal(doc)
		if err != nil {
			return fmt.Errorf("clients[%d]: encode: %w", i, err)
		}
		switch tomb, err := g.clients.ClientTombstone(ctx, id); {
		case err == nil && string(tomb) == doc.ConfigHash:
			g.s.log.Info("client deleted through the management API is not seeded again; edit or remove its YAML entry", "client_id", id)
			continue
		case err != nil && !errors.Is(err, sessions.ErrNotFound):
			return fmt.Errorf("clients[%d] (%s): read tombstone: %w", i, id, err)
		}
		created, err := g.clients.SeedClient(ctx, id, raw)
		switch {
		case err != nil:
			return fmt.Errorf("clients[%d] (%s): seed: %w", i, id, err)
		case created:
			continue
		}
		old, err := g.clients.GetClient(ctx, id)
		if err != nil {
			return fmt.Errorf("clients[%d] (%s): read: %w", i, id, err)
		}
		var prev storedClient
		if json.Unmarshal(old, &prev) == nil && prev.ConfigHash == doc.ConfigHash {
			continue // unchanged YAML: the stored document (maybe edited through the API) stays
		}
		if err := g.clients.UpdateClient(ctx, id, raw); err != nil {
			return fmt.Errorf("clients[%d] (%s): update from configuration: %w", i, id, err)
		}
		g.s.log.Info("client updated from configuration", "client_id", id)
	}
	return nil
}

// loadClients fills next's clients from the store, reusing prev's unchanged ones.
func (g *registry) loadClients(ctx context.Context, next, prev *connSnapshot) error {
	docs, err := g.clients.ListClients(ctx)
	if err != nil {
		return fmt.Errorf("list clients: %w", err)
	}
	next.clients = make(map[string]*regClient, len(docs))
	next.origins = map[string]bool{}
	for _, raw := range docs {
		c := g.buildClient(raw, prev)
		if c == nil {
			continue
		}
		next.clients[c.cfg.ClientID] = c
		next.clientList = append(next.clientList, c)
		for _, o := range c.cfg.AllowedOrigins {
			next.origins[strings.TrimSuffix(o, "/")] = true
		}
	}
	sort.Slice(next.clientList, func(i, j int) bool { return next.clientList[i].cfg.ClientID < next.clientList[j].cfg.ClientID })
	if cl := consoleClient(g.consoleCfg.Load(), next); cl != nil {
		next.clients[cl.ClientID] = &regClient{cfg: cl} // built in: never listed, never stored
	}
	return nil
}

// buildClient returns the client of a stored document, reusing prev's when unchanged; a
// document that does not decode is skipped (logged).
func (g *registry) buildClient(raw []byte, prev *connSnapshot) *regClient {
	if prev != nil {
		var id struct {
			ClientID string `json:"client_id"`
		}
		if json.Unmarshal(raw, &id) == nil {
			if old := prev.clients[id.ClientID]; old != nil && bytes.Equal(old.raw, raw) {
				return old
			}
		}
	}
	var doc storedClient
	if err := json.Unmarshal(raw, &doc); err != nil || doc.ClientID == "" {
		g.s.log.Error("stored client does not decode; skipped", "bytes", len(raw))
		return nil
	}
	c := &regClient{raw: bytes.Clone(raw)}
	cl := doc.Client
	cl.ClientSecret = ""
	if cl.TokenEndpointAuthMethod == "" { // written explicitly; a document without one:
		cl.TokenEndpointAuthMethod = config.AuthNone
		if doc.SecretSHA256 != "" {
			cl.TokenEndpointAuthMethod = config.AuthSecretBasic // a client with a secret never turns public
		}
	}
	c.cfg = &cl
	if doc.SecretSHA256 != "" {
		if h, err := hex.DecodeString(doc.SecretSHA256); err == nil && len(h) == sha256.Size {
			c.secret = h
		} else {
			g.s.log.Error("stored client secret hash does not decode; the client cannot authenticate", "client_id", cl.ClientID)
		}
	}
	return c
}

// cachedClient returns the client id of the last snapshot loaded (for naming an app in an
// event, finding its back-channel logout URI): it reads the store only while no snapshot was
// ever loaded. nil when unknown.
func (s *Server) cachedClient(id string) *config.Client {
	snap := s.reg.snap.Load()
	if snap == nil {
		var err error
		if snap, err = s.reg.current(context.Background(), false); err != nil {
			s.log.Warn("clients could not be read from the store", "err", err)
			return nil
		}
	}
	if c := snap.clients[id]; c != nil {
		return c.cfg
	}
	return nil
}

// findClient returns the client id from the connections snapshot (as current as the
// registry knows: registry.go) when accept takes it; otherwise, it checks the store's version (coalesced with the
// other misses: afterMiss) and looks again. It returns nil and no error when the client is
// unknown or not accepted.
func (s *Server) findClient(ctx context.Context, id string, accept func(*regClient) bool) (*regClient, error) {
	if id == "" {
		return nil, nil
	}
	snap, err := s.reg.current(ctx, false)
	if err != nil {
		return nil, err
	}
	c := snap.clients[id]
	if c != nil && (accept == nil || accept(c)) {
		return c, nil
	}
	fresh, err := s.reg.afterMiss(ctx)
	if err != nil {
		return nil, err
	}
	if fresh == snap {
		return nil, nil
	}
	if c = fresh.clients[id]; c != nil && (accept == nil || accept(c)) {
		return c, nil
	}
	return nil, nil
}

// client returns the registered client id (findClient), or nil when it is unknown or the
// store cannot be read; callers that must tell a store failure apart use findClient.
func (s *Server) client(ctx context.Context, id string) *config.Client {
	c, err := s.findClient(ctx, id, nil)
	if err != nil {
		s.log.Warn("clients could not be read from the store", "err", err)
		return nil
	}
	if c == nil {
		return nil
	}
	return c.cfg
}

// allowedOrigin reports whether origin is an allowed CORS origin of a client: from the
// registry's snapshot, or the last one loaded when the store cannot be read.
func (s *Server) allowedOrigin(ctx context.Context, origin string) bool {
	snap, err := s.reg.current(ctx, false)
	if err != nil {
		snap = s.reg.snap.Load()
	}
	return snap != nil && snap.origins[origin]
}

// storeClientIDs returns the client ids of the last snapshot loaded.
func (s *Server) storeClientIDs() []string {
	snap := s.reg.snap.Load()
	if snap == nil {
		return nil
	}
	ids := make([]string, len(snap.clientList))
	for i, c := range snap.clientList {
		ids[i] = c.cfg.ClientID
	}
	return ids
}
