package upstream

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// fakeIdP is a minimal in-process OpenID provider for this package's tests: discovery, JWKS,
// a token endpoint that checks PKCE, client auth and (when DPoP is advertised) the DPoP proof,
// and a userinfo endpoint that checks DPoP + ath for DPoP-bound tokens.
type fakeIdP struct {
	srv      *httptest.Server
	issuer   string
	idKey    *demoidp.SigningKey // ID-token key (the process's RSA key) and its JWK Set
	clientID string
	secret   string

	// Discovery shape.
	dpopAlgs    []string // nil: member absent
	noPKCE      bool
	authMethods []string
	issParam    bool

	// Token endpoint behaviour.
	requireNonce bool // proofs must carry the current nonce
	alwaysNonce  bool // answer use_dpop_nonce forever
	rejectProof  bool // answer invalid_dpop_proof
	answerBearer bool // token_type Bearer even with a proof
	tokenError   string

	// ID token faults.
	idAlg   jose.SignatureAlgorithm // default RS256
	idAlgs  []string                // advertised id_token_signing_alg_values_supported; default [RS256]
	mutate  func(claims map[string]any)
	badHash bool // at_hash of another token

	// Userinfo faults.
	userinfoSub string

	// Client authentication: assertionKeys (by kid) verify private_key_jwt assertions;
	// authSigningAlgs is token_endpoint_auth_signing_alg_values_supported (nil: absent).
	assertionKeys   map[string]crypto.PublicKey
	authSigningAlgs []string

	// Pushed authorization requests (RFC 9126): par advertises the endpoint, requirePAR sets
	// require_pushed_authorization_requests, parError answers every push with that error.
	par, requirePAR bool
	parError        string
	// parHold, when set, keeps every push open until it is closed.
	parHold chan struct{}

	now func() time.Time

	tokenHits    atomic.Int64
	userinfoHits atomic.Int64

	mu          sync.Mutex
	codes       map[string]codeInfo
	nonce       string
	proofs      []proofInfo // token-endpoint proofs, in order
	uiProofs    []proofInfo // userinfo proofs
	uiAuthz     string      // scheme of the last userinfo Authorization header
	lastForm    url.Values
	lastBasicOK bool
	assertions  []assertionInfo       // verified client assertions, in order
	pushed      map[string]url.Values // pushed requests by request_uri
	parForms    []url.Values          // every pushed form (client credentials included)
	parProofs   []proofInfo           // PAR endpoint proofs
}

// assertionInfo is a verified client assertion.
type assertionInfo struct {
	endpoint string // "token" or "par"
	kid, alg string
	claims   map[string]any
}

type codeInfo struct {
	nonce, challenge, redirectURI string
}

type proofInfo struct {
	alg    string
	jkt    string // RFC 7638 thumbprint of the proof's jwk
	claims map[string]any
}

func newFakeIdP(t testing.TB, configure func(f *fakeIdP)) *fakeIdP {
	t.Helper()
	f := &fakeIdP{
		clientID: "broker", secret: "s3cret",
		dpopAlgs: []string{"ES256", "EdDSA", "RS256", "PS256"},
		idAlg:    jose.RS256, now: time.Now,
		codes: map[string]codeInfo{}, nonce: "n-1", pushed: map[string]url.Values{},
	}
	if configure != nil {
		configure(f)
	}
	key, err := demoidp.RSAKey(false)
	if err == nil {
		f.idKey, err = demoidp.NewSigningKey(key, f.idAlg)
	}
	if err != nil {
		t.Fatalf("fake IdP key: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", f.discovery)
	mux.HandleFunc("GET /jwks", demoidp.ServeJSON(f.idKey.JWKS))
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("POST /par", f.pushAuthorization)
	mux.HandleFunc("GET /userinfo", f.userinfo)
	f.srv = httptest.NewServer(mux)
	f.issuer = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeIdP) discovery(w http.ResponseWriter, _ *http.Request) {
	idAlgs := f.idAlgs
	if idAlgs == nil {
		idAlgs = []string{"RS256"}
	}
	doc := demoidp.Metadata{
		Issuer: f.issuer, IDTokenAlgs: idAlgs, AuthMethods: f.authMethods, DPoPAlgs: f.dpopAlgs,
		PKCE: !f.noPKCE, Userinfo: true, IssParameter: f.issParam,
	}.Document()
	if f.authSigningAlgs != nil {
		doc["token_endpoint_auth_signing_alg_values_supported"] = f.authSigningAlgs
	}
	if f.par {
		doc["pushed_authorization_request_endpoint"] = f.issuer + "/par"
	}
	if f.requirePAR {
		doc["require_pushed_authorization_requests"] = true
	}
	writeJSON(w, http.StatusOK, doc)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": "fake: " + code})
}

// authorize plays the user agent + authorization endpoint: it reads the parameters Begin put
// in authURL and issues a code.
func (f *fakeIdP) authorize(t testing.TB, authURL string) string {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if ru := q.Get("request_uri"); ru != "" {
		if len(q) != 2 || q.Get("client_id") != f.clientID {
			t.Fatalf("authorize with request_uri carries more than client_id and request_uri: %s", q.Encode())
		}
		f.mu.Lock()
		q = f.pushed[ru]
		delete(f.pushed, ru)
		f.mu.Unlock()
		if q == nil {
			t.Fatalf("unknown request_uri %q", ru)
		}
	} else if f.requirePAR {
		t.Fatalf("authorization request was not pushed although PAR is required: %s", q.Encode())
	}
	if q.Get("client_id") != f.clientID || q.Get("response_type") != "code" {
		t.Fatalf("bad authorize request %s", q.Encode())
	}
	code := "code-" + base64.RawURLEncoding.EncodeToString(randBytes(12))
	f.mu.Lock()
	f.codes[code] = codeInfo{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri")}
	f.mu.Unlock()
	return code
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}

// verifyProof checks a DPoP proof's signature with its embedded key plus typ/htm/htu; it
// returns the header alg and the claims.
func verifyProof(proof, method, htu string) (proofInfo, error) {
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return proofInfo{}, errors.New("proof is not a compact JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return proofInfo{}, err
	}
	var hdr struct {
		Typ string          `json:"typ"`
		Alg string          `json:"alg"`
		JWK json.RawMessage `json:"jwk"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return proofInfo{}, err
	}
	if hdr.Typ != "dpop+jwt" {
		return proofInfo{}, fmt.Errorf("typ %q", hdr.Typ)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(hdr.JWK); err != nil {
		return proofInfo{}, fmt.Errorf("jwk: %w", err)
	}
	if !jwk.IsPublic() {
		return proofInfo{}, errors.New("jwk carries a private key")
	}
	var payload []byte
	switch hdr.Alg {
	case "Ed25519", "EdDSA":
		pub, ok := jwk.Key.(ed25519.PublicKey)
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if !ok || err != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
			return proofInfo{}, errors.New("bad Ed25519 signature")
		}
		if payload, err = base64.RawURLEncoding.DecodeString(parts[1]); err != nil {
			return proofInfo{}, err
		}
	default:
		jws, err := jose.ParseSignedCompact(proof, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256})
		if err != nil {
			return proofInfo{}, err
		}
		if payload, err = jws.Verify(jwk.Key); err != nil {
			return proofInfo{}, err
		}
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return proofInfo{}, err
	}
	if claims["htm"] != method || claims["htu"] != htu {
		return proofInfo{}, fmt.Errorf("htm/htu %v %v", claims["htm"], claims["htu"])
	}
	if s, _ := claims["jti"].(string); s == "" {
		return proofInfo{}, errors.New("no jti")
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return proofInfo{}, err
	}
	return proofInfo{alg: hdr.Alg, jkt: base64.RawURLEncoding.EncodeToString(tp), claims: claims}, nil
}

func (f *fakeIdP) token(w http.ResponseWriter, r *http.Request) {
	f.tokenHits.Add(1)
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request")
		return
	}
	f.mu.Lock()
	f.lastForm = r.PostForm
	f.mu.Unlock()
	if !f.clientAuthenticated(r, "token", f.issuer+"/token") {
		oauthError(w, 401, "invalid_client")
		return
	}
	if f.tokenError != "" {
		oauthError(w, 400, f.tokenError)
		return
	}
	bound := false
	if f.dpopAlgs != nil {
		if !f.checkProof(w, r, f.issuer+"/token", &f.proofs) {
			return
		}
		bound = !f.answerBearer
	}
	f.mu.Lock()
	ci, ok := f.codes[r.PostForm.Get("code")]
	delete(f.codes, r.PostForm.Get("code"))
	f.mu.Unlock()
	if !ok || ci.redirectURI != r.PostForm.Get("redirect_uri") {
		oauthError(w, 400, "invalid_grant")
		return
	}
	if ci.challenge != "" {
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if base64.RawURLEncoding.EncodeToString(sum[:]) != ci.challenge {
			oauthError(w, 400, "invalid_grant")
			return
		}
	}
	at := "at-" + base64.RawURLEncoding.EncodeToString(randBytes(16))
	idt, err := f.idToken(ci.nonce, at)
	if err != nil {
		oauthError(w, 500, "server_error")
		return
	}
	tt := "Bearer"
	if bound {
		tt = "DPoP"
	}
	writeJSON(w, 200, map[string]any{"access_token": at, "token_type": tt, "id_token": idt, "expires_in": 300})
}

func (f *fakeIdP) idToken(nonce, at string) (string, error) {
	now := f.now()
	hashed := at
	if f.badHash {
		hashed = "another-token"
	}
	h := sha256.Sum256([]byte(hashed))
	claims := map[string]any{
		"iss": f.issuer, "sub": "alice", "aud": f.clientID, "nonce": nonce,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"at_hash": base64.RawURLEncoding.EncodeToString(h[:16]),
		"email":   "alice@example.com", "name": "Alice",
	}
	if f.mutate != nil {
		f.mutate(claims)
	}
	b, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := f.idKey.Signer.Sign(b)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

func (f *fakeIdP) userinfo(w http.ResponseWriter, r *http.Request) {
	f.userinfoHits.Add(1)
	scheme, at, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	f.mu.Lock()
	f.uiAuthz = scheme
	f.mu.Unlock()
	if at == "" {
		w.Header().Set("WWW-Authenticate", `Bearer`)
		w.WriteHeader(401)
		return
	}
	if strings.EqualFold(scheme, "DPoP") {
		pi, err := verifyProof(r.Header.Get("DPoP"), http.MethodGet, f.issuer+"/userinfo")
		sum := sha256.Sum256([]byte(at))
		if err != nil || pi.claims["ath"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
			w.Header().Set("WWW-Authenticate", `DPoP error="invalid_dpop_proof"`)
			w.WriteHeader(401)
			return
		}
		f.mu.Lock()
		f.uiProofs = append(f.uiProofs, pi)
		f.mu.Unlock()
	}
	sub := "alice"
	if f.userinfoSub != "" {
		sub = f.userinfoSub
	}
	writeJSON(w, 200, map[string]any{"sub": sub, "email": "alice@example.com", "picture": "https://example.com/a.png", "iss": "https://forged.example"})
}

// clientAuthenticated checks the request's client authentication: a private_key_jwt
// assertion (RFC 7523 §3: iss and sub the client, aud the endpoint or the issuer, exp, a jti
// never seen before, signed with a key of assertionKeys), or the secret by Basic or in the
// form.
func (f *fakeIdP) clientAuthenticated(r *http.Request, endpoint, endpointURL string) bool {
	if a := r.PostForm.Get("client_assertion"); a != "" {
		if r.PostForm.Get("client_assertion_type") != AssertionType || r.PostForm.Has("client_secret") || r.Header.Get("Authorization") != "" {
			return false
		}
		jws, err := jose.ParseSignedCompact(a, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.PS256})
		if err != nil || len(jws.Signatures) != 1 {
			return false
		}
		h := jws.Signatures[0].Header
		key := f.assertionKeys[h.KeyID]
		if key == nil {
			return false
		}
		payload, err := jws.Verify(key)
		if err != nil {
			return false
		}
		var claims map[string]any
		if json.Unmarshal(payload, &claims) != nil {
			return false
		}
		aud, _ := claims["aud"].(string)
		if claims["iss"] != f.clientID || claims["sub"] != f.clientID || (aud != endpointURL && aud != f.issuer) {
			return false
		}
		exp, _ := claims["exp"].(float64)
		jti, _ := claims["jti"].(string)
		if exp < float64(f.now().Unix()) || jti == "" {
			return false
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, seen := range f.assertions {
			if seen.claims["jti"] == jti {
				return false // replayed
			}
		}
		f.assertions = append(f.assertions, assertionInfo{endpoint: endpoint, kid: h.KeyID, alg: h.Algorithm, claims: claims})
		f.lastBasicOK = false
		return r.PostForm.Get("client_id") == "" || r.PostForm.Get("client_id") == f.clientID
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	} else {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	}
	f.mu.Lock()
	f.lastBasicOK = basic
	f.mu.Unlock()
	return id == f.clientID && secret == f.secret
}

// checkProof checks the request's DPoP proof for htu (answering invalid_dpop_proof or
// use_dpop_nonce itself when it fails).
// Every verified proof is recorded in *into, rejected for its nonce or not.
func (f *fakeIdP) checkProof(w http.ResponseWriter, r *http.Request, htu string, into *[]proofInfo) bool {
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		oauthError(w, 400, "invalid_dpop_proof")
		return false
	}
	pi, err := verifyProof(proofs[0], http.MethodPost, htu)
	if err != nil || f.rejectProof {
		oauthError(w, 400, "invalid_dpop_proof")
		return false
	}
	f.mu.Lock()
	*into = append(*into, pi)
	cur := f.nonce
	if f.alwaysNonce {
		f.nonce = fmt.Sprintf("n-%d", len(f.proofs)+len(f.parProofs)+1)
		cur = f.nonce
	}
	f.mu.Unlock()
	if (f.requireNonce || f.alwaysNonce) && pi.claims["nonce"] != cur {
		w.Header().Set("DPoP-Nonce", cur)
		oauthError(w, 400, "use_dpop_nonce")
		return false
	}
	return true
}

// pushAuthorization is the PAR endpoint (RFC 9126 §2): client authentication, the DPoP proof
// when DPoP is advertised, then 201 with a request_uri for the pushed parameters.
func (f *fakeIdP) pushAuthorization(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request")
		return
	}
	f.mu.Lock()
	f.parForms = append(f.parForms, r.PostForm)
	f.mu.Unlock()
	if f.parHold != nil {
		<-f.parHold
	}
	if !f.clientAuthenticated(r, "par", f.issuer+"/par") {
		oauthError(w, 401, "invalid_client")
		return
	}
	if f.parError != "" {
		oauthError(w, 400, f.parError)
		return
	}
	if f.dpopAlgs != nil && r.Header.Get("DPoP") != "" {
		if !f.checkProof(w, r, f.issuer+"/par", &f.parProofs) {
			return
		}
	}
	params := url.Values{}
	for k, v := range r.PostForm {
		switch k {
		case "client_secret", "client_assertion", "client_assertion_type":
		default:
			params[k] = v
		}
	}
	ru := "urn:ietf:params:oauth:request_uri:" + base64.RawURLEncoding.EncodeToString(randBytes(12))
	f.mu.Lock()
	f.pushed[ru] = params
	f.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"request_uri": ru, "expires_in": 60})
}
