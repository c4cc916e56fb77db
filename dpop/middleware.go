package dpop

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// HTTP header names of RFC 9449 and RFC 6750 that browsers must be allowed to send or read
// across origins (CORS).
const (
	HeaderDPoP            = "DPoP"
	HeaderDPoPNonce       = "DPoP-Nonce"
	HeaderWWWAuthenticate = "WWW-Authenticate"
)

// CORSAllowHeaders are the request headers a DPoP client sends (Access-Control-Allow-Headers);
// CORSExposeHeaders the response headers it must read (Access-Control-Expose-Headers).
var (
	CORSAllowHeaders  = []string{"Authorization", HeaderDPoP, "Content-Type"}
	CORSExposeHeaders = []string{HeaderDPoPNonce, HeaderWWWAuthenticate}
)

// RFC 6750 / RFC 9449 error codes used by ResourceServer.
const (
	ErrCodeInvalidRequest = "invalid_request"
	ErrCodeInvalidToken   = "invalid_token"
)

// ResourceServer is HTTP middleware that protects an API with JWT access tokens issued by
// Issuer for Audience, Bearer or DPoP-bound (RFC 9449 §7, RFC 6750 §3, RFC 9068 §4) — the behaviour
// of Auth0's express-oauth2-jwt-bearer with dpop {enabled: true, required: Required}, plus a
// shared jti replay cache and server nonces (through Verifier).
type ResourceServer struct {
	Issuer, Audience string
	KeySet           oidc.KeySet // e.g. oidc.NewRemoteKeySet(ctx, jwksURL)
	Verifier         *Verifier   // proof checks; its Replay and Nonces are shared by all replicas
	Required         bool        // only DPoP-bound tokens with the DPoP scheme are accepted
	PublicURL        string      // external base URL; htu = PublicURL + request path (RFC 9449 §4.3)
	AllowedAlgs      []string    // access-token algorithms; default RS256
	Realm            string      // Bearer realm; default Audience
	Logger           *slog.Logger
}

type ctxKey int

const (
	claimsKey ctxKey = iota
	proofKey
)

// TokenClaims returns the verified access-token claims of a request let through by Wrap.
func TokenClaims(ctx context.Context) map[string]any {
	m, _ := ctx.Value(claimsKey).(map[string]any)
	return m
}

// ProofResult returns the accepted DPoP proof of a request let through by Wrap, or nil for a
// Bearer request.
func ProofResult(ctx context.Context) *Result {
	r, _ := ctx.Value(proofKey).(*Result)
	return r
}

// TokenJKT returns the cnf.jkt claim of access-token claims ("" when the token is not bound).
func TokenJKT(claims map[string]any) (string, bool) {
	cnf, ok := claims["cnf"]
	if !ok {
		return "", true
	}
	m, ok := cnf.(map[string]any)
	if !ok {
		return "", false
	}
	v, ok := m["jkt"]
	if !ok {
		return "", true
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", false
	}
	return s, true
}

// Wrap returns next behind the token and proof checks. It panics when the ResourceServer is
// misconfigured (no Issuer, Audience, KeySet, Verifier or PublicURL).
func (rs *ResourceServer) Wrap(next http.Handler) http.Handler {
	switch {
	case rs.Issuer == "", rs.Audience == "", rs.KeySet == nil, rs.Verifier == nil:
		panic("dpop: ResourceServer needs Issuer, Audience, KeySet and Verifier")
	case rs.PublicURL == "":
		panic("dpop: ResourceServer needs PublicURL (htu is compared with it)")
	}
	if _, err := NormalizeHTU(rs.PublicURL); err != nil {
		panic("dpop: ResourceServer PublicURL: " + err.Error())
	}
	algs := rs.AllowedAlgs
	if len(algs) == 0 {
		algs = []string{"RS256"}
	}
	cfg := &oidc.Config{ClientID: rs.Audience, SupportedSigningAlgs: algs, Now: rs.Verifier.Now}
	h := &rsHandler{
		rs:    rs,
		next:  next,
		at:    oidc.NewVerifier(rs.Issuer, rs.KeySet, cfg),
		atAlg: make([]jose.SignatureAlgorithm, len(algs)),
		base:  strings.TrimRight(rs.PublicURL, "/"),
		algs:  strings.Join(rs.Verifier.AllowedAlgs(), " "),
		realm: rs.Realm,
	}
	if h.realm == "" {
		h.realm = rs.Audience
	}
	for i, a := range algs {
		h.atAlg[i] = jose.SignatureAlgorithm(a)
	}
	return h
}

type rsHandler struct {
	rs    *ResourceServer
	next  http.Handler
	at    *oidc.IDTokenVerifier
	atAlg []jose.SignatureAlgorithm // access-token algorithms, to read the typ header
	base  string
	algs  string
	realm string
}

// denial is one rejected request: status, the scheme whose challenge carries the error, the
// error code and a description safe for the client ("" code: no error info, RFC 6750 §3.1),
// and check, the docs/conformance.md row of the rule that refused it (logged).
type denial struct {
	status int
	scheme string // "Bearer" or "DPoP"
	code   string
	desc   string
	check  string
}

// Check names of requests the resource server refuses before or besides the proof checks.
const (
	checkScheme       = "dpop-rs-scheme"          // RFC 9449 §7.1, §7.2
	checkChallenge    = "dpop-rs-challenge"       // RFC 9449 §7.1, RFC 6750 §3.1
	checkBoundToken   = "dpop-bound-access-token" // RFC 9449 §6.1: cnf.jkt
	checkATValidation = "at-jwt-validation"       // RFC 9068 §4
	checkATTyp        = "at-jwt-typ"              // RFC 9068 §2.1, §4
)

func (h *rsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	claims, res, d, err := h.authenticate(r)
	if err != nil {
		h.log(ctx, slog.LevelError, r, "dpop: resource server cannot check the request", slog.String("error", err.Error()))
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	if d != nil {
		h.log(ctx, slog.LevelInfo, r, "dpop: request refused",
			slog.Int("status", d.status), slog.String("error", d.code), slog.String("check", d.check))
		h.deny(w, d)
		return
	}
	if res != nil && h.rs.Verifier.RequireNonce && h.rs.Verifier.Nonces != nil && res.Nonce != h.rs.Verifier.Nonces.Nonce() {
		h.rs.Verifier.Challenge(w.Header()) // hand out the next nonce early (RFC 9449 §8.2)
	}
	ctx = context.WithValue(ctx, claimsKey, claims)
	if res != nil {
		ctx = context.WithValue(ctx, proofKey, res)
	}
	h.next.ServeHTTP(w, r.WithContext(ctx))
}

// authenticate runs every check; a non-nil error means the checks could not run (fail closed).
func (h *rsHandler) authenticate(r *http.Request) (map[string]any, *Result, *denial, error) {
	ctx := r.Context()
	authz := r.Header.Values("Authorization")
	queryToken := r.URL.Query().Has("access_token")
	switch {
	case len(authz) == 0 && !queryToken:
		return nil, nil, &denial{status: http.StatusUnauthorized, check: checkChallenge}, nil
	case len(authz) > 1 || (len(authz) == 1 && queryToken):
		return nil, nil, badRequest("more than one authentication method"), nil
	case queryToken:
		return nil, nil, badRequest("access tokens in the URL are not supported"), nil
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(authz[0]), " ")
	tok = strings.TrimLeft(tok, " ")
	isDPoP := strings.EqualFold(scheme, "DPoP")
	if !isDPoP && !strings.EqualFold(scheme, "Bearer") {
		// Not a method we support: as if there were no credentials (RFC 6750 §3.1).
		return nil, nil, &denial{status: http.StatusUnauthorized, check: checkChallenge}, nil
	}
	if tok == "" || strings.ContainsAny(tok, " \t,") {
		return nil, nil, badRequest("malformed Authorization header"), nil
	}
	proofs := r.Header.Values(HeaderDPoP)
	if !isDPoP && len(proofs) > 0 {
		return nil, nil, badRequest("DPoP proof sent with the Bearer scheme"), nil
	}
	errScheme := "Bearer"
	if isDPoP || h.rs.Required {
		errScheme = "DPoP"
	}

	idt, err := h.at.Verify(ctx, tok)
	if err != nil {
		return nil, nil, &denial{status: http.StatusUnauthorized, scheme: errScheme, code: ErrCodeInvalidToken,
			desc: "access token is invalid or expired", check: checkATValidation}, nil
	}
	// RFC 9068 §4: only a JWT typed as an access token is one. An ID token signed by the same
	// issuer (typ JWT, or none) never passes, whatever its aud.
	if typ, ok := tokenType(tok, h.atAlg); !ok || !IsAccessTokenType(typ) {
		return nil, nil, &denial{status: http.StatusUnauthorized, scheme: errScheme, code: ErrCodeInvalidToken,
			desc: "not an access token (typ must be at+jwt)", check: checkATTyp}, nil
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, nil, &denial{status: http.StatusUnauthorized, scheme: errScheme, code: ErrCodeInvalidToken,
			desc: "access token claims are malformed", check: checkATValidation}, nil
	}
	jkt, ok := TokenJKT(claims)
	if !ok {
		return nil, nil, &denial{status: http.StatusUnauthorized, scheme: errScheme, code: ErrCodeInvalidToken,
			desc: "access token cnf claim is malformed", check: checkBoundToken}, nil
	}
	bound := jkt != ""

	if !isDPoP {
		switch {
		case bound:
			return nil, nil, &denial{status: http.StatusUnauthorized, scheme: "DPoP", code: ErrCodeInvalidToken,
				desc: "DPoP-bound access token presented as Bearer", check: checkScheme}, nil
		case h.rs.Required:
			return nil, nil, &denial{status: http.StatusUnauthorized, scheme: "DPoP", code: ErrCodeInvalidToken,
				desc: "DPoP-bound access token required", check: checkScheme}, nil
		}
		return claims, nil, nil, nil
	}
	if !bound {
		return nil, nil, &denial{status: http.StatusUnauthorized, scheme: "DPoP", code: ErrCodeInvalidToken,
			desc: "access token is not DPoP-bound", check: checkScheme}, nil
	}
	res, err := h.rs.Verifier.Verify(ctx, proofs, Check{
		Method:      r.Method,
		URL:         h.base + r.URL.EscapedPath(),
		AccessToken: tok,
		JKT:         jkt,
	})
	var pe *ProofError
	switch {
	case errors.As(err, &pe):
		d := &denial{status: http.StatusUnauthorized, scheme: "DPoP", code: pe.Code, desc: pe.Description, check: pe.Check}
		if pe.KeyMismatch() {
			d.code = ErrCodeInvalidToken // the token is bound to another key
		}
		return nil, nil, d, nil
	case err != nil:
		return nil, nil, nil, err
	}
	return claims, res, nil, nil
}

func badRequest(desc string) *denial {
	return &denial{status: http.StatusBadRequest, scheme: "DPoP", code: ErrCodeInvalidRequest, desc: desc, check: checkChallenge}
}

// deny writes the 400/401 answer with its WWW-Authenticate challenges (RFC 9449 §7.1): a DPoP
// challenge with algs, and a Bearer one unless Required; the error goes on d.scheme.
func (h *rsHandler) deny(w http.ResponseWriter, d *denial) {
	hd := w.Header()
	var dp strings.Builder
	dp.WriteString("DPoP")
	sep := " "
	if d.code != "" && d.scheme == "DPoP" {
		dp.WriteString(` error="` + quote(d.code) + `", error_description="` + quote(d.desc) + `"`)
		sep = ", "
	}
	dp.WriteString(sep + `algs="` + quote(h.algs) + `"`)
	hd.Add(HeaderWWWAuthenticate, dp.String())
	if !h.rs.Required {
		b := `Bearer realm="` + quote(h.realm) + `"`
		if d.code != "" && d.scheme == "Bearer" {
			b += `, error="` + quote(d.code) + `", error_description="` + quote(d.desc) + `"`
		}
		hd.Add(HeaderWWWAuthenticate, b)
	}
	if d.code == ErrCodeUseNonce {
		h.rs.Verifier.Challenge(hd)
	}
	hd.Set("Cache-Control", "no-store")
	if d.code == "" {
		w.WriteHeader(d.status)
		return
	}
	hd.Set("Content-Type", "application/json")
	w.WriteHeader(d.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": d.code, "error_description": d.desc})
}

// quote makes s safe inside a quoted-string of an auth-param.
func quote(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '"' || r == '\\':
			return '\''
		case r < 0x20 || r == 0x7f || r > 0x7e:
			return -1
		}
		return r
	}, s)
}

func (h *rsHandler) log(ctx context.Context, level slog.Level, r *http.Request, msg string, attrs ...slog.Attr) {
	if h.rs.Logger == nil {
		return
	}
	attrs = append(attrs, slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Bool("dpop_header", r.Header.Get(HeaderDPoP) != ""))
	h.rs.Logger.LogAttrs(ctx, level, msg, attrs...)
}
