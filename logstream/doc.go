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
// newest event (or at the oldest retained one, Stream.StartOldest).
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
