package sessions

import (
	"context"
	"hash/fnv"
	"math"

	"github.com/redis/go-redis/v9"
)

// The Redis event log is sharded: each class is LogShards sorted sets under LogShards hash
// tags, so that on Redis Cluster the appends of logins (and their tallies, in tally shards
// beside them, see tally.go) spread over the masters instead of all landing on one slot.
// An event's shard is a hash of its log id; reads merge every class and shard by id.

// LogShards is the number of shards of each class of the Redis event log.
const LogShards = 6

// logShardTags are the hash tags of the log shards, chosen (TestLogShardTagsSpread checks
// them) so that the six slots fall one in each sixth [i·16384/6, (i+1)·16384/6) of the slot
// space, near its middle: `redis-cli --cluster create` gives each of M masters a contiguous
// range of about 16384/M slots, so 2, 3 or 6 masters hold 3, 2 or 1 shards each, and 4 or 5
// masters one or two.
var logShardTags = [LogShards]string{
	"log.0.2",  // slot 9771, sixth 3 (that of the legacy {log}, slot 10591)
	"log.1.13", // slot 695, sixth 0
	"log.2.30", // slot 3946, sixth 1
	"log.3.21", // slot 6862, sixth 2
	"log.4.12", // slot 11987, sixth 4
	"log.5.5",  // slot 15676, sixth 5
}

// legacyLogTag is the hash tag of the log before it was sharded: PREFIX:log:{log} (before
// classes existed, the single log, so its entries are audit entries), PREFIX:log:{log}:admin
// and PREFIX:log:{log}:unauthenticated. Nothing appends to those sets any more (a replica
// not yet upgraded still may, trimming them to its max_events as before): every read merges
// them with the shards, and TrimLogs trims them by age, but no per-shard count cap applies
// to them, so the events stored before an upgrade are kept until they age out (they no
// longer grow, so they stay bounded by the count the earlier version kept).
const legacyLogTag = "log"

// logShard is the shard of the event with log id: FNV-1a of the id, modulo LogShards (log
// ids end in random digits, so shards fill evenly whoever writes).
func logShard(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % LogShards)
}

// LogShardCap is how many entries each Redis shard of a class keeps for an AppendLog with
// maxLen: c + ⌈4·√c⌉ with c = ⌈maxLen/LogShards⌉, but never more than maxLen. So a class
// holds at most MaxLogKept(maxLen) entries, and an entry is dropped only once LogShardCap
// newer entries of its class went to its shard: the newest maxLen are all kept whenever no
// shard got more than LogShardCap of them. For maxLen up to 8 that is always (the cap is
// maxLen); for larger ones a shard's share of the newest maxLen is binomial (mean c,
// deviation under √c), so exceeding the cap takes at least 4 deviations (for the default
// 10,000: cap 1831, at most 10,986 kept). An append trims only its own shard, so after a
// change of maxLen a shard keeps its old cap until its next append.
func LogShardCap(maxLen int) int {
	c := (maxLen + LogShards - 1) / LogShards
	return min(maxLen, c+int(math.Ceil(4*math.Sqrt(float64(c)))))
}

// MaxLogKept is the most entries of a class that AppendLog with maxLen leaves, on any
// backend: maxLen in memory, LogShards·LogShardCap(maxLen) on Redis. Every backend keeps
// the maxLen newest (on Redis see LogShardCap for the exact guarantee).
func MaxLogKept(maxLen int) int {
	return max(maxLen, LogShards*LogShardCap(maxLen))
}

// logClassKeys returns the sorted-set key of every class under tag: PREFIX:log:{TAG} for
// LogAudit, PREFIX:log:{TAG}:unauthenticated and PREFIX:log:{TAG}:admin.
func logClassKeys(prefix, tag string) [len(logClasses)]string {
	b := prefix + ":log:{" + tag + "}"
	return [...]string{LogAudit: b, LogUnauthenticated: b + ":unauthenticated", LogAdmin: b + ":admin"}
}

// logKeysFor returns the sorted-set key of every shard and class.
func logKeysFor(prefix string) [LogShards][len(logClasses)]string {
	var out [LogShards][len(logClasses)]string
	for i, tag := range logShardTags {
		out[i] = logClassKeys(prefix, tag)
	}
	return out
}

// logSets is the number of sorted sets a read of the log merges: every class of every
// shard, and the legacy sets.
const logSets = (LogShards + 1) * len(logClasses)

// setRead is what a read of one log set returned: its entries, tagged with the set's class,
// and the last member of its raw reply (foreign members included), "" when it was empty.
type setRead struct {
	es   []LogEntry
	n    int    // members in the raw reply
	last string // the raw reply's last member
}

// readSets runs read on every set (class × shard, then the legacy sets) in one round trip
// (ClusterClient sends one pipeline per node) and returns what each returned.
func (s *redisStore) readSets(ctx context.Context, op string, read func(p redis.Pipeliner, key string) *redis.StringSliceCmd) ([]setRead, error) {
	cmds := make([]*redis.StringSliceCmd, 0, logSets)
	// A plain pipeline, not MULTI: the sets are only appended to and trimmed, so reads in
	// one round trip are as good, and Redis refuses every command queued in a MULTI when it
	// is at maxmemory, while plain reads still work on a full store.
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range s.logKeys {
			for _, c := range logClasses {
				cmds = append(cmds, read(p, s.logKeys[sh][c]))
			}
		}
		for _, c := range logClasses {
			cmds = append(cmds, read(p, s.legacyLogKeys[c]))
		}
		return nil
	})
	if err != nil {
		return nil, mapErr(op, err)
	}
	out := make([]setRead, len(cmds))
	for i, cmd := range cmds {
		ms := cmd.Val()
		out[i] = setRead{es: entries(ms, logClasses[i%len(logClasses)]), n: len(ms)}
		if len(ms) > 0 {
			out[i].last = ms[len(ms)-1]
		}
	}
	return out, nil
}

// perSetLimit is how many entries a read of limit entries asks of each set: a shard's share
// with a margin (an even share is limit/LogShards; a larger one costs one more round).
func perSetLimit(limit int) int {
	c := (limit + LogShards - 1) / LogShards
	return min(limit, c+c/2+4)
}

// readOrdered returns up to limit entries in id order (descending when desc) whose ids lie
// beyond cursor ("" = from the start; otherwise an exclusive bound, a log id or, for Logs,
// any string), reading every set in one round trip per round. Each set is asked for
// perSetLimit members; a set whose raw reply filled that (foreign members counted, so that
// they never pass for the set's end) was read up to its last member, and the merged entries
// are complete up to the nearest such last member (compared as members, "ID\x00EVENT"), so
// a round keeps those and, when it found fewer than limit and some set may hold more, the
// next round goes on beyond that member (each round passes at least one member, so rounds
// end even in a set of foreign members).
func (s *redisStore) readOrdered(ctx context.Context, op string, desc bool, cursor string, limit int) ([]LogEntry, error) {
	out := make([]LogEntry, 0, min(limit, 1024))
	lo, hi := "-", "+"
	switch {
	case cursor == "":
	case desc && len(cursor) > LogIDLen:
		// Members are "ID\x00EVENT" with len(ID) == LogIDLen: for a longer bound,
		// ID < cursor ⇔ ID ≤ cursor[:LogIDLen] ⇔ member < cursor[:LogIDLen]+"\x01".
		hi = "(" + cursor[:LogIDLen] + "\x01"
	case desc:
		hi = "(" + cursor // member < X ⇔ ID < X (len(X) ≤ LogIDLen)
	default:
		lo = "(" + cursor + "\x01" // member > X+"\x01" ⇔ ID > X
	}
	for len(out) < limit {
		want := limit - len(out)
		n := perSetLimit(want)
		rng := &redis.ZRangeBy{Min: lo, Max: hi, Count: int64(n)}
		per, err := s.readSets(ctx, op, func(p redis.Pipeliner, key string) *redis.StringSliceCmd {
			if desc {
				return p.ZRevRangeByLex(ctx, key, rng)
			}
			return p.ZRangeByLex(ctx, key, rng)
		})
		if err != nil {
			return nil, err
		}
		// stop is the last member known complete: the nearest last member of a set that
		// filled n.
		stop, more := "", false
		for _, r := range per {
			if r.n == n && (!more || (r.last < stop) != desc) {
				stop, more = r.last, true
			}
		}
		var got []LogEntry
		for _, r := range per {
			got = mergeLogs(got, r.es, desc, want)
		}
		if more {
			for len(got) > 0 {
				m := string(logMember(got[len(got)-1].ID, got[len(got)-1].Event))
				if m == stop || (m > stop) == desc {
					break
				}
				got = got[:len(got)-1]
			}
		}
		out = append(out, got...)
		if !more {
			break
		}
		if desc {
			hi = "(" + stop
		} else {
			lo = "(" + stop
		}
	}
	return out, nil
}
