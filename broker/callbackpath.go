package broker

import (
	"net/http"
	"net/url"

	"github.com/dpop-broker/dpop-broker/config"
)

// Per-connection callback paths: the mix-up defence of RFC 9700 §4.4.2 for upstreams that
// do not send the RFC 9207 iss parameter. A connection with options.callback_path: dedicated
// sends PUBLIC_URL/login/callback/{connection id} as its redirect_uri; the login transaction
// remembers the redirect_uri it sent, and the callback accepts the authorization response
// only at exactly that URL. So a response from one IdP cannot complete a login started with
// another: each IdP only redirects to the URI registered with it.

// codeCallbackMismatch is the f event code of an authorization response that arrived at
// another callback than the one its login sent upstream.
const codeCallbackMismatch = "callback_mismatch"

// callbackFor is the redirect_uri a login with conn sends upstream.
func (s *Server) callbackFor(conn *connection) string {
	if conn.cfg.Options.CallbackPath == config.CallbackDedicated {
		return s.callbackURL + "/" + url.PathEscape(conn.id)
	}
	return s.callbackURL
}

// callbackHere is the callback URL request r arrived at (shared or dedicated path).
func (s *Server) callbackHere(r *http.Request) string {
	if id := r.PathValue("connection"); id != "" {
		return s.callbackURL + "/" + url.PathEscape(id)
	}
	return s.callbackURL
}

// txCallback is the redirect_uri the login of tx sent upstream (transactions written before
// it was recorded used the shared callback).
func (s *Server) txCallback(tx *transaction) string {
	if tx.Callback != "" {
		return tx.Callback
	}
	return s.callbackURL
}

// callbackProblem describes why r, carrying the authorization response of tx's login with
// conn, must be refused ("" when it arrived where that login's redirect_uri points).
func (s *Server) callbackProblem(r *http.Request, tx *transaction, conn *connection) string {
	want, here := s.txCallback(tx), s.callbackHere(r)
	if here == want {
		return ""
	}
	return "the authorization response arrived at " + s.clipEvent(here, 256) + ", but this login with connection " +
		conn.cfg.Name + " sent its upstream " + want + " (an identity provider mix-up, RFC 9700 §4.4): the login is refused"
}
