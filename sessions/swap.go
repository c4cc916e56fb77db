package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// checkSwap validates a Swap: the compared record, every item and every deleted record valid,
// all under one hash tag, and no record both written and deleted.
func checkSwap(kind Kind, id string, put []Item, del []Ref) error {
	if kind == "" {
		return errors.New("sessions: empty kind")
	}
	if err := checkID(id); err != nil {
		return err
	}
	tag, _ := splitTag(id)
	written := make(map[string]bool, len(put))
	for i, it := range put {
		if err := checkRecord(it.Kind, it.ID, it.TTL); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
		if t, _ := splitTag(it.ID); t != tag {
			return fmt.Errorf("sessions: Swap records have different hash tags (%q, %q)", tag, t)
		}
		written[memKey(it.Kind, it.ID)] = true
	}
	for i, r := range del {
		if r.Kind == "" {
			return fmt.Errorf("delete %d: sessions: empty kind", i)
		}
		if err := checkID(r.ID); err != nil {
			return fmt.Errorf("delete %d: %w", i, err)
		}
		if t, _ := splitTag(r.ID); t != tag {
			return fmt.Errorf("sessions: Swap records have different hash tags (%q, %q)", tag, t)
		}
		if written[memKey(r.Kind, r.ID)] {
			return fmt.Errorf("sessions: Swap both writes and deletes %s %q", r.Kind, r.ID)
		}
	}
	return nil
}

func (m *memory) Swap(_ context.Context, kind Kind, id string, old []byte, put []Item, del []Ref) error {
	if err := checkSwap(kind, id, put, del); err != nil {
		return fmt.Errorf("sessions: swap %s: %w", kind, err)
	}
	return m.run(func() error { return m.swapLocked(kind, id, old, put, del) })
}

func (m *memory) SwapAndLog(_ context.Context, kind Kind, id string, old []byte, put []Item, del []Ref, logID string, event []byte, maxLen int) error {
	if err := checkSwapAndLog(kind, id, put, del, logID, maxLen); err != nil {
		return err
	}
	return m.run(func() error {
		if err := m.swapLocked(kind, id, old, put, del); err != nil {
			return err
		}
		m.appendLog(LogAudit, logID, event, maxLen)
		return nil
	})
}

// checkSwapAndLog validates a SwapAndLog: the batch as for Swap, the event's id and maxLen as
// for AppendLog.
func checkSwapAndLog(kind Kind, id string, put []Item, del []Ref, logID string, maxLen int) error {
	if err := checkSwap(kind, id, put, del); err != nil {
		return fmt.Errorf("sessions: swap and log %s: %w", kind, err)
	}
	if err := checkLogID(logID); err != nil {
		return fmt.Errorf("sessions: swap and log: %w", err)
	}
	if maxLen < 1 {
		return fmt.Errorf("sessions: swap and log: maxLen %d must be at least 1", maxLen)
	}
	return nil
}

// swapLocked is Swap with m's lock held.
func (m *memory) swapLocked(kind Kind, id string, old []byte, put []Item, del []Ref) error {
	now := m.now()
	cur, ok := m.live(memKey(kind, id), now)
	if !ok || !bytes.Equal(cur.value, old) {
		return fmt.Errorf("sessions: swap %s: %w", kind, ErrConflict)
	}
	// The batch is one step: the records it deletes make room for those it adds.
	n, byKind := m.added(put, now)
	for _, r := range del {
		if _, ok := m.live(memKey(r.Kind, r.ID), now); ok {
			n--
			byKind = m.countKind(byKind, r.Kind, -1)
		}
	}
	if err := m.room(n, byKind, now); err != nil {
		return fmt.Errorf("sessions: swap %s: %w", kind, err)
	}
	for _, r := range del {
		m.drop(memKey(r.Kind, r.ID))
	}
	for _, it := range put {
		m.set(it.Kind, it.ID, it.Value, it.TTL, now)
		m.wrote(now)
	}
	return nil
}

// swapLua compares KEYS[1] with ARGV[1]; when equal it SETs the next ARGV[2] keys (value,
// PX ttl pairs from ARGV[3]) and DELs the keys after them up to the key lastDel names. A
// missing key never equals ARGV[1] (GET answers false). Under maxmemory Redis refuses the
// first SET (nothing written yet), and allows the rest once a script has written, so the
// script never stops half-way.
func swapLua(lastDel string) string {
	return `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
for i = 1, n do
  redis.call('SET', KEYS[1 + i], ARGV[1 + 2 * i], 'PX', ARGV[2 + 2 * i])
end
for i = n + 2, ` + lastDel + ` do
  redis.call('DEL', KEYS[i])
end
`
}

// swapScript is Swap: swapLua over every key.
var swapScript = redis.NewScript(swapLua("#KEYS") + "return 1\n")

// swapAndLogScript is SwapAndLog: swapLua, then, when the swap happened, the event's append
// to the log set (the last key, the event's shard: ZADD of ARGV[#ARGV-1], then a trim to
// the ARGV[#ARGV] greatest ids, LogShardCap), in the same atomic step.
var swapAndLogScript = redis.NewScript(swapLua("#KEYS - 1") + `redis.call('ZADD', KEYS[#KEYS], 0, ARGV[#ARGV - 1])
redis.call('ZREMRANGEBYRANK', KEYS[#KEYS], 0, -tonumber(ARGV[#ARGV]) - 1)
return 1
`)

func (s *redisStore) Swap(ctx context.Context, kind Kind, id string, old []byte, put []Item, del []Ref) error {
	if err := checkSwap(kind, id, put, del); err != nil {
		return fmt.Errorf("sessions: swap %s: %w", kind, err)
	}
	keys, args := s.swapArgs(kind, id, old, put, del)
	return swapResult("swap", kind, runScriptOnce(ctx, s.c, swapScript, keys, args))
}

// SwapAndLog is one script on Redis single node or Sentinel. On Redis Cluster the log lives
// on its own slot: it returns an error wrapping errors.ErrUnsupported and changes nothing.
func (s *redisStore) SwapAndLog(ctx context.Context, kind Kind, id string, old []byte, put []Item, del []Ref, logID string, event []byte, maxLen int) error {
	if _, cluster := s.c.(*redis.ClusterClient); cluster {
		return fmt.Errorf("sessions: swap and log on Redis Cluster: %w", errors.ErrUnsupported)
	}
	if err := checkSwapAndLog(kind, id, put, del, logID, maxLen); err != nil {
		return err
	}
	keys, args := s.swapArgs(kind, id, old, put, del)
	keys = append(keys, s.logKeys[logShard(logID)][LogAudit])
	args = append(args, logMember(logID, event), strconv.Itoa(LogShardCap(maxLen)))
	err := swapResult("swap and log", kind, runScriptOnce(ctx, s.c, swapAndLogScript, keys, args))
	if err != nil && redis.HasErrorPrefix(err, "CROSSSLOT") {
		// A one-address client on a cluster-mode server refused the keys of two slots.
		return fmt.Errorf("sessions: swap and log: %w: %w", errors.ErrUnsupported, err)
	}
	return err
}

// swapArgs returns the keys and arguments of swapScript for a checked Swap.
func (s *redisStore) swapArgs(kind Kind, id string, old []byte, put []Item, del []Ref) ([]string, []any) {
	keys := make([]string, 0, 2+len(put)+len(del))
	args := make([]any, 0, 4+2*len(put))
	keys = append(keys, s.key(kind, id))
	args = append(args, old, strconv.Itoa(len(put)))
	for _, it := range put {
		keys = append(keys, s.key(it.Kind, it.ID))
		args = append(args, it.Value, strconv.FormatInt(max(1, it.TTL.Milliseconds()), 10))
	}
	for _, r := range del {
		keys = append(keys, s.key(r.Kind, r.ID))
	}
	return keys, args
}

// swapResult maps the answer of a swap script: 1 swapped, 0 ErrConflict.
func swapResult(op string, kind Kind, cmd *redis.Cmd) error {
	n, err := cmd.Int64()
	if err != nil {
		return mapErr(op+" "+string(kind), err)
	}
	if n != 1 {
		return fmt.Errorf("sessions: %s %s: %w", op, kind, ErrConflict)
	}
	return nil
}
