package logs

import (
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Class is an event's retention class, decided by the code that creates the event: that code
// knows whether the caller proved who it is, and with what privilege. The store keeps the
// three classes apart (sessions.LogClass), each under its own retention, so that a flood of
// events one kind of party can cause never removes the events of a more trusted one: anyone
// can fill the unauthenticated class, an end user or an app the audit class, and only an
// operator (a management token allowed to change the configuration) the admin class. Every
// read shows all three as one log.
type Class uint8

const (
	// ClassByType, the zero value, lets the Writer decide from the type: sapi is ClassAdmin,
	// the other success types (s, seacft, sertft, slo, srrt,
	// oidc_backchannel_logout_succeeded) ClassAudit, every other type,
	// including types it does not know, ClassUnauthenticated. A failure after the caller
	// authenticated must say ClassAudit or ClassAdmin itself.
	ClassByType Class = iota
	// ClassAudit: a success, or what a party that proved its identity did (a token request
	// by an authenticated confidential client, the reuse of a rotated refresh token, a
	// federated logout after the session ended, a management call refused to a valid token
	// that lacks the scope, or a failed read with a valid token). Never limited; kept under
	// Writer.MaxLen and Writer.MaxAge.
	ClassAudit
	// ClassUnauthenticated: a failure that anyone can cause without credentials (a bad
	// /authorize or callback request, a refused logout, a management call without a valid
	// token, a token request whose client did not authenticate, a rate-limit refusal).
	// Limited by Writer.Limits; kept under Writer.UnauthenticatedMaxLen and
	// Writer.UnauthenticatedMaxAge.
	ClassUnauthenticated
	// ClassAdmin: an administrative action, what an operator did or tried: a successful
	// management write (sapi), and a failed management write (fapi) by a token whose scope
	// allowed that call. Never limited (the management API's own rate limits bound it); kept
	// under Writer.AdminMaxLen and Writer.AdminMaxAge, apart from the audit class, so that
	// neither end users nor a token without a write scope can push it out.
	ClassAdmin
)

// String returns "audit", "unauthenticated", "admin" or "by_type".
func (c Class) String() string {
	switch c {
	case ClassAudit:
		return "audit"
	case ClassUnauthenticated:
		return "unauthenticated"
	case ClassAdmin:
		return "admin"
	}
	return "by_type"
}

// typeClasses are the classes ClassByType gives by type: successes, each of which needs a
// credential (an upstream login, a code, a refresh token, a session, a management token).
var typeClasses = map[string]Class{
	TypeSuccessLogin:      ClassAudit,
	TypeSuccessSilentAuth: ClassAudit,
	TypeSuccessExchange:   ClassAudit,
	TypeSuccessRefresh:    ClassAudit,
	TypeSuccessLogout:     ClassAudit,
	TypeSuccessRevocation: ClassAudit,
	TypeSuccessAPI:        ClassAdmin,
	// A back-channel logout delivery follows a logout, which needed the session.
	TypeBackchannelLogoutSucceeded: ClassAudit,
}

// RetentionClass returns ev's class: ev.Class when set, else the class its type implies
// (ClassAudit, ClassAdmin or ClassUnauthenticated, never ClassByType).
func (ev *Event) RetentionClass() Class {
	switch ev.Class {
	case ClassAudit, ClassUnauthenticated, ClassAdmin:
		return ev.Class
	}
	if c, ok := typeClasses[ev.Type]; ok {
		return c
	}
	return ClassUnauthenticated
}

// storeClass is the store's name for a resolved class.
func (c Class) storeClass() sessions.LogClass {
	switch c {
	case ClassAudit:
		return sessions.LogAudit
	case ClassAdmin:
		return sessions.LogAdmin
	}
	return sessions.LogUnauthenticated
}

// Retention defaults of the unauthenticated class.
const (
	DefaultUnauthenticatedMaxLen = 10000
	DefaultUnauthenticatedMaxAge = 7 * 24 * time.Hour
)

// Retention defaults of the admin class: administrative actions are few (a change of a
// connection), and the ones an investigation needs may be months old.
const (
	DefaultAdminMaxLen = 10000
	DefaultAdminMaxAge = 365 * 24 * time.Hour
)

// storeClasses are the store classes in the order of floors.
var storeClasses = [...]sessions.LogClass{sessions.LogAudit, sessions.LogUnauthenticated, sessions.LogAdmin}

// retention returns the count and age retention of a store class (age < 0: by count only).
func (w *Writer) retention(c sessions.LogClass) (maxLen int, maxAge time.Duration) {
	switch c {
	case sessions.LogUnauthenticated:
		return orDefault(w.UnauthenticatedMaxLen, DefaultUnauthenticatedMaxLen), ageOrDefault(w.UnauthenticatedMaxAge, DefaultUnauthenticatedMaxAge)
	case sessions.LogAdmin:
		return orDefault(w.AdminMaxLen, DefaultAdminMaxLen), ageOrDefault(w.AdminMaxAge, DefaultAdminMaxAge)
	}
	return w.maxLen(), w.maxAge()
}

// orDefault returns n, or def when n is not positive.
func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// ageOrDefault returns d, or def when d is 0 (a negative d, no age limit, is kept).
func ageOrDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// floors are the smallest ids within age retention, indexed by store class ("" = no age
// limit).
type floors [len(storeClasses)]string

// floorsAt returns the age floors of every class at now.
func (w *Writer) floorsAt(now time.Time) floors {
	var f floors
	for _, c := range storeClasses {
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

// lowest returns the lowest floor: a newest-first scan that passes it has nothing left to
// find.
func (f floors) lowest() string {
	return min(f[0], f[1], f[2])
}
