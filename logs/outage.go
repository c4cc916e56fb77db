package logs

import (
	"context"
	"errors"
	"log/slog"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// While the store is down, every request that needs it fails, and each failure site logs its
// warning ("store operation failed", "login event not stored", "readiness check failed", …):
// several lines per request, for as long as the outage lasts. The Redis store reports the
// outage itself, once when it begins and once when it ends ("store unavailable", "store
// recovered": sessions' redis_health.go). StoreOutageHandler writes the per-request lines at
// DEBUG instead, so the log says what happened in two lines and still has the details for
// whoever turns DEBUG on.

// StoreOutageHandler is a slog.Handler that lowers to DEBUG each record at WARN or above
// carrying an error attribute (slog.Any with an error value, at any depth of groups) that
// means the store is unreachable: errors.Is sessions.ErrUnavailable, but not ErrFull (a full
// store is no outage the store reports; its lines keep their level) nor an error marked with
// KeepLevel. Other records pass untouched. It is safe for concurrent use.
type StoreOutageHandler struct {
	next slog.Handler
}

// KeepLevel marks err so that StoreOutageHandler keeps the level of a line carrying it: for
// the lines that say what an outage left undone and that matter one by one (a session not
// ended at logout, a refresh-token family not revoked, a rollback not made), as opposed to
// a request that merely failed. errors.Is and errors.As see err through it, and it is
// written as err's text.
func KeepLevel(err error) error {
	if err == nil {
		return nil
	}
	return keptLevel{err}
}

type keptLevel struct{ err error }

func (k keptLevel) Error() string { return k.err.Error() }
func (k keptLevel) Unwrap() error { return k.err }

// NewStoreOutageHandler returns a StoreOutageHandler in front of next.
func NewStoreOutageHandler(next slog.Handler) *StoreOutageHandler {
	return &StoreOutageHandler{next: next}
}

// Enabled reports whether next handles level; a record it lowers is checked again at DEBUG.
func (h *StoreOutageHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes r on, at DEBUG when it reports a store outage (and only when next handles
// DEBUG).
func (h *StoreOutageHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn || !carriesOutage(r) {
		return h.next.Handle(ctx, r)
	}
	if !h.next.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	d := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		d.AddAttrs(a)
		return true
	})
	return h.next.Handle(ctx, d)
}

// WithAttrs returns a StoreOutageHandler whose next handler has attrs.
func (h *StoreOutageHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &StoreOutageHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns a StoreOutageHandler whose next handler opens group.
func (h *StoreOutageHandler) WithGroup(name string) slog.Handler {
	return &StoreOutageHandler{next: h.next.WithGroup(name)}
}

// carriesOutage reports whether an attribute of r is an error of an unreachable store and
// none is marked with KeepLevel.
func carriesOutage(r slog.Record) bool {
	outage, kept := false, false
	r.Attrs(func(a slog.Attr) bool {
		o, k := outageAttr(a)
		outage, kept = outage || o, kept || k
		return !kept
	})
	return outage && !kept
}

// outageAttr reports whether a (or an attribute of its group) is an error of an unreachable
// store, and whether one is marked with KeepLevel.
func outageAttr(a slog.Attr) (outage, kept bool) {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		for _, g := range v.Group() {
			o, k := outageAttr(g)
			outage, kept = outage || o, kept || k
		}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			var k keptLevel
			kept = errors.As(err, &k)
			outage = errors.Is(err, sessions.ErrUnavailable) && !errors.Is(err, sessions.ErrFull)
		}
	}
	return outage, kept
}
