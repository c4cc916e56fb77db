package logs

import (
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Class is an event's retention class, decided by the code that creates the event: that code
// knows whether the caller proved who it is. The store keeps the two classes apart
// (sessions.LogClass), each under its own retention, so that a flood of events anyone can
// cause never removes the audit trail; every read shows both as one log.
type Class uint8

const (
	// ClassByType, the zero value, lets the Writer decide from the type: the success types
	// (s, seacft, sertft, slo, srrt, sapi) are ClassAudit, every other type, including types
	// it does not know, ClassUnauthenticated. A failure after the caller authenticated must
	// say ClassAudit itself.
	ClassByType Class = iota
	// ClassAudit: a success, or what a party that proved its identity did (a management call
	// with a valid token, a token request by an authenticated confidential client, the reuse
	// of a rotated refresh token, a federated logout after the session ended). Never limited;
	// kept under Writer.MaxLen and Writer.MaxAge.
	ClassAudit
	// ClassUnauthenticated: a failure that anyone can cause without credentials (a bad
	// /authorize or callback request, a refused logout, a management call without a valid
	// token, a token request whose client did not authenticate, a rate-limit refusal).
	// Limited by Writer.Limits; kept under Writer.UnauthenticatedMaxLen and
	// Writer.UnauthenticatedMaxAge.
	ClassUnauthenticated
)

// String returns "audit", "unauthenticated" or "by_type".
func (c Class) String() string {
	switch c {
	case ClassAudit:
		return "audit"
	case ClassUnauthenticated:
		return "unauthenticated"
	}
	return "by_type"
}

// auditTypes are the types ClassByType puts in the audit class: successes, each of which
// needs a credential (an upstream login, a code, a refresh token, a session, a management
// token).
var auditTypes = map[string]bool{
	TypeSuccessLogin:      true,
	TypeSuccessExchange:   true,
	TypeSuccessRefresh:    true,
	TypeSuccessLogout:     true,
	TypeSuccessRevocation: true,
	TypeSuccessAPI:        true,
}

// RetentionClass returns ev's class: ev.Class when set, else the class its type implies
// (ClassAudit or ClassUnauthenticated, never ClassByType).
func (ev *Event) RetentionClass() Class {
	switch ev.Class {
	case ClassAudit, ClassUnauthenticated:
		return ev.Class
	}
	if auditTypes[ev.Type] {
		return ClassAudit
	}
	return ClassUnauthenticated
}

// storeClass is the store's name for a resolved class.
func (c Class) storeClass() sessions.LogClass {
	if c == ClassAudit {
		return sessions.LogAudit
	}
	return sessions.LogUnauthenticated
}

// Retention defaults of the unauthenticated class.
const (
	DefaultUnauthenticatedMaxLen = 10000
	DefaultUnauthenticatedMaxAge = 7 * 24 * time.Hour
)

// retention returns the count and age retention of a store class (age < 0: by count only).
func (w *Writer) retention(c sessions.LogClass) (maxLen int, maxAge time.Duration) {
	if c == sessions.LogUnauthenticated {
		maxLen, maxAge = w.UnauthenticatedMaxLen, w.UnauthenticatedMaxAge
		if maxLen <= 0 {
			maxLen = DefaultUnauthenticatedMaxLen
		}
		if maxAge == 0 {
			maxAge = DefaultUnauthenticatedMaxAge
		}
		return maxLen, maxAge
	}
	return w.maxLen(), w.maxAge()
}

// floors are the smallest ids within age retention, by store class ("" = no age limit).
type floors [2]string

// floorsAt returns the age floors of both classes at now.
func (w *Writer) floorsAt(now time.Time) floors {
	var f floors
	for _, c := range []sessions.LogClass{sessions.LogAudit, sessions.LogUnauthenticated} {
		if _, age := w.retention(c); age >= 0 {
			f[c] = MinLogID(now.Add(-age))
		}
	}
	return f
}

// expired reports whether e is older than its class's age retention.
func (f floors) expired(e sessions.LogEntry) bool {
	return int(e.Class) < len(f) && e.ID < f[e.Class]
}

// lowest returns the lower floor: a newest-first scan that passes it has nothing left to find.
func (f floors) lowest() string {
	return min(f[0], f[1])
}
