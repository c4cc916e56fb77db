package logs

import (
	"slices"
	"strings"
)

// Troubleshooting explains one or more codes of a failed event: what happened and what to
// do. Each topic (TroubleshootingTopic: failed logins, the token endpoint's refusals, the
// management API's) has its entries here, the one source of the README's troubleshooting
// tables (docs/readme_test.go checks that each table is TopicTable's output) and of the
// console's event view, so the two never say different things. The texts are Markdown
// inline text: code spans and links, no HTML.
type Troubleshooting struct {
	Codes    []string // the details.error codes the entry explains
	Also     string   // what else the entry covers, after the codes ("" for nothing)
	Happened string
	ToDo     string
}

// troubleshooting is in the README's order: DPoP, the upstream, the callback, the connection,
// the app's request, the store, the limits.
var troubleshooting = []Troubleshooting{
	{
		Codes:    []string{"dpop_not_supported"},
		Happened: "the upstream's discovery document has no `dpop_signing_alg_values_supported`; no login was started",
		ToDo:     "remove `dpop_signing_alg` from the connection, or enable DPoP at the IdP",
	},
	{
		Codes:    []string{"dpop_alg_mismatch"},
		Happened: "the upstream does not list the connection's `dpop_signing_alg` (the description lists what it offers)",
		ToDo:     "choose an offered algorithm (`broker discovery check ISSUER --alg …`); RSA-only IdPs: `RS256`/`PS256` with `keys.dpop.rsa`",
	},
	{
		Codes:    []string{"use_dpop_nonce"},
		Happened: "the upstream kept demanding a new DPoP nonce after `dpop.max_retries` retries",
		ToDo:     "transient: ask the user to retry; if it persists check connectivity and clock between broker and IdP, or raise `max_retries`",
	},
	{
		Codes:    []string{"invalid_dpop_proof"},
		Happened: "the upstream rejected the broker's proof (a proof with a remembered nonce was already retried once without it: `dpop_nonce_dropped`)",
		ToDo:     "check the broker's clock (`iat`), the IdP's allowed algorithms, and that `htu` (the token endpoint URL) is what the IdP expects",
	},
	{
		Codes:    []string{"upstream_requires_dpop"},
		Happened: "DPoP is off on the connection (no `dpop_signing_alg`, so the broker sent no proof) and the upstream answered with a DPoP error (`invalid_dpop_proof` or `use_dpop_nonce`): it requires DPoP of this client",
		ToDo:     "turn DPoP on for the connection (`dpop_signing_alg`, the console's DPoP switch), or stop requiring DPoP for the broker's client at the IdP",
	},
	{
		Codes:    []string{"access_denied"},
		Also:     "or another IdP `error=`",
		Happened: "the IdP refused the user at its authorize endpoint; or, with `details.audience`, the app asked for an API it has no grant for",
		ToDo:     "as the IdP's description says; or grant the API in `clients[].apis`",
	},
	{
		Codes:    []string{"upstream_error"},
		Happened: "the token endpoint failed (`invalid_grant`, `invalid_client`, 5xx, unreachable, a redirect, an address outside `upstream_allowed_networks`, malformed answer)",
		ToDo:     "the description carries the IdP's error; check client id/secret and redirect URI registration (`PUBLIC_URL/login/callback`, or `PUBLIC_URL/login/callback/{connection id}` with `callback_path: dedicated`)",
	},
	{
		Codes:    []string{"id_token_invalid"},
		Happened: "the upstream ID token failed a check: signature/alg, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, `at_hash` (the description names it)",
		ToDo:     "fix the IdP client settings; for `exp`/`iat`, fix clocks or `dpop.clock_skew`",
	},
	{
		Codes:    []string{"invalid_state"},
		Happened: "the callback's `state` is missing, unknown, expired, already used, or the browser has no (or another) transaction cookie; the transaction then stays for the browser that started it",
		ToDo:     "the user should start again from the app; frequent: transaction lifetime too short or cookies blocked; many from one IP for live logins: someone replays leaked callback URLs",
	},
	{
		Codes:    []string{"invalid_iss"},
		Happened: "RFC 9207 `iss` on the callback differs from the upstream's issuer (mix-up attack or misconfiguration)",
		ToDo:     "check the connection's `issuer`",
	},
	{
		Codes:    []string{"callback_mismatch"},
		Happened: "the answer arrived at another callback path than the login sent upstream (`callback_path: dedicated`; mix-up attack, or the IdP has the other URL registered)",
		ToDo:     "register `PUBLIC_URL/login/callback/{connection id}` at the IdP for dedicated connections, the shared one for the others",
	},
	{
		Codes:    []string{"discovery_failed"},
		Happened: "the upstream's discovery document could not be fetched or is invalid (also: an endpoint in it is not https, a redirect, or an address outside `upstream_allowed_networks`; the description says which)",
		ToDo:     "`broker discovery check ISSUER` (`--allow-network` as in `upstream_allowed_networks`)",
	},
	{
		Codes:    []string{"par_not_supported"},
		Happened: "the connection has `use_par` but the upstream's discovery has no `pushed_authorization_request_endpoint`; no login was started",
		ToDo:     "enable PAR at the IdP, or remove `use_par`",
	},
	{
		Codes:    []string{"par_busy"},
		Happened: "the connection already had 64 pushed authorization requests open on this replica (a slow PAR endpoint, or a flood of logins from many addresses); this login was refused without a push",
		ToDo:     "transient: the user tries again; if it persists, check the PAR endpoint's latency and where the logins come from",
	},
	{
		Codes:    []string{"client_auth_not_supported"},
		Happened: "the upstream's discovery does not list the connection's `token_endpoint_auth_method` (or the `private_key_jwt` alg); no login was started. `details.token_endpoint_auth_method` names the method",
		ToDo:     "choose a method the IdP lists, or enable it there. A token endpoint that refuses the client (`invalid_client`: wrong secret, a JWKS URL the IdP cannot fetch, an unknown `kid`) is `upstream_error`",
	},
	{
		Codes:    []string{"userinfo_failed"},
		Happened: "the upstream's userinfo call failed, or its `sub` differs from the ID token's",
		ToDo:     "check the IdP's userinfo endpoint, or set `fetch_userinfo: false` (userinfo is also fetched for `attribute_map.userinfo_scope` and `${context.userinfo.…}` templates)",
	},
	{
		Codes:    []string{"claims_too_large"},
		Happened: "the user profile the connection's `attribute_map` made is over 16 KiB (typically `bind_all`, or a huge groups list)",
		ToDo:     "narrow the mapping: `use_map` with the claims you need ([docs/claims.md](docs/claims.md))",
	},
	{
		Codes:    []string{"connection_unusable"},
		Happened: "a connection stored through the management API cannot be built (e.g. a key was removed)",
		ToDo:     "fix it with `PATCH /api/v2/connections/{id}`",
	},
	{
		Codes:    []string{"invalid_client", "invalid_redirect_uri", "invalid_request", "unsupported_response_type"},
		Happened: "the app's `/authorize` request was refused before any upstream contact",
		ToDo:     "fix the app's registration or request as the description says",
	},
	{
		Codes:    []string{"login_required"},
		Happened: "the app asked for silent authentication (`prompt=none`, event `fsa`) and the browser has no broker session that can answer it: none, expired (`sessions.idle_timeout`, `absolute_timeout`), `max_age` exceeded, another `connection` asked for, or the session's connection not enabled for the app (`details.error_description` says which). Sent by `postMessage` to the `redirect_uri`'s origin with `response_mode=web_message`, as SPA SDKs send from their iframe",
		ToDo:     "expected: the app then starts an interactive login",
	},
	{
		Codes:    []string{"server_error"},
		Happened: "the broker could not encode the login's session or authorization code (the description says which); or the browser's redirect to `/login/callback` said `error=server_error` (`details.error_from`: `redirect`): normally the IdP's answer, but that redirect is not authenticated, so its description is unverified text anyone who started a login could have sent",
		ToDo:     "the redirect's: retry, or ask the IdP's operator whether it failed then (do not act on the description's words alone); the broker's: look at the broker's log at that time and report it",
	},
	{
		Codes:    []string{"store_unavailable"},
		Happened: "Redis could not serve the request (unreachable, a Cluster slot without a master during a failover, or any other store failure); the request got 503 and nothing was half-written",
		ToDo:     "check Redis (`/readyz` says 503 meanwhile); the broker recovers by itself, within a second or two of a Cluster or Sentinel promotion",
	},
	{
		Codes:    []string{"store_full"},
		Happened: "the store had no room for the login's record (memory store at `store.memory.max_records`, or Redis at `maxmemory` with `noeviction`); 503, nothing half-written",
		ToDo:     "transient under a flood of unfinished logins; otherwise raise the limit or Redis `maxmemory` (Bounded state)",
	},
	{
		Codes:    []string{"store_busy"},
		Happened: "the login's record kept changing under concurrent writers (one user signing in from very many browsers at once: their session index); 503, nothing half-written",
		ToDo:     "transient: the user tries again",
	},
	{
		Codes:    []string{"too_many_requests"},
		Happened: "a rate limit or the bound on logins in progress refused the request (429; `details.rate_limit` says which)",
		ToDo:     "a flood from that address, or many users behind one NAT: see Limits and rate limiting",
	},
}

// tokenTroubleshooting explains the details.error of the token and revocation endpoints'
// refusals (feacft, fertft, ferrt, frrt): the OAuth error the app was answered.
var tokenTroubleshooting = []Troubleshooting{
	{
		Codes:    []string{"invalid_grant"},
		Happened: "the code or refresh token is unknown, expired, already used or issued to another client, its `redirect_uri` or PKCE verifier does not match, the DPoP key differs from the one it is bound to, or the session it came from has ended (the description says which). A code its own client presents again ends the session and its refresh tokens (`code_reuse: true`); a rotated-out refresh token presented again revokes its family (`ferrt`)",
		ToDo:     "the app starts a new login; many from one app: it retries used codes or keeps old refresh tokens (check its token storage, and that it signs with the key the token is bound to); `code_reuse` or `ferrt` from an unexpected address: a stolen code or token",
	},
	{
		Codes:    []string{"invalid_client"},
		Happened: "client authentication failed (401): unknown client, wrong secret, malformed Basic credentials, none from a confidential client, or another method than the client's",
		ToDo:     "check the app's `client_id`, `client_secret` and how it authenticates; after a secret rotation the app may still send the old one",
	},
	{
		Codes:    []string{"invalid_request"},
		Happened: "the request is malformed: a missing parameter, two client authentication methods, a body over the limit (413), an unknown `audience` or one that differs from the login's, or a DPoP proof missing where the client or the API requires sender-constrained tokens (the description says which)",
		ToDo:     "fix the app's request as the description says; for DPoP see the policy table under Sender-constrained tokens for your own apps",
	},
	{
		Codes:    []string{"unsupported_grant_type"},
		Happened: "a grant other than `authorization_code` and `refresh_token`",
		ToDo:     "the broker issues tokens for those two grants only: change the app's flow",
	},
	{
		Codes:    []string{"invalid_scope"},
		Happened: "a refresh asked for a scope the refresh token was not granted",
		ToDo:     "ask for the granted scopes or fewer, or sign in again for more",
	},
	{
		Codes:    []string{"access_denied"},
		Happened: "the client has no grant for the API (`details.audience`): none in `clients[].apis`, or it was removed or narrowed since the login (checked when the code is redeemed and at every refresh); 403",
		ToDo:     "grant the API in `clients[].apis`",
	},
	{
		Codes:    []string{"invalid_dpop_proof"},
		Happened: "the app's DPoP proof was refused (the description says why): malformed, a bad signature or `alg`, `htm`/`htu` not this request, `iat` outside `dpop_server.max_age`/`max_future`, or a `jti` already used; at revocation, a refresh token bound to a DPoP key without a proof signed with it",
		ToDo:     "check the app's clock and DPoP library: a new proof (new `jti`) for every request, retries included, for the token endpoint's URL",
	},
	{
		Codes:    []string{"temporarily_unavailable"},
		Happened: "the store or the DPoP replay cache could not be reached, or the store was full; 503, nothing half-written",
		ToDo:     "the app retries with the same code or refresh token; check Redis (`store_unavailable`, `store_full` in the failed logins' table)",
	},
	{
		Codes:    []string{"server_error"},
		Happened: "the broker could not issue the tokens (signing or encoding failed); 500",
		ToDo:     "look at the broker's log at that time and report it",
	},
	{
		Codes:    []string{"too_many_requests"},
		Happened: "a rate limit refused the request (429 with `Retry-After`; `details.rate_limit` says which: per IP, per client, per refresh-token family)",
		ToDo:     "see Limits and rate limiting; an app refreshing in a loop meets `per_refresh_family`",
	},
	{
		Codes:    []string{"unsupported_token_type"},
		Happened: "`/oauth/revoke` was given an access token (`frrt`): access tokens are self-contained and expire on their own",
		ToDo:     "revoke the refresh token instead, or end the session (`DELETE /api/v2/sessions/{id}`)",
	},
}

// apiTroubleshooting explains the errorCode of the management API's refusals (fapi, its
// details.error.errorCode), the console's among them.
var apiTroubleshooting = []Troubleshooting{
	{
		Codes:    []string{"dpop_not_supported"},
		Happened: "the upstream's discovery has no `dpop_signing_alg_values_supported`",
		ToDo:     "enable DPoP at the IdP, or leave `dpop_signing_alg` out",
	},
	{
		Codes:    []string{"dpop_alg_mismatch"},
		Happened: "the algorithm is not in the upstream's list (the message lists what it offers)",
		ToDo:     "pick an offered algorithm",
	},
	{
		Codes:    []string{"discovery_failed"},
		Happened: "the upstream's discovery could not be fetched or is invalid (the same message for every cause; the reason is in `details.error.detail` of the `fapi` event and in the broker's log)",
		ToDo:     "check `issuer`/`discovery_url` and reachability from the broker; an IdP on an internal address needs `upstream_allowed_networks`",
	},
	{
		Codes:    []string{"dpop_key_missing"},
		Happened: "the broker has no DPoP key for that algorithm",
		ToDo:     "configure `keys.dpop.es256` / `.ed25519` / `.rsa` and restart",
	},
	{
		Codes:    []string{"client_auth_not_supported"},
		Happened: "the upstream's `token_endpoint_auth_methods_supported` does not list `token_endpoint_auth_method` (or its `token_endpoint_auth_signing_alg_values_supported` the `private_key_jwt` alg); the message lists what it offers",
		ToDo:     "choose a listed method, or enable the method at the IdP",
	},
	{
		Codes:    []string{"client_auth_key_missing"},
		Happened: "`private_key_jwt` with an alg the broker has no `keys.client_auth` key for",
		ToDo:     "configure `keys.client_auth` with that alg and restart",
	},
	{
		Codes:    []string{"par_not_supported"},
		Happened: "`use_par` while the upstream's discovery has no `pushed_authorization_request_endpoint`",
		ToDo:     "enable PAR at the IdP, or leave `use_par` out",
	},
	{
		Codes:    []string{"token_vault_conflict"},
		Happened: "DPoP together with `federated_connections_access_tokens.active` or `upstream_params.offline_access`",
		ToDo:     "DPoP and Token Vault exclude each other: turn one off",
	},
	{
		Codes:    []string{"invalid_body"},
		Happened: "any other validation error (e.g. `type` other than `back_channel` with DPoP)",
		ToDo:     "as the message says",
	},
	{
		Codes:    []string{"invalid_query_string", "invalid_uri", "payload_too_large"},
		Happened: "a query parameter, a path id or the body's size was refused (400, 414 for a `q` too long, 413 over 64 KiB)",
		ToDo:     "as the message says",
	},
	{
		Codes:    []string{"connection_conflict", "too_many_clients"},
		Happened: "a connection with that name exists already (409); or the broker holds its most clients",
		ToDo:     "choose another name; delete a client before creating another",
	},
	{
		Codes:    []string{"inexistent_connection", "inexistent_client", "inexistent_log", "inexistent_session", "not_found"},
		Happened: "no such connection, client, log event or session (perhaps deleted, or expired), or no such API path (404)",
		ToDo:     "check the id; a session ends by itself at `sessions.idle_timeout`/`absolute_timeout`, an event after the retention in `logs`",
	},
	{
		Codes:    []string{"missing_authorization", "invalid_token"},
		Happened: "no `Authorization: Bearer` header, or a token that is not one of `management.tokens` (401; the event is in the unauthenticated class)",
		ToDo:     "send a configured management token; many from one address: someone is guessing tokens",
	},
	{
		Codes:    []string{"insufficient_scope"},
		Happened: "the token is valid but its scopes do not allow the call (403; the message lists the scopes that would)",
		ToDo:     "add the scope to the token in `management.tokens`, or use another token",
	},
	{
		Codes:    []string{"too_many_requests"},
		Happened: "`rate_limits.management.per_token` or `per_ip` refused the call (429 with `Retry-After`)",
		ToDo:     "slow the caller down, or raise the limit (Limits and rate limiting)",
	},
	{
		Codes:    []string{"store_unavailable", "internal_error"},
		Happened: "`store_unavailable`: the store could not serve the operation (503, whatever the store's failure); `internal_error`: the broker could not complete it for another reason, such as a stored document it cannot read (500); nothing was half-written",
		ToDo:     "check Redis and the broker's log at that time, then retry",
	},
	{
		Codes:    []string{"console_refused"},
		Happened: "the console refused a sign-in or a request (the message says why: the user is not in `console.admins`, the sign-in expired or was started in another browser, a cross-site request, an expired console session, a missing permission, a wrong break-glass management token, a rate limit, the store unavailable)",
		ToDo:     "as the message says: usually sign in again; add the user to `console.admins` if they should enter",
	},
}

// fallbackCode is the entry for codes without one of their own: an IdP's error= at its
// authorize endpoint reaches details.error as the IdP sent it.
const fallbackCode = "access_denied"

// TroubleshootingTopic names the events a set of entries explains, and how their code is found.
type TroubleshootingTopic int

const (
	// TopicLogin: failed logins (f, fsa), keyed by details.error.
	TopicLogin TroubleshootingTopic = iota
	// TopicToken: the token and revocation endpoints' refusals (feacft, fertft, ferrt, frrt),
	// keyed by details.error.
	TopicToken
	// TopicAPI: the management API's and the console's refusals (fapi), keyed by
	// details.error.errorCode.
	TopicAPI
)

// topics are the entries and the README table's code column of each topic.
var topics = map[TroubleshootingTopic]struct {
	entries []Troubleshooting
	column  string
}{
	TopicLogin: {troubleshooting, "`details.error`"},
	TopicToken: {tokenTroubleshooting, "`details.error`"},
	TopicAPI:   {apiTroubleshooting, "`errorCode`"},
}

// TroubleshootingTopicOf returns the topic that explains events of type typ (ok false for
// events no entry explains).
func TroubleshootingTopicOf(typ string) (topic TroubleshootingTopic, ok bool) {
	switch typ {
	case TypeFailedLogin, TypeFailedSilentAuth:
		return TopicLogin, true
	case TypeFailedExchange, TypeFailedRefresh, TypeFailedRotatingRefresh, TypeFailedRevocation:
		return TopicToken, true
	case TypeFailedAPI:
		return TopicAPI, true
	}
	return 0, false
}

// TroubleshootingEntries returns every entry for failed logins, in the README's order.
func TroubleshootingEntries() []Troubleshooting {
	return TopicEntries(TopicLogin)
}

// TopicEntries returns every entry of topic, in the README's order.
func TopicEntries(topic TroubleshootingTopic) []Troubleshooting {
	entries := topics[topic].entries
	out := make([]Troubleshooting, len(entries))
	for i, t := range entries {
		t.Codes = slices.Clone(t.Codes)
		out[i] = t
	}
	return out
}

// LookupTroubleshooting returns the entry for a failed login's details.error code. A code
// without an entry of its own gets the one for an IdP's refusal (exact false): an IdP's
// error= codes pass through as they are. ok is false only for an empty code.
func LookupTroubleshooting(code string) (t Troubleshooting, exact, ok bool) {
	if code == "" {
		return Troubleshooting{}, false, false
	}
	if t, ok := lookup(TopicLogin, code); ok {
		return t, true, true
	}
	t, _ = lookup(TopicLogin, fallbackCode)
	return t, false, true
}

// lookup returns the entry of topic that lists code.
func lookup(topic TroubleshootingTopic, code string) (Troubleshooting, bool) {
	for _, e := range topics[topic].entries {
		if slices.Contains(e.Codes, code) {
			e.Codes = slices.Clone(e.Codes)
			return e, true
		}
	}
	return Troubleshooting{}, false
}

// TroubleshootingCode returns the code an event of ev's type is explained by:
// details.error, or details.error.errorCode for fapi ("" when it has none).
func TroubleshootingCode(ev *Event) string {
	if ev.Type == TypeFailedAPI {
		e, _ := ev.Details["error"].(map[string]any)
		c, _ := e["errorCode"].(string)
		return c
	}
	c, _ := ev.Details["error"].(string)
	return c
}

// TroubleshootingFor returns the entry that explains ev and the code it was found by. A
// failed login's unknown code gets the IdP refusal's entry (exact false, as
// LookupTroubleshooting); for the other topics an unknown code has none. ok is false when
// no entry explains ev.
func TroubleshootingFor(ev *Event) (t Troubleshooting, code string, exact, ok bool) {
	topic, known := TroubleshootingTopicOf(ev.Type)
	if code = TroubleshootingCode(ev); !known || code == "" {
		return Troubleshooting{}, code, false, false
	}
	if topic == TopicLogin {
		t, exact, ok = LookupTroubleshooting(code)
		return t, code, exact, ok
	}
	t, ok = lookup(topic, code)
	return t, code, ok, ok
}

// LoginNote explains a fact of a successful login that needs the operator's attention.
type LoginNote struct {
	Fact string // the details fact it is about, as a code span shows it
	Text string // Markdown inline text
}

// loginNotes: a Bearer downgrade and a dropped nonce (the README's paragraphs after the table).
var loginNotes = []struct {
	LoginNote
	applies func(details map[string]any) bool
}{
	{
		LoginNote{
			Fact: "dpop_returned_from_upstream: false",
			Text: "A successful login with `dpop_returned_from_upstream: false` (`idp_token_type: \"bearer\"`) means " +
				"the IdP accepted the proof but issued a plain bearer token: the IdP's policy does not bind tokens " +
				"for this client or resource. The login succeeds; check the IdP's DPoP settings.",
		},
		func(d map[string]any) bool {
			_, signed := d["dpop_signing_alg"]
			return signed && d["dpop_returned_from_upstream"] == false
		},
	},
	{
		LoginNote{
			Fact: "dpop_nonce_dropped: true",
			Text: "A login with `dpop_nonce_dropped: true` met an upstream that refused the broker's remembered DPoP " +
				"nonce (typically it stopped using nonces, or was redeployed with new ones); the broker forgot the " +
				"nonce and retried once. Nothing to do; if it shows on every login, the IdP refuses nonces it " +
				"issued itself: check its DPoP nonce settings.",
		},
		func(d map[string]any) bool { return d["dpop_nonce_dropped"] == true },
	},
}

// LoginNotes returns the notes that apply to an event's details (none for most events).
func LoginNotes(details map[string]any) []LoginNote {
	var out []LoginNote
	for _, n := range loginNotes {
		if n.applies(details) {
			out = append(out, n.LoginNote)
		}
	}
	return out
}

// TroubleshootingTable returns the README's troubleshooting section for failed logins: the
// table of entries, then the login notes as paragraphs.
func TroubleshootingTable() string {
	var b strings.Builder
	b.WriteString(TopicTable(TopicLogin))
	for _, n := range loginNotes {
		b.WriteString("\n" + n.Text + "\n")
	}
	return b.String()
}

// TopicTable returns the README's table of topic's entries: code, what happened, what to do.
func TopicTable(topic TroubleshootingTopic) string {
	var b strings.Builder
	b.WriteString("| " + topics[topic].column + " | what happened | what to do |\n|---|---|---|\n")
	for _, t := range topics[topic].entries {
		b.WriteString("| ")
		for i, c := range t.Codes {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("`" + c + "`")
		}
		if t.Also != "" {
			b.WriteString(" (" + t.Also + ")")
		}
		b.WriteString(" | " + t.Happened + " | " + t.ToDo + " |\n")
	}
	return b.String()
}
