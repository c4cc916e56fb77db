package logs

import (
	"slices"
	"strings"
)

// Troubleshooting explains one or more details.error codes of a failed login (f): what
// happened and what to do. The entries here are the one source of the README's
// troubleshooting table (docs/readme_test.go checks that the table is TroubleshootingTable's
// output) and of the console's event view, so the two never say different things. The texts
// are Markdown inline text: code spans and links, no HTML.
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
		Happened: "the broker could not encode the login's session or authorization code (the description says which); or the IdP itself answered `error=server_error`",
		ToDo:     "the IdP's: retry, or ask its operator; the broker's: look at the broker's log at that time and report it",
	},
	{
		Codes:    []string{"store_unavailable"},
		Happened: "Redis could not be reached; the request got 503 and nothing was half-written",
		ToDo:     "check Redis; the broker recovers by itself",
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

// fallbackCode is the entry for codes without one of their own: an IdP's error= at its
// authorize endpoint reaches details.error as the IdP sent it.
const fallbackCode = "access_denied"

// TroubleshootingEntries returns every entry, in the README's order.
func TroubleshootingEntries() []Troubleshooting {
	out := make([]Troubleshooting, len(troubleshooting))
	for i, t := range troubleshooting {
		t.Codes = slices.Clone(t.Codes)
		out[i] = t
	}
	return out
}

// LookupTroubleshooting returns the entry for a details.error code. A code without an entry
// of its own gets the one for an IdP's refusal (exact false): an IdP's error= codes pass
// through as they are. ok is false only for an empty code.
func LookupTroubleshooting(code string) (t Troubleshooting, exact, ok bool) {
	if code == "" {
		return Troubleshooting{}, false, false
	}
	var fallback Troubleshooting
	for _, e := range troubleshooting {
		if slices.Contains(e.Codes, code) {
			e.Codes = slices.Clone(e.Codes)
			return e, true, true
		}
		if slices.Contains(e.Codes, fallbackCode) {
			fallback = e
		}
	}
	fallback.Codes = slices.Clone(fallback.Codes)
	return fallback, false, true
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

// TroubleshootingTable returns the README's troubleshooting section body: the table of
// entries, then the login notes as paragraphs.
func TroubleshootingTable() string {
	var b strings.Builder
	b.WriteString("| `details.error` | what happened | what to do |\n|---|---|---|\n")
	for _, t := range troubleshooting {
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
	for _, n := range loginNotes {
		b.WriteString("\n" + n.Text + "\n")
	}
	return b.String()
}
