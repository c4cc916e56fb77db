package sessions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Connection records on Redis: five keys under the hash tag {conn} (one Cluster slot), changed
// only by the Lua scripts below, so each write is atomic.
//
//	PREFIX:conn:{conn}:doc   hash id → document
//	PREFIX:conn:{conn}:id    hash id → name
//	PREFIX:conn:{conn}:name  hash name → id
//	PREFIX:conn:{conn}:ver   counter, INCRBY a random step (versionStep) by every write
//	PREFIX:conn:{conn}:gone  hash id → tombstone of a deleted connection
//
// A write script increments the counter before it changes anything (INCRBY fails only on
// overflow: then nothing is written), so a failed script leaves no partial write.
//
// Every write script also PUBLISHes the version it reached on the channel
// PREFIX:conn:changed:{watch583} (redis_watch.go), passed as the script's last argument. With
// pcall: a PUBLISH the server refuses (an ACL without the channel) fails neither the write nor
// the script after its writes; the replicas then see the write at their next version read.
//
// Client records (clients.go) use the same scripts on PREFIX:client:{conn}:doc, :id, :name
// and :gone, with the same ver key: one counter tells a replica that either changed.
type connKeys struct{ doc, id, name, ver, gone string }

func (s *redisStore) connKeys() connKeys { return s.docKeys("conn") }

// docKeys returns the keys of the document collection coll (conn or client).
func (s *redisStore) docKeys(coll string) connKeys {
	b := s.prefix + ":" + coll + ":{conn}:"
	return connKeys{doc: b + "doc", id: b + "id", name: b + "name", ver: s.prefix + ":conn:{conn}:ver", gone: b + "gone"}
}

// all returns the keys in the order the scripts expect: KEYS[1..5] = doc, id, name, ver, gone.
func (k connKeys) all() []string { return []string{k.doc, k.id, k.name, k.ver, k.gone} }

// Script results for "taken" and "missing" (a successful write returns the new version ≥ 1).
const (
	connIDTaken   = -1
	connNameTaken = -2
	connMissing   = -3
)

var (
	// ARGV: id, name, doc, step, channel.
	connCreateScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return -2 end
local v = redis.call('INCRBY', KEYS[4], ARGV[#ARGV-1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.pcall('PUBLISH', ARGV[#ARGV], v)
return v
`)
	// ARGV: id, doc, step, channel.
	connUpdateScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -3 end
local v = redis.call('INCRBY', KEYS[4], ARGV[#ARGV-1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.pcall('PUBLISH', ARGV[#ARGV], v)
return v
`)
	// ARGV: id, tombstone ("" = none), step, channel.
	connDeleteScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -3 end
local v = redis.call('INCRBY', KEYS[4], ARGV[#ARGV-1])
local name = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if name and redis.call('HGET', KEYS[3], name) == ARGV[1] then redis.call('HDEL', KEYS[3], name) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[5], ARGV[1], ARGV[2]) end
redis.pcall('PUBLISH', ARGV[#ARGV], v)
return v
`)
	// ARGV: name. Returns {id, doc} or nil.
	connByNameScript = redis.NewScript(`
local id = redis.call('HGET', KEYS[3], ARGV[1])
if not id then return false end
local doc = redis.call('HGET', KEYS[1], id)
if not doc then return false end
return {id, doc}
`)
)

// runConn runs a write script on the connections and maps its result.
func (s *redisStore) runConn(ctx context.Context, op string, sc *redis.Script, args ...any) error {
	return s.runDocs(ctx, s.connKeys(), op, sc, args...)
}

// runDocs runs a write script on the collection k (a fresh versionStep and the watch channel
// appended to args) and maps its result. It runs again only after a refusal (runScriptOnce): a second run of a
// create would find its own record.
func (s *redisStore) runDocs(ctx context.Context, k connKeys, op string, sc *redis.Script, args ...any) error {
	n, err := runScriptOnce(ctx, s.c, sc, k.all(), append(args, versionStep(), s.watchChannel())).Int64()
	if err != nil {
		return mapErr(op, err)
	}
	switch n {
	case connIDTaken:
		return errIDTaken
	case connNameTaken:
		return errNameTaken
	case connMissing:
		return ErrNotFound
	}
	return nil
}

func (s *redisStore) CreateConnection(ctx context.Context, id, name string, doc []byte) error {
	if err := checkConnIDName(id, name); err != nil {
		return fmt.Errorf("sessions: create connection: %w", err)
	}
	if err := s.runConn(ctx, "create connection", connCreateScript, id, name, doc); err != nil {
		return fmt.Errorf("sessions: create connection: %w", err)
	}
	return nil
}

func (s *redisStore) SeedConnection(ctx context.Context, id, name string, doc []byte) (bool, error) {
	if err := checkConnIDName(id, name); err != nil {
		return false, fmt.Errorf("sessions: seed connection: %w", err)
	}
	return seeded("seed connection", s.runConn(ctx, "seed connection", connCreateScript, id, name, doc))
}

func (s *redisStore) GetConnection(ctx context.Context, id string) ([]byte, error) {
	if err := checkConnKey("id", id); err != nil {
		return nil, fmt.Errorf("sessions: get connection: %w", err)
	}
	v, err := s.c.HGet(ctx, s.connKeys().doc, id).Bytes()
	if err != nil {
		return nil, mapErr("get connection", err)
	}
	return v, nil
}

func (s *redisStore) ConnectionByName(ctx context.Context, name string) (string, []byte, error) {
	if err := checkConnKey("name", name); err != nil {
		return "", nil, fmt.Errorf("sessions: connection by name: %w", err)
	}
	r, err := connByNameScript.Run(ctx, s.c, s.connKeys().all(), name).StringSlice()
	if err != nil {
		return "", nil, mapErr("connection by name", err)
	}
	if len(r) != 2 {
		return "", nil, fmt.Errorf("sessions: connection by name: unexpected reply of %d items", len(r))
	}
	return r[0], []byte(r[1]), nil
}

func (s *redisStore) ListConnections(ctx context.Context) ([][]byte, error) {
	return s.listDocs(ctx, s.connKeys(), "list connections")
}

// listDocs returns every document of the collection k, sorted by name.
func (s *redisStore) listDocs(ctx context.Context, k connKeys, op string) ([][]byte, error) {
	var docs, names *redis.MapStringStringCmd
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		docs = p.HGetAll(ctx, k.doc)
		names = p.HGetAll(ctx, k.id)
		return nil
	})
	if err != nil {
		return nil, mapErr(op, err)
	}
	type rec struct{ name, doc string }
	recs := make([]rec, 0, len(docs.Val()))
	for id, doc := range docs.Val() {
		recs = append(recs, rec{name: names.Val()[id], doc: doc})
	}
	slices.SortFunc(recs, func(a, b rec) int { return strings.Compare(a.name, b.name) })
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = []byte(r.doc)
	}
	return out, nil
}

func (s *redisStore) UpdateConnection(ctx context.Context, id string, doc []byte) error {
	if err := checkConnKey("id", id); err != nil {
		return fmt.Errorf("sessions: update connection: %w", err)
	}
	if err := s.runConn(ctx, "update connection", connUpdateScript, id, doc); err != nil {
		return fmt.Errorf("sessions: update connection: %w", err)
	}
	return nil
}

func (s *redisStore) DeleteConnection(ctx context.Context, id string, tombstone []byte) error {
	if err := checkConnKey("id", id); err != nil {
		return fmt.Errorf("sessions: delete connection: %w", err)
	}
	if err := s.runConn(ctx, "delete connection", connDeleteScript, id, tombstone); err != nil {
		return fmt.Errorf("sessions: delete connection: %w", err)
	}
	return nil
}

func (s *redisStore) ConnectionTombstone(ctx context.Context, id string) ([]byte, error) {
	if err := checkConnKey("id", id); err != nil {
		return nil, fmt.Errorf("sessions: connection tombstone: %w", err)
	}
	v, err := s.c.HGet(ctx, s.connKeys().gone, id).Bytes()
	if err != nil {
		return nil, mapErr("connection tombstone", err)
	}
	return v, nil
}

func (s *redisStore) ConnectionsVersion(ctx context.Context) (int64, error) {
	n, err := s.c.Get(ctx, s.connKeys().ver).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, mapErr("connections version", err)
	}
	return n, nil
}
