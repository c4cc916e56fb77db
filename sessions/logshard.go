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

// logShardTags are the hash tags of the log shards. Shard 0 is {log}, the tag of the log
// before it was sharded, so entries written earlier stay readable where they are. The others
// were chosen (TestLogShardTagsSpread checks them) so that the six slots fall one in each
// sixth [i·16384/6, (i+1)·16384/6) of the slot space, near its middle: `redis-cli --cluster
// create` gives each of M masters a contiguous range of about 16384/M slots, so 2, 3 or 6
// masters hold 3, 2 or 1 shards each, and 4 or 5 masters one or two.
var logShardTags = [LogShards]string{
	"log",      // slot 10591, sixth 3
	"log.1.13", // slot 695, sixth 0
	"log.2.30", // slot 3946, sixth 1
	"log.3.21", // slot 6862, sixth 2
	"log.4.12", // slot 11987, sixth 4
	"log.5.5",  // slot 15676, sixth 5
}

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

// logKeysFor returns the sorted-set key of every shard and class: PREFIX:log:{TAG} for
// LogAudit (in shard 0 the key of the single log before classes existed, so its entries
// stay audit entries), PREFIX:log:{TAG}:unauthenticated and PREFIX:log:{TAG}:admin.
func logKeysFor(prefix string) [LogShards][len(logClasses)]string {
	var out [LogShards][len(logClasses)]string
	for i, tag := range logShardTags {
		b := prefix + ":log:{" + tag + "}"
		out[i] = [...]string{LogAudit: b, LogUnauthenticated: b + ":unauthenticated", LogAdmin: b + ":admin"}
	}
	return out
}

// logSets is the number of sorted sets of the log: every class of every shard.
const logSets = LogShards * len(logClasses)

// readSets runs read on every set (class × shard) in one round trip (ClusterClient sends
// one pipeline per node) and returns the entries of each, tagged with their class.
func (s *redisStore) readSets(ctx context.Context, op string, read func(p redis.Pipeliner, key string) *redis.StringSliceCmd) ([]([]LogEntry), error) {
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
		return nil
	})
	if err != nil {
		return nil, mapErr(op, err)
	}
	out := make([][]LogEntry, len(cmds))
	for i, cmd := range cmds {
		out[i] = entries(cmd.Val(), logClasses[i%len(logClasses)])
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
// perSetLimit entries; the merged entries are complete up to the last entry of the nearest
// set that returned all it was asked for, so a round keeps those and, when it found fewer
// than limit and some set may hold more, the next round goes on from there.
func (s *redisStore) readOrdered(ctx context.Context, op string, desc bool, cursor string, limit int) ([]LogEntry, error) {
	out := make([]LogEntry, 0, min(limit, 1024))
	for len(out) < limit {
		want := limit - len(out)
		n := perSetLimit(want)
		rng := &redis.ZRangeBy{Min: "-", Max: "+", Count: int64(n)}
		switch {
		case cursor == "":
		case desc && len(cursor) > LogIDLen:
			// Members are "ID\x00EVENT" with len(ID) == LogIDLen: for a longer bound,
			// ID < cursor ⇔ ID ≤ cursor[:LogIDLen] ⇔ member < cursor[:LogIDLen]+"\x01".
			rng.Max = "(" + cursor[:LogIDLen] + "\x01"
		case desc:
			rng.Max = "(" + cursor // member < X ⇔ ID < X (len(X) ≤ LogIDLen)
		default:
			rng.Min = "(" + cursor + "\x01" // member > X+"\x01" ⇔ ID > X
		}
		per, err := s.readSets(ctx, op, func(p redis.Pipeliner, key string) *redis.StringSliceCmd {
			if desc {
				return p.ZRevRangeByLex(ctx, key, rng)
			}
			return p.ZRangeByLex(ctx, key, rng)
		})
		if err != nil {
			return nil, err
		}
		// stop is the last id known complete: the nearest last id of a set that filled n.
		stop, more := "", false
		for _, es := range per {
			if len(es) == n {
				last := es[len(es)-1].ID
				if !more || (last < stop) != desc {
					stop, more = last, true
				}
			}
		}
		var got []LogEntry
		for _, es := range per {
			got = mergeLogs(got, es, desc, want)
		}
		if more {
			for len(got) > 0 && got[len(got)-1].ID != stop && (got[len(got)-1].ID > stop) != desc {
				got = got[:len(got)-1]
			}
		}
		out = append(out, got...)
		if !more || len(got) == 0 {
			break
		}
		cursor = got[len(got)-1].ID
	}
	return out, nil
}
