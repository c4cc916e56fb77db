package sessions

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// crc16 is Redis Cluster's key hash (CRC-16/XMODEM); a key's slot is crc16(tag) mod 16384.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func TestCRC16MatchesRedisCheckValue(t *testing.T) {
	// The check value of CRC-16/XMODEM, as in the Redis Cluster specification.
	if got := crc16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
}

// TestLogShardTagsSpread: the slots of the shard tags fall one in each sixth of the slot
// space, away from its edges, so the masters of a `redis-cli --cluster create` cluster of 2,
// 3 or 6 masters hold equally many shards; shard 0 lies in the sixth of the unsharded log's
// tag, which is no shard's (its sets are never appended to, so no count cap trims them).
func TestLogShardTagsSpread(t *testing.T) {
	if slices.Contains(logShardTags[:], legacyLogTag) {
		t.Fatalf("the unsharded log's tag %q is a shard's tag: its appends would trim the events stored before the upgrade", legacyLogTag)
	}
	if a, b := int(crc16(logShardTags[0])%16384)*LogShards/16384, int(crc16(legacyLogTag)%16384)*LogShards/16384; a != b {
		t.Errorf("shard 0 tag %q in sixth %d, the unsharded log's %q in sixth %d", logShardTags[0], a, legacyLogTag, b)
	}
	seen := map[int]string{}
	for _, tag := range logShardTags {
		slot := int(crc16(tag) % 16384)
		sixth := slot * LogShards / 16384
		if prev, ok := seen[sixth]; ok {
			t.Fatalf("tags %q and %q both in sixth %d", prev, tag, sixth)
		}
		seen[sixth] = tag
		lo, hi := sixth*16384/LogShards, (sixth+1)*16384/LogShards
		if slot < lo+(hi-lo)/4 || slot >= hi-(hi-lo)/4 {
			t.Errorf("tag %q slot %d near an edge of [%d, %d)", tag, slot, lo, hi)
		}
	}
	for _, masters := range []int{2, 3, 6} {
		per := make([]int, masters)
		for _, tag := range logShardTags {
			per[int(crc16(tag)%16384)*masters/16384]++
		}
		for m, n := range per {
			if n != LogShards/masters {
				t.Errorf("%d masters: master %d holds %d shards, want %d (%v)", masters, m, n, LogShards/masters, per)
			}
		}
	}
}

// TestTallyShardsShareTheirLogShardsThird: the tally shards' tags lie one in each third of
// the slot space, and each log shard's counters go to the tally shard in its own third, so
// on a 3-master `redis-cli --cluster create` cluster a login's event and counters go to one
// master.
func TestTallyShardsShareTheirLogShardsThird(t *testing.T) {
	third := func(tag string) int { return int(crc16(tag)%16384) * 3 / 16384 }
	for ts, tag := range tallyShardTag {
		if third(tag) != ts {
			t.Errorf("tally shard %d tag %q in third %d", ts, tag, third(tag))
		}
	}
	for sh, tag := range logShardTags {
		if ts := tallyShardOf[sh]; third(tallyShardTag[ts]) != third(tag) {
			t.Errorf("log shard %d (%q, third %d) counts in tally shard %d (third %d)", sh, tag, third(tag), ts, third(tallyShardTag[ts]))
		}
	}
}

func TestLogShardCap(t *testing.T) {
	tests := []struct {
		maxLen, wantCap, wantKept int
	}{
		{maxLen: 1, wantCap: 1, wantKept: 6},
		{maxLen: 4, wantCap: 4, wantKept: 24},
		{maxLen: 8, wantCap: 8, wantKept: 48},
		{maxLen: 50, wantCap: 9 + 12, wantKept: 126},
		{maxLen: 10000, wantCap: 1667 + 164, wantKept: 10986},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.maxLen), func(t *testing.T) {
			if got := LogShardCap(tc.maxLen); got != tc.wantCap {
				t.Errorf("LogShardCap(%d) = %d, want %d", tc.maxLen, got, tc.wantCap)
			}
			if got := MaxLogKept(tc.maxLen); got != tc.wantKept {
				t.Errorf("MaxLogKept(%d) = %d, want %d", tc.maxLen, got, tc.wantKept)
			}
		})
	}
}

func newTestRedis(t *testing.T, addr string) *redisStore {
	t.Helper()
	s, err := NewRedis(RedisConfig{Addrs: []string{addr}, Prefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.(*redisStore)
}

// startTestRedis starts a redis-server of the test's own and returns the store on it and a
// plain client for looking at (or tampering with) its keys.
func startTestRedis(t *testing.T) (*redisStore, *redis.Client) {
	t.Helper()
	addr := redistest.Start(t)
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	return newTestRedis(t, addr), raw
}

// randomLogIDs returns n distinct log ids, a third of them in one shard (so reads take more
// than one round), shuffled.
func randomLogIDs(r *rand.Rand, n int) []string {
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		id := fmt.Sprintf("%020d%036d", r.Int64N(1e15), r.Int64N(1e18))
		if seen[id] || (len(out) < n/3 && logShard(id) != 2) {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestRedisLogReadsMatchMemory: on a sharded log, whose shards are filled unevenly, every
// read (Logs, LogsAfter, LogsBefore by any limit and cursor, Log) returns what the memory
// store, one list per class, returns for the same appends.
func TestRedisLogReadsMatchMemory(t *testing.T) {
	t.Parallel() // on a redis-server of its own
	rs := newTestRedis(t, redistest.Start(t))
	ms := NewMemory()
	r := rand.New(rand.NewPCG(1, 2))
	ids := randomLogIDs(r, 900)
	ctx := t.Context()
	for i, id := range ids {
		class := logClasses[i%len(logClasses)]
		ev := fmt.Appendf(nil, `{"i":%d}`, i)
		for _, s := range []Store{rs, ms} {
			if err := s.AppendLog(ctx, class, id, ev, 100000); err != nil {
				t.Fatal(err)
			}
		}
	}
	sorted := slices.Sorted(slices.Values(ids))
	cursors := []string{"", sorted[0], sorted[len(sorted)/2], sorted[len(sorted)-1], strings.Repeat("0", LogIDLen), strings.Repeat("9", LogIDLen)}
	for range 20 {
		cursors = append(cursors, sorted[r.IntN(len(sorted))])
	}
	show := func(es []LogEntry) string {
		var b strings.Builder
		for _, e := range es {
			fmt.Fprintf(&b, "%s/%v/%s ", e.ID[:8], e.Class, e.Event)
		}
		return b.String()
	}
	for _, cursor := range cursors {
		for _, limit := range []int{1, 2, 7, 50, 256, 1000} {
			got, err := rs.LogsAfter(ctx, cursor, limit)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := ms.LogsAfter(ctx, cursor, limit)
			if show(got) != show(want) {
				t.Fatalf("LogsAfter(%.8s…, %d) = %d entries, want %d\n got %s\nwant %s", cursor, limit, len(got), len(want), show(got), show(want))
			}
			got, err = rs.LogsBefore(ctx, cursor, limit)
			if err != nil {
				t.Fatal(err)
			}
			want, _ = ms.LogsBefore(ctx, cursor, limit)
			if show(got) != show(want) {
				t.Fatalf("LogsBefore(%.8s…, %d) = %d entries, want %d", cursor, limit, len(got), len(want))
			}
			for _, before := range []string{cursor, cursor + "5", cursor[:min(len(cursor), 10)]} {
				g, err := rs.Logs(ctx, before, limit)
				if err != nil {
					t.Fatal(err)
				}
				w, _ := ms.Logs(ctx, before, limit)
				if fmt.Sprintf("%s", g) != fmt.Sprintf("%s", w) {
					t.Fatalf("Logs(%.12s…, %d) = %d events, want %d", before, limit, len(g), len(w))
				}
			}
		}
	}
	for _, id := range ids[:50] {
		got, err := rs.Log(ctx, id)
		want, _ := ms.Log(ctx, id)
		if err != nil || show([]LogEntry{got}) != show([]LogEntry{want}) {
			t.Fatalf("Log(%.8s…) = %+v, %v; want %+v", id, got, err, want)
		}
	}
}

// TestRedisLogShardKeepsItsNewest: each append trims its own shard of its class to
// LogShardCap(maxLen), the greatest ids routed there; the entries appended before the log was
// sharded (in the legacy keys) are read back, and the tally of an append shares its shard's
// hash tag.
func TestRedisLogShardKeepsItsNewest(t *testing.T) {
	t.Parallel() // on a redis-server of its own
	s, raw := startTestRedis(t)
	ctx := t.Context()
	old := fmt.Sprintf("%056d", 1)
	if err := raw.ZAdd(ctx, "t:log:{log}", redis.Z{Member: old + "\x00" + `{"n":1}`}).Err(); err != nil {
		t.Fatal(err)
	}
	const maxLen = 60
	perShard := map[int][]string{}
	now := time.Now()
	for n := 2; n <= 400; n++ {
		id := fmt.Sprintf("%056d", n)
		tl := Tally{At: now, Counts: map[string]int64{"s": 1}}
		if err := s.AppendLogTallied(ctx, LogUnauthenticated, id, fmt.Appendf(nil, `{"n":%d}`, n), maxLen, tl); err != nil {
			t.Fatal(err)
		}
		perShard[logShard(id)] = append(perShard[logShard(id)], id)
	}
	capN := LogShardCap(maxLen)
	for sh := range LogShards {
		key := s.logKeys[sh][LogUnauthenticated]
		ms, err := raw.ZRange(ctx, key, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range ms {
			got = append(got, m[:LogIDLen])
		}
		want := perShard[sh][max(0, len(perShard[sh])-capN):]
		if !slices.Equal(got, want) {
			t.Errorf("shard %d (%s) holds %d ids %v…, want its %d greatest of %d", sh, key, len(got), got[:min(3, len(got))], capN, len(perShard[sh]))
		}
		if len(perShard[sh]) < capN {
			t.Errorf("shard %d got %d of 399 appends, want more than its cap %d (ids spread evenly)", sh, len(perShard[sh]), capN)
		}
	}
	if e, err := s.Log(ctx, old); err != nil || e.Class != LogAudit {
		t.Fatalf("entry written under the unsharded key = %+v, %v; want an audit entry", e, err)
	}
	minute := time.Unix(tallyStart(TallyMinute, now), 0)
	tb, err := s.Tallies(ctx, TallyMinute, minute, minute.Add(time.Second))
	if err != nil || len(tb) != 1 || tb[0].Counts["s"] != 399 {
		t.Fatalf("Tallies = %+v, %v; want 399", tb, err)
	}
	keys, err := raw.Keys(ctx, "t:tally:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2*tallyShards {
		t.Errorf("tally keys = %q, want a minute and an hour group per tally shard", keys)
	}
	for _, k := range keys {
		tag := k[strings.Index(k, "{")+1 : strings.Index(k, "}")]
		if !slices.Contains(tallyShardTag[:], tag) {
			t.Errorf("tally key %q: tag %q is not a tally shard's", k, tag)
		}
	}
}

// TestRedisTalliesReadLegacyBuckets: buckets written before the log was sharded, one hash per
// bucket under {tally.HOUR}, are added to the sharded groups' counts.
func TestRedisTalliesReadLegacyBuckets(t *testing.T) {
	t.Parallel() // on a redis-server of its own
	s, raw := startTestRedis(t)
	ctx := t.Context()
	now := time.Now()
	m, h := tallyStart(TallyMinute, now), tallyStart(TallyHour, now)
	mKey := fmt.Sprintf("t:tally:{tally.%d}m%d", h/3600, m/60)
	hKey := fmt.Sprintf("t:tally:{tally.%d}h", h/3600)
	if mKey != s.legacyTallyKey(TallyMinute, m) || hKey != s.legacyTallyKey(TallyHour, h) {
		t.Fatalf("legacy keys %q %q, want %q %q", s.legacyTallyKey(TallyMinute, m), s.legacyTallyKey(TallyHour, h), mKey, hKey)
	}
	for _, k := range []string{mKey, hKey} {
		if err := raw.HSet(ctx, k, "s", 5).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AppendLogTallied(ctx, LogAudit, fmt.Sprintf("%056d", 1), []byte(`{}`), 10, Tally{At: now, Counts: map[string]int64{"s": 2}}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []TallyStep{TallyMinute, TallyHour} {
		start := time.Unix(tallyStart(step, now), 0) // one bucket, whatever the second
		tb, err := s.Tallies(ctx, step, start, start.Add(time.Second))
		if err != nil || len(tb) != 1 || tb[0].Counts["s"] != 7 {
			t.Fatalf("%v Tallies = %+v, %v; want s 7", step, tb, err)
		}
	}
}

// TestRedisUpgradeKeepsTheLogStoredBeforeSharding: the events an earlier version stored (its
// max_events newest, in the unsharded sets PREFIX:log:{log}[:CLASS]) survive the appends of
// an upgraded broker, whatever shard those go to: every read still returns the newest
// maxLen of each class, and only TrimLogs (retention by age) removes legacy entries.
func TestRedisUpgradeKeepsTheLogStoredBeforeSharding(t *testing.T) {
	t.Parallel() // on a redis-server of its own
	s, raw := startTestRedis(t)
	ctx := t.Context()
	const maxLen = 600 // LogShardCap(600) = 140: a shard-0 style trim would drop most
	legacy := logClassKeys("t", legacyLogTag)
	for c, key := range legacy {
		zs := make([]redis.Z, maxLen)
		for i := range zs {
			zs[i] = redis.Z{Member: fmt.Sprintf("%055d%d\x00{\"old\":%d}", i+1, c, i)}
		}
		if err := raw.ZAdd(ctx, key, zs...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	const appended = 300 // about 50 per shard, every shard written to
	for i := range appended {
		for _, c := range logClasses {
			id := fmt.Sprintf("9%054d%d", i, c)
			if err := s.AppendLog(ctx, c, id, []byte(`{"new":1}`), maxLen); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, key := range legacy {
		if n, err := raw.ZCard(ctx, key).Result(); err != nil || n != maxLen {
			t.Errorf("legacy set %s holds %d, %v; want the %d stored before the upgrade", key, n, err, maxLen)
		}
	}
	for _, c := range logClasses {
		all, err := s.LogsBefore(ctx, "", 3*(maxLen+appended))
		if err != nil {
			t.Fatal(err)
		}
		var mine []LogEntry
		for _, e := range all {
			if e.Class == c {
				mine = append(mine, e)
			}
		}
		if len(mine) != maxLen+appended {
			t.Errorf("class %v: reads return %d entries, want the %d stored before the upgrade and the %d after", c, len(mine), maxLen, appended)
		}
	}
	if got, err := s.Logs(ctx, "", maxLen); err != nil || len(got) != maxLen {
		t.Fatalf("Logs(maxLen) = %d events, %v; want %d", len(got), err, maxLen)
	}
	// Retention by age reaches the legacy sets: trim all but the newest 100 old entries.
	cut := fmt.Sprintf("%055d0", maxLen-100+1)
	for _, c := range logClasses {
		if err := s.TrimLogs(ctx, c, cut); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range legacy {
		if n, err := raw.ZCard(ctx, key).Result(); err != nil || n != 100 {
			t.Errorf("legacy set %s holds %d after TrimLogs, %v; want 100", key, n, err)
		}
	}
}

// TestRedisLogReadsPassForeignMembers: members no append wrote (not "ID\x00EVENT") in a set
// count towards its reply's length, so they never make a full set look exhausted: reads
// with any limit return what the memory store returns for the same appends, and a set of
// only foreign members ends the reads.
func TestRedisLogReadsPassForeignMembers(t *testing.T) {
	t.Parallel() // on a redis-server of its own
	rs, raw := startTestRedis(t)
	ms := NewMemory()
	ctx := t.Context()
	r := rand.New(rand.NewPCG(5, 6))
	ids := randomLogIDs(r, 240)
	for _, id := range ids {
		for _, s := range []Store{rs, ms} {
			if err := s.AppendLog(ctx, LogAudit, id, []byte(`{}`), 100000); err != nil {
				t.Fatal(err)
			}
		}
		// Beside each entry of shard 2, foreign members sorting just before and after it.
		if logShard(id) == 2 {
			for _, f := range []string{id[:LogIDLen-1], id + "\x01x", id[:LogIDLen-1] + "x"} {
				if err := raw.ZAdd(ctx, rs.logKeys[2][LogAudit], redis.Z{Member: f}).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// A legacy set of foreign members only.
	zs := make([]redis.Z, 300)
	for i := range zs {
		zs[i] = redis.Z{Member: fmt.Sprintf("foreign-%04d", i)}
	}
	if err := raw.ZAdd(ctx, rs.legacyLogKeys[LogAdmin], zs...).Err(); err != nil {
		t.Fatal(err)
	}
	sorted := slices.Sorted(slices.Values(ids))
	for _, cursor := range []string{"", sorted[10], sorted[len(sorted)/2], sorted[len(sorted)-10]} {
		for _, limit := range []int{1, 3, 10, 50, 500} {
			got, err := rs.LogsAfter(ctx, cursor, limit)
			want, _ := ms.LogsAfter(ctx, cursor, limit)
			if err != nil || len(got) != len(want) {
				t.Fatalf("LogsAfter(%.8s…, %d) = %d entries, %v; want %d", cursor, limit, len(got), err, len(want))
			}
			for i := range got {
				if got[i].ID != want[i].ID {
					t.Fatalf("LogsAfter(%.8s…, %d)[%d] = %.8s…, want %.8s…", cursor, limit, i, got[i].ID, want[i].ID)
				}
			}
			got, err = rs.LogsBefore(ctx, cursor, limit)
			want, _ = ms.LogsBefore(ctx, cursor, limit)
			if err != nil || len(got) != len(want) {
				t.Fatalf("LogsBefore(%.8s…, %d) = %d entries, %v; want %d", cursor, limit, len(got), err, len(want))
			}
			for i := range got {
				if got[i].ID != want[i].ID {
					t.Fatalf("LogsBefore(%.8s…, %d)[%d] = %.8s…, want %.8s…", cursor, limit, i, got[i].ID, want[i].ID)
				}
			}
		}
	}
}

// TestRedisTalliesSkipFieldsOutsideTheirGroup: a group hash's field counts only when its
// digit names a bucket of the group (0-4 for a five-minute group, 0-5 for a six-hour one):
// a foreign field with a larger digit is not added to a later group's bucket.
func TestRedisTalliesSkipFieldsOutsideTheirGroup(t *testing.T) {
	t.Parallel() // on a redis-server of its own
	s, raw := startTestRedis(t)
	ctx := t.Context()
	now := time.Now()
	tests := []struct {
		name  string
		step  TallyStep
		width int64 // buckets in a group
	}{
		{name: "minute groups", step: TallyMinute, width: 5},
		{name: "hour groups", step: TallyHour, width: 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := int64(tc.step.Duration() / time.Second)
			// The first bucket of the group before the current one's group.
			cur := tallyStart(tc.step, now)
			first := (cur/w/tc.width - 1) * tc.width * w
			key, field := s.tallyGroupKey(0, tc.step, first)
			if field != "0" {
				t.Fatalf("field prefix of a group's first bucket = %q", field)
			}
			// Fields "0s" (counts) and one digit past the group's last bucket for every digit
			// up to 9 (foreign: a later group's bucket if read as an offset).
			if err := raw.HSet(ctx, key, "0s", 1).Err(); err != nil {
				t.Fatal(err)
			}
			for d := tc.width; d <= 9; d++ {
				if err := raw.HSet(ctx, key, fmt.Sprintf("%ds", d), 100).Err(); err != nil {
					t.Fatal(err)
				}
			}
			from := time.Unix(first, 0)
			bs, err := s.Tallies(ctx, tc.step, from, from.Add(time.Duration(2*tc.width*w)*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for i, b := range bs {
				want := int64(0)
				if i == 0 {
					want = 1
				}
				if b.Counts["s"] != want {
					t.Errorf("bucket %d (%v) counts s %d, want %d", i, b.Start, b.Counts["s"], want)
				}
			}
		})
	}
}
