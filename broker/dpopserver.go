package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// storeReplay is the DPoP jti replay cache on the session store, shared by every replica
// (RFC 9449 §11.1, docs/conformance.md#dpop-proof-replay): Create is SET NX PX on Redis.
type storeReplay struct{ store sessions.Store }

// Claim stores hex(SHA-256(key)) — always a valid store id and its own hash tag — for ttl.
func (c storeReplay) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	sum := sha256.Sum256([]byte(key))
	ttl = max(ttl, time.Second) // a longer memory is the safe side
	err := c.store.Create(ctx, sessions.KindJTI, hex.EncodeToString(sum[:]), []byte{'1'}, ttl)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, sessions.ErrExists):
		return false, nil
	}
	return false, fmt.Errorf("dpop replay cache: %w", err)
}

// newVerifier builds the proof verifier from dpop_server. A missing nonce secret with
// require_nonce is generated (validation already refused it unless keys may be generated).
func newVerifier(cfg *config.DPoPServer, store sessions.Store, now func() time.Time) (*dpop.Verifier, error) {
	v := &dpop.Verifier{
		Algs: cfg.Algs, MaxAge: cfg.MaxAge, MaxFuture: cfg.MaxFuture,
		Replay: storeReplay{store}, RequireNonce: cfg.RequireNonce, Now: now,
	}
	if !cfg.RequireNonce {
		return v, nil
	}
	secret := []byte(cfg.NonceSecret)
	if len(secret) == 0 {
		secret = []byte(rand.Text() + rand.Text())
	}
	ns, err := dpop.NewNonceSource(secret, cfg.NoncePeriod, now)
	if err != nil {
		return nil, fmt.Errorf("dpop_server: %w", err)
	}
	v.Nonces = ns
	return v, nil
}

// nonceHeader puts a fresh DPoP-Nonce (and Cache-Control: no-store) on a response when the
// broker demands nonces (RFC 9449 §8, §8.2).
func (s *Server) nonceHeader(w http.ResponseWriter) {
	if s.verifier.RequireNonce {
		s.verifier.Challenge(w.Header())
	}
}

// Audience kinds of a token request (the rows of the issuance table in the README, "Sender-
// constrained tokens for your own apps").
type audienceKind int

const (
	audUserinfo audienceKind = iota // no audience: only /userinfo
	audAPI                          // a configured API (the token may also reach /userinfo)
)

// target is the resolved audience of a token request.
type target struct {
	kind        audienceKind
	audience    string // API audience; "" for userinfo only
	policy      string // API sender_constraining
	requiredFor string // API required_for (all_clients | public_clients)
}

// policyFor is the API policy that applies to a client: required with required_for
// public_clients is allowed for a confidential client (the identity SaaS's rule).
func (t target) policyFor(public bool) string {
	if t.policy == config.PolicyRequired && t.requiredFor == config.RequiredForPublic && !public {
		return config.PolicyAllowed
	}
	return t.policy
}

// resolveAudience maps an audience parameter to a target; unknown audiences are refused.
func (s *Server) resolveAudience(aud string) (target, *oauthError) {
	if aud == "" || aud == s.userinfoAudience() {
		return target{kind: audUserinfo}, nil
	}
	api := s.apis[aud]
	if api == nil {
		return target{}, invalidRequest("audience " + s.clipEvent(aud, 128) + " is not an API known to this broker")
	}
	return target{kind: audAPI, audience: aud, policy: api.SenderConstraining, requiredFor: api.RequiredFor}, nil
}

// decideBinding is the sender-constraining table of the README (the identity SaaS's issuance
// table; docs/conformance.md#dpop-sender-constraining-policy): whether the access token
// is bound to the proof key, issued as Bearer, or refused. policy is ignored for userinfo-only
// requests (n/a in the table).
func decideBinding(kind audienceKind, audience string, clientRequiresPoP, proofSent bool, policy string) (bind bool, refuse *oauthError) {
	if clientRequiresPoP && !proofSent {
		return false, invalidRequest("client requires sender-constrained tokens: send a DPoP proof")
	}
	if kind == audUserinfo {
		return proofSent, nil
	}
	switch policy {
	case config.PolicyRequired:
		if !proofSent {
			return false, invalidRequest("API " + audience + " requires sender-constrained tokens: send a DPoP proof")
		}
		return true, nil
	case config.PolicyAllowed:
		return proofSent, nil
	default: // none: a proof is ignored, unless the client insists on binding
		if clientRequiresPoP {
			return false, invalidRequest("client requires sender constraining but API " + audience + " does not allow it")
		}
		return false, nil
	}
}

func invalidRequest(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: desc}
}

func invalidGrant(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_grant", Description: desc}
}

// bindingFor returns the access-token binding: DPoP with the proof key's thumbprint (RFC 9449 §6.1),
// or Bearer.
func bindingFor(bind bool, proof *dpop.Result) binding {
	if bind && proof != nil {
		return binding{TokenType: "DPoP", JKT: proof.JKT, Alg: proof.Alg}
	}
	return binding{TokenType: "Bearer"}
}

// nonceRequiredText is the SaaS's description of use_dpop_nonce at the token endpoint.
const nonceRequiredText = "Authorization server requires nonce in DPoP proof"

// verifyProof checks the request's DPoP header(s) against the endpoint URL (and, at the
// resource server, the access token and its key). A rejected proof is a *dpop.ProofError;
// any other error means the check could not run (fail closed).
func (s *Server) verifyProof(r *http.Request, path, accessToken, jkt string, deferReplay bool) (*dpop.Result, error) {
	res, err := s.verifier.Verify(r.Context(), r.Header.Values("DPoP"), dpop.Check{
		Method: r.Method, URL: s.base + path, AccessToken: accessToken, JKT: jkt, DeferReplay: deferReplay,
	})
	if err != nil {
		var pe *dpop.ProofError
		if errors.As(err, &pe) {
			return nil, pe
		}
		return nil, fmt.Errorf("dpop proof check: %w", err)
	}
	return res, nil
}

// proofError maps a verifier error to the OAuth error of the token endpoint (RFC 9449 §5, §8)
// or of the resource server (401, §7.1); other errors become 503 (the replay cache is
// unreachable).
func proofError(err error, resourceServer bool) *oauthError {
	var pe *dpop.ProofError
	if !errors.As(err, &pe) {
		return &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "DPoP proofs cannot be checked right now"}
	}
	status := http.StatusBadRequest
	if resourceServer {
		status = http.StatusUnauthorized
	}
	code, desc := dpop.ErrCodeInvalidProof, pe.Description
	if pe.Code == dpop.ErrCodeUseNonce {
		code = dpop.ErrCodeUseNonce
		if !resourceServer {
			desc = nonceRequiredText
		}
	}
	if desc == "" {
		desc = "invalid DPoP proof"
	}
	return &oauthError{Status: status, Code: code, Description: desc}
}

// writeDPoPChallenge answers a resource-server error with the DPoP scheme (RFC 9449 §7.1): error,
// error_description and the accepted algs; a use_dpop_nonce error carries a fresh nonce.
func (s *Server) writeDPoPChallenge(w http.ResponseWriter, e *oauthError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`DPoP error=%q, error_description=%q, algs=%q`,
			e.Code, quoteSafe(e.Description), strings.Join(s.cfg.DPoPServer.Algs, " ")))
	}
	if e.Code == dpop.ErrCodeUseNonce {
		s.nonceHeader(w)
	}
	writeOAuthError(w, e)
}

// quoteSafe keeps a description inside an auth-param quoted string (no quotes, backslashes
// or controls, bounded).
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return '\''
		}
		return r
	}, clip(s, 200))
}
