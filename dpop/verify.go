package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"math"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"

	josejson "github.com/go-jose/go-jose/v4/json"
)

// Proof error codes (RFC 9449 §5, §7.1, §8).
const (
	ErrCodeInvalidProof = "invalid_dpop_proof"
	ErrCodeUseNonce     = "use_dpop_nonce"
)

// Limits applied to proofs before any parsing (RFC 9449 §4.3 step 2, §11.1).
const (
	MaxProofSize = 8 << 10 // bytes of one DPoP header value
	MaxJTILength = 256     // bytes of the jti claim
	MaxRSABits   = 8192    // larger proof keys are refused (verification cost)
)

// DefaultAlgs are the proof algorithms a Verifier accepts when Algs is empty.
var DefaultAlgs = []string{"ES256", "ES384", "ES512", AlgEdDSA, AlgEd25519, AlgRS256, AlgPS256}

// ProofError is a rejected proof: Code is invalid_dpop_proof or use_dpop_nonce, Check names the
// rule that failed (the row of docs/conformance.md, e.g. "dpop-proof-typ"), Description is
// safe to send to the client.
type ProofError struct {
	Code        string
	Check       string
	Description string
}

func (e *ProofError) Error() string {
	return fmt.Sprintf("dpop: %s (%s): %s", e.Code, e.Check, e.Description)
}

// Check names of refused proofs: each is the row of docs/conformance.md that states the rule,
// in the order of the checks of RFC 9449 §4.3.
const (
	checkSingleHeader   = "dpop-proof-single-header"   // §4.3 step 1
	checkWellFormed     = "dpop-proof-well-formed"     // step 2
	checkRequiredClaims = "dpop-proof-required-claims" // step 3
	checkTyp            = "dpop-proof-typ"             // step 4
	checkAlg            = "dpop-proof-alg"             // step 5
	checkSignature      = "dpop-proof-signature"       // step 6
	checkPublicJWK      = "dpop-proof-public-jwk"      // step 7
	checkHTM            = "dpop-proof-htm"             // step 8
	checkHTU            = "dpop-proof-htu"             // step 9
	checkNonce          = "dpop-proof-nonce"           // step 10
	checkIAT            = "dpop-proof-iat"             // step 11, §11.1
	checkATH            = "dpop-proof-ath"             // step 12: ath
	checkKeyBinding     = "dpop-proof-key-binding"     // step 12: the key the token is bound to
	checkReplay         = "dpop-proof-replay"          // §11.1
	checkNonceRequired  = "dpop-nonce-required"        // §8, §11.3
)

// descKeyMismatch is the description of a key-binding failure.
const descKeyMismatch = "proof key does not match the bound key"

// KeyMismatch reports whether the proof was refused because its key is not the one the token,
// code or refresh token is bound to (RFC 9449 §4.3 step 12, §10, §5); a resource server
// answers invalid_token for it.
func (e *ProofError) KeyMismatch() bool {
	return e != nil && e.Check == checkKeyBinding && e.Description == descKeyMismatch
}

func invalid(check, desc string) *ProofError {
	return &ProofError{Code: ErrCodeInvalidProof, Check: check, Description: desc}
}

// ReplayCache remembers proof identifiers for the acceptance window. Claim returns true the first
// time key is claimed and false for every later claim within ttl (RFC 9449 §11.1). It must be
// shared by all replicas (the broker backs it with the store: SET NX PX).
type ReplayCache interface {
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// Verifier checks proofs at an authorization server or resource server (RFC 9449 §4.3, §8,
// §11.1).
type Verifier struct {
	Algs         []string      // allowed JOSE algs; default ES256, ES384, ES512, EdDSA, Ed25519, RS256, PS256
	MaxAge       time.Duration // iat may be this old; default 300 s (RFC 9449 §11.1)
	MaxFuture    time.Duration // iat may be this far ahead; default 30 s
	Replay       ReplayCache   // required: nil fails closed
	Nonces       *NonceSource  // when set and RequireNonce, proofs must carry a valid nonce
	RequireNonce bool
	Now          func() time.Time
}

// Check is the request a proof must match.
type Check struct {
	Method      string // request method (htm, RFC 9449 §4.3 step 8)
	URL         string // the endpoint's configured public URL; query/fragment ignored (htu, step 9)
	AccessToken string // RS: the presented access token, for ath (step 12); "" at the AS
	JKT         string // when non-empty, the proof key's thumbprint must equal it (step 12, §10)
	// DeferReplay leaves the replay claim (RFC 9449 §11.1) to a later Verifier.Claim, so a
	// server can first check that the request presents something worth a replay-cache entry
	// (a live code or refresh token): proofs made up to fill the cache then cost it nothing.
	DeferReplay bool
}

// Result is an accepted proof.
type Result struct {
	JKT   string // RFC 7638 thumbprint of the proof key
	Alg   string
	JTI   string
	IAT   time.Time
	Nonce string

	replayKey string        // set while the replay claim is deferred (Check.DeferReplay)
	replayTTL time.Duration // how long the claim must be remembered
}

// AllowedAlgs returns the algorithms the verifier accepts, in configuration order, restricted
// to the asymmetric ones it can verify (the value for algs="…" and
// dpop_signing_alg_values_supported).
func (v *Verifier) AllowedAlgs() []string {
	src := v.Algs
	if len(src) == 0 {
		src = DefaultAlgs
	}
	out := make([]string, 0, len(src))
	for _, a := range src {
		if _, ok := algSpecs[a]; ok && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func (v *Verifier) allows(alg string) bool {
	if _, ok := algSpecs[alg]; !ok {
		return false // none, HS*, unknown: never, whatever Algs says (RFC 9449 §4.3 step 5)
	}
	if len(v.Algs) == 0 {
		return slices.Contains(DefaultAlgs, alg)
	}
	return slices.Contains(v.Algs, alg)
}

func (v *Verifier) window() (maxAge, maxFuture time.Duration) {
	maxAge, maxFuture = v.MaxAge, v.MaxFuture
	if maxAge <= 0 {
		maxAge = 300 * time.Second
	}
	if maxFuture <= 0 {
		maxFuture = 30 * time.Second
	}
	return maxAge, maxFuture
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// keyKind is the JWK family an algorithm needs.
type keyKind int

const (
	kindEC keyKind = iota
	kindRSA
	kindRSAPSS
	kindEd25519
)

type algSpec struct {
	kind  keyKind
	hash  crypto.Hash    // 0 for Ed25519
	curve elliptic.Curve // EC only
}

// algSpecs lists the asymmetric JOSE algorithms a proof may use (RFC 9449 §4.3 step 5, §11.6).
var algSpecs = map[string]algSpec{
	"ES256":    {kind: kindEC, hash: crypto.SHA256, curve: elliptic.P256()},
	"ES384":    {kind: kindEC, hash: crypto.SHA384, curve: elliptic.P384()},
	"ES512":    {kind: kindEC, hash: crypto.SHA512, curve: elliptic.P521()},
	"RS256":    {kind: kindRSA, hash: crypto.SHA256},
	"RS384":    {kind: kindRSA, hash: crypto.SHA384},
	"RS512":    {kind: kindRSA, hash: crypto.SHA512},
	"PS256":    {kind: kindRSAPSS, hash: crypto.SHA256},
	"PS384":    {kind: kindRSAPSS, hash: crypto.SHA384},
	"PS512":    {kind: kindRSAPSS, hash: crypto.SHA512},
	AlgEdDSA:   {kind: kindEd25519},
	AlgEd25519: {kind: kindEd25519},
}

// rawHeader is the protected header; go-jose's json package matches member names exactly.
type rawHeader struct {
	Typ  string              `json:"typ"`
	Alg  string              `json:"alg"`
	JWK  josejson.RawMessage `json:"jwk"`
	Crit josejson.RawMessage `json:"crit"`
}

// jwkPrivate holds the private members RFC 7517/7518/8037 define; any of them present rejects
// the proof (RFC 9449 §4.3 step 7).
type jwkPrivate struct {
	D    josejson.RawMessage `json:"d"`
	P    josejson.RawMessage `json:"p"`
	Q    josejson.RawMessage `json:"q"`
	DP   josejson.RawMessage `json:"dp"`
	DQ   josejson.RawMessage `json:"dq"`
	QI   josejson.RawMessage `json:"qi"`
	Oth  josejson.RawMessage `json:"oth"`
	K    josejson.RawMessage `json:"k"`
	Priv josejson.RawMessage `json:"priv"`
}

func (p *jwkPrivate) any() bool {
	return p.D != nil || p.P != nil || p.Q != nil || p.DP != nil || p.DQ != nil || p.QI != nil ||
		p.Oth != nil || p.K != nil || p.Priv != nil
}

type rawClaims struct {
	JTI   *string  `json:"jti"`
	HTM   *string  `json:"htm"`
	HTU   *string  `json:"htu"`
	IAT   *float64 `json:"iat"`
	ATH   *string  `json:"ath"`
	Nonce *string  `json:"nonce"`
}

// Verify checks the DPoP header values of one request (pass r.Header.Values("DPoP")). It returns
// a *ProofError for every rejection; other errors (replay cache unreachable) mean "fail closed".
//
// Order: the cheap structural and claim checks first, then the signature, the key binding,
// the server nonce (so use_dpop_nonce is only ever the answer to an otherwise valid proof),
// and last the replay claim, so that only valid proofs consume a jti.
func (v *Verifier) Verify(ctx context.Context, headers []string, c Check) (*Result, error) {
	if v.Replay == nil {
		return nil, errors.New("dpop: verifier has no replay cache")
	}
	if v.RequireNonce && v.Nonces == nil {
		return nil, errors.New("dpop: verifier requires nonces but has no nonce source")
	}
	if c.Method == "" || c.URL == "" {
		return nil, errors.New("dpop: check needs a method and a URL")
	}

	// Step 1: exactly one header field, one value.
	switch {
	case len(headers) == 0:
		return nil, invalid(checkSingleHeader, "missing DPoP proof")
	case len(headers) > 1:
		return nil, invalid(checkSingleHeader, "more than one DPoP header")
	}
	proof := headers[0]
	if strings.IndexByte(proof, ',') >= 0 {
		return nil, invalid(checkSingleHeader, "more than one DPoP proof in the header")
	}

	// Step 2: one compact JWS of bounded size.
	if proof == "" {
		return nil, invalid(checkWellFormed, "empty DPoP proof")
	}
	if len(proof) > MaxProofSize {
		return nil, invalid(checkWellFormed, "DPoP proof too large")
	}
	d1 := strings.IndexByte(proof, '.')
	if d1 < 0 {
		return nil, invalid(checkWellFormed, "DPoP proof is not a compact JWS")
	}
	d2 := strings.IndexByte(proof[d1+1:], '.')
	if d2 < 0 {
		return nil, invalid(checkWellFormed, "DPoP proof is not a compact JWS")
	}
	d2 += d1 + 1
	if strings.IndexByte(proof[d2+1:], '.') >= 0 {
		return nil, invalid(checkWellFormed, "DPoP proof is not a compact JWS")
	}
	hdrB64, payB64, sigB64 := proof[:d1], proof[d1+1:d2], proof[d2+1:]
	if hdrB64 == "" || payB64 == "" { // an empty signature fails at step 5 (none) or step 6
		return nil, invalid(checkWellFormed, "DPoP proof has an empty part")
	}
	// Steps 2 (header JSON, no crit), 4, 5 and 7: parsed once per distinct header text.
	hdr, perr := proofHeaders.lookup(hdrB64)
	if perr != nil {
		return nil, perr
	}
	if !v.allows(hdr.alg) {
		return nil, invalid(checkAlg, "alg not allowed")
	}

	// Steps 2 and 3: claims.
	payJSON, err := b64.Strict().DecodeString(payB64)
	if err != nil {
		return nil, invalid(checkWellFormed, "DPoP proof payload is not base64url")
	}
	var cl rawClaims
	if err := josejson.Unmarshal(payJSON, &cl); err != nil {
		return nil, invalid(checkWellFormed, "DPoP proof claims are not a JSON object of the expected types")
	}
	switch {
	case cl.JTI == nil || *cl.JTI == "":
		return nil, invalid(checkRequiredClaims, "jti missing")
	case cl.HTM == nil || *cl.HTM == "":
		return nil, invalid(checkRequiredClaims, "htm missing")
	case cl.HTU == nil || *cl.HTU == "":
		return nil, invalid(checkRequiredClaims, "htu missing")
	case cl.IAT == nil:
		return nil, invalid(checkRequiredClaims, "iat missing")
	case c.AccessToken != "" && (cl.ATH == nil || *cl.ATH == ""):
		return nil, invalid(checkRequiredClaims, "ath missing")
	}
	if len(*cl.JTI) > MaxJTILength {
		return nil, invalid(checkReplay, "jti too long")
	}

	// Steps 8 and 9, htu compared in normalized form.
	if *cl.HTM != c.Method {
		return nil, invalid(checkHTM, "htm does not match the request method")
	}
	want, err := NormalizeHTU(c.URL)
	if err != nil {
		return nil, fmt.Errorf("dpop: check URL: %w", err)
	}
	if *cl.HTU != c.URL { // identical strings need no second normalization
		got, err := NormalizeHTU(*cl.HTU)
		if err != nil || got != want {
			return nil, invalid(checkHTU, "htu does not match the request URI")
		}
	}

	// Step 11: iat window (§11.1).
	now := v.now()
	maxAge, maxFuture := v.window()
	iat := *cl.IAT
	nowS := float64(now.UnixNano()) / 1e9
	if math.IsNaN(iat) || iat < nowS-maxAge.Seconds() {
		return nil, invalid(checkIAT, "iat too old")
	}
	if iat > nowS+maxFuture.Seconds() {
		return nil, invalid(checkIAT, "iat in the future")
	}

	// Step 12: ath.
	if c.AccessToken != "" && *cl.ATH != ATH(c.AccessToken) {
		return nil, invalid(checkATH, "ath does not match the access token")
	}

	// Step 6: signature over the exact signing input.
	sig, err := b64.Strict().DecodeString(sigB64)
	if err != nil {
		return nil, invalid(checkWellFormed, "DPoP proof signature is not base64url")
	}
	if !verifySig(hdr.spec, hdr.key, proof[:d2], sig) {
		return nil, invalid(checkSignature, "signature verification failed")
	}

	// Step 12: key binding (RFC 7638 thumbprints).
	jkt := hdr.jkt
	if c.JKT != "" && jkt != c.JKT {
		return nil, invalid(checkKeyBinding, descKeyMismatch)
	}

	// Step 10: server nonce, after the signature and the key binding, so use_dpop_nonce
	// answers only an otherwise valid proof: a normal protocol step (RFC 9449 §8), no failure.
	nonce := ""
	if cl.Nonce != nil {
		nonce = *cl.Nonce
	}
	if v.RequireNonce {
		if nonce == "" {
			return nil, &ProofError{Code: ErrCodeUseNonce, Check: checkNonceRequired, Description: "a DPoP nonce is required"}
		}
		if !v.Nonces.Valid(nonce) {
			return nil, &ProofError{Code: ErrCodeUseNonce, Check: checkNonce, Description: "DPoP nonce invalid or expired"}
		}
	}

	sec, frac := math.Modf(iat)
	res := &Result{
		JKT:       jkt,
		Alg:       hdr.alg,
		JTI:       *cl.JTI,
		IAT:       time.Unix(int64(sec), int64(frac*1e9)),
		Nonce:     nonce,
		replayKey: ReplayKey(want, *cl.JTI),
		replayTTL: maxAge + maxFuture,
	}
	if c.DeferReplay {
		return res, nil
	}
	// §11.1: replay, last.
	if err := v.Claim(ctx, res); err != nil {
		return nil, err
	}
	return res, nil
}

// Claim records the proof of res in the replay cache (RFC 9449 §11.1) when Verify deferred it
// (Check.DeferReplay); for any other result it does nothing. A proof seen before is a
// *ProofError; other errors (replay cache unreachable) mean "fail closed".
func (v *Verifier) Claim(ctx context.Context, res *Result) error {
	if res == nil || res.replayKey == "" {
		return nil
	}
	ok, err := v.Replay.Claim(ctx, res.replayKey, res.replayTTL)
	if err != nil {
		return fmt.Errorf("dpop: replay cache: %w", err)
	}
	if !ok {
		return invalid(checkReplay, "proof replayed")
	}
	res.replayKey = "" // claimed: a second Claim is a no-op
	return nil
}

// ReplayKey is the replay-cache key of a proof: base64url(SHA-256(normalized htu "|" jti)).
func ReplayKey(normalizedHTU, jti string) string {
	h := sha256.New()
	h.Write([]byte(normalizedHTU))
	h.Write([]byte{'|'})
	h.Write([]byte(jti))
	return b64.EncodeToString(h.Sum(nil))
}

// keyFits checks that the parsed jwk can verify alg (RFC 9449 §4.3 step 7).
func keyFits(key any, spec algSpec) error {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if spec.kind != kindEC || k.Curve != spec.curve {
			return errors.New("jwk does not fit alg")
		}
	case *rsa.PublicKey:
		if spec.kind != kindRSA && spec.kind != kindRSAPSS {
			return errors.New("jwk does not fit alg")
		}
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return fmt.Errorf("RSA jwk must have %d to %d bits", MinRSABits, MaxRSABits)
		}
	case ed25519.PublicKey:
		if spec.kind != kindEd25519 || len(k) != ed25519.PublicKeySize {
			return errors.New("jwk does not fit alg")
		}
	default:
		return errors.New("jwk key type not supported")
	}
	return nil
}

// verifySig checks a JWS signature with the standard library primitives (RFC 7518 §3, RFC 8037).
func verifySig(spec algSpec, key any, input string, sig []byte) bool {
	var digest []byte
	if spec.hash != 0 {
		var h hash.Hash
		switch spec.hash {
		case crypto.SHA256:
			h = sha256.New()
		case crypto.SHA384:
			h = sha512.New384()
		default:
			h = sha512.New()
		}
		h.Write([]byte(input))
		digest = h.Sum(nil)
	}
	switch spec.kind {
	case kindEC:
		pub := key.(*ecdsa.PublicKey)
		size := (pub.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return false
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		return ecdsa.Verify(pub, digest, r, s)
	case kindRSA:
		return rsa.VerifyPKCS1v15(key.(*rsa.PublicKey), spec.hash, digest, sig) == nil
	case kindRSAPSS:
		opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: spec.hash}
		return rsa.VerifyPSS(key.(*rsa.PublicKey), spec.hash, digest, sig, opts) == nil
	case kindEd25519:
		return ed25519.Verify(key.(ed25519.PublicKey), []byte(input), sig)
	}
	return false
}

// Challenge writes the DPoP-Nonce header (with Cache-Control: no-store) when the verifier uses
// nonces. Call it on responses that should carry a fresh nonce.
func (v *Verifier) Challenge(h http.Header) {
	if v.Nonces == nil {
		return
	}
	h.Set(HeaderDPoPNonce, v.Nonces.Nonce())
	h.Set("Cache-Control", "no-store")
}
