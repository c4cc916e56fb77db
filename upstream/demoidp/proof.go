package demoidp

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const maxProofLen = 8 << 10

// defaultProofAlgs are accepted when DPoP is demanded (RequireDPoP/RequireNonce/AlwaysNonce)
// but DPoPAlgs is nil, i.e. the provider requires DPoP without advertising it.
var defaultProofAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA, "Ed25519", jose.RS256, jose.PS256}

// privateJWKMembers must never appear in a proof's jwk (RFC 9449 §4.3 step 7).
var privateJWKMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

type proof struct {
	jkt   string
	jti   string
	htu   string
	nonce string
	ath   string
	iat   time.Time
}

type proofClaims struct {
	JTI   string   `json:"jti"`
	HTM   string   `json:"htm"`
	HTU   string   `json:"htu"`
	IAT   *float64 `json:"iat"`
	Nonce string   `json:"nonce"`
	ATH   string   `json:"ath"`
}

// edVerifier verifies Ed25519 signatures under either alg label (EdDSA or Ed25519).
type edVerifier ed25519.PublicKey

func (v edVerifier) VerifyPayload(payload, sig []byte, alg jose.SignatureAlgorithm) error {
	if alg != jose.EdDSA && alg != "Ed25519" {
		return fmt.Errorf("alg %s does not match an Ed25519 key", alg)
	}
	if !ed25519.Verify(ed25519.PublicKey(v), payload, sig) {
		return errors.New("ed25519 signature does not verify")
	}
	return nil
}

// normalizeHTU applies RFC 3986 scheme/host case and default-port normalisation (§6.2.2,
// §6.2.3) and drops the query and fragment, as RFC 9449 §4.3 asks before comparing htu (step
// 9). It returns "" for an unusable URL.
func normalizeHTU(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" || u.User != nil {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// verifyProof checks the request's DPoP proof for htm and the normalised htu (RFC 9449 §4.3
// steps 1 to 9 and 11); the nonce (step 10) and jti replay are checked by the caller.
func (p *provider) verifyProof(r *http.Request, htm, wantHTU string) (*proof, error) {
	values := r.Header.Values("DPoP")
	if len(values) != 1 {
		return nil, errors.New("exactly one DPoP header is required")
	}
	raw := strings.TrimSpace(values[0])
	if raw == "" || len(raw) > maxProofLen || strings.Count(raw, ".") != 2 {
		return nil, errors.New("DPoP proof is not a compact JWS")
	}
	hdrB64, _, _ := strings.Cut(raw, ".")
	hdrJSON, err := base64.RawURLEncoding.DecodeString(hdrB64)
	if err != nil {
		return nil, errors.New("DPoP proof header is not base64url")
	}
	var hdr struct {
		Typ string                     `json:"typ"`
		JWK map[string]json.RawMessage `json:"jwk"`
	}
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		return nil, errors.New("DPoP proof header is not JSON")
	}
	if hdr.Typ != "dpop+jwt" {
		return nil, errors.New("DPoP proof typ must be dpop+jwt")
	}
	if hdr.JWK == nil {
		return nil, errors.New("DPoP proof header lacks jwk")
	}
	for _, m := range privateJWKMembers {
		if _, bad := hdr.JWK[m]; bad {
			return nil, errors.New("DPoP proof jwk contains private key material")
		}
	}
	allowed := p.dpopAlgs
	if !p.dpopOn {
		allowed = defaultProofAlgs
	}
	if len(allowed) == 0 {
		return nil, errors.New("no DPoP algorithm is accepted")
	}
	jws, err := jose.ParseSignedCompact(raw, allowed)
	if err != nil {
		return nil, fmt.Errorf("DPoP proof malformed or alg not allowed: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("DPoP proof must carry one signature")
	}
	h := jws.Signatures[0].Protected
	jwk := h.JSONWebKey
	if jwk == nil || !jwk.Valid() || !jwk.IsPublic() {
		return nil, errors.New("DPoP proof jwk must be a valid public key")
	}
	var key any
	switch k := jwk.Key.(type) {
	case ed25519.PublicKey:
		key = edVerifier(k)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, errors.New("DPoP proof RSA key shorter than 2048 bits")
		}
		key = k
	default:
		key = jwk.Key
	}
	if (h.Algorithm == "Ed25519" || h.Algorithm == string(jose.EdDSA)) && !isEd(jwk.Key) {
		return nil, errors.New("DPoP proof alg does not match its key")
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, fmt.Errorf("DPoP proof signature invalid: %w", err)
	}
	var c proofClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, errors.New("DPoP proof claims are not a JSON object")
	}
	if c.JTI == "" || len(c.JTI) > maxJTILen {
		return nil, errors.New("DPoP proof jti missing or too long")
	}
	if c.HTM != htm {
		return nil, fmt.Errorf("DPoP proof htm must be %s", htm)
	}
	if c.HTU == "" || normalizeHTU(c.HTU) != wantHTU {
		return nil, errors.New("DPoP proof htu does not match the endpoint")
	}
	if c.IAT == nil {
		return nil, errors.New("DPoP proof iat missing")
	}
	iat := time.Unix(int64(*c.IAT), 0)
	now := p.now()
	if iat.Before(now.Add(-proofWindow)) || iat.After(now.Add(proofWindow)) {
		return nil, errors.New("DPoP proof iat outside the acceptable window")
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("DPoP proof jwk thumbprint: %w", err)
	}
	return &proof{
		jkt: base64.RawURLEncoding.EncodeToString(tp), jti: c.JTI, htu: wantHTU,
		nonce: c.Nonce, ath: c.ATH, iat: iat,
	}, nil
}

func isEd(k any) bool { _, ok := k.(ed25519.PublicKey); return ok }

// errNoncesUnsupported refuses a proof with a nonce when the provider issues none.
var errNoncesUnsupported = errors.New("DPoP nonces are not supported")

// nonceChallenge reports whether got must be challenged, and with which nonce (RFC 9449 §4.3
// step 10, §8: once nonces are issued, a proof without one is challenged).
// A provider without nonces refuses a proof that carries one (errNoncesUnsupported).
func (p *provider) nonceChallenge(got string) (string, bool, error) {
	if got != "" {
		p.stats.NonceProofs.Add(1)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.opts.AlwaysNonce {
		return p.nonceLocked(now, true), true, nil
	}
	if !p.requireNonce.Load() {
		if got != "" {
			return "", false, errNoncesUnsupported
		}
		return "", false, nil
	}
	cur := p.nonceLocked(now, false)
	if got != "" && (got == cur || got == p.nonce.prev) {
		return "", false, nil
	}
	return cur, true, nil
}

// recordJTI remembers the proof's (htu, jti); a second use is a replay (RFC 9449 §11.1).
func (p *provider) recordJTI(pr *proof) error {
	key := pr.htu + " " + pr.jti
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if _, seen := p.jtis.get(now, key); seen {
		return errors.New("DPoP proof jti already used")
	}
	if err := p.jtis.put(now, key, struct{}{}, now.Add(2*proofWindow+time.Second)); err != nil {
		return fmt.Errorf("DPoP replay cache: %w", err)
	}
	return nil
}

// nonceHeader sets DPoP-Nonce on responses when the provider works with nonces.
func (p *provider) nonceHeader(w http.ResponseWriter) {
	if p.requireNonce.Load() {
		w.Header().Set("DPoP-Nonce", p.currentNonce())
	}
}
