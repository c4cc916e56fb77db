package logstream

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// Defaults of a Stream and of Options.
const (
	DefaultBatchSize  = 50
	DefaultTimeout    = 10 * time.Second
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
	DefaultLeaseTTL   = 30 * time.Second
	DefaultPoll       = time.Second
	DefaultLateWindow = time.Minute
)

// rescanPage is how many entries one read of the late re-read takes.
const rescanPage = 500

// releaseTimeout bounds the release of a lease at Close.
const releaseTimeout = 2 * time.Second

// Stream is one configured log stream.
type Stream struct {
	// Name identifies the stream and its position in the store (sessions.LogCursors): letters,
	// digits, '-' and '_'.
	Name string
	URL  string // the webhook: events are POSTed here
	// Types are the event types sent ("s", "f", …); empty sends every type.
	Types []string
	// BatchSize is how many events one read takes (1 to logs.MaxTake, default
	// DefaultBatchSize); a request carries those of them Types keeps.
	BatchSize int
	// StartOldest makes a stream without a stored position start at the oldest retained
	// event; otherwise it starts at the newest one (events after its first start).
	StartOldest bool
	// BearerToken, when set, is sent as "Authorization: Bearer TOKEN".
	BearerToken string
	// HMACKey, when set, signs each request (webhook-signature, see the package doc).
	HMACKey []byte
	// Timeout bounds one attempt, connection and answer included (default DefaultTimeout).
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a retry (defaults DefaultMinBackoff
	// and DefaultMaxBackoff): MinBackoff doubling per failed attempt, capped at MaxBackoff,
	// each wait drawn between half of that and all of it.
	MinBackoff, MaxBackoff time.Duration
	// HTTP sends the requests (nil: a client of its own without proxy). It must not follow
	// redirects; the broker gives one that applies its address policy (egress).
	HTTP *http.Client
	// LateWindow is how late an event may reach the store and still be sent (default
	// DefaultLateWindow): the stored position stays this far behind the newest event read,
	// and every Poll the entries of the window that were not read are sent (see the package
	// doc, "Late events").
	LateWindow time.Duration
}

// Options are what every stream shares.
type Options struct {
	// Events reads the event log (logs.Writer.Tail): the broker's own writer, so that a read
	// never passes an event it is still storing.
	Events *logs.Writer
	// Cursors keeps the streams' positions and leases: the store of Events.
	Cursors sessions.LogCursors
	Logger  *slog.Logger
	// Metrics, when set, registers the streams' collectors.
	Metrics prometheus.Registerer
	// Holder names this process in the leases (default: random).
	Holder string
	// LeaseTTL is how long a lease lives unless renewed (default DefaultLeaseTTL); it is
	// renewed every third of it, and other replicas try to take it as often.
	LeaseTTL time.Duration
	// Poll is the wait between reads once a stream has sent everything (default
	// DefaultPoll).
	Poll time.Duration
}

// Streams runs the configured streams in the background (Start) until Close.
type Streams struct {
	opts    Options
	senders []*sender
	metrics *metrics

	startOnce sync.Once
	mu        sync.Mutex
	closed    bool
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// New checks the streams and prepares them; nothing runs before Start.
func New(opts Options, streams ...Stream) (*Streams, error) {
	if opts.Events == nil || opts.Cursors == nil {
		return nil, errors.New("logstream: Events and Cursors are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Holder == "" {
		var b [12]byte
		_, _ = crand.Read(b[:])
		opts.Holder = hex.EncodeToString(b[:])
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.Poll <= 0 {
		opts.Poll = DefaultPoll
	}
	s := &Streams{opts: opts, metrics: newMetrics()}
	seen := map[string]bool{}
	for i, st := range streams {
		if err := st.check(); err != nil {
			return nil, fmt.Errorf("logstream: stream %d (%s): %w", i, st.Name, err)
		}
		if seen[st.Name] {
			return nil, fmt.Errorf("logstream: stream %d: duplicate name %q", i, st.Name)
		}
		seen[st.Name] = true
		st.defaults()
		s.senders = append(s.senders, newSender(st, &s.opts, s.metrics))
	}
	if opts.Metrics != nil {
		if err := s.metrics.register(opts.Metrics); err != nil {
			return nil, fmt.Errorf("logstream: metrics: %w", err)
		}
	}
	return s, nil
}

// check validates what New cannot default.
func (st *Stream) check() error {
	switch {
	case st.Name == "":
		return errors.New("no name")
	case st.URL == "":
		return errors.New("no url")
	case st.BatchSize < 0 || st.BatchSize > logs.MaxTake:
		return fmt.Errorf("batch size %d not in 1..%d", st.BatchSize, logs.MaxTake)
	case st.BearerToken == "" && len(st.HMACKey) == 0:
		return errors.New("no bearer token and no HMAC key: the endpoint could not tell the broker's requests apart")
	}
	return nil
}

func (st *Stream) defaults() {
	if st.BatchSize == 0 {
		st.BatchSize = DefaultBatchSize
	}
	if st.Timeout <= 0 {
		st.Timeout = DefaultTimeout
	}
	if st.MinBackoff <= 0 {
		st.MinBackoff = DefaultMinBackoff
	}
	if st.MaxBackoff <= 0 {
		st.MaxBackoff = DefaultMaxBackoff
	}
	if st.LateWindow <= 0 {
		st.LateWindow = DefaultLateWindow
	}
	st.MaxBackoff = max(st.MaxBackoff, st.MinBackoff)
	if st.HTTP == nil {
		st.HTTP = &http.Client{
			Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
}

// Start runs every stream in a goroutine of its own. Calls after the first (or after Close)
// do nothing.
func (s *Streams) Start() {
	s.startOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		for _, sd := range s.senders {
			s.wg.Go(func() { sd.run(ctx) })
		}
	})
}

// Close stops every stream and waits for them: an attempt in flight is abandoned (its batch
// is sent again later, by this or another replica) and the leases are released, so another
// replica takes over at once. Idempotent.
func (s *Streams) Close() {
	s.mu.Lock()
	s.closed = true
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	for _, sd := range s.senders {
		sd.st.HTTP.CloseIdleConnections()
	}
}

// Names returns the streams' names, in configuration order.
func (s *Streams) Names() []string {
	out := make([]string, len(s.senders))
	for i, sd := range s.senders {
		out[i] = sd.st.Name
	}
	return out
}

// sender runs one stream.
type sender struct {
	st    Stream
	o     *Options
	log   *slog.Logger
	types map[string]bool // nil: every type
	m     streamMetrics

	// safeUntil is how long this holder may send: two thirds of the TTL after the start of
	// its last successful lease call (the lease lives at least the TTL from that call's
	// arrival), as a monotonic offset from epoch. An attempt never starts past it, even when
	// the renewer is late.
	safeUntil atomic.Int64
	epoch     time.Time
}

// leaseSafe reports whether the lease is still surely held.
func (sd *sender) leaseSafe() bool { return int64(time.Since(sd.epoch)) < sd.safeUntil.Load() }

// leased notes a successful lease call begun at start.
func (sd *sender) leased(start time.Time) {
	sd.safeUntil.Store(int64(start.Sub(sd.epoch) + sd.o.LeaseTTL*2/3))
}

func newSender(st Stream, o *Options, m *metrics) *sender {
	sd := &sender{st: st, o: o, log: o.Logger.With("stream", st.Name), m: m.stream(st.Name), epoch: time.Now()}
	if len(st.Types) > 0 {
		sd.types = make(map[string]bool, len(st.Types))
		for _, t := range st.Types {
			sd.types[t] = true
		}
	}
	return sd
}

// run takes the stream's lease whenever it is free and sends while it holds it, until ctx
// ends.
func (sd *sender) run(ctx context.Context) {
	for ctx.Err() == nil {
		begun := time.Now()
		pos, err := sd.o.Cursors.LeaseLogCursor(ctx, sd.st.Name, sd.o.Holder, sd.o.LeaseTTL)
		switch {
		case err == nil:
			sd.leased(begun)
			sd.log.LogAttrs(ctx, slog.LevelInfo, "log_stream_lease_taken", slog.String("holder", sd.o.Holder))
			sd.m.active.Set(1)
			sd.hold(ctx, pos)
			sd.m.active.Set(0) // the lease was lost (or ctx ended): wait as a standby does
		case errors.Is(err, sessions.ErrConflict): // another replica sends: report the lag it has
			sd.standbyLag(ctx)
		case ctx.Err() == nil:
			sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_lease_failed", slog.Any("error", err))
		}
		sleep(ctx, jitter(sd.o.LeaseTTL/3))
	}
}

// hold sends from pos while the lease lasts: a renewer ends it when the lease is lost. At
// the end of ctx the lease is released.
func (sd *sender) hold(ctx context.Context, pos string) {
	lctx, lost := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { sd.renew(lctx, lost) })
	sd.deliver(lctx, pos)
	lost()
	wg.Wait()
	if ctx.Err() != nil {
		rctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		if err := sd.o.Cursors.ReleaseLogCursor(rctx, sd.st.Name, sd.o.Holder); err != nil {
			sd.log.LogAttrs(rctx, slog.LevelWarn, "log_stream_release_failed", slog.Any("error", err))
		}
	}
}

// renew renews the lease every third of its TTL and calls lost when another holder has it,
// or when renewals failed for two thirds of the TTL (it may have lapsed).
func (sd *sender) renew(ctx context.Context, lost func()) {
	ttl := sd.o.LeaseTTL
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		begun := time.Now()
		_, err := sd.o.Cursors.LeaseLogCursor(ctx, sd.st.Name, sd.o.Holder, ttl)
		switch {
		case err == nil:
			sd.leased(begun)
		case ctx.Err() != nil:
			return
		case errors.Is(err, sessions.ErrConflict):
			sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_lease_lost", slog.String("holder", sd.o.Holder))
			lost()
			return
		case !sd.leaseSafe():
			sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_lease_lost", slog.String("holder", sd.o.Holder),
				slog.Any("error", err))
			lost()
			return
		default:
			sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_lease_renewal_failed", slog.Any("error", err))
		}
	}
}

// deliver reads batches after pos and sends them, until ctx ends or the lease is lost. The
// read moves on at once (front), the stored position only to the last event read more than
// LateWindow ago (store); every Poll the entries between the two that were not read are sent
// (rescan). A new holder thus starts at most LateWindow behind, sending again what was sent
// then.
func (sd *sender) deliver(ctx context.Context, pos string) {
	if pos == "" {
		var ok bool
		if pos, ok = sd.start(ctx); !ok {
			return
		}
	}
	front, stored := pos, pos
	win := &readWindow{floor: pos}
	var lastPoll, lastFull time.Time
	fails := 0
	for ctx.Err() == nil {
		evs, next, err := sd.o.Events.Tail(ctx, front, "", sd.st.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_read_failed", slog.Any("error", err))
			sleep(ctx, sd.backoff(fails))
			fails++
			continue
		}
		fails = 0
		batch := evs[:0:0]
		for _, ev := range evs {
			if sd.types == nil || sd.types[ev.Type] {
				batch = append(batch, ev)
			}
		}
		if len(batch) > 0 && !sd.send(ctx, front, batch) {
			return
		}
		for _, ev := range evs {
			win.add(ev.LogID)
		}
		front = next
		if time.Since(lastPoll) >= sd.o.Poll {
			// One count of the entries after front is the lag and the re-read's upper count.
			above, err := sd.o.Cursors.CountLogsAfter(ctx, front)
			if err == nil {
				sd.setLag(ctx, front, above)
			} else {
				above = -1
			}
			full := time.Since(lastFull) >= sd.st.LateWindow/4
			if !sd.rescan(ctx, win, front, full, above) {
				return
			}
			lastPoll = time.Now()
			if full {
				lastFull = lastPoll
			}
		}
		if pos := sd.settled(win, front); pos > stored {
			switch err := sd.o.Cursors.AdvanceLogCursor(ctx, sd.st.Name, sd.o.Holder, pos); {
			case err == nil:
				stored = pos
				win.raise(stored)
			case ctx.Err() != nil:
				return
			case errors.Is(err, sessions.ErrConflict):
				sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_lease_lost", slog.String("holder", sd.o.Holder))
				return
			default: // the next advance stores a later position; until then a restart resends
				sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_position_not_stored",
					slog.String("log_id", pos), slog.Any("error", err))
			}
		}
		if len(evs) < sd.st.BatchSize {
			sleep(ctx, sd.o.Poll)
		}
	}
}

// settled is the position to store: front when it is older than LateWindow, else the last
// event read before now-LateWindow ("" when none: the position stays).
func (sd *sender) settled(win *readWindow, front string) string {
	limit := logs.MinLogID(time.Now().Add(-sd.st.LateWindow))
	if front < limit {
		return front
	}
	return win.below(limit)
}

// rescan reads the entries between the window's floor and front and sends those the stream
// has not read: events that reached the store after the read had passed their log_id (a
// replica whose clock is behind, or whose write was slow). Unless full, it first counts the
// entries there (the entries after the floor less above, those after front, which the caller
// counted first: -1 when it could not) and reads them only when the count differs from the
// ids read; the full re-read, every LateWindow/4, also finds a late entry whose count
// a trim of the same range hid. It reports false when a send was abandoned (ctx ended, lease
// lost); a failed read is logged and left to the next pass.
func (sd *sender) rescan(ctx context.Context, win *readWindow, front string, full bool, above int64) bool {
	from := win.floor
	if from >= front {
		return true
	}
	if !full && above >= 0 {
		// Above front first: entries written between the counts then only add to the
		// difference, which at worst costs a read.
		if all, err := sd.o.Cursors.CountLogsAfter(ctx, from); err == nil && all-above == int64(len(win.ids)) {
			return true
		}
	}
	for from < front {
		es, err := sd.o.Events.Store.LogsAfter(ctx, from, rescanPage)
		if err != nil {
			if ctx.Err() == nil {
				sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_read_failed", slog.Any("error", err))
			}
			return ctx.Err() == nil
		}
		var late []logs.Event
		past := len(es) < rescanPage // the last page
		for _, e := range es {
			if e.ID > front {
				past = true
				break
			}
			from = e.ID
			if win.has(e.ID) {
				continue
			}
			if !json.Valid(e.Event) { // the writer's reads skip it (and log it): so does the stream
				win.add(e.ID)
				continue
			}
			ev, err := sd.o.Events.Get(ctx, e.ID) // unless past its class's retention
			switch {
			case errors.Is(err, sessions.ErrNotFound): // expired, or trimmed since: never sent
				win.add(e.ID)
				continue
			case err != nil: // not noted: the next pass tries it again
				if ctx.Err() == nil {
					sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_read_failed", slog.Any("error", err))
				}
				past = true
				continue
			}
			win.add(e.ID)
			sd.m.late.Inc()
			sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_late_event", slog.String("log_id", e.ID),
				slog.Duration("behind", idTime(front).Sub(idTime(e.ID))))
			if sd.types == nil || sd.types[ev.Type] {
				late = append(late, *ev)
			}
		}
		for len(late) > 0 {
			n := min(len(late), sd.st.BatchSize)
			if !sd.send(ctx, front, late[:n]) {
				return false
			}
			late = late[n:]
		}
		if past {
			break
		}
	}
	return true
}

// start stores the position of a stream that has none: the newest event (or below the
// oldest, StartOldest).
func (sd *sender) start(ctx context.Context) (string, bool) {
	for fails := 0; ctx.Err() == nil; fails++ {
		pos := logs.MinLogID(time.Unix(0, 0)) // below every id
		var err error
		if !sd.st.StartOldest {
			var latest string
			if latest, err = sd.o.Events.Latest(ctx); latest != "" {
				pos = latest
			}
		}
		if err == nil {
			err = sd.o.Cursors.AdvanceLogCursor(ctx, sd.st.Name, sd.o.Holder, pos)
		}
		switch {
		case err == nil:
			sd.log.LogAttrs(ctx, slog.LevelInfo, "log_stream_started", slog.String("log_id", pos))
			return pos, true
		case errors.Is(err, sessions.ErrConflict) || ctx.Err() != nil:
			return "", false
		}
		sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_start_failed", slog.Any("error", err))
		sleep(ctx, sd.backoff(fails))
	}
	return "", false
}

// send posts batch (read after pos) until the endpoint takes it (true) or ctx ends (false).
// A 413 answer splits the batch in two, sent one after the other.
func (sd *sender) send(ctx context.Context, pos string, batch []logs.Event) bool {
	for attempt := 0; ; attempt++ {
		if !sd.leaseSafe() { // the renewer is late: the lease may have lapsed
			sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_lease_lost", slog.String("holder", sd.o.Holder))
			return false
		}
		err := sd.post(ctx, batch)
		if err == nil {
			sd.m.delivered.Inc()
			sd.m.events.Add(float64(len(batch)))
			if attempt > 0 { // the one line that says the endpoint takes events again
				sd.log.LogAttrs(ctx, slog.LevelInfo, "log_stream_delivering", slog.Int("failed_attempts", attempt),
					slog.Int("events", len(batch)), slog.String("first_log_id", batch[0].LogID))
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		sd.m.failed.Inc()
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusRequestEntityTooLarge && len(batch) > 1 {
			sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_batch_split", slog.Int("events", len(batch)))
			half := len(batch) / 2
			return sd.send(ctx, pos, batch[:half]) && sd.send(ctx, pos, batch[half:])
		}
		sd.measureLag(ctx, pos) // the lag grows while the endpoint fails
		sd.log.LogAttrs(ctx, slog.LevelWarn, "log_stream_delivery_failed", slog.Int("attempt", attempt+1),
			slog.Int("events", len(batch)), slog.String("first_log_id", batch[0].LogID), slog.Any("error", err))
		if !sleep(ctx, sd.backoff(attempt)) {
			return false
		}
	}
}

// backoff is the wait after the n-th (0-based) failure in a row: MinBackoff·2ⁿ capped at
// MaxBackoff, drawn between half of it and all of it.
func (sd *sender) backoff(n int) time.Duration {
	d := sd.st.MaxBackoff
	if n < 30 {
		d = min(d, sd.st.MinBackoff<<n)
	}
	return jitter(d)
}

// measureLag sets the lag gauges for a stream at pos: the log entries after it and the age
// of the oldest of them.
func (sd *sender) measureLag(ctx context.Context, pos string) {
	if n, err := sd.o.Cursors.CountLogsAfter(ctx, pos); err == nil {
		sd.setLag(ctx, pos, n)
	}
}

// setLag sets the lag gauges for a stream at pos with n log entries after it.
func (sd *sender) setLag(ctx context.Context, pos string, n int64) {
	sd.m.lagEvents.Set(float64(n))
	age := 0.0
	if n > 0 {
		if es, err := sd.o.Events.Store.LogsAfter(ctx, pos, 1); err == nil && len(es) == 1 {
			age = max(0, time.Since(idTime(es[0].ID)).Seconds())
		}
	}
	sd.m.lagSeconds.Set(age)
}

// standbyLag measures the lag of the position another replica moves.
func (sd *sender) standbyLag(ctx context.Context) {
	if pos, _, err := sd.o.Cursors.LogCursor(ctx, sd.st.Name); err == nil && pos != "" {
		sd.measureLag(ctx, pos)
	}
}

// idTime is the time a log id was made (its first 20 digits are Unix nanoseconds).
func idTime(id string) time.Time {
	if len(id) < 20 {
		return time.Now()
	}
	ns, err := strconv.ParseInt(id[:20], 10, 64)
	if err != nil {
		return time.Now()
	}
	return time.Unix(0, ns)
}

// jitter draws a wait between d/2 and d.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends; it reports whether the wait ran out.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
