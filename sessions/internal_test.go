package sessions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The conformance suite runs from package sessions_test (suite_test.go); this file checks the
// memory backend's internals.

func TestKey(t *testing.T) {
	tests := []struct {
		name, prefix string
		kind         Kind
		id, want     string
	}{
		{name: "whole id is the tag", prefix: "p", kind: KindSession, id: "abc", want: "p:sess:{abc}"},
		{name: "tag before first dot", prefix: "dpop-broker", kind: KindCode, id: "abc.def", want: "dpop-broker:code:{abc}.def"},
		{name: "only first dot splits", prefix: "p", kind: KindTransaction, id: "a.b.c", want: "p:tx:{a}.b.c"},
		{name: "trailing dot kept", prefix: "p", kind: KindJTI, id: "a.", want: "p:jti:{a}."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Key(tc.prefix, tc.kind, tc.id); got != tc.want {
				t.Fatalf("Key(%q, %q, %q) = %q, want %q", tc.prefix, tc.kind, tc.id, got, tc.want)
			}
		})
	}
}

func TestMemorySweep(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := NewMemory().(*memory)
	m.now = func() time.Time { return now }
	ctx := t.Context()
	for i := range 100 {
		if err := m.Put(ctx, KindJTI, fmt.Sprint("old", i), []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Second)
	for i := range 2 * minSweep {
		if err := m.Put(ctx, KindJTI, fmt.Sprint("new", i), []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.Lock()
	n := len(m.recs)
	m.mu.Unlock()
	if n != 2*minSweep {
		t.Fatalf("after sweep %d records held, want %d live ones", n, 2*minSweep)
	}
}

func TestMemoryClosed(t *testing.T) {
	m := NewMemory()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := m.Ping(t.Context()); err == nil {
		t.Fatal("Ping after Close succeeded")
	}
}

// TestMemoryRecordLimitCountsLiveRecordsOnly: the limit is on live records (expired ones are
// swept when a write needs their room), replacing or taking a record is possible at the
// limit, and a batch counts each new key once.
func TestMemoryRecordLimitCountsLiveRecordsOnly(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := NewMemoryWithOptions(MemoryOptions{MaxRecords: 4}).(*memory)
	m.now = func() time.Time { return now }
	ctx := t.Context()
	put := func(id string, ttl time.Duration) error {
		return m.Put(ctx, KindTransaction, id, []byte(id), ttl)
	}
	for i := range 4 {
		if err := put(fmt.Sprint("short", i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := put("extra", time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("fifth record: %v, want ErrFull", err)
	}
	if err := put("short0", time.Second); err != nil {
		t.Fatalf("replacing a record at the limit: %v", err)
	}
	err := m.PutAll(ctx, Item{Kind: KindTransaction, ID: "short1", Value: []byte("changed"), TTL: time.Second},
		Item{Kind: KindCode, ID: "short1.c", Value: []byte("c"), TTL: time.Second})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("batch adding one record at the limit: %v, want ErrFull", err)
	}
	if v, _ := m.Get(ctx, KindTransaction, "short1"); string(v) != "short1" {
		t.Fatalf("a refused batch changed a record: %q", v)
	}
	if _, err := m.Take(ctx, KindTransaction, "short2"); err != nil {
		t.Fatalf("Take at the limit: %v", err)
	}
	if err := m.PutAll(ctx, Item{Kind: KindCode, ID: "dup", Value: []byte("1"), TTL: time.Hour},
		Item{Kind: KindCode, ID: "dup", Value: []byte("2"), TTL: time.Hour}); err != nil {
		t.Fatalf("a batch writing one new key twice into one free slot: %v", err)
	}

	now = now.Add(2 * time.Second) // the three short records left have expired
	for i := range 3 {
		if err := put(fmt.Sprint("new", i), time.Hour); err != nil {
			t.Fatalf("record %d after the others expired: %v", i, err)
		}
	}
	if err := put("over", time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("record beyond 4 live ones: %v, want ErrFull", err)
	}
	m.mu.Lock()
	n := len(m.recs)
	m.mu.Unlock()
	if n != 4 {
		t.Fatalf("%d records held, want the 4 live ones", n)
	}
}

func TestTalliedWriteSendsItsIncrementsAgainOnlyWhenTheyWereRefused(t *testing.T) {
	loading := serverReply("LOADING Redis is loading the dataset in memory")
	oom := serverReply("OOM command not allowed when used memory > 'maxmemory'")
	lost := io.ErrUnexpectedEOF
	tests := []struct {
		name      string
		writeErr  error // the first write's error
		tallyErr  error // its increments' own command's error
		wantSends []bool
		wantErr   bool
	}{
		{name: "written", wantSends: []bool{true}},
		{name: "the whole write refused is sent again whole", writeErr: loading, tallyErr: loading, wantSends: []bool{true, true}},
		{name: "the log write refused but the increments ran: sent again without them", writeErr: loading, wantSends: []bool{true, false}},
		{name: "reply lost: sent again without the increments", writeErr: lost, tallyErr: lost, wantSends: []bool{true, false}},
		{name: "reply of the log write lost, increments refused: sent again with them", writeErr: lost, tallyErr: loading, wantSends: []bool{true, true}},
		{name: "the server answered: not sent again", writeErr: oom, tallyErr: oom, wantSends: []bool{true}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sends []bool
			err := writeTallied(context.Background(), Tally{Counts: map[string]int64{"s": 1}}, func(tl Tally) (*redis.Cmd, error) {
				sends = append(sends, len(tl.Counts) > 0)
				cmd := redis.NewCmd(context.Background(), "eval")
				if len(sends) == 1 {
					cmd.SetErr(tt.tallyErr)
					return cmd, tt.writeErr
				}
				return cmd, nil
			})
			if !slices.Equal(sends, tt.wantSends) {
				t.Errorf("sends with increments = %v, want %v", sends, tt.wantSends)
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// serverReply is an error reply of a Redis server (a redis.Error).
type serverReply string

func (e serverReply) Error() string { return string(e) }
func (serverReply) RedisError()     {}
