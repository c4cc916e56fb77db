package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Log cursors are named positions in the event log, kept in the store so that a reader which
// delivers the log elsewhere (a log stream, broker/logstream) resumes where it stopped after
// a restart, whichever replica runs it. Each cursor has a lease: of several replicas running
// the same reader, only the holder of the live lease may move the position, so they take
// turns instead of each sending everything. Positions have no TTL (like the event log and
// the connections, they are never evicted); leases have the TTL their holder gives.

// LogCursors is a Store capability: named log positions with a lease. The memory store and
// Redis (single node, Sentinel, Cluster: a cursor's position and lease share one hash tag)
// offer it.
type LogCursors interface {
	// LeaseLogCursor takes the lease of cursor name for holder, for ttl, when no live lease
	// is held or holder holds it (then it is renewed), and returns the stored position ("":
	// none yet). A live lease of another holder: ErrConflict, nothing changed.
	LeaseLogCursor(ctx context.Context, name, holder string, ttl time.Duration) (pos string, err error)
	// AdvanceLogCursor stores pos (a log id) as the position of name when holder holds its
	// live lease, else returns ErrConflict and changes nothing. A position never moves back:
	// pos below the stored one is refused with an error (nothing changed).
	AdvanceLogCursor(ctx context.Context, name, holder, pos string) error
	// ReleaseLogCursor ends holder's lease of name; nothing happens when holder does not hold
	// it.
	ReleaseLogCursor(ctx context.Context, name, holder string) error
	// LogCursor returns the stored position of name ("" when none) and the holder of its live
	// lease ("" when none).
	LogCursor(ctx context.Context, name string) (pos, holder string, err error)
	// CountLogsAfter returns how many entries of the event log (every class) have an id above
	// after ("" counts them all): how far a cursor is behind.
	CountLogsAfter(ctx context.Context, after string) (int64, error)
}

// KindLogCursor names the records of a log cursor: PREFIX:lcur:{NAME}.pos (no TTL) and
// PREFIX:lcur:{NAME}.lease on Redis.
const KindLogCursor Kind = "lcur"

// MaxLogCursorName is the longest cursor name or holder, in bytes.
const MaxLogCursorName = 128

// checkCursorName accepts a cursor name or holder: 1 to MaxLogCursorName letters, digits, '-'
// and '_' (no '.', '{' or '}': the name is the records' hash tag).
func checkCursorName(what, s string) error {
	if s == "" || len(s) > MaxLogCursorName {
		return fmt.Errorf("sessions: log cursor %s must be 1 to %d characters", what, MaxLogCursorName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("sessions: log cursor %s may hold only letters, digits, '-' and '_'", what)
		}
	}
	return nil
}

// errCursorBack is the refusal of a position below the stored one.
var errCursorBack = errors.New("sessions: a log cursor never moves back")

// memCursor is one log cursor of the memory store.
type memCursor struct {
	pos    string
	holder string
	exp    time.Time // the lease's end (holder "" or exp passed: no live lease)
}

// liveHolder is the holder of c's live lease at now ("" when none).
func (c *memCursor) liveHolder(now time.Time) string {
	if c == nil || c.holder == "" || !now.Before(c.exp) {
		return ""
	}
	return c.holder
}

// cursor returns the cursor name, created when missing. mu must be held.
func (m *memory) cursor(name string) *memCursor {
	if m.cursors == nil {
		m.cursors = map[string]*memCursor{}
	}
	c := m.cursors[name]
	if c == nil {
		c = &memCursor{}
		m.cursors[name] = c
	}
	return c
}

func (m *memory) LeaseLogCursor(_ context.Context, name, holder string, ttl time.Duration) (string, error) {
	if err := checkLease(name, holder, ttl); err != nil {
		return "", err
	}
	return inOpen(m, func() (string, error) {
		now, c := m.now(), m.cursor(name)
		if h := c.liveHolder(now); h != "" && h != holder {
			return "", fmt.Errorf("sessions: lease log cursor %s: %w", name, ErrConflict)
		}
		c.holder, c.exp = holder, now.Add(ttl)
		return c.pos, nil
	})
}

func (m *memory) AdvanceLogCursor(_ context.Context, name, holder, pos string) error {
	if err := checkAdvance(name, holder, pos); err != nil {
		return err
	}
	return m.run(func() error {
		c := m.cursor(name)
		switch {
		case c.liveHolder(m.now()) != holder:
			return fmt.Errorf("sessions: advance log cursor %s: %w", name, ErrConflict)
		case pos < c.pos:
			return fmt.Errorf("sessions: advance log cursor %s: %w", name, errCursorBack)
		}
		c.pos = pos
		return nil
	})
}

func (m *memory) ReleaseLogCursor(_ context.Context, name, holder string) error {
	if err := checkCursorName("name", name); err != nil {
		return err
	}
	if err := checkCursorName("holder", holder); err != nil {
		return err
	}
	return m.run(func() error {
		if c := m.cursors[name]; c != nil && c.holder == holder {
			c.holder, c.exp = "", time.Time{}
		}
		return nil
	})
}

func (m *memory) LogCursor(_ context.Context, name string) (string, string, error) {
	if err := checkCursorName("name", name); err != nil {
		return "", "", err
	}
	type out struct{ pos, holder string }
	o, err := inOpen(m, func() (out, error) {
		c := m.cursors[name]
		if c == nil {
			return out{}, nil
		}
		return out{c.pos, c.liveHolder(m.now())}, nil
	})
	return o.pos, o.holder, err
}

func (m *memory) CountLogsAfter(_ context.Context, after string) (int64, error) {
	if err := checkLogBound(after); err != nil {
		return 0, fmt.Errorf("sessions: count logs after: %w", err)
	}
	return inOpen(m, func() (int64, error) {
		var n int64
		for _, c := range logClasses {
			l := m.logs[c]
			start := 0
			if after != "" {
				if start = logIndex(l, after); start < len(l) && l[start].id == after {
					start++
				}
			}
			n += int64(len(l) - start)
		}
		return n, nil
	})
}

// checkLease validates a LeaseLogCursor.
func checkLease(name, holder string, ttl time.Duration) error {
	if err := checkCursorName("name", name); err != nil {
		return err
	}
	if err := checkCursorName("holder", holder); err != nil {
		return err
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("sessions: log cursor lease %v must be at least 1ms", ttl)
	}
	return nil
}

// checkAdvance validates an AdvanceLogCursor.
func checkAdvance(name, holder, pos string) error {
	if err := checkCursorName("name", name); err != nil {
		return err
	}
	if err := checkCursorName("holder", holder); err != nil {
		return err
	}
	if err := checkLogID(pos); err != nil {
		return fmt.Errorf("sessions: advance log cursor %s: %w", name, err)
	}
	return nil
}

// cursorKeys are the Redis keys of cursor name: its position and its lease (one hash tag).
func (s *redisStore) cursorKeys(name string) []string {
	return []string{s.key(KindLogCursor, name+".pos"), s.key(KindLogCursor, name+".lease")}
}

// The cursor scripts: KEYS[1] the position, KEYS[2] the lease. Each is idempotent (a lease
// renewed, a position stored or a lease released twice by the same holder is the same), so
// go-redis may send one again after a lost reply.
var (
	// leaseCursorScript: ARGV[1] holder, ARGV[2] TTL in ms → {1, position} or {0, ""}.
	leaseCursorScript = redis.NewScript(`
local h = redis.call('GET', KEYS[2])
if h and h ~= ARGV[1] then return {0, ''} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('GET', KEYS[1]) or ''}
`)
	// advanceCursorScript: ARGV[1] holder, ARGV[2] position → 1 stored, 0 not the holder,
	// -1 a position below the stored one.
	advanceCursorScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local p = redis.call('GET', KEYS[1])
if p and ARGV[2] < p then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`)
	// releaseCursorScript: ARGV[1] holder.
	releaseCursorScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
`)
)

func (s *redisStore) LeaseLogCursor(ctx context.Context, name, holder string, ttl time.Duration) (string, error) {
	if err := checkLease(name, holder, ttl); err != nil {
		return "", err
	}
	res, err := leaseCursorScript.Run(ctx, s.c, s.cursorKeys(name), holder, ttl.Milliseconds()).Slice()
	if err != nil {
		return "", mapErr("lease log cursor", err)
	}
	if len(res) != 2 {
		return "", fmt.Errorf("sessions: redis lease log cursor: unexpected reply %v", res)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return "", fmt.Errorf("sessions: lease log cursor %s: %w", name, ErrConflict)
	}
	pos, _ := res[1].(string)
	return pos, nil
}

func (s *redisStore) AdvanceLogCursor(ctx context.Context, name, holder, pos string) error {
	if err := checkAdvance(name, holder, pos); err != nil {
		return err
	}
	n, err := advanceCursorScript.Run(ctx, s.c, s.cursorKeys(name), holder, pos).Int64()
	switch {
	case err != nil:
		return mapErr("advance log cursor", err)
	case n == 0:
		return fmt.Errorf("sessions: advance log cursor %s: %w", name, ErrConflict)
	case n < 0:
		return fmt.Errorf("sessions: advance log cursor %s: %w", name, errCursorBack)
	}
	return nil
}

func (s *redisStore) ReleaseLogCursor(ctx context.Context, name, holder string) error {
	if err := checkCursorName("name", name); err != nil {
		return err
	}
	if err := checkCursorName("holder", holder); err != nil {
		return err
	}
	return mapErr("release log cursor", releaseCursorScript.Run(ctx, s.c, s.cursorKeys(name), holder).Err())
}

func (s *redisStore) LogCursor(ctx context.Context, name string) (string, string, error) {
	if err := checkCursorName("name", name); err != nil {
		return "", "", err
	}
	vals, err := s.c.MGet(ctx, s.cursorKeys(name)...).Result()
	if err != nil {
		return "", "", mapErr("log cursor", err)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	return str(vals[0]), str(vals[1]), nil
}

func (s *redisStore) CountLogsAfter(ctx context.Context, after string) (int64, error) {
	if err := checkLogBound(after); err != nil {
		return 0, fmt.Errorf("sessions: count logs after: %w", err)
	}
	lo := "-"
	if after != "" {
		lo = "(" + after + "\x01" // member > X+"\x01" ⇔ ID > X
	}
	cmds := make([]*redis.IntCmd, 0, logSets)
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for sh := range s.logKeys {
			for _, c := range logClasses {
				cmds = append(cmds, p.ZLexCount(ctx, s.logKeys[sh][c], lo, "+"))
			}
		}
		for _, c := range logClasses {
			cmds = append(cmds, p.ZLexCount(ctx, s.legacyLogKeys[c], lo, "+"))
		}
		return nil
	})
	if err != nil {
		return 0, mapErr("count logs after", err)
	}
	var n int64
	for _, cmd := range cmds {
		n += cmd.Val()
	}
	return n, nil
}
