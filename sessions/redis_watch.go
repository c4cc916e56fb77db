package sessions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis watch of the connection and client records (ConnectionsWatcher): every write
// script PUBLISHes the version it reached (redis_conn.go) on one channel, which a watch
// SUBSCRIBEs to on a connection of its own. Classic (not sharded) Pub/Sub: on a Cluster a
// message reaches every node over the cluster bus, so a subscriber may sit on any node. Its
// hash tag {watch583} only steers go-redis, which subscribes on the master of the channel's
// slot: slot 12308, half the slot space away from {conn}'s 4121, so on a cluster whose
// masters hold equal ranges of slots the watch never shares a master with the records, and
// the failure of the master holding them does not also cut every replica's watch.
//
// Messages are lost while a subscriber is disconnected, and a half-open connection looks
// quiet, not broken. So the watch PINGs its connection every watchPing with the send time as
// payload: Redis answers in order, so the PONG says that every message published (on that
// node) before the PING was sent has been received, and the event it gives carries that time
// as Through. On a Cluster that node is not the records' master: a message the cluster bus
// lost between them goes unnoticed by the watch (callers read ConnectionsVersion now and
// then to bound that). A connection that answers no PING within watchDead is dropped and the watch
// subscribes again; every (re)subscription is reported as Changed.
const (
	watchPing  = 250 * time.Millisecond
	watchDead  = 3 * time.Second
	watchRetry = 2 * time.Second // the most a watch waits before subscribing again
)

// watchChannel is the channel of the writes under s.prefix.
func (s *redisStore) watchChannel() string { return s.prefix + ":conn:changed:{watch583}" }

func (s *redisStore) WatchConnections(ctx context.Context, report func(ConnectionsEvent)) error {
	wait := 50 * time.Millisecond
	for {
		up, err := s.watchOnce(ctx, report)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, redis.ErrClosed) {
			return fmt.Errorf("sessions: redis watch: %w", errClosedRedis)
		}
		if up {
			wait = 50 * time.Millisecond // it worked for a while: come back soon
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, watchRetry)
	}
}

var errClosedRedis = fmt.Errorf("%w: store closed", ErrUnavailable)

// watchOnce subscribes and reports until the subscription fails (up: it was confirmed).
func (s *redisStore) watchOnce(ctx context.Context, report func(ConnectionsEvent)) (up bool, err error) {
	ps := s.c.Subscribe(ctx, s.watchChannel())
	defer func() { _ = ps.Close() }()
	var sent time.Time // the PING awaiting its PONG (zero: none)
	last := time.Now() // when the last PING was sent, or the subscription began
	for ctx.Err() == nil {
		if up && sent.IsZero() && time.Since(last) >= watchPing {
			sent = time.Now()
			last = sent
			if err := ps.Ping(ctx, strconv.FormatInt(sent.UnixNano(), 10)); err != nil {
				return up, err
			}
		}
		if !sent.IsZero() && time.Since(sent) > watchDead {
			return up, errors.New("sessions: redis watch: no answer to PING")
		}
		if !up && time.Since(last) > watchDead {
			return up, errors.New("sessions: redis watch: SUBSCRIBE not confirmed")
		}
		msg, err := ps.ReceiveTimeout(ctx, watchPing)
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				continue
			}
			return up, err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				up = true
				last = time.Time{} // PING at once: the first Through
				report(ConnectionsEvent{Changed: true})
			}
		case *redis.Message:
			v, _ := strconv.ParseInt(m.Payload, 10, 64) // 0 when not a number: still a change
			report(ConnectionsEvent{Changed: true, Version: v})
		case *redis.Pong:
			if n, err := strconv.ParseInt(m.Payload, 10, 64); err == nil && !sent.IsZero() && n == sent.UnixNano() {
				report(ConnectionsEvent{Through: sent})
				sent = time.Time{}
			}
		}
	}
	return up, ctx.Err()
}
