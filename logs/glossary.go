package logs

import (
	"fmt"
	"strings"
)

// meanings says, for a newcomer, when the broker writes each event type: the README's
// glossary (GlossaryTable) is generated from it, so every code the broker may emit is
// explained in one place.
var meanings = map[string]string{
	TypeSuccessLogin:               "A user signed in through a connection (the upstream IdP) and the app received an authorization code.",
	TypeFailedLogin:                "A login failed: at `/authorize`, at the upstream, or on the way back (`/login/callback`). `details.error` says why (see Troubleshooting).",
	TypeSuccessSilentAuth:          "A `prompt=none` request was answered from the broker's single sign-on session, with no page shown.",
	TypeFailedSilentAuth:           "A `prompt=none` request was refused (`login_required`, `interaction_required`): the app must show a sign-in.",
	TypeSuccessExchange:            "An app exchanged an authorization code for tokens at `/oauth/token`.",
	TypeFailedExchange:             "An app's code exchange at `/oauth/token` was refused (`details.error`).",
	TypeSuccessRefresh:             "An app exchanged a refresh token for new tokens.",
	TypeFailedRefresh:              "A refresh-token exchange was refused.",
	TypeFailedRotatingRefresh:      "A refresh token that had already been rotated was used again: the broker revoked its whole family (a stolen token, or an app bug).",
	TypeSuccessLogout:              "A user logged out through the broker (`/oidc/logout` or `/v2/logout`).",
	TypeFailedLogout:               "A logout request was refused (unknown `post_logout_redirect_uri`, a bad `id_token_hint`, …).",
	TypeSuccessRevocation:          "An app revoked a refresh token at `/oauth/revoke`.",
	TypeFailedRevocation:           "A revocation request at `/oauth/revoke` was refused (the broker's own code).",
	TypeFederatedLogoutFailed:      "The broker ended its session but could not end the user's session at the upstream IdP.",
	TypeSuccessAPI:                 "A write through the management API or the console succeeded; the event names the operator or token.",
	TypeFailedAPI:                  "A management API or console request was refused (authentication, scope, validation); `details.error` (`errorCode`, `message`) says why.",
	TypeDPoPNonceChallenge:         "A token request was answered `use_dpop_nonce` (RFC 9449 §8): a normal DPoP step, the client retries with the nonce (the broker's own code).",
	TypeAPILimit:                   "A request was refused by a rate limit that has no failure type of its own (`/userinfo`).",
	TypeBackchannelLogoutSucceeded: "A logout token reached an app's `backchannel_logout_uri` (OpenID Connect Back-Channel Logout; the broker's own code).",
	TypeBackchannelLogoutFailed:    "A logout token could not be delivered to an app's `backchannel_logout_uri` (the broker's own code).",
}

// Meaning returns when the broker writes events of type typ ("" for an unknown type).
func Meaning(typ string) string { return meanings[typ] }

// GlossaryTable returns the README's table of event types: code, name and meaning, in the
// order of the glossary (logins, app tokens, logout, operators, protocol steps).
func GlossaryTable() string {
	order := []string{
		TypeSuccessLogin, TypeFailedLogin, TypeSuccessSilentAuth, TypeFailedSilentAuth,
		TypeSuccessExchange, TypeFailedExchange, TypeSuccessRefresh, TypeFailedRefresh, TypeFailedRotatingRefresh,
		TypeSuccessRevocation, TypeFailedRevocation,
		TypeSuccessLogout, TypeFailedLogout, TypeFederatedLogoutFailed, TypeBackchannelLogoutSucceeded, TypeBackchannelLogoutFailed,
		TypeSuccessAPI, TypeFailedAPI,
		TypeDPoPNonceChallenge, TypeAPILimit,
	}
	var b strings.Builder
	b.WriteString("| Code | Name | Written when |\n|---|---|---|\n")
	for _, typ := range order {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", typ, Description(typ), Meaning(typ))
	}
	return b.String()
}
