// Package logs holds the login-event model (types s, f, …), writes events as JSON lines to
// slog and to the store-backed log, and reads them back.
package logs

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync/atomic"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Event type codes, as the identity SaaS names them.
const (
	TypeSuccessLogin    = "s"
	TypeFailedLogin     = "f"
	TypeSuccessExchange = "seacft"
	TypeFailedExchange  = "feacft"
	// Refresh-token exchanges: success, failure, and reuse of a rotated refresh token.
	TypeSuccessRefresh        = "sertft"
	TypeFailedRefresh         = "fertft"
	TypeFailedRotatingRefresh = "ferrt"
	TypeSuccessLogout         = "slo"
	TypeSuccessAPI            = "sapi"
	TypeFailedAPI             = "fapi"
)

// Event is one log entry (DESIGN.md §4). It never carries a token, code, proof, secret or key.
type Event struct {
	LogID        string         `json:"log_id"`
	Date         string         `json:"date"` // RFC 3339 UTC with milliseconds
	Type         string         `json:"type"`
	Description  string         `json:"description"`
	Connection   string         `json:"connection,omitempty"`
	ConnectionID string         `json:"connection_id,omitempty"`
	Strategy     string         `json:"strategy,omitempty"`
	StrategyType string         `json:"strategy_type,omitempty"`
	ClientID     string         `json:"client_id,omitempty"`
	ClientName   string         `json:"client_name,omitempty"`
	IP           string         `json:"ip,omitempty"`
	UserAgent    string         `json:"user_agent,omitempty"`
	UserID       string         `json:"user_id,omitempty"`
	UserName     string         `json:"user_name,omitempty"`
	Hostname     string         `json:"hostname,omitempty"`
	Details      map[string]any `json:"details,omitempty"`
}

// Description returns the SaaS's description for a type code ("Success Login", …).
func Description(typ string) string { return descriptions[typ] }

// descriptions is the SaaS code table (reference.md §A2) for the codes the broker may emit.
var descriptions = map[string]string{
	TypeSuccessLogin:          "Success Login",
	TypeFailedLogin:           "Failed Login",
	TypeSuccessExchange:       "Success Exchange",
	TypeFailedExchange:        "Failed Exchange",
	TypeSuccessRefresh:        "Success Exchange (Refresh Token for Access Token)",
	TypeFailedRefresh:         "Failed Exchange (Refresh Token for Access Token)",
	TypeFailedRotatingRefresh: "Failed Exchange (Rotating Refresh Token reused)",
	TypeSuccessLogout:         "Success Logout",
	TypeSuccessAPI:            "Success API Operation",
	TypeFailedAPI:             "Failed API Operation",
	"flo":                     "Failed Logout",
}

// NewLogID returns a 56-digit decimal id that sorts in creation order (time first, then a
// per-process sequence and random digits).
//
// Layout: 20 digits of Unix nanoseconds, 12 digits of a per-process counter (so ids from one
// process are strictly increasing for equal times), 24 random digits (unique across replicas).
func NewLogID(now time.Time) string {
	ns := max(now.UnixNano(), 0)
	seq := logSeq.Add(1) % 1e12
	var r [10]byte         // 80 bits ≥ 24 decimal digits' worth after reduction
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails
	rnd := new(big.Int).SetBytes(r[:])
	rnd.Mod(rnd, big24)
	return fmt.Sprintf("%020d%012d%024d", ns, seq, rnd)
}

var (
	logSeq atomic.Uint64
	big24  = new(big.Int).Exp(big.NewInt(10), big.NewInt(24), nil)
)

// dateLayout is RFC 3339 in UTC with milliseconds, as the SaaS prints log dates.
const dateLayout = "2006-01-02T15:04:05.000Z"

// DefaultMaxLen is the store-backed log's retention by count when Writer.MaxLen is 0.
const DefaultMaxLen = 10000

// Writer records events: one JSON line through slog (always) and one entry in the store's log
// (when Store is set). Write fills LogID, Date, Description, Hostname and StrategyType
// ("enterprise" when Strategy is set) when empty.
type Writer struct {
	Logger   *slog.Logger
	Store    sessions.Store
	MaxLen   int // store retention by count, default 10000
	Hostname string
	Now      func() time.Time
	// MaxAge is the store retention by age: default DefaultMaxAge (30 days); negative keeps
	// events until MaxLen pushes them out. Write trims at most once a minute; reads never
	// return older events.
	MaxAge time.Duration
	// Settle, when positive, holds back from checkpoint reads and Follow the events younger
	// than Settle: set it (about a second) when several brokers write to one store, so that
	// an event another replica is still storing cannot be passed by a reader's cursor.
	// Events this Writer is storing are always held back, whatever Settle.
	Settle time.Duration

	state writerState // in-flight ids and trim schedule (search.go)
}

// Write records ev. A store failure is returned (and logged) but the slog line is always
// written first.
// What is written carries Redact(ev.Details): normalized through JSON and stripped of
// secret-looking keys and JWT-like values; ev.Details itself is left as the caller built it.
func (w *Writer) Write(ctx context.Context, ev *Event) error {
	if ev == nil {
		return errors.New("logs: nil event")
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	t := now()
	release := w.track(ev, &t, now) // assigns ev.LogID (re-reading the clock) when empty; held until stored
	defer release()
	if ev.LogID == "" {
		ev.LogID = NewLogID(t)
	}
	if ev.Date == "" {
		ev.Date = t.UTC().Format(dateLayout)
	}
	if ev.Description == "" {
		ev.Description = Description(ev.Type)
	}
	if ev.Hostname == "" {
		ev.Hostname = w.Hostname
	}
	if ev.StrategyType == "" && ev.Strategy != "" {
		ev.StrategyType = "enterprise"
	}
	out := *ev // what is written: ev with its details redacted; ev.Details stays the caller's
	out.Details = Redact(ev.Details)

	logger := w.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.LogAttrs(ctx, slog.LevelInfo, "login_event", out.attrs()...)

	if w.Store == nil {
		return nil
	}
	data, err := json.Marshal(&out)
	if err != nil {
		return fmt.Errorf("logs: encode event %s: %w", ev.LogID, err)
	}
	maxLen := w.MaxLen
	if maxLen <= 0 {
		maxLen = DefaultMaxLen
	}
	if err := w.Store.AppendLog(ctx, ev.LogID, data, maxLen); err != nil {
		logger.LogAttrs(ctx, slog.LevelError, "login_event_store_failed",
			slog.String("log_id", ev.LogID), slog.String("error", err.Error()))
		return fmt.Errorf("logs: store event %s: %w", ev.LogID, err)
	}
	w.maybeTrim(ctx, t)
	return nil
}

// attrs returns the event as slog attributes named like its JSON fields (empty optional
// fields left out, as in the JSON form).
func (ev *Event) attrs() []slog.Attr {
	a := []slog.Attr{
		slog.String("log_id", ev.LogID),
		slog.String("date", ev.Date),
		slog.String("type", ev.Type),
		slog.String("description", ev.Description),
	}
	for _, f := range []struct{ k, v string }{
		{"connection", ev.Connection},
		{"connection_id", ev.ConnectionID},
		{"strategy", ev.Strategy},
		{"strategy_type", ev.StrategyType},
		{"client_id", ev.ClientID},
		{"client_name", ev.ClientName},
		{"ip", ev.IP},
		{"user_agent", ev.UserAgent},
		{"user_id", ev.UserID},
		{"user_name", ev.UserName},
		{"hostname", ev.Hostname},
	} {
		if f.v != "" {
			a = append(a, slog.String(f.k, f.v))
		}
	}
	if len(ev.Details) > 0 {
		a = append(a, slog.Any("details", ev.Details))
	}
	return a
}

// Recent returns up to limit events from the store, newest first, older than before ("" =
// newest).
// Entries that do not decode are skipped (and reported through the logger).
func (w *Writer) Recent(ctx context.Context, before string, limit int) ([]Event, error) {
	if w.Store == nil {
		return nil, errors.New("logs: no store configured")
	}
	raw, err := w.Store.Logs(ctx, before, limit)
	if err != nil {
		return nil, fmt.Errorf("logs: read events: %w", err)
	}
	out := make([]Event, 0, len(raw))
	for _, r := range raw {
		var ev Event
		if err := json.Unmarshal(r, &ev); err != nil {
			logger := w.Logger
			if logger == nil {
				logger = slog.Default()
			}
			logger.LogAttrs(ctx, slog.LevelWarn, "login_event_undecodable", slog.Int("bytes", len(r)), slog.String("error", err.Error()))
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}
