package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type config struct {
	broker, clientID, clientSecret, redirectURI, connection, scope string
	mode                                                           string // modeFull (default) | modeSSO
	n, c, warmup, pid, redisPID, idpPID                            int
	duration, timeout, rssEvery                                    time.Duration
	label, out                                                     string
}

// loginTimes is one successful login's latency, total and by leg.
type loginTimes struct {
	total, browser, token time.Duration
}

// loader runs logins with a shared connection pool (one "browser" cookie jar per login).
type loader struct {
	cfg         config
	tr          *http.Transport
	authzURL    string
	tokenURL    string
	redirectKey string // scheme://host/path of the redirect URI: where the browser leg stops
}

func newLoader(cfg config) (*loader, error) {
	base := strings.TrimSuffix(cfg.broker, "/")
	ru, err := url.Parse(cfg.redirectURI)
	if err != nil || ru.Host == "" {
		return nil, fmt.Errorf("redirect-uri %q is not an absolute URL", cfg.redirectURI)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 4*cfg.c + 16
	tr.MaxIdleConnsPerHost = 2*cfg.c + 8
	tr.DisableCompression = true
	tr.Proxy = nil
	return &loader{cfg: cfg, tr: tr, authzURL: base + "/authorize", tokenURL: base + "/oauth/token",
		redirectKey: ru.Scheme + "://" + ru.Host + ru.Path}, nil
}

func randText() string { return rand.Text() } // 128 bits, base32

func s256(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Modes of a run: full brokered logins, or single sign-on logins answered from the broker
// session of a browser that signed in once.
const (
	modeFull = "full"
	modeSSO  = "sso"
)

// browserClient is a browser with the cookie jar jar: it follows redirects (with follow, at
// most 10: the brokered login's way through the upstream) until the app's redirect URI,
// which it does not fetch. Without follow, any redirect elsewhere than the app is an error
// (a single sign-on login must go straight back to the app).
func (l *loader) browserClient(jar http.CookieJar, follow bool) *http.Client {
	return &http.Client{Transport: l.tr, Jar: jar, Timeout: l.cfg.timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme+"://"+req.URL.Host+req.URL.Path == l.redirectKey {
				return http.ErrUseLastResponse // the app; not running
			}
			if !follow {
				return fmt.Errorf("redirected to %s://%s%s, not to the app: no single sign-on", req.URL.Scheme, req.URL.Host, req.URL.Path)
			}
			if len(via) >= 10 {
				return errors.New("too many redirects")
			}
			return nil
		}}
}

// login runs one full brokered login in a fresh browser: /authorize → upstream →
// /login/callback → (redirect to the app, not followed) → /oauth/token. It checks state,
// code, the ID token and its nonce.
func (l *loader) login(ctx context.Context) (loginTimes, error) {
	jar, _ := cookiejar.New(nil)
	lt, _, err := l.loginWith(ctx, l.browserClient(jar, true))
	return lt, err
}

// idClaims are the ID-token claims the generator checks.
type idClaims struct {
	Nonce string `json:"nonce"`
	SID   string `json:"sid"`
}

// loginWith runs one login with the browser client: the browser leg from /authorize to the
// app's redirect URI (state and code checked), then the app's code redemption at
// /oauth/token (the ID token's nonce checked). It returns the ID token's claims.
func (l *loader) loginWith(ctx context.Context, client *http.Client) (loginTimes, idClaims, error) {
	var lt loginTimes
	verifier := randText() + randText() + "-bench" // 58 chars
	state, nonce := randText(), randText()
	q := url.Values{
		"response_type": {"code"}, "client_id": {l.cfg.clientID}, "redirect_uri": {l.cfg.redirectURI},
		"scope": {l.cfg.scope}, "state": {state}, "nonce": {nonce},
		"code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"},
	}
	if l.cfg.connection != "" {
		q.Set("connection", l.cfg.connection)
	}
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.authzURL+"?"+q.Encode(), nil)
	if err != nil {
		return lt, idClaims{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return lt, idClaims{}, fmt.Errorf("browser leg: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, l.cfg.redirectURI) {
		return lt, idClaims{}, fmt.Errorf("browser leg: ended at %s with %d (Location %q)", resp.Request.URL.Path, resp.StatusCode, trunc(loc))
	}
	lu, err := url.Parse(loc)
	if err != nil {
		return lt, idClaims{}, fmt.Errorf("browser leg: bad Location: %w", err)
	}
	back := lu.Query()
	if e := back.Get("error"); e != "" {
		return lt, idClaims{}, fmt.Errorf("browser leg: app got error=%s (%s)", e, back.Get("error_description"))
	}
	code := back.Get("code")
	if code == "" || back.Get("state") != state {
		return lt, idClaims{}, errors.New("browser leg: app redirect lacks code or state mismatch")
	}
	lt.browser = time.Since(start)

	t1 := time.Now()
	claims, err := l.redeem(ctx, code, verifier)
	if err != nil {
		return lt, idClaims{}, err
	}
	if claims.Nonce != nonce {
		return lt, idClaims{}, errors.New("token: ID token nonce mismatch")
	}
	lt.token = time.Since(t1)
	lt.total = time.Since(start)
	return lt, claims, nil
}

// redeem is the app's side: it redeems code at /oauth/token and returns the ID token's
// claims (decoded, not verified: the app's cost, not the broker's).
func (l *loader) redeem(ctx context.Context, code, verifier string) (idClaims, error) {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {l.cfg.redirectURI}, "code_verifier": {verifier}}
	if l.cfg.clientSecret == "" {
		form.Set("client_id", l.cfg.clientID)
	}
	treq, err := http.NewRequestWithContext(ctx, http.MethodPost, l.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return idClaims{}, err
	}
	treq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if l.cfg.clientSecret != "" {
		treq.SetBasicAuth(url.QueryEscape(l.cfg.clientID), url.QueryEscape(l.cfg.clientSecret))
	}
	tresp, err := (&http.Client{Transport: l.tr, Timeout: l.cfg.timeout}).Do(treq)
	if err != nil {
		return idClaims{}, fmt.Errorf("token: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(tresp.Body, 256<<10))
	_ = tresp.Body.Close()
	if err != nil {
		return idClaims{}, fmt.Errorf("token: read: %w", err)
	}
	if tresp.StatusCode != http.StatusOK {
		return idClaims{}, fmt.Errorf("token: status %d: %s", tresp.StatusCode, trunc(string(body)))
	}
	var tok struct {
		IDToken     string `json:"id_token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil {
		return idClaims{}, fmt.Errorf("token: body: %w", err)
	}
	if tok.IDToken == "" || tok.AccessToken == "" {
		return idClaims{}, errors.New("token: response lacks id_token or access_token")
	}
	claims, err := idTokenClaims(tok.IDToken)
	if err != nil {
		return idClaims{}, fmt.Errorf("token: ID token: %w", err)
	}
	return claims, nil
}

// ssoBrowser is a browser that signed in once (a full login): its cookie jar holds the
// broker's session cookie, and sid is the session's id from that login's ID token.
type ssoBrowser struct {
	client *http.Client // follows no redirect but the app's
	sid    string
}

// signIn runs the full login that gives a browser its broker session (not measured).
func (l *loader) signIn(ctx context.Context) (*ssoBrowser, error) {
	jar, _ := cookiejar.New(nil)
	_, claims, err := l.loginWith(ctx, l.browserClient(jar, true))
	if err != nil {
		return nil, err
	}
	if claims.SID == "" {
		return nil, errors.New("the ID token has no sid: the broker made no session")
	}
	return &ssoBrowser{client: l.browserClient(jar, false), sid: claims.SID}, nil
}

// signInAll signs in one browser per worker, concurrently; any failure fails them all.
func (l *loader) signInAll(ctx context.Context) ([]*ssoBrowser, error) {
	bs := make([]*ssoBrowser, l.cfg.c)
	errs := make([]error, l.cfg.c)
	var wg sync.WaitGroup
	for i := range bs {
		wg.Go(func() { bs[i], errs[i] = l.signIn(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("single sign-on warm-up: full login of browser %d: %w", i, err)
		}
	}
	return bs, nil
}

// ssoLogin runs one single sign-on login in the signed-in browser b: /authorize with its
// session cookie must redirect straight to the app with a code (never to the upstream),
// and the ID token of the code must carry the nonce and b's session id.
func (l *loader) ssoLogin(ctx context.Context, b *ssoBrowser) (loginTimes, error) {
	lt, claims, err := l.loginWith(ctx, b.client)
	if err != nil {
		return lt, err
	}
	if claims.SID != b.sid {
		return lt, errors.New("token: ID token sid is not the signed-in session's")
	}
	return lt, nil
}

// idTokenClaims decodes (without verifying: the app's job, not the broker's cost) the claims
// the generator checks.
func idTokenClaims(jwt string) (idClaims, error) {
	var c idClaims
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return c, errors.New("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, err
	}
	return c, nil
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// phase runs up to n logins with c workers until n are done or the deadline passes; worker w
// runs its logins one after another with login(ctx, w).
func (l *loader) phase(ctx context.Context, n int, deadline time.Time, login func(ctx context.Context, w int) (loginTimes, error)) ([]loginTimes, int, map[string]int) {
	var (
		next    atomic.Int64
		mu      sync.Mutex
		times   = make([]loginTimes, 0, n)
		errs    int
		samples = map[string]int{}
		wg      sync.WaitGroup
	)
	for w := range l.cfg.c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil && time.Now().Before(deadline) {
				lt, err := login(ctx, w)
				mu.Lock()
				if err != nil {
					errs++
					if len(samples) < 8 {
						samples[err.Error()]++
					}
				} else {
					times = append(times, lt)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return times, errs, samples
}

func runLoad(ctx context.Context, cfg config) (*result, error) {
	l, err := newLoader(cfg)
	if err != nil {
		return nil, err
	}
	defer l.tr.CloseIdleConnections()
	var login func(ctx context.Context, w int) (loginTimes, error)
	switch cfg.mode {
	case "", modeFull:
		cfg.mode = modeFull
		login = func(ctx context.Context, _ int) (loginTimes, error) { return l.login(ctx) }
	case modeSSO:
		// Each worker is a browser that signs in once (not measured) and then logs in again
		// and again through its broker session.
		browsers, err := l.signInAll(ctx)
		if err != nil {
			return nil, err
		}
		login = func(ctx context.Context, w int) (loginTimes, error) { return l.ssoLogin(ctx, browsers[w]) }
	default:
		return nil, fmt.Errorf("mode %q (want %s or %s)", cfg.mode, modeFull, modeSSO)
	}
	if cfg.warmup > 0 {
		_, werrs, samples := l.phase(ctx, cfg.warmup, time.Now().Add(cfg.duration), login)
		if werrs == cfg.warmup {
			return nil, fmt.Errorf("every warm-up login failed, e.g. %v", samples)
		}
	}
	var before, after procSample
	var rBefore, rAfter, iBefore, iAfter procSample
	if cfg.pid > 0 {
		if before, err = readProc(cfg.pid); err != nil {
			return nil, err
		}
	}
	if cfg.redisPID > 0 {
		if rBefore, err = readProc(cfg.redisPID); err != nil {
			return nil, err
		}
	}
	if cfg.idpPID > 0 {
		if iBefore, err = readProc(cfg.idpPID); err != nil {
			return nil, err
		}
	}
	selfBefore := selfCPU()
	start := time.Now()
	stopSampling := l.sampleRSS(start)
	times, errs, samples := l.phase(ctx, cfg.n, start.Add(cfg.duration), login)
	elapsed := time.Since(start)
	stopSampling()
	selfAfter := selfCPU()
	if cfg.pid > 0 {
		if after, err = readProc(cfg.pid); err != nil {
			return nil, err
		}
	}
	if cfg.redisPID > 0 {
		if rAfter, err = readProc(cfg.redisPID); err != nil {
			return nil, err
		}
	}
	if cfg.idpPID > 0 {
		if iAfter, err = readProc(cfg.idpPID); err != nil {
			return nil, err
		}
	}
	res := &result{Label: cfg.label, Mode: cfg.mode, C: cfg.c, OK: len(times), Errors: errs, ErrorSamples: samples,
		Seconds: elapsed.Seconds()}
	if elapsed > 0 {
		res.LoginsPerS = float64(len(times)) / elapsed.Seconds()
	}
	totals := make([]time.Duration, len(times))
	browsers := make([]time.Duration, len(times))
	tokens := make([]time.Duration, len(times))
	for i, t := range times {
		totals[i], browsers[i], tokens[i] = t.total, t.browser, t.token
	}
	res.P50, res.P95, res.P99, res.Max = pct(totals, 50), pct(totals, 95), pct(totals, 99), pct(totals, 100)
	res.BrowserP50, res.TokenP50 = pct(browsers, 50), pct(tokens, 50)
	done := len(times) + errs
	if cfg.pid > 0 && done > 0 {
		res.CPUMsPerLogin = float64(after.cpuTicks-before.cpuTicks) * 10 / float64(done) // USER_HZ = 100
		res.SysMsPerLogin = float64(after.sysTicks-before.sysTicks) * 10 / float64(done)
		res.RSSMB, res.HWMMB = float64(after.rssKB)/1024, float64(after.hwmKB)/1024
		res.Threads = after.threads
	}
	if cfg.redisPID > 0 && done > 0 {
		res.RedisCPUMsPerLogin = float64(rAfter.cpuTicks-rBefore.cpuTicks) * 10 / float64(done)
	}
	if cfg.idpPID > 0 && done > 0 {
		res.IdPCPUMsPerLogin = float64(iAfter.cpuTicks-iBefore.cpuTicks) * 10 / float64(done)
	}
	if done > 0 {
		res.GenCPUMsPerLogin = float64(selfAfter-selfBefore) / float64(time.Millisecond) / float64(done)
	}
	return res, nil
}

// sampleRSS prints the broker's RSS to stderr every -rss-every until the returned func is called.
func (l *loader) sampleRSS(start time.Time) (stop func()) {
	if l.cfg.pid <= 0 || l.cfg.rssEvery <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(l.cfg.rssEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if s, err := readProc(l.cfg.pid); err == nil {
					fmt.Fprintf(os.Stderr, "rss t=%.0fs rss=%.1fMB peak=%.1fMB threads=%d\n",
						time.Since(start).Seconds(), float64(s.rssKB)/1024, float64(s.hwmKB)/1024, s.threads)
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// pct returns the p-th percentile (nearest rank) of ds; it sorts ds.
func pct(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	if !slices.IsSorted(ds) {
		slices.Sort(ds)
	}
	i := int(float64(len(ds))*p/100+0.999999) - 1
	i = max(0, min(i, len(ds)-1))
	return float64(ds[i]) / float64(time.Millisecond)
}
