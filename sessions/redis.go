package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStore is the Redis backend. Records are plain string keys with a PX expiry; the event
// log is one sorted set per LogClass and shard (logshard.go; all scores 0) whose members are
// "LOGID\x00EVENT", so lexicographic order is log-id order. Reads of all sets go in one
// pipelined round trip (one per node on Redis Cluster).
type redisStore struct {
	c       redis.UniversalClient
	health  *redisHealth // logs the outages (redis_health.go)
	prefix  string
	logKeys [LogShards][len(logClasses)]string // by shard, then LogClass
	// legacyLogKeys are the sets of the log before it was sharded, by LogClass: read and
	// trimmed by age, never appended to (legacyLogTag).
	legacyLogKeys [len(logClasses)]string
}

// NewRedis returns the Redis backend. It does not contact Redis; use Ping. On Cluster it
// re-reads the slot map after a failure and every clusterMapRefresh (redis_failover.go). It
// logs when Redis becomes unavailable and when it recovers, once each (redis_health.go).
func NewRedis(cfg RedisConfig) (Store, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("sessions: redis: no address configured")
	}
	for _, a := range cfg.Addrs {
		if strings.TrimSpace(a) == "" {
			return nil, errors.New("sessions: redis: empty address")
		}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "dpop-broker"
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, errors.New("sessions: redis: prefix must not contain '{' or '}'")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	c := newRedisClient(&redis.UniversalOptions{
		Addrs:                 cfg.Addrs,
		MasterName:            cfg.MasterName,
		Username:              cfg.Username,
		Password:              cfg.Password,
		SentinelUsername:      cfg.SentinelUsername,
		SentinelPassword:      cfg.SentinelPassword,
		DB:                    cfg.DB,
		DialTimeout:           cfg.Timeout,
		ReadTimeout:           cfg.Timeout,
		WriteTimeout:          cfg.Timeout,
		PoolTimeout:           cfg.Timeout,
		ContextTimeoutEnabled: true,
		TLSConfig:             cfg.TLS,
		// One command retry and two dial attempts: enough for a dropped pooled connection,
		// while an unreachable Redis surfaces as ErrUnavailable within a few Timeouts.
		MaxRetries:         1,
		MaxRetryBackoff:    100 * time.Millisecond,
		DialerRetries:      2,
		DialerRetryTimeout: 20 * time.Millisecond,
	})
	health := newRedisHealth(cfg.Logger)
	c.AddHook(health)
	return &redisStore{c: c, health: health, prefix: cfg.Prefix, logKeys: logKeysFor(cfg.Prefix), legacyLogKeys: logClassKeys(cfg.Prefix, legacyLogTag)}, nil
}

// mapErr turns a go-redis error into the package's errors: redis.Nil → ErrNotFound, OOM
// (maxmemory reached with maxmemory-policy noeviction: the write was refused whole) →
// ErrFull, any other failure to reach a working server → ErrUnavailable (the cause stays in
// the chain).
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("sessions: redis %s: %w", op, ErrNotFound)
	}
	if redis.IsOOMError(err) {
		return fmt.Errorf("sessions: redis %s: %w: %w", op, ErrFull, err)
	}
	if unavailable(err) {
		return fmt.Errorf("sessions: redis %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("sessions: redis %s: %w", op, err)
}

// unavailable reports whether err means the store cannot serve now (as opposed to a request
// the server refused for its content): a slot that kept moving (MOVED or ASK past go-redis's
// redirect budget, during a resharding or a failover) is an outage too.
func unavailable(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return true // network, timeout, context, pool, client closed
	}
	return topologyReply(err) || redis.IsMaxClientsError(err) || redis.IsOOMError(err) ||
		redis.IsNoReplicasError(err) || redis.IsAuthError(err) ||
		redis.HasErrorPrefix(err, "BUSY") || redis.IsPermissionError(err)
}

func (s *redisStore) key(kind Kind, id string) string { return Key(s.prefix, kind, id) }

func (s *redisStore) Create(ctx context.Context, kind Kind, id string, value []byte, ttl time.Duration) error {
	if err := checkRecord(kind, id, ttl); err != nil {
		return fmt.Errorf("sessions: create %s: %w", kind, err)
	}
	// SET NX PX: run again only when refused (a second run would find its own record).
	var cmd *redis.BoolCmd
	err := runOnce(ctx, func() error {
		cmd = redis.NewBoolCmd(ctx, "set", s.key(kind, id), value, "px", max(1, ttl.Milliseconds()), "nx")
		return s.c.Process(ctx, onceBool{cmd})
	})
	ok := cmd.Val() // false when the key exists (SET NX answers nil)
	if err != nil {
		return mapErr("create "+string(kind), err)
	}
	if !ok {
		return fmt.Errorf("sessions: create %s: %w", kind, ErrExists)
	}
	return nil
}

func (s *redisStore) Put(ctx context.Context, kind Kind, id string, value []byte, ttl time.Duration) error {
	if err := checkRecord(kind, id, ttl); err != nil {
		return fmt.Errorf("sessions: put %s: %w", kind, err)
	}
	return mapErr("put "+string(kind), s.c.Set(ctx, s.key(kind, id), value, ttl).Err())
}

func (s *redisStore) PutAll(ctx context.Context, items ...Item) error {
	if err := checkBatch(items); err != nil {
		return fmt.Errorf("sessions: put all: %w", err)
	}
	if len(items) == 0 {
		return nil
	}
	cmds, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, it := range items {
			p.Set(ctx, s.key(it.Kind, it.ID), it.Value, it.TTL)
		}
		return nil
	})
	return mapErr("put all", queuedErr(cmds, err))
}

// queuedErr is the error of a MULTI/EXEC: when EXEC aborted (EXECABORT) because Redis
// refused a queued command, that command's error (OOM at maxmemory, CROSSSLOT), which says
// why; otherwise err.
func queuedErr(cmds []redis.Cmder, err error) error {
	if err == nil || !redis.HasErrorPrefix(err, "EXECABORT") {
		return err
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil && !redis.HasErrorPrefix(e, "EXECABORT") {
			return fmt.Errorf("%w (%w)", e, err)
		}
	}
	return err
}

func (s *redisStore) PutAllAndLog(ctx context.Context, logID string, event []byte, maxLen int, items ...Item) error {
	return s.putAllAndLog(ctx, logID, event, maxLen, Tally{}, items)
}

// putAllAndLog is PutAllAndLog adding t (valid) in the same MULTI/EXEC.
func (s *redisStore) putAllAndLog(ctx context.Context, logID string, event []byte, maxLen int, t Tally, items []Item) error {
	if _, cluster := s.c.(*redis.ClusterClient); cluster {
		return fmt.Errorf("sessions: put all and log on Redis Cluster: %w", errors.ErrUnsupported)
	}
	if err := checkPutAllAndLog(logID, maxLen, items); err != nil {
		return err
	}
	member := logMember(logID, event)
	err := writeTallied(ctx, t, func(t Tally) (tally *redis.Cmd, err error) {
		cmds, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, it := range items {
				p.Set(ctx, s.key(it.Kind, it.ID), it.Value, it.TTL)
			}
			sh := logShard(logID)
			p.ZAdd(ctx, s.logKeys[sh][LogAudit], redis.Z{Member: member})
			p.ZRemRangeByRank(ctx, s.logKeys[sh][LogAudit], 0, int64(-LogShardCap(maxLen)-1))
			tally = s.queueTally(ctx, p, sh, t)
			return nil
		})
		return tally, queuedErr(cmds, err)
	})
	if err != nil && !redis.IsOOMError(err) && (redis.HasErrorPrefix(err, "CROSSSLOT") || redis.HasErrorPrefix(err, "EXECABORT")) {
		// A one-address client on a cluster-mode server: EXEC refused the whole batch.
		return fmt.Errorf("sessions: put all and log: %w: %w", errors.ErrUnsupported, err)
	}
	return mapErr("put all and log", err)
}

// logMember is the log set's member of an event: its id, a NUL, and its JSON (the set's
// scores are all 0, so members sort by id).
func logMember(id string, event []byte) []byte {
	member := make([]byte, 0, len(id)+1+len(event))
	return append(append(append(member, id...), 0), event...)
}

// GetMany is one pipeline of GETs (ClusterClient sends one per node).
func (s *redisStore) GetMany(ctx context.Context, refs ...Ref) ([][]byte, error) {
	for _, r := range refs {
		if err := checkID(r.ID); err != nil {
			return nil, fmt.Errorf("sessions: get many %s: %w", r.Kind, err)
		}
	}
	cmds := make([]*redis.StringCmd, len(refs))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			cmds[i] = p.Get(ctx, s.key(r.Kind, r.ID))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, mapErr("get many", err)
	}
	out := make([][]byte, len(refs))
	for i, c := range cmds {
		v, err := c.Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, mapErr("get many "+string(refs[i].Kind), err)
		default:
			out[i] = v
		}
	}
	return out, nil
}

func (s *redisStore) Get(ctx context.Context, kind Kind, id string) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("sessions: get %s: %w", kind, err)
	}
	v, err := s.c.Get(ctx, s.key(kind, id)).Bytes()
	if err != nil {
		return nil, mapErr("get "+string(kind), err)
	}
	return v, nil
}

func (s *redisStore) Take(ctx context.Context, kind Kind, id string) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("sessions: take %s: %w", kind, err)
	}
	// GETDEL: run again only when refused (a second run would find nothing).
	var cmd *redis.StringCmd
	err := runOnce(ctx, func() error {
		cmd = redis.NewStringCmd(ctx, "getdel", s.key(kind, id))
		return s.c.Process(ctx, onceString{cmd})
	})
	v, _ := cmd.Bytes()
	if err != nil {
		return nil, mapErr("take "+string(kind), err)
	}
	return v, nil
}

func (s *redisStore) Delete(ctx context.Context, kind Kind, id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("sessions: delete %s: %w", kind, err)
	}
	return mapErr("delete "+string(kind), s.c.Del(ctx, s.key(kind, id)).Err())
}

func (s *redisStore) AppendLog(ctx context.Context, class LogClass, id string, event []byte, maxLen int) error {
	if err := checkAppend(class, id, maxLen); err != nil {
		return err
	}
	return s.appendLog(ctx, class, id, event, maxLen, Tally{})
}

// appendLog is AppendLog (checked) adding t (valid) in the same pipeline.
func (s *redisStore) appendLog(ctx context.Context, class LogClass, id string, event []byte, maxLen int, t Tally) error {
	member := logMember(id, event)
	sh := logShard(id)
	key := s.logKeys[sh][class]
	// One round trip, no MULTI: the trim needs no atomicity with the add (every append
	// trims the shard to its LogShardCap greatest ids, whatever runs in between), and a
	// Tally's counters are independent increments. The tally keys lie in the same third of
	// the slot space as the shard's (tallyShardOf), so on a Cluster whose slots are split
	// evenly the whole pipeline goes to one node.
	err := writeTallied(ctx, t, func(t Tally) (tally *redis.Cmd, err error) {
		_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZAdd(ctx, key, redis.Z{Member: member})
			p.ZRemRangeByRank(ctx, key, 0, int64(-LogShardCap(maxLen)-1)) // keep the shard's greatest ids
			tally = s.queueTally(ctx, p, sh, t)
			return nil
		})
		return tally, err
	})
	return mapErr("append log", err)
}

func (s *redisStore) Logs(ctx context.Context, before string, limit int) ([][]byte, error) {
	if limit <= 0 {
		return [][]byte{}, nil
	}
	es, err := s.readOrdered(ctx, "logs", true, before, limit)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(es))
	for i, e := range es {
		out[i] = e.Event
	}
	return out, nil
}

// entries splits "ID\x00EVENT" members of class into log entries, skipping foreign members.
func entries(ms []string, class LogClass) []LogEntry {
	out := make([]LogEntry, 0, len(ms))
	for _, m := range ms {
		if len(m) <= LogIDLen || m[LogIDLen] != 0 {
			continue // not written by AppendLog
		}
		out = append(out, LogEntry{ID: m[:LogIDLen], Event: []byte(m[LogIDLen+1:]), Class: class})
	}
	return out
}

// For a log id X (LogIDLen digits) and a member "ID\x00EVENT": ID > X ⇔ member > X+"\x01",
// ID < X ⇔ member < X, ID == X ⇔ X+"\x00" ≤ member < X+"\x01".

func (s *redisStore) LogsAfter(ctx context.Context, after string, limit int) ([]LogEntry, error) {
	if err := checkLogBound(after); err != nil {
		return nil, fmt.Errorf("sessions: logs after: %w", err)
	}
	if limit <= 0 {
		return []LogEntry{}, nil
	}
	return s.readOrdered(ctx, "logs after", false, after, limit)
}

func (s *redisStore) LogsBefore(ctx context.Context, before string, limit int) ([]LogEntry, error) {
	if err := checkLogBound(before); err != nil {
		return nil, fmt.Errorf("sessions: logs before: %w", err)
	}
	if limit <= 0 {
		return []LogEntry{}, nil
	}
	return s.readOrdered(ctx, "logs before", true, before, limit)
}

// Log looks in every set (an entry is in its id's shard, or in a legacy set when written
// before the log was sharded), in one round trip.
func (s *redisStore) Log(ctx context.Context, id string) (LogEntry, error) {
	if err := checkLogID(id); err != nil {
		return LogEntry{}, fmt.Errorf("sessions: log: %w", err)
	}
	per, err := s.readSets(ctx, "log", func(p redis.Pipeliner, key string) *redis.StringSliceCmd {
		return p.ZRangeByLex(ctx, key, &redis.ZRangeBy{Min: "[" + id + "\x00", Max: "(" + id + "\x01", Count: 1})
	})
	if err != nil {
		return LogEntry{}, err
	}
	for _, r := range per {
		if len(r.es) == 1 {
			return r.es[0], nil
		}
	}
	return LogEntry{}, fmt.Errorf("sessions: log: %w", ErrNotFound)
}

// TrimLogs trims every shard of class and its legacy set, in one round trip.
func (s *redisStore) TrimLogs(ctx context.Context, class LogClass, before string) error {
	if err := checkLogClass(class); err != nil {
		return fmt.Errorf("sessions: trim logs: %w", err)
	}
	if err := checkLogID(before); err != nil {
		return fmt.Errorf("sessions: trim logs: %w", err)
	}
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range s.logKeys {
			p.ZRemRangeByLex(ctx, s.logKeys[sh][class], "-", "("+before)
		}
		p.ZRemRangeByLex(ctx, s.legacyLogKeys[class], "-", "("+before)
		return nil
	})
	return mapErr("trim logs", err)
}

func (s *redisStore) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("sessions: redis ping: %w: %w", ErrUnavailable, err)
	}
	return nil
}

func (s *redisStore) Close() error {
	s.health.close()
	return s.c.Close()
}

// SetRedisLogger sends go-redis's own messages (Sentinel master changes, pool and dial
// trouble) to logger instead of the standard library's log package, and makes logger the
// one of the outage lines of every Redis store whose RedisConfig.Logger is nil
// (redis_health.go). It applies process-wide.
func SetRedisLogger(logger *slog.Logger) {
	redisLog.Store(logger)
	redis.SetLogger(redisLogger{logger})
}

// redisLogger writes go-redis's messages as "redis client" lines: at DEBUG the failures to
// reach a server (dial, a Cluster with no node answering, a Sentinel query), which go-redis
// logs for every command during an outage and redisHealth reports once; at WARN the rest
// (a new Sentinel master, slots migrated, …).
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	level := slog.LevelWarn
	if reachFailure(msg) {
		level = slog.LevelDebug
	}
	r.l.Log(ctx, level, "redis client", "message", msg)
}

// reachFailure reports whether a go-redis message is a failure to reach a server.
func reachFailure(msg string) bool {
	for _, p := range []string{
		"redis: connection pool: failed to dial",
		"redis: connection pool: failed to get a usable connection",
		"redis: all nodes are marked as failed",
		"redis: pings to all nodes are failing",
	} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return strings.HasPrefix(msg, "sentinel: ") && strings.Contains(msg, " failed")
}
