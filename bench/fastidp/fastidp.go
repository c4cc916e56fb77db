package fastidp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/dpop-broker/dpop-broker/dpop"
	"github.com/dpop-broker/dpop-broker/upstream/demoidp"
)

// Nonce modes.
const (
	// NonceFirst demands a nonce whenever a proof lacks a current one: the first token request
	// of a client, and again after rotation (RFC 9449 §8 as most servers do it).
	NonceFirst = "first"
	// NonceEvery answers use_dpop_nonce to the first token request of every code, so each login
	// pays a nonce round trip (two proofs).
	NonceEvery = "every"
)

// Options configure the provider. Zero values get the defaults noted.
type Options struct {
	ClientID     string // default "broker"
	ClientSecret string // default "broker-secret"
	IDTokenAlg   string // RS256 (default) | ES256
	NonceMode    string // NonceFirst (default) | NonceEvery
	Subject      string // default "alice"
	MaxEntries   int    // cap on live codes and on the replay cache; default 1<<21
	// UniqueSubjects gives every authorization a subject of its own (Subject, "-" and a
	// random suffix): each login is another user, as on a real site, instead of one user
	// signing in from every browser at once.
	UniqueSubjects bool
}

// Stats counts token-endpoint outcomes.
type Stats struct {
	Authorize       atomic.Int64
	Tokens          atomic.Int64 // tokens issued
	NonceChallenges atomic.Int64
	Rejected        atomic.Int64 // any other error answer
}

// Provider is a running fastidp.
type Provider struct {
	URL   string // issuer, http://127.0.0.1:PORT
	Stats *Stats
	srv   *http.Server
}

// Start listens on addr ("127.0.0.1:0" for a free port) and serves the provider.
func Start(addr string, opts Options) (*Provider, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fastidp: listen: %w", err)
	}
	issuer := "http://" + ln.Addr().String()
	h, stats, err := NewHandler(issuer, opts)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &Provider{URL: issuer, Stats: stats, srv: srv}, nil
}

// Close stops the provider.
func (p *Provider) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return p.srv.Shutdown(ctx)
}

type codeEntry struct {
	redirectURI, nonce, challenge, subject string
	authTime, exp                          time.Time
	challenged                             bool // NonceEvery: the first token request was answered use_dpop_nonce
}

type provider struct {
	issuer   string
	opts     Options
	stats    *Stats
	signer   jose.Signer
	tokenURL string
	verifier *dpop.Verifier
	nonces   *dpop.NonceSource

	mu        sync.Mutex
	codes     map[string]*codeEntry
	nextSweep int
}

const (
	codeTTL  = 60 * time.Second
	minSweep = 4096
)

var errFull = errors.New("fastidp: code table full")

// NewHandler returns the provider's handler for issuer (no trailing slash, no path).
func NewHandler(issuer string, opts Options) (http.Handler, *Stats, error) {
	if opts.ClientID == "" {
		opts.ClientID = "broker"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "broker-secret"
	}
	if opts.IDTokenAlg == "" {
		opts.IDTokenAlg = "RS256"
	}
	if opts.NonceMode == "" {
		opts.NonceMode = NonceFirst
	}
	if opts.NonceMode != NonceFirst && opts.NonceMode != NonceEvery {
		return nil, nil, fmt.Errorf("fastidp: nonce mode %q (want %s or %s)", opts.NonceMode, NonceFirst, NonceEvery)
	}
	if opts.Subject == "" {
		opts.Subject = "alice"
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 1 << 21
	}
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return nil, nil, fmt.Errorf("fastidp: issuer %q must be an origin", issuer)
	}
	p := &provider{issuer: issuer, opts: opts, stats: &Stats{}, tokenURL: issuer + "/token",
		codes: map[string]*codeEntry{}, nextSweep: minSweep}

	var key crypto.Signer
	var alg jose.SignatureAlgorithm
	switch opts.IDTokenAlg {
	case "RS256":
		alg = jose.RS256
		// The process's RSA key (generated once): every fastidp of a run may share it.
		if key, err = demoidp.RSAKey(false); err != nil {
			return nil, nil, fmt.Errorf("fastidp: rsa key: %w", err)
		}
	case "ES256":
		alg = jose.ES256
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, nil, fmt.Errorf("fastidp: ec key: %w", err)
		}
	default:
		return nil, nil, fmt.Errorf("fastidp: ID token alg %q (want RS256 or ES256)", opts.IDTokenAlg)
	}
	sk, err := demoidp.NewSigningKey(key, alg)
	if err != nil {
		return nil, nil, fmt.Errorf("fastidp: %w", err)
	}
	p.signer = sk.Signer

	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	if p.nonces, err = dpop.NewNonceSource(secret, 5*time.Minute, nil); err != nil {
		return nil, nil, fmt.Errorf("fastidp: nonces: %w", err)
	}
	p.verifier = &dpop.Verifier{
		Algs:         []string{"ES256", dpop.AlgEdDSA, dpop.AlgEd25519, dpop.AlgRS256, dpop.AlgPS256},
		MaxAge:       60 * time.Second,
		MaxFuture:    10 * time.Second,
		Replay:       dpop.NewMemoryReplayCache(opts.MaxEntries),
		Nonces:       p.nonces,
		RequireNonce: true,
	}
	discovery, err := json.Marshal(demoidp.Metadata{
		Issuer:      issuer,
		IDTokenAlgs: []string{string(alg)},
		AuthMethods: []string{"client_secret_basic", "client_secret_post"},
		DPoPAlgs:    p.verifier.AllowedAlgs(),
		GrantTypes:  []string{"authorization_code"},
		Scopes:      []string{"openid", "profile", "email"},
		PKCE:        true,
	}.Document())
	if err != nil {
		return nil, nil, fmt.Errorf("fastidp: discovery: %w", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", demoidp.ServeJSON(discovery))
	mux.HandleFunc("GET /jwks", demoidp.ServeJSON(sk.JWKS))
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	return mux, p.stats, nil
}

// loopbackRedirect accepts http(s) redirect URIs on 127.0.0.1, localhost or [::1].
func loopbackRedirect(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Fragment != "" {
		return false
	}
	h := u.Hostname()
	return h == "127.0.0.1" || h == "localhost" || h == "::1"
}

func (p *provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect := q.Get("redirect_uri")
	if q.Get("client_id") != p.opts.ClientID || !loopbackRedirect(redirect) {
		p.stats.Rejected.Add(1)
		http.Error(w, "unknown client or redirect_uri", http.StatusBadRequest)
		return
	}
	if q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 {
		p.stats.Rejected.Add(1)
		http.Error(w, "response_type=code and PKCE S256 are required", http.StatusBadRequest)
		return
	}
	now := time.Now()
	code := rand.Text() + rand.Text()
	sub := p.opts.Subject
	if p.opts.UniqueSubjects {
		sub += "-" + rand.Text()
	}
	if err := p.putCode(now, code, &codeEntry{redirectURI: redirect, nonce: q.Get("nonce"),
		challenge: q.Get("code_challenge"), subject: sub, authTime: now, exp: now.Add(codeTTL)}); err != nil {
		p.stats.Rejected.Add(1)
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	p.stats.Authorize.Add(1)
	v := url.Values{"code": {code}}
	if st := q.Get("state"); st != "" {
		v.Set("state", st)
	}
	sep := "?"
	if strings.Contains(redirect, "?") {
		sep = "&"
	}
	http.Redirect(w, r, redirect+sep+v.Encode(), http.StatusFound)
}

func (p *provider) putCode(now time.Time, code string, e *codeEntry) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.codes) >= p.nextSweep {
		for k, v := range p.codes {
			if !now.Before(v.exp) {
				delete(p.codes, k)
			}
		}
		p.nextSweep = max(minSweep, 2*len(p.codes))
	}
	if len(p.codes) >= p.opts.MaxEntries {
		return errFull
	}
	p.codes[code] = e
	return nil
}

// lookup returns the live entry for code; with take it removes it (single use).
func (p *provider) lookup(now time.Time, code string, take bool) (*codeEntry, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.codes[code]
	if ok && take {
		delete(p.codes, code)
	}
	if !ok || !now.Before(e.exp) {
		return nil, false
	}
	return e, true
}

func (p *provider) fail(w http.ResponseWriter, status int, code, desc string) {
	p.stats.Rejected.Add(1)
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *provider) nonceChallenge(w http.ResponseWriter) {
	p.stats.NonceChallenges.Add(1)
	w.Header().Set("DPoP-Nonce", p.nonces.Nonce())
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": dpop.ErrCodeUseNonce, "error_description": "use the DPoP-Nonce"})
}

func (p *provider) clientOK(r *http.Request) bool {
	id, secret, ok := r.BasicAuth()
	if ok {
		var err error
		if id, err = url.QueryUnescape(id); err != nil {
			return false
		}
		if secret, err = url.QueryUnescape(secret); err != nil {
			return false
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return id == p.opts.ClientID &&
		subtle.ConstantTimeCompare([]byte(secret), []byte(p.opts.ClientSecret)) == 1
}

func (p *provider) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		p.fail(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	if !p.clientOK(r) {
		p.fail(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	if r.PostForm.Get("grant_type") != "authorization_code" {
		p.fail(w, http.StatusBadRequest, "unsupported_grant_type", "authorization_code only")
		return
	}
	now := time.Now()
	code := r.PostForm.Get("code")
	if p.opts.NonceMode == NonceEvery {
		// Challenge the first request for each code before verifying anything else.
		p.mu.Lock()
		e, ok := p.codes[code]
		first := ok && !e.challenged
		if first {
			e.challenged = true
		}
		p.mu.Unlock()
		if first {
			p.nonceChallenge(w)
			return
		}
	}
	res, err := p.verifier.Verify(r.Context(), r.Header.Values("DPoP"), dpop.Check{Method: http.MethodPost, URL: p.tokenURL})
	if err != nil {
		var pe *dpop.ProofError
		if errors.As(err, &pe) && pe.Code == dpop.ErrCodeUseNonce {
			p.nonceChallenge(w)
			return
		}
		if errors.As(err, &pe) {
			p.fail(w, http.StatusBadRequest, pe.Code, pe.Description)
			return
		}
		p.fail(w, http.StatusServiceUnavailable, "temporarily_unavailable", "proof check failed")
		return
	}
	e, ok := p.lookup(now, code, true)
	if !ok {
		p.fail(w, http.StatusBadRequest, "invalid_grant", "unknown, used or expired code")
		return
	}
	if r.PostForm.Get("redirect_uri") != e.redirectURI {
		p.fail(w, http.StatusBadRequest, "invalid_grant", "redirect_uri mismatch")
		return
	}
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != e.challenge {
		p.fail(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
		return
	}
	at := rand.Text() + rand.Text()
	idt, err := p.idToken(e, at, now)
	if err != nil {
		p.fail(w, http.StatusInternalServerError, "server_error", "signing failed")
		return
	}
	p.stats.Tokens.Add(1)
	w.Header().Set("DPoP-Nonce", p.nonces.Nonce())
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": at, "token_type": "DPoP", "expires_in": 300, "id_token": idt,
		"scope": "openid profile email", "dpop_jkt": res.JKT,
	})
}

func (p *provider) idToken(e *codeEntry, at string, now time.Time) (string, error) {
	h := sha256.Sum256([]byte(at))
	claims := map[string]any{
		"iss": p.issuer, "sub": e.subject, "aud": p.opts.ClientID, "azp": p.opts.ClientID,
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "auth_time": e.authTime.Unix(),
		"at_hash": base64.RawURLEncoding.EncodeToString(h[:16]),
		"name":    "Alice Example", "email": "alice@example.com", "email_verified": true,
	}
	if e.nonce != "" {
		claims["nonce"] = e.nonce
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := p.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}
