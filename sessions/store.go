package sessions

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Errors every backend returns; callers test them with errors.Is.
var (
	// ErrNotFound: no live record under that key (never written, expired, or already taken).
	ErrNotFound = errors.New("sessions: record not found")
	// ErrExists: Create found a live record under that key.
	ErrExists = errors.New("sessions: record already exists")
	// ErrUnavailable wraps every failure to reach the backend (connection refused, timeout,
	// cluster down). The HTTP layer maps it to 503.
	ErrUnavailable = errors.New("sessions: store unavailable")
	// ErrFull: the store refused a write because it is at capacity: the memory store holds
	// its maximum number of live records (MemoryOptions.MaxRecords), or Redis answered OOM
	// (maxmemory reached under maxmemory-policy noeviction). Nothing was written. It wraps
	// ErrUnavailable, so every caller that answers 503 for an unreachable store also does so
	// for a full one (fail closed); errors.Is(err, ErrFull) tells the two apart.
	ErrFull = fmt.Errorf("sessions: store full: %w", ErrUnavailable)
	// ErrConflict: Swap found the record missing or holding another value than the caller
	// read; nothing was changed.
	ErrConflict = errors.New("sessions: record changed")
)

// Kind names a family of records; it is part of the storage key.
type Kind string

// The record kinds the broker uses.
const (
	KindTransaction Kind = "tx"    // login transaction, /authorize → /login/callback, single use
	KindSession     Kind = "sess"  // user session at the broker
	KindCode        Kind = "code"  // broker authorization code, single use
	KindRefresh     Kind = "rt"    // refresh token
	KindLogout      Kind = "lo"    // federated logout in flight (state → where to go back), single use
	KindJTI         Kind = "jti"   // DPoP proof replay cache entry
	KindNonce       Kind = "nonce" // DPoP nonce state
	KindIndex       Kind = "idx"   // a bounded set of members with expiries in one record (index.go)
	KindConsole     Kind = "con"   // operators' console session or sign-in in flight (broker/consolesession.go)
)

// Item is one record of an atomic batch.
type Item struct {
	Kind  Kind
	ID    string
	Value []byte
	TTL   time.Duration
}

// Ref names one record (a record Swap deletes).
type Ref struct {
	Kind Kind
	ID   string
}

// Store is the storage contract. Every backend passes the conformance suite in
// sessions/storetest. IDs are opaque strings; an ID of the form "TAG.REST" is stored under
// the hash tag TAG so that records sharing TAG can be written in one atomic batch on Redis
// Cluster (see Key).
type Store interface {
	// Create stores value under (kind, id) for ttl only if no live record is there;
	// otherwise it returns ErrExists and changes nothing.
	Create(ctx context.Context, kind Kind, id string, value []byte, ttl time.Duration) error
	// Put stores value under (kind, id) for ttl, replacing any record.
	Put(ctx context.Context, kind Kind, id string, value []byte, ttl time.Duration) error
	// PutAll stores every item or none (one MULTI/EXEC on Redis). All IDs must share one
	// hash tag; a batch that does not is refused and changes nothing.
	PutAll(ctx context.Context, items ...Item) error
	// Get returns the live record or ErrNotFound.
	Get(ctx context.Context, kind Kind, id string) ([]byte, error)
	// Take returns the live record and deletes it atomically: of any number of concurrent
	// takers exactly one gets the value, the rest get ErrNotFound.
	Take(ctx context.Context, kind Kind, id string) ([]byte, error)
	// Delete removes the record; deleting a missing record is not an error.
	Delete(ctx context.Context, kind Kind, id string) error
	// Swap is a compare-and-swap of one record against a batch: if the record (kind, id) is
	// live and holds exactly old, it writes every item of put (as PutAll) and deletes every
	// record of del, all in one atomic step (one Lua script on Redis); otherwise it returns
	// ErrConflict and changes nothing. put may replace (kind, id) itself, del may remove it.
	// Every id (kind, id), put and del must share one hash tag and no record may be both
	// written and deleted; such a batch is refused and changes nothing. Of concurrent
	// swappers that read the same old value exactly one wins.
	Swap(ctx context.Context, kind Kind, id string, old []byte, put []Item, del []Ref) error

	// AppendLog adds one serialized login event with its sortable id to the event log's
	// retention class, keeping the maxLen newest entries of that class (entries of the other
	// classes are never touched): exactly those in memory; on Redis, whose log is sharded,
	// at most MaxLogKept(maxLen), see LogShardCap for the guarantee. id must be LogIDLen
	// decimal digits, class LogAudit, LogUnauthenticated or LogAdmin and maxLen at least 1.
	AppendLog(ctx context.Context, class LogClass, id string, event []byte, maxLen int) error
	// The reads below see every class as one log ordered by id. A read is not a snapshot:
	// on Redis the classes and shards are read at slightly different instants, so an entry
	// appended during a read may be missed while a greater one appended after it is
	// returned; a checkpoint reader stops below the ids still being written (logs.Writer).

	// Logs returns up to limit serialized events, newest first, whose id is below before
	// (all when before is "").
	Logs(ctx context.Context, before string, limit int) ([][]byte, error)
	// LogsAfter returns up to limit entries, oldest first, whose id is above after (from the
	// oldest when after is ""). after must be "" or a log id (LogIDLen digits).
	LogsAfter(ctx context.Context, after string, limit int) ([]LogEntry, error)
	// LogsBefore returns up to limit entries, newest first, whose id is below before (from
	// the newest when before is ""). before must be "" or a log id.
	LogsBefore(ctx context.Context, before string, limit int) ([]LogEntry, error)
	// Log returns the entry stored under id, or ErrNotFound.
	Log(ctx context.Context, id string) (LogEntry, error)
	// TrimLogs removes every entry of class whose id is below before (a log id). Ids start
	// with the event's Unix nanoseconds, so the smallest id of an instant is a
	// retention-by-age bound.
	TrimLogs(ctx context.Context, class LogClass, before string) error

	// Ping reports whether the backend is reachable (ErrUnavailable otherwise).
	Ping(ctx context.Context) error
	// Close releases connections.
	Close() error
}

// LogBatcher is an optional Store capability: one atomic write of a batch (PutAll or Swap)
// and one log event, so that a record and the event reporting it are stored together or not
// at all (one round trip instead of two). The memory store and Redis single node or Sentinel
// (one MULTI/EXEC or script) offer it; on Redis Cluster the log lives on its shards' slots, so
// its methods return an error wrapping errors.ErrUnsupported and change nothing: use PutAll
// or Swap and AppendLog.
type LogBatcher interface {
	// PutAllAndLog stores every item (as PutAll) and appends the event to the LogAudit class
	// (as AppendLog), or does nothing.
	PutAllAndLog(ctx context.Context, logID string, event []byte, maxLen int, items ...Item) error
	// SwapAndLog is Swap, appending the event to the LogAudit class (as AppendLog) in the
	// same atomic step when the swap happens: on ErrConflict (or any error) neither the
	// batch nor the event is written.
	SwapAndLog(ctx context.Context, kind Kind, id string, old []byte, put []Item, del []Ref, logID string, event []byte, maxLen int) error
}

// MultiGetter is an optional Store capability: several Gets in one round trip (one pipeline
// on Redis, across Cluster slots too). It is not one atomic read: each record is read as Get
// would read it at about the same moment.
type MultiGetter interface {
	// GetMany returns the live record under every ref, in order, nil where there is none.
	GetMany(ctx context.Context, refs ...Ref) ([][]byte, error)
}

// Key returns the backend key for (kind, id) under prefix: "PREFIX:KIND:{TAG}REST", where
// TAG is the part of id before its first '.' (or all of id) and REST the remainder.
func Key(prefix string, kind Kind, id string) string {
	tag, rest := splitTag(id)
	return prefix + ":" + string(kind) + ":{" + tag + "}" + rest
}

// splitTag splits id at its first '.': the tag before it, the rest (dot included) after it.
// Keeping the dot in rest makes Key injective ("a" and "a." map to different keys).
func splitTag(id string) (tag, rest string) {
	if i := strings.IndexByte(id, '.'); i >= 0 {
		return id[:i], id[i:]
	}
	return id, ""
}

// checkID rejects ids that cannot be stored safely under a hash tag: empty ids, ids with an
// empty tag (leading '.'), and ids containing '{' or '}'.
func checkID(id string) error {
	switch {
	case id == "":
		return errors.New("sessions: empty id")
	case strings.ContainsAny(id, "{}"):
		return errors.New("sessions: id contains '{' or '}'")
	case id[0] == '.':
		return errors.New("sessions: id has an empty hash tag")
	}
	return nil
}

// checkRecord validates one record before a write.
func checkRecord(kind Kind, id string, ttl time.Duration) error {
	if kind == "" {
		return errors.New("sessions: empty kind")
	}
	if err := checkID(id); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("sessions: ttl %v must be positive", ttl)
	}
	return nil
}

// checkBatch validates a PutAll batch: every item valid and all ids under one hash tag.
func checkBatch(items []Item) error {
	for i, it := range items {
		if err := checkRecord(it.Kind, it.ID, it.TTL); err != nil {
			return fmt.Errorf("item %d: %w", i, err)
		}
		if t0, _ := splitTag(items[0].ID); i > 0 {
			if t, _ := splitTag(it.ID); t != t0 {
				return fmt.Errorf("sessions: PutAll items have different hash tags (%q, %q)", t0, t)
			}
		}
	}
	return nil
}

// LogEntry is one event-log entry with its id; ids are returned so that readers can page
// on them even past an entry whose payload they cannot decode.
type LogEntry struct {
	ID    string
	Event []byte
	Class LogClass // the retention class it was appended to
}

// LogClass is a retention class of the event log. Each class keeps its own entries under its
// own retention (AppendLog's maxLen, TrimLogs), so that a flood of entries of one class never
// removes an entry of another; reads merge them all into one log ordered by id.
type LogClass uint8

const (
	// LogAudit holds what must survive a flood: successes and what authenticated parties
	// did. The zero value, and the class of every entry written before classes existed.
	LogAudit LogClass = iota
	// LogUnauthenticated holds failures that anyone can cause without credentials.
	LogUnauthenticated
	// LogAdmin holds administrative actions: what a party allowed to change the broker's
	// configuration (a management token with a write scope) did or tried, so that neither
	// end users nor lower-privileged tokens can push it out.
	LogAdmin
)

// logClasses lists every class, in the order backends keep them.
var logClasses = [...]LogClass{LogAudit, LogUnauthenticated, LogAdmin}

// String returns the class name: "audit", "unauthenticated" or "admin".
func (c LogClass) String() string {
	switch c {
	case LogAudit:
		return "audit"
	case LogUnauthenticated:
		return "unauthenticated"
	case LogAdmin:
		return "admin"
	}
	return fmt.Sprintf("LogClass(%d)", uint8(c))
}

// checkLogClass rejects values other than LogAudit, LogUnauthenticated and LogAdmin.
func checkLogClass(c LogClass) error {
	if int(c) >= len(logClasses) {
		return fmt.Errorf("sessions: unknown log class %d", uint8(c))
	}
	return nil
}

// mergeLogs merges two id-ordered entry lists (ascending, or descending when desc) into one
// of at most limit entries. Ids are unique across classes (they carry random digits); an id
// present in both is kept once.
func mergeLogs(a, b []LogEntry, desc bool, limit int) []LogEntry {
	out := make([]LogEntry, 0, max(0, min(limit, len(a)+len(b))))
	for len(out) < limit && (len(a) > 0 || len(b) > 0) {
		switch {
		case len(b) == 0:
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0:
			out, b = append(out, b[0]), b[1:]
		case a[0].ID == b[0].ID:
			out, a, b = append(out, a[0]), a[1:], b[1:]
		case (a[0].ID < b[0].ID) != desc:
			out, a = append(out, a[0]), a[1:]
		default:
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// LogIDLen is the length of a login-event log id: 56 decimal digits.
const LogIDLen = 56

// checkLogID rejects log ids that are not 56 decimal digits.
func checkLogID(id string) error {
	if len(id) != LogIDLen {
		return fmt.Errorf("sessions: log id must be %d digits, got %d characters", LogIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return errors.New("sessions: log id must be decimal digits")
		}
	}
	return nil
}

// RedisConfig selects a single node (one address), Sentinel (MasterName set) or Cluster
// (several addresses, no MasterName) through go-redis's UniversalClient.
type RedisConfig struct {
	Addrs      []string
	MasterName string
	Username   string
	Password   string
	// SentinelUsername and SentinelPassword authenticate to the Sentinels (MasterName set),
	// whose credentials are separate from the master's.
	SentinelUsername string
	SentinelPassword string
	DB               int
	Prefix           string        // key prefix, default "dpop-broker"
	Timeout          time.Duration // dial/read/write timeout, default 2s
	// TLS, when set, is used for every connection (single node, Sentinel and Cluster).
	TLS *tls.Config
	// Logger receives the lines "store unavailable" and "store recovered" (redis_health.go);
	// nil: the logger of SetRedisLogger, else slog.Default().
	Logger *slog.Logger
}

// checkLogBound accepts "" or a log id: the cursor of LogsAfter and LogsBefore.
func checkLogBound(id string) error {
	if id == "" {
		return nil
	}
	return checkLogID(id)
}
