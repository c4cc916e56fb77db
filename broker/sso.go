package broker

// sessionRecord is the browser's single sign-on session at the broker (id "TAG.s", TAG its
// sid): who signed in at which upstream and when, and which apps received codes through it.
// /userinfo reads its claims, refresh tokens and opaque access tokens live only as long as
// it does, and ending it notifies every app in Clients (back-channel logout).
type sessionRecord struct {
	UserID     string         `json:"user_id"`
	Connection string         `json:"connection"`
	ClientID   string         `json:"client_id"` // the app of the upstream login that created it
	Claims     map[string]any `json:"claims"`
	AuthTime   int64          `json:"auth_time"` // unix s: the user's authentication at the upstream
	CookieHash string         `json:"cookie_hash"`
	// UpstreamIDToken is the upstream's ID token of this login: the id_token_hint of a
	// federated logout. Never logged.
	UpstreamIDToken string `json:"upstream_id_token,omitempty"`
	// UpstreamSID is the upstream ID token's sid: an upstream back-channel logout naming it
	// ends this session.
	UpstreamSID string `json:"upstream_sid,omitempty"`
	// AMR and ACR are the upstream ID token's amr and acr, passed on in the broker's ID tokens.
	AMR []string `json:"amr,omitempty"`
	ACR string   `json:"acr,omitempty"`
	// Clients are the apps that received a code through this session (ClientID first).
	Clients []string `json:"clients,omitempty"`
	// Created, Seen and Expires are unix seconds: the session's start, its last use (the idle
	// window slides from it) and its absolute end. Zero in records written before single
	// sign-on existed: such a session is never used for single sign-on.
	Created int64 `json:"created,omitempty"`
	Seen    int64 `json:"seen,omitempty"`
	Expires int64 `json:"expires,omitempty"`
}
