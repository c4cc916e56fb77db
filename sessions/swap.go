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
	return m.run(func() error {
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
	})
}

// swapScript compares KEYS[1] with ARGV[1]; when equal it SETs the next ARGV[2] keys (value,
// PX ttl pairs from ARGV[3]) and DELs the keys after them. A missing key never equals ARGV[1]
// (GET answers false). Under maxmemory Redis refuses the first SET (nothing written yet), and
// allows the rest once a script has written, so the script never stops half-way.
var swapScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
for i = 1, n do
  redis.call('SET', KEYS[1 + i], ARGV[1 + 2 * i], 'PX', ARGV[2 + 2 * i])
end
for i = n + 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
return 1
`)

func (s *redisStore) Swap(ctx context.Context, kind Kind, id string, old []byte, put []Item, del []Ref) error {
	if err := checkSwap(kind, id, put, del); err != nil {
		return fmt.Errorf("sessions: swap %s: %w", kind, err)
	}
	keys := make([]string, 0, 1+len(put)+len(del))
	args := make([]any, 0, 2+2*len(put))
	keys = append(keys, s.key(kind, id))
	args = append(args, old, strconv.Itoa(len(put)))
	for _, it := range put {
		keys = append(keys, s.key(it.Kind, it.ID))
		args = append(args, it.Value, strconv.FormatInt(max(1, it.TTL.Milliseconds()), 10))
	}
	for _, r := range del {
		keys = append(keys, s.key(r.Kind, r.ID))
	}
	n, err := swapScript.Run(ctx, s.c, keys, args...).Int64()
	if err != nil {
		return mapErr("swap "+string(kind), err)
	}
	if n != 1 {
		return fmt.Errorf("sessions: swap %s: %w", kind, ErrConflict)
	}
	return nil
}
