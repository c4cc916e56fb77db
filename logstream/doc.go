// Package logstream sends the broker's event log to HTTP endpoints (log streams, as the
// identity SaaS calls them): each configured stream reads the events after its position in
// the store, keeps those of the types it wants, and POSTs them in batches to a webhook.
//
// Delivery is at least once. A batch is a JSON array of events in the schema of the
// management API's GET /api/v2/logs, in log_id order; the stream's position in the store
// (sessions.LogCursors) moves past a batch only after the endpoint answered 2xx, so an event
// is never skipped, and one may arrive twice (after a failed answer, a restart or a change of
// replica): receivers drop the events whose log_id they already have. The position survives
// restarts and is shared by the replicas: of the brokers running a stream, only the one
// holding its lease in the store sends (the lease is renewed every third of its TTL; the
// position is moved only by the holder of the live lease, so a replica that lost it cannot
// move it back or past what it sent). A stream without a stored position starts at the
// newest event (or at the oldest retained one, Stream.StartOldest): with a store that loses
// its data on restart (Redis without persistence) the position goes with the events, and only
// StartOldest sends those written between the restart and the stream's next read.
//
// # Late events
//
// A log_id begins with the writing replica's clock (logs.NewLogID) and the read waits only
// logs.Writer.Settle for other replicas, so an event can reach the store below the log_id the
// stream has already read: its replica's clock is behind, or its write was slow. The stream
// reads ahead at once but stores as its position only the last event read more than
// Stream.LateWindow ago (by its own clock), and every Poll re-reads the entries between the
// two, sending those it had not read (in batches of their own, after events with higher
// log_ids) and counting them (dpop_broker_log_stream_late_events_total, log line
// log_stream_late_event). The guarantee holds for an event whose log_id's time is less than
// LateWindow minus Poll (and one pass) before the moment it is stored, by the stream's clock:
// clock skew plus write delay must stay below that. A later event is not sent. A holder that
// takes over (or restarts) starts at the stored position and sends again up to LateWindow of
// events; the ids a stream remembers are bounded (maxWindowIDs), past which the re-read
// covers less of the window.
//
// A failed attempt (transport error, timeout, any answer but 2xx; redirects are not
// followed) is retried with capped exponential backoff and jitter, forever: the position
// waits. 413 splits the batch in two. Logins never wait on a stream: events are written to
// the store as always and each stream reads them in its own goroutine, holding one batch in
// memory at most. A stream's lag (log entries after its position, and the age of the oldest
// of them) is a metric.
//
// # Authentication of the requests
//
// Each request carries, whatever the authentication:
//
//	Content-Type: application/json
//	webhook-id: LOG_ID          (the log_id of the batch's last event)
//	webhook-timestamp: SECONDS  (Unix time of this attempt)
//
// With a bearer token it also carries "Authorization: Bearer TOKEN". With an HMAC secret it
// is signed as the Standard Webhooks specification (https://www.standardwebhooks.com/)
// defines, so its libraries verify it:
//
//	webhook-signature: v1,BASE64(HMAC-SHA256(KEY, webhook-id + "." + webhook-timestamp + "." + BODY))
//
// KEY is the secret's bytes: the configured secret is "whsec_" followed by their standard
// base64 encoding. A receiver recomputes the signature over the raw body and compares it in
// constant time, and refuses a timestamp more than 5 minutes away from its clock (the replay
// window); within the window a replayed request repeats events it already has.
package logstream
