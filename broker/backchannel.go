package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// Back-channel logout toward the apps (OpenID Connect Back-Channel Logout 1.0, the broker as
// the OP): when a session ends, every app that received a code through it and registered a
// backchannel_logout_uri gets a logout token (§2.4) by POST (§2.5), so the browser's request
// never waits for an app. Each app has a bounded queue of its own, drained by a worker of its
// own, so an app that hangs or is down delays and drops only its own deliveries; after a
// delivery to an app failed every attempt, its next deliveries within a cool-down get one
// attempt each (a circuit breaker), so its queue drains fast. Each delivery ends in one event
// (oidc_backchannel_logout_succeeded or _failed, audit class) and one count in
// dpop_broker_backchannel_logout_total. docs/sessions.md describes it for operators.

const (
	// logoutEvent is the events member of a logout token (§2.4).
	logoutEvent = "http://schemas.openid.net/event/backchannel-logout"
	// logoutTokenTyp is the logout token's JOSE typ (§2.4 recommends explicit typing).
	logoutTokenTyp = "logout+jwt"
	// logoutTokenLifetime is exp - iat of a logout token: long enough for every attempt of
	// one delivery (the token is made when its first attempt starts), short enough that a
	// leaked token is soon worthless.
	logoutTokenLifetime = 2 * time.Minute
	// logoutResponseDrain is how much of an app's answer is read (so the connection can be
	// reused) before it is closed.
	logoutResponseDrain = 4 << 10
)

// Stable details.error codes of oidc_backchannel_logout_failed.
const (
	codeQueueFull           = "queue_full"            // dropped: the queue had no room
	codeShuttingDown        = "shutting_down"         // the broker stopped before the delivery ended
	codeTimeout             = "timeout"               // no answer within the attempt timeout
	codeTransportError      = "transport_error"       // connection refused, DNS, TLS, reset …
	codeUnexpectedStatus    = "unexpected_status"     // an answer other than 2xx and 3xx
	codeRedirectNotFollowed = "redirect_not_followed" // a 3xx: never followed
	codeLogoutTokenFailed   = "logout_token_failed"   // the token could not be signed
)

// Metric results of dpop_broker_backchannel_logout_total.
const (
	bclSucceeded = "succeeded"
	bclFailed    = "failed"
	bclDropped   = "dropped"
)

// backchannel is the delivery machinery: one fixed-capacity queue and one worker per app
// (client id), both started with the app's first delivery, and an HTTP client of its own. The
// apps are the configured clients with a backchannel_logout_uri, so the queues and workers
// are bounded by the configuration. The knobs are fields so that tests can shorten them
// before the first delivery; newBackchannel sets the defaults.
type backchannel struct {
	// client posts the logout tokens. It is not the upstream client (upstreamhttp.go, whose
	// address policy, egress.go, refuses internal addresses): the apps' back-channel logout
	// URIs are set by the operator in the configuration, never by a request or the
	// management API, and are usually on the internal network, which that policy exists to
	// fence off from upstream URLs that a management token may set. It follows no redirects
	// (a 3xx is a failure, so a token never travels on to a URL nobody configured) and uses
	// no HTTP(S)_PROXY, like the upstream client.
	client    *http.Client
	transport *http.Transport
	queueCap  int           // per app: deliveries waiting at most; one more is dropped (queue_full)
	timeout   time.Duration // per attempt, connection and answer included
	// delays are the waits before the second, third, … attempt: len(delays)+1 attempts at
	// most. Only transport errors, timeouts, 5xx and 429 are retried.
	delays []time.Duration
	// cooldown: after a delivery to an app failed every attempt, the app's deliveries that
	// start within this time get a single attempt (no retry waits); a success ends it early.
	cooldown time.Duration
	grace    time.Duration // Close: how long waiting and running deliveries may take to finish
	// writeGrace is how long, after grace, Close waits for the events of the deliveries it
	// cancelled before it cancels their store writes too (their log lines are written anyway).
	writeGrace time.Duration

	mu       sync.Mutex
	apps     map[string]*bclApp // by client id; nil until the first delivery
	closed   bool
	ctx      context.Context // cancelled when grace is over: attempts and backoffs end
	cancel   context.CancelFunc
	writeCtx context.Context // the workers' event writes; cancelled after writeGrace
	stopW    context.CancelFunc
	workerWG sync.WaitGroup
}

// bclApp is one app's delivery queue, drained by the app's own worker.
type bclApp struct {
	queue chan bclDelivery
	// failing is the end of the app's cool-down (zero: none): set after a delivery failed
	// every attempt, cleared by a success. Only the app's worker reads and writes it.
	failing time.Time
}

// bclDelivery is one logout token to send: a copy of what it needs, so that the session
// record the caller holds may change or go.
type bclDelivery struct {
	sid        string
	userID     string
	connection string
	client     *config.Client
}

// newBackchannel returns the machinery with its defaults: per app 256 waiting deliveries and
// one worker; 5 s per attempt, 3 attempts (1 s and 4 s apart), one attempt only for 1 minute
// after a delivery to the app failed every attempt; 10 s grace at Close.
func newBackchannel() *backchannel {
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   5 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       60 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
	}
	return &backchannel{
		client: &http.Client{
			Transport:     transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		transport:  transport,
		queueCap:   256,
		timeout:    5 * time.Second,
		delays:     []time.Duration{time.Second, 4 * time.Second},
		cooldown:   time.Minute,
		grace:      10 * time.Second,
		writeGrace: 5 * time.Second,
	}
}

// notifyLogout queues one back-channel logout delivery for each app of the ended session
// sess (whose sid the broker's ID tokens carried as "sid") that has a backchannel_logout_uri:
// each distinct client id in sess.Clients, or sess.ClientID when Clients is empty. It returns
// at once; the deliveries outlive the request that ended the session. A delivery that finds
// the queue full is dropped and recorded (queue_full).
func (s *Server) notifyLogout(sid string, sess *sessionRecord) {
	if sess == nil {
		return
	}
	if sid == "" { // a logout token names the session it ends (sid is always sent)
		s.log.Warn("back-channel logout skipped: the ended session has no sid")
		return
	}
	ids := sess.Clients
	if len(ids) == 0 {
		ids = []string{sess.ClientID}
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		c := s.cachedClient(id)
		if seen[id] || c == nil || c.BackchannelLogoutURI == "" {
			continue
		}
		seen[id] = true
		s.enqueueLogout(bclDelivery{sid: sid, userID: sess.UserID, connection: sess.Connection, client: c})
	}
}

// enqueueLogout hands d to its app's worker (starting it with the app's first delivery), or
// records it as dropped when the app's queue is full or the broker is closing.
func (s *Server) enqueueLogout(d bclDelivery) {
	b := s.bcl
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.logoutOutcome(context.Background(), d, bclOutcome{result: bclDropped, code: codeShuttingDown,
			desc: "the broker is stopping: the delivery was not sent"})
		return
	}
	if b.apps == nil {
		b.apps = map[string]*bclApp{}
		b.ctx, b.cancel = context.WithCancel(context.Background())
		b.writeCtx, b.stopW = context.WithCancel(context.Background())
	}
	app := b.apps[d.client.ClientID]
	if app == nil {
		app = b.startApp(s)
		b.apps[d.client.ClientID] = app
	}
	select {
	case app.queue <- d:
		b.mu.Unlock()
		return
	default:
	}
	b.mu.Unlock()
	s.logoutOutcome(context.Background(), d, bclOutcome{result: bclDropped, code: codeQueueFull,
		desc: fmt.Sprintf("%d back-channel logout deliveries to this app were already waiting: this one was not sent", b.queueCap)})
}

// startApp makes an app's queue and starts its worker; b.mu is held.
func (b *backchannel) startApp(s *Server) *bclApp {
	app := &bclApp{queue: make(chan bclDelivery, b.queueCap)}
	ctx := b.ctx
	b.workerWG.Go(func() {
		for d := range app.queue {
			s.deliverLogout(ctx, app, d)
		}
	})
	return app
}

// Close stops the watch of the store's connection records (registry.go) and the back-channel
// logout workers: no delivery is accepted any more, those
// waiting or running get the grace (10 s) to finish; then running attempts are cancelled and
// what still waits is recorded as not sent (shutting_down). Call it once the HTTP server has
// stopped (no more logouts), before the store closes (the outcomes are events). Idempotent.
func (s *Server) Close() {
	s.reg.stopWatch()
	s.closeLogStreams()
	b := s.bcl
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	started := b.apps != nil
	for _, app := range b.apps {
		close(app.queue)
	}
	b.mu.Unlock()
	defer b.transport.CloseIdleConnections()
	if !started {
		return
	}
	finished := make(chan struct{})
	go func() {
		b.workerWG.Wait()
		close(finished)
	}()
	grace := time.NewTimer(b.grace)
	defer grace.Stop()
	select {
	case <-finished:
	case <-grace.C:
		b.cancel()
		writes := time.NewTimer(b.writeGrace)
		defer writes.Stop()
		select {
		case <-finished:
		case <-writes.C:
			b.stopW()
			<-finished
		}
	}
	b.cancel()
	b.stopW()
}

// bclOutcome is how one delivery ended.
type bclOutcome struct {
	result   string // bclSucceeded, bclFailed, bclDropped
	attempts int
	status   int    // the app's last HTTP status; 0: none
	code     string // details.error; "" on success
	desc     string // details.error_description
	retry    bool   // the attempt's failure may pass: try again
}

// deliverLogout sends one logout token to app, retrying as b.delays allow (not at all while
// the app cools down after a delivery that failed every attempt), and records the outcome.
func (s *Server) deliverLogout(ctx context.Context, app *bclApp, d bclDelivery) {
	b := s.bcl
	if ctx.Err() != nil {
		s.logoutOutcome(b.writeCtx, d, bclOutcome{result: bclDropped, code: codeShuttingDown,
			desc: "the broker stopped before the delivery was sent"})
		return
	}
	token, err := s.logoutToken(d)
	if err != nil {
		s.log.Error("logout token not signed", "client_id", d.client.ClientID, "err", err)
		s.logoutOutcome(b.writeCtx, d, bclOutcome{result: bclFailed, code: codeLogoutTokenFailed, desc: "the logout token could not be signed"})
		return
	}
	retries := len(b.delays)
	cooling := !app.failing.IsZero() && s.now().Before(app.failing)
	if cooling {
		retries = 0
	}
	var out bclOutcome
	for attempt := 1; ; attempt++ {
		out = b.post(ctx, d.client.BackchannelLogoutURI, token)
		out.attempts = attempt
		if out.result == bclSucceeded || !out.retry || attempt > retries {
			break
		}
		wait := time.NewTimer(b.delays[attempt-1])
		select {
		case <-wait.C:
			continue
		case <-ctx.Done():
			wait.Stop()
			out.code, out.desc, out.retry = codeShuttingDown, "the broker stopped before the next attempt; the last one: "+out.desc, false
		}
		break
	}
	switch {
	case out.result == bclSucceeded:
		app.failing = time.Time{}
	case out.retry: // every attempt allowed failed with a failure that may pass
		app.failing = s.now().Add(b.cooldown)
		if cooling {
			out.desc += fmt.Sprintf(" (not retried: a delivery to this app failed every attempt less than %s before)", b.cooldown)
		}
	}
	s.logoutOutcome(b.writeCtx, d, out)
}

// post makes one attempt: POST logout_token=… as a form (§2.5). 2xx is success (§2.8 names
// 200; 204 is accepted too); a 3xx is never followed and fails; 429, 5xx, timeouts and
// transport errors may be retried, any other 4xx is final (docs/conformance.md#bcl-request,
// docs/conformance.md#bcl-response).
func (b *backchannel) post(ctx context.Context, uri, token string) bclOutcome {
	actx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	body := url.Values{"logout_token": {token}}.Encode()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, uri, strings.NewReader(body))
	if err != nil { // the configuration checked the URL
		return bclOutcome{result: bclFailed, code: codeTransportError, desc: "the backchannel_logout_uri cannot be requested"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "dpop-broker back-channel logout")
	resp, err := b.client.Do(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return bclOutcome{result: bclFailed, code: codeShuttingDown, desc: "the broker stopped during the attempt"}
		case errors.Is(err, context.DeadlineExceeded):
			return bclOutcome{result: bclFailed, code: codeTimeout, retry: true, desc: "no answer within " + b.timeout.String()}
		}
		return bclOutcome{result: bclFailed, code: codeTransportError, retry: true, desc: transportReason(err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, logoutResponseDrain))
	_ = resp.Body.Close()
	out := bclOutcome{status: resp.StatusCode}
	switch st := resp.StatusCode; {
	case st >= 200 && st < 300:
		out.result = bclSucceeded
	case st >= 300 && st < 400:
		out.result, out.code = bclFailed, codeRedirectNotFollowed
		out.desc = "the app answered HTTP " + strconv.Itoa(st) + ": redirects are not followed"
	default:
		out.result, out.code = bclFailed, codeUnexpectedStatus
		out.retry = st == http.StatusTooManyRequests || st >= 500
		out.desc = "the app answered HTTP " + strconv.Itoa(st) + ": a 2xx answer is expected (OpenID Connect Back-Channel Logout 1.0 §2.8)"
	}
	return out
}

// transportReason is err without the request URL (whose query is the operator's and may hold
// anything): the cause as net/http reports it, such as "dial tcp …: connection refused".
func transportReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// logoutClaims are the claims of a logout token (Back-Channel Logout 1.0 §2.4): never a
// nonce.
type logoutClaims struct {
	Issuer   string              `json:"iss"`
	Audience string              `json:"aud"`
	IssuedAt int64               `json:"iat"`
	Expiry   int64               `json:"exp"`
	JTI      string              `json:"jti"`
	Events   map[string]struct{} `json:"events"`
	Subject  string              `json:"sub,omitempty"`
	SID      string              `json:"sid"`
}

// logoutToken signs d's logout token with the ID-token key (same kid and alg), typ
// logout+jwt, for the app alone (aud), with a fresh jti (docs/conformance.md#bcl-logout-token-claims,
// docs/conformance.md#bcl-logout-token-typ).
func (s *Server) logoutToken(d bclDelivery) (string, error) {
	now := s.now()
	return signJWT(s.logoutSigner, logoutClaims{
		Issuer: s.issuer, Audience: d.client.ClientID,
		IssuedAt: now.Unix(), Expiry: now.Add(logoutTokenLifetime).Unix(), JTI: randomString(16),
		Events:  map[string]struct{}{logoutEvent: {}},
		Subject: d.userID, SID: d.sid,
	})
}

// logoutOutcome records how delivery d ended: one event (never the token, nor the URI's path
// or query: only its host) and one count.
func (s *Server) logoutOutcome(ctx context.Context, d bclDelivery, out bclOutcome) {
	s.metrics.backchannel.WithLabelValues(out.result).Inc()
	ev := newBackgroundEvent()
	ev.Type = logs.TypeBackchannelLogoutSucceeded
	if out.result != bclSucceeded {
		ev.Type = logs.TypeBackchannelLogoutFailed
	}
	ev.Class = logs.ClassAudit // it follows a logout, which needed the session
	withClient(ev, d.client)
	ev.UserID = d.userID
	ev.Connection = d.connection
	if snap := s.reg.snap.Load(); snap != nil { // the loaded connections; no store round trip
		if c := snap.byName[d.connection]; c != nil {
			ev.ConnectionID, ev.Strategy, ev.StrategyType = c.id, c.cfg.Strategy, "enterprise"
		}
	}
	ev.Details["session_id"] = d.sid
	if u, err := url.Parse(d.client.BackchannelLogoutURI); err == nil {
		ev.Details["backchannel_logout_host"] = u.Host
	}
	ev.Details["attempts"] = out.attempts
	if out.status != 0 {
		ev.Details["status"] = out.status
	}
	if out.result != bclSucceeded {
		ev.Details["error"] = out.code
		ev.Details["error_description"] = clip(out.desc, 512)
	}
	s.writeEvent(ctx, ev)
}
