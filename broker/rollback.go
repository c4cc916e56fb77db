package broker

import (
	"context"
	"errors"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// undoTimeout bounds a rollback, which runs even when the request has been cancelled.
const undoTimeout = 3 * time.Second

// undoSwap rolls back a Swap that failed after it may have been applied: the store timed out
// or dropped the connection (ErrUnavailable), so the write may have happened without the
// answer reaching the broker. If (kind, id) holds applied (what that Swap wrote there), the
// records in restore are put back and those in remove deleted, in one Swap, so that the
// client's retry finds the grant as it was instead of counting as reuse. ErrFull, ErrConflict
// and refused batches wrote nothing: there is nothing to undo. Best effort: a failed rollback
// is logged (the retry then counts as reuse).
func (s *Server) undoSwap(ctx context.Context, what string, cause error, kind sessions.Kind, id string, applied []byte, restore []sessions.Item, remove []sessions.Ref) {
	if !storeDown(cause) || storeFull(cause) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	err := s.store.Swap(ctx, kind, id, applied, restore, remove)
	switch {
	case err == nil:
		s.log.Warn(what+" rolled back after a store failure", "cause", cause)
	case errors.Is(err, sessions.ErrConflict):
		// The failed write never happened (or was already undone): the grant is as it was.
	default:
		s.log.Error(what+" not rolled back after a store failure: the client's retry will count as reuse", "cause", cause, "err", logs.KeepLevel(err))
	}
}
