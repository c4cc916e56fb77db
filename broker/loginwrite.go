package broker

import (
	"context"
	"errors"
	"net/http"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// succeedWith stores the login records (the session and the code) and records ev as a
// successful login: in one atomic write when the event log lives in the same store and the
// store can batch (sessions.LogBatcher: Redis single node or Sentinel, memory), else PutAll
// then the event. The event's counters (logintally.go) go in the same write. An error means
// the login failed and ev is as before the call (the caller records the failure with it),
// but not always that nothing was stored: a write the store refused stored nothing, while
// one whose reply was lost (the connection dropped after it was sent, and again when the
// store sent it once more without the counters) may have stored the records and the event
// whole, never in part. The records are then unused (the code never reaches the app) and
// expire, and the log may hold this success beside the failure the caller records.
func (s *Server) succeedWith(r *http.Request, ev *logs.Event, items ...sessions.Item) error {
	if s.logBatch != nil {
		typ := ev.Type
		if typ != logs.TypeSuccessSilentAuth {
			ev.Type = logs.TypeSuccessLogin
		}
		traceEvent(r.Context(), ev) // details.trace_id of a traced request
		err := s.events.WriteWith(r.Context(), ev, func(ctx context.Context, id string, data []byte, maxLen int, t sessions.Tally) error {
			t0 := s.storeStart()
			var err error
			if tl, ok := s.logBatch.(sessions.Tallier); ok && len(t.Counts) > 0 {
				err = tl.PutAllAndLogTallied(ctx, id, data, maxLen, t, items...)
			} else {
				err = s.logBatch.PutAllAndLog(ctx, id, data, maxLen, items...)
			}
			traceStore(ctx, "put_all_and_log", itemsKind(items), t0, err)
			return err
		})
		if err == nil {
			s.metrics.login(ev)
			s.metrics.events.WithLabelValues(ev.Type).Inc()
			return nil
		}
		ev.Type = typ
		if !errors.Is(err, errors.ErrUnsupported) {
			return s.metrics.storeError("put all", err)
		}
	}
	if err := s.store.PutAll(r.Context(), items...); err != nil {
		return err
	}
	s.succeed(r, ev)
	return nil
}
