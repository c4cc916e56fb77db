package sessions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tallies are counters kept at write time in per-minute and per-hour buckets: a Tally (a few
// named increments) rides in the write of the log event it counts, so charts of how logins
// go never scan the event log, keep working after old events were trimmed, and cost a login
// no extra round trip. Counter names are opaque here; the broker decides what it counts.

// TallyStep is a bucket width: TallyMinute or TallyHour.
type TallyStep uint8

const (
	// TallyMinute buckets cover one minute (UTC, on the minute) and live TallyMinute.TTL().
	TallyMinute TallyStep = iota + 1
	// TallyHour buckets cover one hour and live TallyHour.TTL().
	TallyHour
)

// tallySteps lists the steps every Tally is added to.
var tallySteps = [...]TallyStep{TallyMinute, TallyHour}

// Duration is the width of a bucket of step s (0 for an unknown step).
func (s TallyStep) Duration() time.Duration {
	switch s {
	case TallyMinute:
		return time.Minute
	case TallyHour:
		return time.Hour
	}
	return 0
}

// TTL is how long after its start a bucket of step s is kept: a little over a day of minutes
// (the last hour and the last day at one-minute resolution) and a little over a week of hours.
func (s TallyStep) TTL() time.Duration {
	switch s {
	case TallyMinute:
		return 25 * time.Hour
	case TallyHour:
		return 8 * 24 * time.Hour
	}
	return 0
}

// String is "minute" or "hour".
func (s TallyStep) String() string {
	switch s {
	case TallyMinute:
		return "minute"
	case TallyHour:
		return "hour"
	}
	return fmt.Sprintf("TallyStep(%d)", uint8(s))
}

// Bounds of a Tally and of a Tallies read.
const (
	// MaxTallyCounts is the most counters one Tally may increment.
	MaxTallyCounts = 32
	// MaxTallyName is the longest counter name, in bytes.
	MaxTallyName = 160
	// MaxTallyBuckets is the most buckets one Tallies read returns (a day of minutes fits).
	MaxTallyBuckets = 1500
	// maxMemTallyFields bounds the counters of one bucket of the memory store: an increment
	// of a new counter beyond it is dropped (callers keep their names to a bounded set; this
	// is the backstop).
	maxMemTallyFields = 4096
)

// Tally is the counters one log event adds to: each named counter of the minute and of the
// hour that contain At grows by its positive increment. The zero Tally adds nothing.
type Tally struct {
	At     time.Time
	Counts map[string]int64
}

// TallyBucket is one bucket of a Tallies read: its start and its counters (empty when
// nothing was counted, or the bucket has expired).
type TallyBucket struct {
	Start  time.Time
	Counts map[string]int64
}

// Tallier is an optional Store capability: log appends that add a Tally in the same write
// (the same MULTI/EXEC, or the same pipeline, on Redis; the same lock in memory), and the
// read of the buckets. The memory store and Redis (single node, Sentinel and Cluster) offer
// it. An invalid Tally is refused like an invalid event: nothing is written.
type Tallier interface {
	// AppendLogTallied is AppendLog adding t in the same round trip.
	AppendLogTallied(ctx context.Context, class LogClass, id string, event []byte, maxLen int, t Tally) error
	// PutAllAndLogTallied is LogBatcher.PutAllAndLog adding t in the same atomic step: the
	// items, the event and the counters are all written, or none. Where PutAllAndLog is
	// unsupported (Redis Cluster) so is this, and nothing is written.
	PutAllAndLogTallied(ctx context.Context, logID string, event []byte, maxLen int, t Tally, items ...Item) error
	// Tallies returns the buckets of step whose start lies in [from, to), oldest first,
	// every one of them (empty ones too); from is rounded down to a bucket start. A range of
	// more than MaxTallyBuckets buckets is refused.
	Tallies(ctx context.Context, step TallyStep, from, to time.Time) ([]TallyBucket, error)
}

// checkTally validates t: at most MaxTallyCounts counters with non-empty names of at most
// MaxTallyName bytes and positive increments, and a time when it counts anything.
func checkTally(t Tally) error {
	if len(t.Counts) == 0 {
		return nil
	}
	if len(t.Counts) > MaxTallyCounts {
		return fmt.Errorf("sessions: tally of %d counters, at most %d", len(t.Counts), MaxTallyCounts)
	}
	if t.At.IsZero() {
		return errors.New("sessions: tally without a time")
	}
	for name, n := range t.Counts {
		switch {
		case name == "" || len(name) > MaxTallyName:
			return fmt.Errorf("sessions: tally counter name of %d bytes (1 to %d)", len(name), MaxTallyName)
		case n <= 0:
			return fmt.Errorf("sessions: tally counter %q increment %d must be positive", name, n)
		}
	}
	return nil
}

// tallyStart is the start of the bucket of step that contains t, in Unix seconds.
func tallyStart(step TallyStep, t time.Time) int64 {
	w := int64(step.Duration() / time.Second)
	u := t.Unix()
	return u - ((u%w)+w)%w
}

// tallyRange checks a Tallies read and returns the start of its first bucket and how many
// buckets it covers.
func tallyRange(step TallyStep, from, to time.Time) (first int64, n int, err error) {
	if step.Duration() == 0 {
		return 0, 0, fmt.Errorf("sessions: tallies: unknown step %d", uint8(step))
	}
	first = tallyStart(step, from)
	if !to.After(time.Unix(first, 0)) {
		return first, 0, nil
	}
	span := to.Sub(time.Unix(first, 0))
	count := (span + step.Duration() - 1) / step.Duration()
	if count > MaxTallyBuckets {
		return 0, 0, fmt.Errorf("sessions: tallies: %d %s buckets requested, at most %d", count, step, MaxTallyBuckets)
	}
	return first, int(count), nil
}

// tallyBuckets returns n empty buckets of step from first on.
func tallyBuckets(step TallyStep, first int64, n int) []TallyBucket {
	out := make([]TallyBucket, n)
	w := int64(step.Duration() / time.Second)
	for i := range out {
		out[i] = TallyBucket{Start: time.Unix(first+int64(i)*w, 0).UTC(), Counts: map[string]int64{}}
	}
	return out
}

// ---- memory ----

type memTallyKey struct {
	step  TallyStep
	start int64
}

type memTallyBucket struct {
	exp    time.Time
	counts map[string]int64
}

// memTallies are the memory store's buckets; expired ones are invisible at once and removed
// at most once a minute by a write.
type memTallies struct {
	buckets map[memTallyKey]*memTallyBucket
	swept   time.Time
}

// add adds t to its buckets at now. m.mu is held.
func (mt *memTallies) add(t Tally, now time.Time) {
	if len(t.Counts) == 0 {
		return
	}
	if mt.buckets == nil {
		mt.buckets = map[memTallyKey]*memTallyBucket{}
	}
	if now.Sub(mt.swept) >= time.Minute {
		for k, b := range mt.buckets {
			if !b.exp.After(now) {
				delete(mt.buckets, k)
			}
		}
		mt.swept = now
	}
	for _, step := range tallySteps {
		k := memTallyKey{step, tallyStart(step, t.At)}
		exp := time.Unix(k.start, 0).Add(step.TTL())
		if !exp.After(now) {
			continue // counted and expired at once, as PEXPIREAT in the past does on Redis
		}
		b := mt.buckets[k]
		if b == nil || !b.exp.After(now) {
			b = &memTallyBucket{exp: exp, counts: map[string]int64{}}
			mt.buckets[k] = b
		}
		for name, n := range t.Counts {
			if _, ok := b.counts[name]; !ok && len(b.counts) >= maxMemTallyFields {
				continue
			}
			b.counts[name] += n
		}
	}
}

// read fills the live buckets of a Tallies read. m.mu is held.
func (mt *memTallies) read(step TallyStep, out []TallyBucket, now time.Time) {
	for i := range out {
		b := mt.buckets[memTallyKey{step, out[i].Start.Unix()}]
		if b == nil || !b.exp.After(now) {
			continue
		}
		for name, n := range b.counts {
			out[i].Counts[name] = n
		}
	}
}

func (m *memory) AppendLogTallied(_ context.Context, class LogClass, id string, event []byte, maxLen int, t Tally) error {
	if err := checkAppend(class, id, maxLen); err != nil {
		return err
	}
	if err := checkTally(t); err != nil {
		return fmt.Errorf("sessions: append log: %w", err)
	}
	return m.run(func() error {
		m.appendLog(class, id, event, maxLen)
		m.tallies.add(t, m.now())
		return nil
	})
}

func (m *memory) PutAllAndLogTallied(_ context.Context, logID string, event []byte, maxLen int, t Tally, items ...Item) error {
	if err := checkPutAllAndLog(logID, maxLen, items); err != nil {
		return err
	}
	if err := checkTally(t); err != nil {
		return fmt.Errorf("sessions: put all and log: %w", err)
	}
	return m.run(func() error {
		if err := m.putLocked(items); err != nil {
			return fmt.Errorf("sessions: put all and log: %w", err)
		}
		m.appendLog(LogAudit, logID, event, maxLen)
		m.tallies.add(t, m.now())
		return nil
	})
}

func (m *memory) Tallies(_ context.Context, step TallyStep, from, to time.Time) ([]TallyBucket, error) {
	first, n, err := tallyRange(step, from, to)
	if err != nil {
		return nil, err
	}
	out := tallyBuckets(step, first, n)
	return inOpen(m, func() ([]TallyBucket, error) {
		m.tallies.read(step, out, m.now())
		return out, nil
	})
}

// ---- Redis ----

// A Redis bucket is a set of fields of a small group hash under the hash tag of one of
// tallyShards tally shards, so that the logins of any one minute spread over their slots
// instead of all landing on one. Each tally shard uses the tag of a log shard (tallyShardTag)
// and a log shard's counters go to the tally shard in the same third of the slot space: on a
// 3-master Cluster a login's event and counters go to one node; with more masters, two.
// Fewer tally shards than log shards keep the reads small: a chart sums the tally shards, and
// a counter hit in every shard is stored once per shard.
//
// Minutes are grouped by five and hours by six: PREFIX:tally:{TAG}:m:N (N = minute/5 since
// the Unix epoch) holds field "MNAME" (M the minute within the group, one digit) and
// PREFIX:tally:{TAG}:h:N (N = hour/6) field "HNAME". A group of a few buckets stays under
// Redis's hash-max-listpack-entries (128), compact (about 25 bytes a counter), where an hour
// of minutes would not; a day of minutes is 289 groups per tally shard, not 1440 hashes. The
// group expires with its last bucket; a read skips buckets older than their TTL.
//
// Before the log was sharded each bucket was its own hash, PREFIX:tally:{tally.HOUR}mMINUTE
// or PREFIX:tally:{tally.HOUR}h; reads still add those (legacyTallyKey), so counts written
// before an upgrade, or by a replica not yet upgraded, keep showing until they expire.

// tallyShards is the number of tally shards.
const tallyShards = 3

// tallyShardOf is the tally shard of each log shard: the one whose tag's slot lies in the
// same third of the slot space (TestTallyShardsShareTheirLogShardsThird checks it).
var tallyShardOf = [LogShards]int{0: 1, 1: 0, 2: 0, 3: 1, 4: 2, 5: 2}

// tallyShardTag is the hash tag of each tally shard: that of log shard 1 (slot 695), 3
// (6862) and 4 (11987), one in each third of the slot space.
var tallyShardTag = [tallyShards]string{logShardTags[1], logShardTags[3], logShardTags[4]}

// tallyGroup is the width, in buckets, of the group hash of step: 5 minutes, 6 hours.
func tallyGroup(step TallyStep) int64 {
	if step == TallyHour {
		return 6
	}
	return 5
}

// tallyGroupKey is the group hash of tally shard ts holding the bucket of step starting at
// start (Unix seconds), and the field prefix of that bucket.
func (s *redisStore) tallyGroupKey(ts int, step TallyStep, start int64) (key, field string) {
	w := int64(step.Duration() / time.Second)
	g := tallyGroup(step)
	n := start / w
	letter := ":m:"
	if step == TallyHour {
		letter = ":h:"
	}
	return s.prefix + ":tally:{" + tallyShardTag[ts] + "}" + letter + strconv.FormatInt(n/g, 10), string([]byte{'0' + byte(n%g)})
}

// tallyGroupExpiry is when the group of step holding the bucket starting at start expires:
// when its last bucket does.
func tallyGroupExpiry(step TallyStep, start int64) time.Time {
	w := int64(step.Duration() / time.Second)
	g := tallyGroup(step)
	last := (start/w/g*g + g - 1) * w
	return time.Unix(last, 0).Add(step.TTL())
}

// legacyTallyKey is the hash of one bucket before the log was sharded:
// PREFIX:tally:{tally.HOUR}mMINUTE or PREFIX:tally:{tally.HOUR}h.
func (s *redisStore) legacyTallyKey(step TallyStep, start int64) string {
	b := s.prefix + ":tally:{tally." + strconv.FormatInt(start/3600, 10) + "}"
	if step == TallyHour {
		return b + "h"
	}
	return b + "m" + strconv.FormatInt(start/60, 10)
}

// tallyLua adds a Tally to its minute (KEYS[1]) and hour (KEYS[2]) group hashes and sets
// their expiry: ARGV = minute group expiry, hour group expiry (Unix ms), minute field
// prefix, hour field prefix, then name, increment pairs. One command instead of two
// increments per counter: the login's MULTI (or pipeline) carries one EVAL more, not a
// dozen commands. EVAL, not EVALSHA: inside MULTI a NOSCRIPT reply would fail this command
// alone, after the others ran.
const tallyLua = `
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[3] .. ARGV[i], ARGV[i+1])
  redis.call('HINCRBY', KEYS[2], ARGV[4] .. ARGV[i], ARGV[i+1])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
return 0
`

// queueTally queues t's increments and the expiry of its group hashes, those of the tally
// shard of log shard sh, on p. The EVAL is a onceCmd: go-redis does not send again a
// pipeline or MULTI that holds it (its increments must not run twice); see writeTallied.
func (s *redisStore) queueTally(ctx context.Context, p redis.Pipeliner, sh int, t Tally) *redis.Cmd {
	if len(t.Counts) == 0 {
		return nil
	}
	m, h := tallyStart(TallyMinute, t.At), tallyStart(TallyHour, t.At)
	mKey, mField := s.tallyGroupKey(tallyShardOf[sh], TallyMinute, m)
	hKey, hField := s.tallyGroupKey(tallyShardOf[sh], TallyHour, h)
	args := make([]any, 0, 4+2*len(t.Counts))
	args = append(args, tallyGroupExpiry(TallyMinute, m).UnixMilli(), tallyGroupExpiry(TallyHour, h).UnixMilli(), mField, hField)
	for name, n := range t.Counts {
		args = append(args, name, n)
	}
	return onceEval(ctx, p, "eval", tallyLua, []string{mKey, hKey}, args)
}

// writeTallied runs write(t), the append of a log event (idempotent: a ZADD of the same
// member, SETs of the same values) with t's increments (not idempotent), so that the
// increments run at most once and the event is stored as reliably as without them. write
// returns the increments' own command (queueTally's) beside the write's error.
//
// go-redis sends a pipeline or MULTI again after a connection lost once it was sent (it may
// have run), but not one holding the tally's onceCmd. So when the write fails, it is sent
// once more, and with the increments only if their own command was refused (proof that it
// did not run); otherwise without them, and go-redis may then send that again itself, as any
// append. The decision is the increments' command's, not the write's first error: on Cluster
// the tally keys lie in another slot than the log shard (the same node when the slots are
// split evenly, tallyShardOf), so the EVAL can run while the ZADD beside it is refused. A
// lost reply costs at worst the counts of that one event, never a double count, and the
// event is not lost where a write without counters would not be.
func writeTallied(ctx context.Context, t Tally, write func(t Tally) (*redis.Cmd, error)) error {
	if len(t.Counts) == 0 {
		_, err := write(t)
		return err
	}
	tally, err := write(t)
	if err == nil || ctx.Err() != nil {
		return err
	}
	var re redis.Error
	if errors.As(err, &re) && !refused(err) {
		return err // the server answered (OOM, WRONGTYPE, …): sending again changes nothing
	}
	if refused(err) {
		select {
		case <-ctx.Done():
			return err
		case <-time.After(refusalRetryPause): // time for the slot map re-read (mapRefresh)
		}
	}
	if tally == nil || !refused(tally.Err()) {
		t = Tally{} // the increments ran, or may have: never again
	}
	_, err = write(t)
	return err
}

func (s *redisStore) AppendLogTallied(ctx context.Context, class LogClass, id string, event []byte, maxLen int, t Tally) error {
	if err := checkAppend(class, id, maxLen); err != nil {
		return err
	}
	if err := checkTally(t); err != nil {
		return fmt.Errorf("sessions: append log: %w", err)
	}
	return s.appendLog(ctx, class, id, event, maxLen, t)
}

func (s *redisStore) PutAllAndLogTallied(ctx context.Context, logID string, event []byte, maxLen int, t Tally, items ...Item) error {
	if err := checkTally(t); err != nil {
		return fmt.Errorf("sessions: put all and log: %w", err)
	}
	return s.putAllAndLog(ctx, logID, event, maxLen, t, items)
}

func (s *redisStore) Tallies(ctx context.Context, step TallyStep, from, to time.Time) ([]TallyBucket, error) {
	first, n, err := tallyRange(step, from, to)
	if err != nil {
		return nil, err
	}
	out := tallyBuckets(step, first, n)
	if n == 0 {
		return out, nil
	}
	w := int64(step.Duration() / time.Second)
	g := tallyGroup(step)
	firstGroup, lastGroup := first/w/g, (first/w+int64(n)-1)/g
	var groups, legacy []*redis.MapStringStringCmd
	// A plain pipeline (one per node on Cluster): the buckets are independent counters.
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for gr := firstGroup; gr <= lastGroup; gr++ {
			for ts := range tallyShards {
				key, _ := s.tallyGroupKey(ts, step, gr*g*w)
				groups = append(groups, p.HGetAll(ctx, key))
			}
		}
		for i := range out {
			legacy = append(legacy, p.HGetAll(ctx, s.legacyTallyKey(step, out[i].Start.Unix())))
		}
		return nil
	})
	if err != nil {
		return nil, mapErr("tallies", err)
	}
	// A group outlives its earlier buckets: skip buckets past their TTL, as if expired.
	now := time.Now()
	for k, c := range groups {
		gr := firstGroup + int64(k/tallyShards)
		for field, v := range c.Val() {
			if len(field) < 2 || field[0] < '0' || int64(field[0]-'0') >= g {
				continue // not written by tallyLua: its digit is a bucket of the group
			}
			b := gr*g + int64(field[0]-'0') - first/w // index in out
			if b < 0 || b >= int64(n) || !out[b].Start.Add(step.TTL()).After(now) {
				continue
			}
			addCount(out[b].Counts, field[1:], v)
		}
	}
	for i, c := range legacy {
		for name, v := range c.Val() {
			addCount(out[i].Counts, name, v)
		}
	}
	return out, nil
}

// addCount adds the counter value v (as HINCRBY wrote it) to counts[name]; other values are
// skipped.
func addCount(counts map[string]int64, name, v string) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return // not written by HINCRBY
	}
	counts[name] += n
}
