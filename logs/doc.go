// Package logs is the broker's event log: the login-event model, the Writer that writes each
// event as a line to slog (Writer.EventLogger: a stream of its own, or the application log)
// and to the store, and the search that reads them back.
//
// Its parts:
//   - Event (event.go) is one entry, with the type codes of the identity SaaS's log
//     (TypeSuccessLogin "s", TypeFailedLogin "f", …; Description names each) and ids from
//     NewLogID that sort by time. Writer.Write records an event; Writer.WriteWith lets a
//     caller store it in one atomic batch with its own records. Writer.Tally names the
//     counters an event adds to (sessions.Tallier), written in the same round trip as the
//     event; Writer.Tallies reads them back by time range.
//   - Class (class.go) is an event's retention class: audit, unauthenticated or admin, each
//     kept apart in the store under its own count and age limits, so that a flood anyone can
//     cause never pushes out what an authenticated party or an operator did.
//   - Limiter (limit.go) admits unauthenticated events per client IP and in all; a dropped
//     event is a *DropError (ErrDropped) and is summed up in a periodic warning.
//   - Redact (redact.go) drops secret-looking detail keys and JWT-shaped values, and Secrets
//     (secrets.go) holds the configured secrets that Writer.Scrub removes from every string,
//     percent-encoded or cut, so that no event carries a token, code, proof, secret or key.
//     Clip (clip.go) bounds untrusted text with the cut mark that scrubbing recognises.
//   - Query, ParseQuery and Filter (search.go, query.go) are the management API's log search:
//     the Lucene subset of q, search mode with pages, checkpoint mode by log_id.
//     Writer.Search, Get, Recent, Latest, Follow and Tail (one bounded step of a live tail,
//     for the console) read the store; Writer.Trim applies
//     the age retention.
//   - Troubleshooting (troubleshoot.go) says what happened and what to do, per code of a
//     failed login (details.error), of a token or revocation refusal (details.error) and of
//     a management API or console refusal (details.error.errorCode); TroubleshootingFor
//     finds an event's entry. LoginNotes explain a successful login's Bearer downgrade or
//     dropped nonce. They are the one source of the README's troubleshooting tables and the
//     console's event view.
//   - ThrottleHandler (throttle.go) is a slog.Handler that limits the operational log's WARN
//     and ERROR lines per message and sums up what it dropped; StoreOutageHandler
//     (outage.go) writes the lines of an unreachable store at DEBUG, as the store reports
//     the outage once itself.
//   - LRU (lru.go) is the bounded per-key table behind the limits, here and in the broker.
//
// The broker writes its events with a Writer over its store:
//
//	w := &logs.Writer{Logger: logger, Store: store, Secrets: secrets, Limits: limiter}
//	err := w.Write(ctx, &logs.Event{Type: logs.TypeSuccessLogin, ClientID: clientID, IP: ip})
package logs
