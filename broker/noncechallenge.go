package broker

import (
	"net/http"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/logs"
)

// resultNonceChallenge is the dpop_broker_token_requests_total result of a token request
// answered use_dpop_nonce: neither a success nor a failure.
const resultNonceChallenge = "nonce_challenge"

// nonceChallenge reports whether a token-endpoint error is the server-nonce challenge
// (400 use_dpop_nonce, RFC 9449 §8). The verifier answers it only to a proof that is
// otherwise valid, from an authenticated client, so it is the normal first step of every DPoP
// client when dpop_server.require_nonce is on (and again when its nonce has rotated out).
func nonceChallenge(oerr *oauthError) bool {
	return oerr != nil && oerr.Code == dpop.ErrCodeUseNonce
}

// nonceChallengeEvent records a use_dpop_nonce answer as its own event type
// (dpop_nonce_challenge) and metric result (nonce_challenge), so that feacft/fertft and the
// failure counters keep meaning "something is wrong" and alerts on them stay quiet on healthy
// DPoP traffic. ev already carries the client, details.dpop and details.error.
func (s *Server) nonceChallengeEvent(r *http.Request, ev *logs.Event, grant string) {
	ev.Type = logs.TypeDPoPNonceChallenge
	ev.Details["grant_type"] = s.clipEvent(grant, 64)
	s.metrics.tokenRequests.WithLabelValues(metricGrant(grant), resultNonceChallenge, "false").Inc()
	s.write(r, ev)
}

// metricGrant bounds the grant label of dpop_broker_token_requests_total: the grant_type
// parameter is client input.
func metricGrant(grant string) string {
	if grant != "authorization_code" && grant != "refresh_token" {
		return "other"
	}
	return grant
}
