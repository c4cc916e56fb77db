// Package sessions stores the broker's state, in memory or in Redis: login transactions, user
// sessions, codes, refresh tokens, DPoP replay entries, session indexes (with TTLs), events and
// connections.
//
// Its parts:
//   - Store (store.go) is the contract every backend meets: Create, Put, Get, Take (single
//     use under concurrency), Delete, PutAll and Swap (atomic batches under one hash tag, see
//     Key), the event log by retention class (AppendLog, Logs, LogsAfter, LogsBefore, Log,
//     TrimLogs; LogClass, LogEntry), Ping and Close. Records are named by a Kind and an id.
//     Callers test failures with errors.Is against ErrNotFound, ErrExists, ErrConflict,
//     ErrUnavailable and ErrFull (which wraps ErrUnavailable, so a full store fails closed).
//   - Optional capabilities, found with a type assertion: Connections (connections.go), the
//     durable, versioned upstream connection records the management API edits; LogBatcher,
//     one atomic write of a batch and its event; ConnectionsWatcher (watch.go; Redis:
//     redis_watch.go), the writes of the connection and client records reported as they
//     happen (Redis Pub/Sub), so a replica caches them without reading their version per
//     request; Tallier (tally.go), counters in per-minute and per-hour buckets with TTLs that
//     ride in the write of a log event (no extra round trip), and their read by time range.
//   - NewMemory and NewMemoryWithOptions (memory.go) are the in-process backend, bounded by
//     MemoryOptions (MaxRecords, per-kind KindLimits).
//   - NewRedis (redis.go; connection records in redis_conn.go) is the Redis backend for a
//     single node, Sentinel or Cluster, chosen by RedisConfig, through go-redis's
//     UniversalClient; SetRedisLogger routes go-redis's own messages to slog.
//     redis_health.go logs an outage once when it begins ("store unavailable") and once
//     when it ends ("store recovered", with the count of failed commands).
//     redis_failover.go follows a failover: on Cluster the slot map is read again after a
//     failure and every few seconds; commands that must not run twice (Take, Create, Swap)
//     run again only after a refusal; Ready (the optional Readier capability) says whether a
//     login can be served now.
//   - logshard.go shards the Redis event log: each class is LogShards sorted sets under
//     LogShards hash tags spread over the Cluster slot space, an event's shard a hash of its
//     log id; reads merge every class and shard, and the unsharded log's sets ({log}, read
//     and trimmed by age, never appended to, so an upgrade loses nothing), in one round trip
//     per round; count retention is per shard (LogShardCap, MaxLogKept), and
//     an event's tally counters go to one of fewer tally shards, under the tag of a log shard
//     in the same third of the slot space (tally.go).
//   - swap.go holds Swap for both backends (one Lua script on Redis).
//   - index.go is the session index, built on Get, Create and Swap alone, so every Store has
//     it: a bounded set of member ids with expiries in one KindIndex record (IndexAdd,
//     IndexRemove, IndexMembers; IndexID names one, e.g. a user's sessions or those created
//     from one upstream session). One key per index, never a scan of the keyspace, so it
//     works on Redis Cluster; concurrent writers compare and swap, so none loses another's
//     member; beyond its max the members expiring first are evicted and returned.
//
// Every backend passes the conformance suite in sessions/storetest; sessions/redistest starts
// a private redis-server for tests.
//
//	store, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{"127.0.0.1:6379"}})
//	if err != nil {
//		// handle error
//	}
//	defer store.Close()
//	err = store.Create(ctx, sessions.KindTransaction, state, tx, 10*time.Minute)
//	tx, err = store.Take(ctx, sessions.KindTransaction, state) // exactly one taker gets it
package sessions
