package logs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Event type codes, as the identity SaaS names them.
const (
	TypeSuccessLogin = "s"
	TypeFailedLogin  = "f"
	// TypeSuccessSilentAuth and TypeFailedSilentAuth: prompt=none answered from the broker's
	// session with a code, or refused (login_required, interaction_required).
	TypeSuccessSilentAuth = "ssa"
	TypeFailedSilentAuth  = "fsa"
	TypeSuccessExchange   = "seacft"
	TypeFailedExchange    = "feacft"
	// Refresh-token exchanges: success, failure, and reuse of a rotated refresh token.
	TypeSuccessRefresh        = "sertft"
	TypeFailedRefresh         = "fertft"
	TypeFailedRotatingRefresh = "ferrt"
	TypeSuccessLogout         = "slo"
	TypeFailedLogout          = "flo"
	TypeSuccessRevocation     = "srrt"
	TypeFederatedLogoutFailed = "federated_logout_failed"
	// TypeFailedRevocation is the broker's own code for a refused /oauth/revoke request (the
	// SaaS logs only successful revocations).
	TypeFailedRevocation = "frrt"
	TypeSuccessAPI       = "sapi"
	TypeFailedAPI        = "fapi"
	// TypeDPoPNonceChallenge is the broker's own code for a token request answered
	// use_dpop_nonce (RFC 9449 §8): the proof was valid but carried no or an outdated server
	// nonce. It is a normal protocol step (every DPoP client's first request meets it when
	// nonces are required), so it is not a failed exchange.
	TypeDPoPNonceChallenge = "dpop_nonce_challenge"
	// TypeAPILimit is a request refused by a rate limit of the authentication API that has no
	// failure type of its own (/userinfo), as the identity SaaS names it.
	TypeAPILimit = "api_limit"

	// TypeBackchannelLogoutSucceeded and TypeBackchannelLogoutFailed are the broker's own
	// codes for the outcome of one OpenID Connect Back-Channel Logout 1.0 delivery: the
	// logout token POSTed to an app's backchannel_logout_uri after its session ended. Both
	// follow an authenticated logout, so the broker writes both in the audit class.
	TypeBackchannelLogoutSucceeded = "oidc_backchannel_logout_succeeded"
	TypeBackchannelLogoutFailed    = "oidc_backchannel_logout_failed"
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
	// Class is the retention class the creator decided (never serialized; see Class). The
	// zero value decides by Type.
	Class Class `json:"-"`
	// CredentialCheck marks the failure of a credential check (a management token, a console
	// session; never serialized): when Limits drop it, Write still prints it on stdout as a
	// CredentialCheckFailed warning (held to the process log's throttle), so that guessing
	// stays visible however full the limits are.
	CredentialCheck bool `json:"-"`
}

// CredentialCheckFailed is the message of the warning that prints a failed credential check
// the limits on unauthenticated events kept out of the log (Event.CredentialCheck).
const CredentialCheckFailed = "credential_check_failed"

// Description returns the SaaS's description for a type code ("Success Login", …).
func Description(typ string) string { return descriptions[typ] }

// descriptions is the identity SaaS's event code table, for the codes the broker may emit.
var descriptions = map[string]string{
	TypeSuccessLogin:          "Success Login",
	TypeFailedLogin:           "Failed Login",
	TypeSuccessSilentAuth:     "Success Silent Auth",
	TypeFailedSilentAuth:      "Failed Silent Auth",
	TypeSuccessExchange:       "Success Exchange",
	TypeFailedExchange:        "Failed Exchange",
	TypeSuccessRefresh:        "Success Exchange (Refresh Token for Access Token)",
	TypeFailedRefresh:         "Failed Exchange (Refresh Token for Access Token)",
	TypeFailedRotatingRefresh: "Failed Exchange (Rotating Refresh Token reused)",
	TypeSuccessLogout:         "Success Logout",
	TypeSuccessAPI:            "Success API Operation",
	TypeFailedAPI:             "Failed API Operation",
	TypeFailedLogout:          "Failed Logout",
	TypeSuccessRevocation:     "Successful Refresh Token Revocation",
	TypeFederatedLogoutFailed: "Federated Logout Failed",
	TypeFailedRevocation:      "Failed Refresh Token Revocation",
	TypeDPoPNonceChallenge:    "DPoP Nonce Challenge",
	TypeAPILimit:              "Rate Limit On API",

	// The broker's own codes.
	TypeBackchannelLogoutSucceeded: "OIDC Back-Channel Logout Succeeded",
	TypeBackchannelLogoutFailed:    "OIDC Back-Channel Logout Failed",
}

// NewLogID returns a 56-digit decimal id that sorts in creation order (time first, then a
// per-process sequence and random digits).
//
// Layout: 20 digits of Unix nanoseconds, 12 digits of a per-process counter (so ids from one
// process are strictly increasing for equal times), 24 random digits (unique across replicas).
func NewLogID(now time.Time) string {
	ns := max(now.UnixNano(), 0)
	seq := logSeq.Add(1) % 1e12
	var r [16]byte         // two 64-bit values, each reduced to 12 digits
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails
	var id [56]byte
	putDigits(id[0:20], uint64(ns))
	putDigits(id[20:32], seq)
	putDigits(id[32:44], binary.LittleEndian.Uint64(r[0:8])%1e12)
	putDigits(id[44:56], binary.LittleEndian.Uint64(r[8:16])%1e12)
	return string(id[:])
}

// putDigits writes v in decimal, zero-padded to fill dst (v must fit).
func putDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

var logSeq atomic.Uint64

// dateLayout is RFC 3339 in UTC with milliseconds, as the SaaS prints log dates.
const dateLayout = "2006-01-02T15:04:05.000Z"

// DefaultMaxLen is the store-backed log's retention by count when Writer.MaxLen is 0.
const DefaultMaxLen = 10000

// Writer records events: one line through slog (EventLogger, else Logger) and one entry in
// the store's log (when Store is set). Write fills LogID, Date, Description, Hostname and StrategyType
// ("enterprise" when Strategy is set) when empty.
//
// Events are kept in three retention classes (Class): the audit class under MaxLen and
// MaxAge, the unauthenticated class under UnauthenticatedMaxLen and UnauthenticatedMaxAge,
// the admin class under AdminMaxLen and AdminMaxAge, so that a flood of unauthenticated
// events never removes an audit or admin event, nor a flood of audit events an admin one;
// reads show one log.
// Unauthenticated events pass Limits first: a dropped event is neither logged nor stored (a
// failed credential check is printed as a warning instead: Event.CredentialCheck).
type Writer struct {
	// Logger receives the Writer's own warnings and errors (an event not stored, events
	// dropped by Limits, an entry that does not decode), and the events' lines when
	// EventLogger is nil (default slog.Default()).
	Logger *slog.Logger
	// EventLogger, when set, receives the events' lines ("login_event", at INFO) instead of
	// Logger: a stream of their own (a file, stdout apart from the application log), or none
	// (a logger that discards). The store's log is written either way.
	EventLogger *slog.Logger
	Store       sessions.Store
	MaxLen      int // audit-class retention by count, default 10000
	Hostname    string
	Now         func() time.Time
	// MaxAge is the audit-class retention by age: default DefaultMaxAge (30 days); negative
	// keeps events until MaxLen pushes them out. Write trims at most once a minute; reads
	// never return older events.
	MaxAge time.Duration
	// UnauthenticatedMaxLen and UnauthenticatedMaxAge are the retention of the
	// unauthenticated class, as MaxLen and MaxAge are the audit class's (defaults
	// DefaultUnauthenticatedMaxLen and DefaultUnauthenticatedMaxAge).
	UnauthenticatedMaxLen int
	UnauthenticatedMaxAge time.Duration
	// AdminMaxLen and AdminMaxAge are the retention of the admin class (defaults
	// DefaultAdminMaxLen and DefaultAdminMaxAge; a negative age keeps events until
	// AdminMaxLen pushes them out).
	AdminMaxLen int
	AdminMaxAge time.Duration
	// Limits, when set, admits each unauthenticated event (per client IP and in all); Write
	// returns a *DropError for a refused one, and a "login_events_dropped" warning sums the
	// drops up at most once per DropReportEvery (default DefaultDropReportEvery).
	Limits          *Limiter
	DropReportEvery time.Duration
	// Secrets, when set, are values no event may carry: every string of an event is
	// scrubbed of them (and of credential-like query parameters) before it is written.
	Secrets *Secrets
	// Settle, when positive, holds back from checkpoint reads and Follow the events younger
	// than Settle: set it (about a second) when several brokers write to one store, so that
	// an event another replica is still storing cannot be passed by a reader's cursor.
	// Events this Writer is storing are always held back, whatever Settle.
	Settle time.Duration
	// MaxEventBytes bounds one event's JSON, as stored and printed (size.go; default
	// DefaultMaxEventBytes): larger details are shrunk and marked, the event's identity
	// fields are kept whole.
	MaxEventBytes int
	// Tally, when set, names the counters an event adds to (each by its increment): they are
	// kept in the store's per-minute and per-hour buckets (sessions.Tallier) and written in
	// the same round trip as the event, so charts never scan the log. An event Limits drops
	// counts nothing; nil or empty counts nothing.
	Tally func(ev *Event) map[string]int64

	state writerState // in-flight ids and trim schedule (search.go)
	drops dropState   // events dropped by Limits since the last warning (limit.go)
}

// Write records ev. A store failure is returned (and logged) but the slog line is always
// written first. An unauthenticated event that Limits refuses is not written at all: Write
// returns a *DropError (errors.Is ErrDropped) and counts it for the next warning.
// What is written carries Redact(ev.Details): normalized through JSON and stripped of
// secret-looking keys and JWT-like values; ev.Details itself is left as the caller built it.
// Every string written is scrubbed of credential-like parameter values and of Secrets.
func (w *Writer) Write(ctx context.Context, ev *Event) error {
	if ev == nil {
		return errors.New("logs: nil event")
	}
	class := ev.RetentionClass()
	if class == ClassUnauthenticated && w.Limits != nil {
		now := w.clock()
		if reason := w.Limits.Allow(ev.IP, now); reason != "" {
			w.dropped(ctx, ev.Type, reason, now)
			if ev.CredentialCheck {
				w.printDropped(ctx, ev, reason, now)
			}
			return &DropError{Type: ev.Type, Reason: reason}
		}
	}
	p := w.prepare(ev)
	defer p.release()
	w.eventLogger().LogAttrs(ctx, slog.LevelInfo, "login_event", p.out.attrs(p.details)...)
	if w.Store == nil {
		return nil
	}
	if p.err != nil {
		return p.err
	}
	sc := class.storeClass()
	maxLen, _ := w.retention(sc)
	if err := w.appendLog(ctx, sc, ev.LogID, p.data, maxLen, w.tally(ev, p.t)); err != nil {
		// The error as a value (written as its text): an unreachable store's is logged at
		// DEBUG by StoreOutageHandler, which reports the outage once instead.
		w.logger().LogAttrs(ctx, slog.LevelError, "login_event_store_failed",
			slog.String("log_id", ev.LogID), slog.Any("error", err))
		return fmt.Errorf("logs: store event %s: %w", ev.LogID, err)
	}
	w.maybeTrim(ctx, p.t)
	return nil
}

// printDropped prints the failed credential check ev that Limits dropped (reason) as a
// CredentialCheckFailed warning: its fields and details as a login_event line has them (no
// log_id: it is not stored), and the drop's reason. A WARN line, it goes through the process
// log's throttle (ThrottleHandler), which bounds a flood of them.
func (w *Writer) printDropped(ctx context.Context, ev *Event, reason string, now time.Time) {
	logger := w.logger()
	if !logger.Enabled(ctx, slog.LevelWarn) {
		return
	}
	set := w.Secrets.current()
	p := prepared{out: scrubFields(ev, set), details: encodeDetails(ev.Details, set)}
	p.out.LogID, p.out.Date = "", now.UTC().Format(dateLayout)
	if p.out.Description == "" {
		p.out.Description = Description(ev.Type)
	}
	if p.out.Hostname == "" {
		p.out.Hostname = w.Hostname
	}
	// Only the bound matters here: a field that does not encode is printed as slog writes it.
	_, _ = w.bound(&p)
	attrs := append(p.out.attrs(p.details)[1:], slog.String("dropped", reason)) // [1:]: no log_id
	logger.LogAttrs(ctx, slog.LevelWarn, CredentialCheckFailed, attrs...)
}

// appendLog appends one entry with its counters: in one round trip when the store is a
// sessions.Tallier, else the entry alone.
func (w *Writer) appendLog(ctx context.Context, class sessions.LogClass, id string, data []byte, maxLen int, t sessions.Tally) error {
	if tl, ok := w.Store.(sessions.Tallier); ok && len(t.Counts) > 0 {
		err := tl.AppendLogTallied(ctx, class, id, data, maxLen, t)
		if !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
	}
	return w.Store.AppendLog(ctx, class, id, data, maxLen)
}

// tally is the Tally of ev written at t (empty without a Tally function).
func (w *Writer) tally(ev *Event, t time.Time) sessions.Tally {
	if w.Tally == nil {
		return sessions.Tally{}
	}
	return sessions.Tally{At: t, Counts: w.Tally(ev)}
}

// Tallies reads the counters of the buckets of step in [from, to) from the store
// (sessions.Tallier.Tallies); an error wrapping errors.ErrUnsupported when the store keeps
// none.
func (w *Writer) Tallies(ctx context.Context, step sessions.TallyStep, from, to time.Time) ([]sessions.TallyBucket, error) {
	tl, ok := w.Store.(sessions.Tallier)
	if !ok {
		return nil, fmt.Errorf("logs: the event store keeps no counters: %w", errors.ErrUnsupported)
	}
	bs, err := tl.Tallies(ctx, step, from, to)
	if err != nil {
		return nil, fmt.Errorf("logs: read counters: %w", err)
	}
	return bs, nil
}

// WriteWith records ev like Write, but store appends the encoded entry (and adds its counters,
// t, see Tally) instead of Store.AppendLog, so that a caller can write it in one atomic batch
// with its own records (sessions.LogBatcher and sessions.Tallier, whose event is an audit
// entry). When store fails, nothing is logged,
// ev is left as it was (a later Write gives it a fresh id, date and description) and the
// error is returned as is. Without a Store, or for an event of another class than the audit
// class, it returns an error wrapping errors.ErrUnsupported and does nothing.
func (w *Writer) WriteWith(ctx context.Context, ev *Event, store func(ctx context.Context, id string, data []byte, maxLen int, t sessions.Tally) error) error {
	if ev == nil {
		return errors.New("logs: nil event")
	}
	if w.Store == nil {
		return fmt.Errorf("logs: no store: %w", errors.ErrUnsupported)
	}
	if c := ev.RetentionClass(); c != ClassAudit {
		return fmt.Errorf("logs: batched write of an event of the %s class: %w", c, errors.ErrUnsupported)
	}
	saved := *ev
	p := w.prepare(ev)
	defer p.release()
	if p.err != nil {
		*ev = saved
		return p.err
	}
	if err := store(ctx, ev.LogID, p.data, w.maxLen(), w.tally(ev, p.t)); err != nil {
		*ev = saved
		return err
	}
	w.eventLogger().LogAttrs(ctx, slog.LevelInfo, "login_event", p.out.attrs(p.details)...)
	w.maybeTrim(ctx, p.t)
	return nil
}

// prepared is an event ready to write: its scrubbed fields, redacted details and stored JSON.
type prepared struct {
	t       time.Time
	out     Event // ev with every field scrubbed, Details nil (details holds them)
	details json.RawMessage
	data    []byte // the stored JSON (nil without a Store)
	err     error  // encoding failure
	release func()
}

// prepare fills ev's LogID, Date, Description, Hostname and StrategyType when empty, marks
// the id in flight (until release) and encodes the event once for slog and the store.
func (w *Writer) prepare(ev *Event) prepared {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	t := now()
	release := w.track(ev, &t, now) // assigns ev.LogID (re-reading the clock) when empty; held until stored
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
	set := w.Secrets.current()
	p := prepared{t: t, out: scrubFields(ev, set), details: encodeDetails(ev.Details, set), release: release}
	data, err := w.bound(&p)
	if w.Store == nil {
		return p
	}
	if err != nil {
		p.err = fmt.Errorf("logs: encode event %s: %w", ev.LogID, err)
		return p
	}
	if p.details != nil {
		// Details is the last field: the stored JSON is what json.Marshal gives for the event
		// with its redacted details.
		data = append(append(append(data[:len(data)-1], `,"details":`...), p.details...), '}')
	}
	p.data = data
	return p
}

// scrubFields returns a copy of ev without Details whose string fields are scrubbed (the
// id, date and type are the Writer's or the code's own).
func scrubFields(ev *Event, set *secretSet) Event {
	out := *ev
	out.Details = nil
	for _, f := range []*string{
		&out.Description, &out.Connection, &out.ConnectionID, &out.Strategy, &out.StrategyType,
		&out.ClientID, &out.ClientName, &out.IP, &out.UserAgent, &out.UserID, &out.UserName, &out.Hostname,
	} {
		*f = scrub(*f, set)
	}
	return out
}

// bound makes p fit in MaxEventBytes (size.go): the free-text fields clipped, then the details
// shrunk; the event's identity fields are never cut. It returns the JSON of p.out (without
// the details) that it measured, so the event's fields are encoded once per event.
func (w *Writer) bound(p *prepared) ([]byte, error) {
	limit := w.MaxEventBytes
	if limit <= 0 {
		limit = DefaultMaxEventBytes
	}
	const detailsKey = len(`,"details":`)
	out, err := json.Marshal(&p.out)
	if err != nil || len(out)+detailsKey+len(p.details) <= limit {
		return out, err
	}
	for _, f := range []*string{&p.out.UserAgent, &p.out.UserName, &p.out.ClientName} {
		*f = clipEncoded(*f, maxFieldBytes)
	}
	if out, err = json.Marshal(&p.out); err != nil || p.details == nil {
		return out, err
	}
	budget := limit - len(out) - detailsKey
	if len(p.details) <= budget {
		return out, nil
	}
	var red map[string]any
	dec := json.NewDecoder(bytes.NewReader(p.details))
	dec.UseNumber()
	if dec.Decode(&red) != nil {
		red = nil
	}
	p.details = fitDetails(red, len(p.details), max(budget, minDetailsBudget))
	return out, nil
}

// minDetailsBudget is the room the details keep whatever the other fields take.
const minDetailsBudget = 256

func (w *Writer) maxLen() int {
	if w.MaxLen <= 0 {
		return DefaultMaxLen
	}
	return w.MaxLen
}

// attrs returns the event as slog attributes named like its JSON fields (empty optional
// fields left out, as in the JSON form).
func (ev *Event) attrs(details json.RawMessage) []slog.Attr {
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
	if len(details) > 0 {
		a = append(a, slog.Any("details", rawJSON(details)))
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
