package broker

import (
	"encoding/json"
	"net/http"

	"github.com/dpop-broker/dpop-broker/config"
)

// discoveryDocument is the broker's OpenID provider metadata.
func (s *Server) discoveryDocument() map[string]any {
	return map[string]any{
		"issuer":                                     s.issuer,
		"authorization_endpoint":                     s.base + "/authorize",
		"token_endpoint":                             s.base + "/oauth/token",
		"userinfo_endpoint":                          s.base + "/userinfo",
		"jwks_uri":                                   s.base + "/.well-known/jwks.json",
		"end_session_endpoint":                       s.base + "/oidc/logout",
		"response_types_supported":                   []string{"code"},
		"response_modes_supported":                   []string{"query", responseModeWebMessage},
		"grant_types_supported":                      []string{"authorization_code", "refresh_token"},
		"subject_types_supported":                    []string{"public"},
		"id_token_signing_alg_values_supported":      []string{string(s.keys.SigningAlg)},
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      []string{config.AuthSecretBasic, config.AuthSecretPost, config.AuthNone},
		"revocation_endpoint":                        s.base + "/oauth/revoke",
		"revocation_endpoint_auth_methods_supported": []string{config.AuthSecretBasic, config.AuthSecretPost, config.AuthNone},
		"scopes_supported":                           []string{"openid", "profile", "email", "offline_access"},
		"claims_supported": append([]string{"sub", "iss", "aud", "azp", "exp", "iat", "auth_time", "nonce", "at_hash", "sid"},
			append(append([]string{}, profileClaims...), emailClaims...)...),
		"authorization_response_iss_parameter_supported": true,
		"dpop_signing_alg_values_supported":              s.cfg.DPoPServer.Algs, // RFC 9449 §5.1
		// OpenID Connect Back-Channel Logout 1.0 §2.1: logout tokens to the apps that
		// registered a backchannel_logout_uri (backchannel.go), always with sid.
		"backchannel_logout_supported":         true,
		"backchannel_logout_session_supported": true,
	}
}

func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeCachedJSON(w, s.discoveryDocument())
}

func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeCachedJSON(w, s.keys.JWKS())
}

// writeCachedJSON writes public metadata that clients may cache for a few minutes.
func writeCachedJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(b)
}

// clientAuthJWKSPath is where the broker publishes its client-authentication public keys
// (keys.client_auth and keys.previous_client_auth): the JWKS URL operators register at an
// upstream for private_key_jwt (RFC 7523; OpenID Connect Core §9; Okta accepts a JWKS URL).
const clientAuthJWKSPath = "/client-auth/jwks.json"

func (s *Server) handleClientAuthJWKS(w http.ResponseWriter, _ *http.Request) {
	writeCachedJSON(w, s.keys.ClientAuthJWKS())
}
