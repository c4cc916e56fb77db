package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
	"github.com/dpop-broker/dpop-broker/sessions/storetest"
)

func TestRedisConformance(t *testing.T) {
	addr := redistest.Start(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) sessions.Store {
		s, err := sessions.NewRedis(sessions.RedisConfig{
			Addrs:  []string{addr},
			Prefix: fmt.Sprintf("conf%d", n.Add(1)), // isolates each subtest, log included
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func newRedis(t *testing.T, addr string, timeout time.Duration) sessions.Store {
	t.Helper()
	s, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{addr}, Prefix: "t", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// allOps calls every Store method and returns its error by name.
func allOps(ctx context.Context, s sessions.Store) map[string]error {
	errs := map[string]error{
		"Create":    s.Create(ctx, sessions.KindJTI, "j", []byte("v"), time.Minute),
		"Put":       s.Put(ctx, sessions.KindSession, "s", []byte("v"), time.Minute),
		"PutAll":    s.PutAll(ctx, sessions.Item{Kind: sessions.KindCode, ID: "c.1", Value: []byte("v"), TTL: time.Minute}),
		"Delete":    s.Delete(ctx, sessions.KindSession, "s"),
		"AppendLog": s.AppendLog(ctx, fmt.Sprintf("%056d", 1), []byte("{}"), 10),
		"Ping":      s.Ping(ctx),
	}
	_, errs["Get"] = s.Get(ctx, sessions.KindSession, "s")
	_, errs["Take"] = s.Take(ctx, sessions.KindCode, "c.1")
	_, errs["Logs"] = s.Logs(ctx, "", 10)
	return errs
}

func TestRedisUnavailable(t *testing.T) {
	srv := redistest.StartServer(t)
	s := newRedis(t, srv.Addr, 200*time.Millisecond)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping while up: %v", err)
	}
	srv.Stop()
	for op, err := range allOps(t.Context(), s) {
		if !errors.Is(err, sessions.ErrUnavailable) {
			t.Errorf("%s with Redis stopped = %v, want ErrUnavailable", op, err)
		}
	}

	// Nothing listening at all, and a caller deadline that has passed.
	s2 := newRedis(t, srv.Addr, 0)
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err := s2.Get(ctx, sessions.KindSession, "s"); !errors.Is(err, sessions.ErrUnavailable) {
		t.Errorf("Get with expired context = %v, want ErrUnavailable", err)
	}

	// The store recovers when Redis comes back (empty: no persistence).
	srv.Restart()
	var err error
	for range 50 { // pooled connections to the old process may fail once
		if err = s.Put(t.Context(), sessions.KindSession, "s", []byte("v"), time.Minute); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
	if _, err := s.Get(t.Context(), sessions.KindSession, "s"); err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
}

func TestRedisBadRequestIsNotUnavailable(t *testing.T) {
	addr := redistest.Start(t)
	s := newRedis(t, addr, 0)
	// Make the log key the wrong type: a server-side refusal, not an outage.
	if err := s.Put(t.Context(), "log", "log", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	err := s.AppendLog(t.Context(), fmt.Sprintf("%056d", 1), []byte("{}"), 10)
	if err == nil || errors.Is(err, sessions.ErrUnavailable) {
		t.Fatalf("AppendLog on a WRONGTYPE key = %v, want a non-ErrUnavailable error", err)
	}
}

func TestNewRedisConfig(t *testing.T) {
	for _, cfg := range []sessions.RedisConfig{
		{},
		{Addrs: []string{""}},
		{Addrs: []string{"127.0.0.1:1"}, Prefix: "a{b}"},
	} {
		if _, err := sessions.NewRedis(cfg); err == nil {
			t.Errorf("NewRedis(%+v) succeeded", cfg)
		}
	}
}
