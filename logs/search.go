package logs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Paging limits of GET /api/v2/logs (the identity SaaS's).
const (
	DefaultPerPage = 50   // search mode page size when Query.PerPage is 0
	MaxPerPage     = 100  // largest search page
	MaxReachable   = 1000 // search mode reaches only the first 1000 matches
	DefaultTake    = 50   // checkpoint page size when Query.Take is 0
	MaxTake        = 100  // largest checkpoint page
)

// DefaultMaxAge is the store retention by age when Writer.MaxAge is 0.
const DefaultMaxAge = 30 * 24 * time.Hour

// DefaultPoll is Follow's polling interval when poll is not positive.
const DefaultPoll = time.Second

// trimEvery spaces the age trims that Write performs.
const trimEvery = time.Minute

// scanBatch is how many entries one store read returns while scanning; maxScanBatches bounds
// a scan far above any retention (DefaultMaxLen is 10,000).
const (
	scanBatch      = 256
	maxScanBatches = 1 << 14
)

// Query selects events for Search, in one of two modes (those of the identity SaaS's log API).
//
// Search mode (the default): events matching Q, sorted by Sort ("date:-1", newest first, is
// the default; "date:1" is oldest first; log_id sorts the same way), page Page (0-based) of
// PerPage (default 50, at most 100). Only the first MaxReachable matches can be reached.
// Newest-first pages move while events arrive: an event written between two page reads
// pushes the older ones down, so the next page repeats the last event(s) of the previous one
// (none is skipped); events that age out of retention likewise shift oldest-first pages.
// Callers that must see every event exactly once use checkpoint mode. Before and After, when
// set, are log ids that bound the events searched (exclusive): the console pages by Before
// (the last event shown) and turns a time range into both with MinLogID; the identity SaaS's
// API has no such parameters.
//
// Checkpoint mode (Checkpoint set, or From or Take non-zero): up to Take events (default 50,
// at most 100) with a log_id strictly above From, ascending by log_id; From "" starts at the
// oldest retained event. Page and Sort are ignored; Q, when set, is applied (the HTTP API
// leaves it empty: the identity SaaS's API ignores q in this mode). Passing the last returned log_id as the
// next From visits every event once, with no duplicates and no gaps, while events are being
// written: ids never change, and an event that this Writer is still storing holds back every
// event after it (see Writer.Settle for other replicas writing to the same store).
type Query struct {
	Q string
	// Filter, when set, is Q already parsed (ParseQuery): Search uses it and does not parse Q
	// again.
	Filter  *Filter
	Page    int
	PerPage int
	Sort    string
	Before  string
	After   string

	From       string
	Take       int
	Checkpoint bool
}

// filter is q's Filter, else its Q parsed.
func (q *Query) filter() (Filter, error) {
	if q.Filter != nil {
		return *q.Filter, nil
	}
	return ParseQuery(q.Q)
}

// checkpoint reports whether q selects checkpoint mode.
func (q *Query) checkpoint() bool { return q.Checkpoint || q.From != "" || q.Take != 0 }

// MinLogID returns the smallest log id that NewLogID can return for t: ids below it belong to
// events recorded before t.
func MinLogID(t time.Time) string {
	return fmt.Sprintf("%020d%036d", max(t.UnixNano(), 0), 0)
}

// validLogID reports whether id has the shape of a log id (sessions.LogIDLen digits).
func validLogID(id string) bool {
	if len(id) != sessions.LogIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
	}
	return true
}

// recentIDs is how many of the latest generated ids a Writer remembers for its readers.
const recentIDs = 1024

// writerState is the Writer's mutable bookkeeping: the ids it is storing right now, the ids it
// generated lately, and the time of its last age trim.
type writerState struct {
	mu       sync.Mutex
	inflight map[string]int // log id → number of Writes storing it
	gen      uint64         // ids tracked so far
	recent   [recentIDs]string
	lastTime time.Time // time of the last id generated
	trimmed  bool
	lastTrim time.Time
}

// readSnap is what a checkpoint reader notes before one store read.
type readSnap struct {
	gen     uint64
	minLive string // smallest id in flight ("" = none)
}

func (w *Writer) clock() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func (w *Writer) logger() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

// eventLogger is where the events' lines go: EventLogger, else logger.
func (w *Writer) eventLogger() *slog.Logger {
	if w.EventLogger != nil {
		return w.EventLogger
	}
	return w.logger()
}

func (w *Writer) maxAge() time.Duration {
	if w.MaxAge == 0 {
		return DefaultMaxAge
	}
	return w.MaxAge
}

// track gives ev its log id when empty and marks the id in flight until release is called,
// so that checkpoint reads do not pass it before it is stored. The id is generated under the
// lock from a fresh clock reading (stored in *t), never earlier than the previous one.
func (w *Writer) track(ev *Event, t *time.Time, now func() time.Time) (release func()) {
	if w.Store == nil {
		return func() {}
	}
	st := &w.state
	st.mu.Lock()
	defer st.mu.Unlock()
	if ev.LogID == "" {
		*t = now()
		if t.Before(st.lastTime) {
			*t = st.lastTime // the clock stepped back
		}
		st.lastTime = *t
		ev.LogID = NewLogID(*t)
	}
	id := ev.LogID
	if st.inflight == nil {
		st.inflight = make(map[string]int)
	}
	st.inflight[id]++
	st.gen++
	st.recent[st.gen%recentIDs] = id
	return func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.inflight[id]--; st.inflight[id] <= 0 {
			delete(st.inflight, id)
		}
	}
}

// beforeRead notes, before a checkpoint read of the store, which ids this Writer has in
// flight and how many it has generated.
func (w *Writer) beforeRead() readSnap {
	st := &w.state
	st.mu.Lock()
	defer st.mu.Unlock()
	snap := readSnap{gen: st.gen}
	for id := range st.inflight {
		if snap.minLive == "" || id < snap.minLive {
			snap.minLive = id
		}
	}
	return snap
}

// afterRead returns the id at which the entries of a read begun at snap must stop ("" = no
// limit): an id still in flight when the read began may be stored after an id above it was
// read, and so may an id this Writer generated during the read; stopping below both means a
// cursor never passes an event that is still to be stored. Settle adds a horizon for other
// Writers sharing the store.
func (w *Writer) afterRead(snap readSnap, now time.Time) string {
	limit := snap.minLive
	lower := func(id string) {
		if limit == "" || id < limit {
			limit = id
		}
	}
	st := &w.state
	st.mu.Lock()
	switch n := st.gen - snap.gen; {
	case n > recentIDs:
		// Too many writes during the read to know their ids: keep nothing new.
		lower(MinLogID(time.Unix(0, 0)))
	default:
		for g := snap.gen + 1; g <= st.gen; g++ {
			lower(st.recent[g%recentIDs])
		}
	}
	st.mu.Unlock()
	if w.Settle > 0 {
		// Events at or before now-Settle are settled: stop at the first id after it.
		lower(MinLogID(now.Add(-w.Settle + time.Nanosecond)))
	}
	return limit
}

// trimClasses removes, in each class with an age retention, the events older than it.
func (w *Writer) trimClasses(ctx context.Context, now time.Time) error {
	var errs []error
	for c, floor := range w.floorsAt(now) {
		if floor == "" {
			continue
		}
		if err := w.Store.TrimLogs(ctx, sessions.LogClass(c), floor); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// maybeTrim removes the events older than their class's age retention (MaxAge,
// UnauthenticatedMaxAge, AdminMaxAge), at most once per trimEvery of the Writer's clock. A failure is
// logged only: the event itself was stored.
func (w *Writer) maybeTrim(ctx context.Context, t time.Time) {
	st := &w.state
	st.mu.Lock()
	due := !st.trimmed || t.Sub(st.lastTrim) >= trimEvery || t.Before(st.lastTrim)
	if due {
		st.trimmed, st.lastTrim = true, t
	}
	st.mu.Unlock()
	if !due {
		return
	}
	if err := w.trimClasses(ctx, t); err != nil {
		w.logger().LogAttrs(ctx, slog.LevelWarn, "login_event_trim_failed", slog.Any("error", err))
	}
}

// Trim removes the events older than their class's age retention from the store now (Write
// also does it, at most once a minute).
func (w *Writer) Trim(ctx context.Context) error {
	if w.Store == nil {
		return errors.New("logs: no store configured")
	}
	if err := w.trimClasses(ctx, w.clock()); err != nil {
		return fmt.Errorf("logs: trim: %w", err)
	}
	return nil
}

// decode decodes one stored entry, logging and skipping what does not decode.
func (w *Writer) decode(ctx context.Context, e sessions.LogEntry) (*Event, bool) {
	ev := new(Event)
	if err := json.Unmarshal(e.Event, ev); err != nil {
		w.logger().LogAttrs(ctx, slog.LevelWarn, "login_event_undecodable",
			slog.String("log_id", e.ID), slog.Int("bytes", len(e.Event)), slog.String("error", err.Error()))
		return nil, false
	}
	ev.LogID = e.ID
	return ev, true
}

// scanAfter calls fn for each event above cursor, ascending, that is not older than its
// class's floor, until fn returns false. With hold set it stops before any event this Writer may still be
// storing, and before unsettled ones (afterRead). It returns the id of the last entry it
// consumed (cursor when none), from which a later scan continues.
func (w *Writer) scanAfter(ctx context.Context, cursor string, floor floors, hold bool, f Filter, fn func(*Event) bool) (string, error) {
	for range maxScanBatches {
		var snap readSnap
		if hold {
			snap = w.beforeRead()
		}
		es, err := w.Store.LogsAfter(ctx, cursor, scanBatch)
		if err != nil {
			return cursor, fmt.Errorf("logs: read events after %q: %w", cursor, err)
		}
		limit := ""
		if hold {
			limit = w.afterRead(snap, w.clock())
		}
		for _, e := range es {
			if limit != "" && e.ID >= limit {
				return cursor, nil
			}
			cursor = e.ID
			if floor.expired(e) {
				continue
			}
			if !f.mayMatch(e.Event) {
				continue
			}
			if ev, ok := w.decode(ctx, e); ok && !fn(ev) {
				return cursor, nil
			}
		}
		if len(es) < scanBatch {
			return cursor, nil
		}
	}
	return cursor, fmt.Errorf("logs: scan stopped after %d entries", scanBatch*maxScanBatches)
}

// scanBefore calls fn for each event below before ("" = from the newest) and above after,
// not older than its class's floor, newest first, until fn returns false. Both scans skip
// without decoding the entries that f cannot match.
func (w *Writer) scanBefore(ctx context.Context, before, after string, floor floors, f Filter, fn func(*Event) bool) error {
	lowest := max(floor.lowest(), after)
	cursor := before
	for range maxScanBatches {
		es, err := w.Store.LogsBefore(ctx, cursor, scanBatch)
		if err != nil {
			return fmt.Errorf("logs: read events before %q: %w", cursor, err)
		}
		for _, e := range es {
			if e.ID < lowest || after != "" && e.ID <= after {
				return nil // older than any class keeps, or than the search's lower bound
			}
			cursor = e.ID
			if floor.expired(e) || !f.mayMatch(e.Event) {
				continue
			}
			if ev, ok := w.decode(ctx, e); ok && !fn(ev) {
				return nil
			}
		}
		if len(es) < scanBatch {
			return nil
		}
	}
	return fmt.Errorf("logs: scan stopped after %d entries", scanBatch*maxScanBatches)
}

// parseSort returns whether s sorts newest first.
func parseSort(s string) (desc bool, err error) {
	switch strings.TrimSpace(s) {
	case "", "date:-1", "log_id:-1":
		return true, nil
	case "date:1", "log_id:1":
		return false, nil
	}
	return false, fmt.Errorf("%w: sort %q not supported (use date:-1 or date:1)", ErrInvalidQuery, s)
}

// Search returns the events q selects (see Query for its two modes). Malformed input is
// refused with an error wrapping ErrInvalidQuery (ErrQueryTooLong for an over-long q); events
// older than MaxAge are never returned.
func (w *Writer) Search(ctx context.Context, q Query) ([]Event, error) {
	if w.Store == nil {
		return nil, errors.New("logs: no store configured")
	}
	f, err := q.filter()
	if err != nil {
		return nil, err
	}
	now := w.clock()
	floor := w.floorsAt(now)
	if q.checkpoint() {
		take := q.Take
		switch {
		case take == 0:
			take = DefaultTake
		case take < 0 || take > MaxTake:
			return nil, fmt.Errorf("%w: take %d not in 1..%d", ErrInvalidQuery, q.Take, MaxTake)
		}
		if q.From != "" && !validLogID(q.From) {
			return nil, fmt.Errorf("%w: from is not a log_id", ErrInvalidQuery)
		}
		out := make([]Event, 0, take)
		_, err := w.scanAfter(ctx, q.From, floor, true, f, func(ev *Event) bool {
			if f.Match(ev) {
				out = append(out, *ev)
			}
			return len(out) < take
		})
		return out, err
	}

	perPage := q.PerPage
	switch {
	case perPage == 0:
		perPage = DefaultPerPage
	case perPage < 0 || perPage > MaxPerPage:
		return nil, fmt.Errorf("%w: per_page %d not in 1..%d", ErrInvalidQuery, q.PerPage, MaxPerPage)
	}
	if q.Page < 0 || q.Page >= MaxReachable || q.Page*perPage >= MaxReachable {
		return nil, fmt.Errorf("%w: page %d of %d is past the first %d results; use from/take",
			ErrInvalidQuery, q.Page, perPage, MaxReachable)
	}
	desc, err := parseSort(q.Sort)
	if err != nil {
		return nil, err
	}
	for _, id := range []string{q.Before, q.After} {
		if id != "" && !validLogID(id) {
			return nil, fmt.Errorf("%w: a search bound is not a log_id", ErrInvalidQuery)
		}
	}
	skip, n := q.Page*perPage, min(perPage, MaxReachable-q.Page*perPage)
	out := make([]Event, 0, n)
	collect := func(ev *Event) bool {
		if !desc && q.Before != "" && ev.LogID >= q.Before {
			return false
		}
		if !f.Match(ev) {
			return true
		}
		if skip > 0 {
			skip--
			return true
		}
		out = append(out, *ev)
		return len(out) < n
	}
	if desc {
		err = w.scanBefore(ctx, q.Before, q.After, floor, f, collect)
	} else {
		_, err = w.scanAfter(ctx, q.After, floor, false, f, collect)
	}
	return out, err
}

// Get returns the event with id logID: ErrInvalidQuery for a malformed id, an error wrapping
// sessions.ErrNotFound when there is no such event (or it is older than MaxAge).
func (w *Writer) Get(ctx context.Context, logID string) (*Event, error) {
	if w.Store == nil {
		return nil, errors.New("logs: no store configured")
	}
	if !validLogID(logID) {
		return nil, fmt.Errorf("%w: %q is not a log_id", ErrInvalidQuery, logID)
	}
	floor := w.floorsAt(w.clock())
	if logID < floor.lowest() {
		return nil, fmt.Errorf("logs: event %s: %w", logID, sessions.ErrNotFound)
	}
	e, err := w.Store.Log(ctx, logID)
	if err != nil {
		return nil, fmt.Errorf("logs: event %s: %w", logID, err)
	}
	if floor.expired(e) {
		return nil, fmt.Errorf("logs: event %s: %w", logID, sessions.ErrNotFound)
	}
	ev := new(Event)
	if err := json.Unmarshal(e.Event, ev); err != nil {
		return nil, fmt.Errorf("logs: decode event %s: %w", logID, err)
	}
	ev.LogID = logID
	return ev, nil
}

// Latest returns the id of the newest retained event ("" when there is none): the after
// argument with which Follow shows only events still to come.
func (w *Writer) Latest(ctx context.Context) (string, error) {
	if w.Store == nil {
		return "", errors.New("logs: no store configured")
	}
	es, err := w.Store.LogsBefore(ctx, "", 1)
	if err != nil {
		return "", fmt.Errorf("logs: latest event: %w", err)
	}
	if len(es) == 0 {
		return "", nil
	}
	return es[0].ID, nil
}

// Tail returns up to take events (1..MaxTake) above after that match q, in log_id order, and
// the cursor to pass as after next time: the last entry read, matching or not, so that a
// filter matching nothing does not make every call read the same entries again. Like
// checkpoint paging it delivers each event once, without gaps. With after "" it returns no
// events and the newest id as the cursor: a tail shows only events still to come.
func (w *Writer) Tail(ctx context.Context, after, q string, take int) ([]Event, string, error) {
	f, err := ParseQuery(q)
	if err != nil {
		return nil, "", err
	}
	return w.TailFilter(ctx, after, f, take)
}

// TailFilter is Tail with its q already parsed.
func (w *Writer) TailFilter(ctx context.Context, after string, f Filter, take int) ([]Event, string, error) {
	if w.Store == nil {
		return nil, "", errors.New("logs: no store configured")
	}
	if take < 1 || take > MaxTake {
		return nil, "", fmt.Errorf("%w: take %d not in 1..%d", ErrInvalidQuery, take, MaxTake)
	}
	if after == "" {
		latest, err := w.Latest(ctx)
		if err != nil {
			return nil, "", err
		}
		if latest == "" {
			// An empty log: start below every id that can still be written.
			latest = MinLogID(time.Unix(0, 0))
		}
		return nil, latest, nil
	}
	if !validLogID(after) {
		return nil, "", fmt.Errorf("%w: after is not a log_id", ErrInvalidQuery)
	}
	var out []Event
	cursor, err := w.scanAfter(ctx, after, w.floorsAt(w.clock()), true, f, func(ev *Event) bool {
		if f.Match(ev) {
			out = append(out, *ev)
		}
		return len(out) < take
	})
	return out, cursor, err
}

// Follow calls fn, in log_id order, for every event above after ("" = from the oldest
// retained) that matches f, polling the store every poll (DefaultPoll when not positive),
// until ctx ends (it then returns ctx.Err()), fn returns an error (returned as is) or the
// store fails. Like checkpoint paging it delivers each event once, without gaps.
func (w *Writer) Follow(ctx context.Context, after string, f Filter, poll time.Duration, fn func(Event) error) error {
	if w.Store == nil {
		return errors.New("logs: no store configured")
	}
	if after != "" && !validLogID(after) {
		return fmt.Errorf("%w: after is not a log_id", ErrInvalidQuery)
	}
	if poll <= 0 {
		poll = DefaultPoll
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	cursor := after
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		now := w.clock()
		var fnErr error
		next, err := w.scanAfter(ctx, cursor, w.floorsAt(now), true, f, func(ev *Event) bool {
			if f.Match(ev) {
				fnErr = fn(*ev)
			}
			return fnErr == nil
		})
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		cursor = next
		timer.Reset(poll)
	}
}
