package sessions

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// How the Redis backend reports an outage: once, not once per request.
//
// Every command and pipeline the client sends passes redisHealth (a go-redis hook), which
// follows one state: up, down (a command failed because Redis could not serve it) or
// recovering (Redis answered again after the last failure). It logs each change of state once,
// to the logger of RedisConfig.Logger (default: SetRedisLogger's):
//
//	ERROR "store unavailable" store=redis class=connection_refused command=get addr=10.0.0.5:6379
//	WARN  "store recovered" store=redis failed_commands=812 outage_seconds=12.3
//
// class names the kind of failure (outageClass), never its text: a reply of the server is not
// echoed. failed_commands counts the commands (a pipeline or transaction counts once) that
// failed from the first failure to the recovery, outage_seconds the time from the first
// failure to the first answer of the recovery. Recovery is declared only when no command
// failed for recoverySettle after an answer, so that a partial outage (one Cluster master
// dead while the others answer) is one outage, not a line for every request that happens to
// reach a live master. Meanwhile the broker writes its per-request lines about the outage at
// DEBUG (logs.StoreOutageHandler), and go-redis's own dial failures too (redisLogger).
//
// Answers of the server are not outages: a missing key, a script not loaded yet, WRONGTYPE,
// and OOM (a full store, ErrFull, which the broker logs per request). A command the caller
// gave up (context canceled) or sent to a closed client counts neither way.

// recoverySettle is how long Redis must answer without a failed command before the outage
// is declared over.
const recoverySettle = 2 * time.Second

// redisLog is the logger of SetRedisLogger (nil: slog.Default()).
var redisLog atomic.Pointer[slog.Logger]

// defaultRedisLogger returns SetRedisLogger's logger, else slog.Default().
func defaultRedisLogger() *slog.Logger {
	if l := redisLog.Load(); l != nil {
		return l
	}
	return slog.Default()
}

type healthState int

const (
	healthUp healthState = iota
	healthDown
	healthRecovering
)

// redisHealth is the state machine above, and the go-redis hook that feeds it.
type redisHealth struct {
	logger *slog.Logger // nil: defaultRedisLogger at each line
	settle time.Duration

	down atomic.Bool // state != healthUp: the fast path of a success while up reads only this

	mu        sync.Mutex
	state     healthState
	since     time.Time // first failure of the outage
	recovered time.Time // first answer after the last failure (healthRecovering)
	failed    int64     // commands failed since the outage began
	timer     *time.Timer
	closed    bool
}

func newRedisHealth(logger *slog.Logger) *redisHealth {
	return &redisHealth{logger: logger, settle: recoverySettle}
}

func (h *redisHealth) log() *slog.Logger {
	if h.logger != nil {
		return h.logger
	}
	return defaultRedisLogger()
}

func (h *redisHealth) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *redisHealth) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.observe(err, cmd)
		return err
	}
}

func (h *redisHealth) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.observe(err, nil)
		return err
	}
}

// observe feeds the result of one command (cmd), or of a pipeline (cmd nil), to the state
// machine. A success while Redis is up costs one atomic load.
func (h *redisHealth) observe(err error, cmd redis.Cmder) {
	if err == nil && !h.down.Load() {
		return
	}
	class, outage := outageClass(err)
	switch {
	case outage:
		name := "pipeline"
		if cmd != nil {
			name = cmd.Name()
		}
		h.failure(name, class, err)
	case class == "": // an answer
		if h.down.Load() {
			h.answer()
		}
	}
}

// failure records a failed command: the first one of an outage is logged.
func (h *redisHealth) failure(command, class string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.failed++
	switch h.state {
	case healthUp:
		h.state, h.since, h.failed = healthDown, time.Now(), 1
		h.down.Store(true)
		attrs := []slog.Attr{slog.String("store", "redis"), slog.String("class", class), slog.String("command", command)}
		if addr := failedAddr(err); addr != "" {
			attrs = append(attrs, slog.String("addr", addr))
		}
		h.log().LogAttrs(context.Background(), slog.LevelError, "store unavailable", attrs...)
	case healthRecovering:
		h.state = healthDown // the recovery did not hold: same outage
	}
}

// answer records an answer of Redis during an outage: the recovery begins, and is declared
// once settle passed without a failure.
func (h *redisHealth) answer() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != healthDown || h.closed {
		return
	}
	h.state, h.recovered = healthRecovering, time.Now()
	if h.timer == nil {
		h.timer = time.AfterFunc(h.settle, h.settled)
	} else {
		h.timer.Reset(h.settle)
	}
}

// settled declares the recovery when no command failed for settle since it began.
func (h *redisHealth) settled() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != healthRecovering || h.closed {
		return
	}
	if left := h.settle - time.Since(h.recovered); left > 0 {
		h.timer.Reset(left) // a failure and a new answer moved the recovery's start
		return
	}
	outage := h.recovered.Sub(h.since)
	h.log().LogAttrs(context.Background(), slog.LevelWarn, "store recovered", slog.String("store", "redis"),
		slog.Int64("failed_commands", h.failed), slog.Float64("outage_seconds", math.Round(outage.Seconds()*10)/10))
	h.state, h.failed = healthUp, 0
	h.down.Store(false)
}

// close stops the state machine: the store is closing, so what its commands do now is no
// outage.
func (h *redisHealth) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.timer != nil {
		h.timer.Stop()
	}
}

// outageClass classifies the result of a command: outage is true when Redis could not serve
// it, with class naming why; class "" (and no outage) is an answer of Redis; class "ignored"
// (no outage) is neither: the caller gave up, or the client was closed.
func outageClass(err error) (class string, outage bool) {
	if err == nil || errors.Is(err, redis.Nil) {
		return "", false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed) {
		return "ignored", false
	}
	var re redis.Error
	if errors.As(err, &re) {
		for _, c := range []struct {
			class string
			is    func(error) bool
		}{
			{"loading", redis.IsLoadingError},
			{"cluster_down", redis.IsClusterDownError},
			{"readonly", redis.IsReadOnlyError},
			{"try_again", redis.IsTryAgainError},
			{"master_down", redis.IsMasterDownError},
			{"max_clients", redis.IsMaxClientsError},
			{"no_replicas", redis.IsNoReplicasError},
			{"auth", redis.IsAuthError},
			{"no_permission", redis.IsPermissionError},
			{"busy", func(err error) bool { return redis.HasErrorPrefix(err, "BUSY") }},
			{"slot_moving", movedOrAsk},
		} {
			if c.is(err) {
				return c.class, true
			}
		}
		return "", false // an answer: WRONGTYPE, NOSCRIPT, OOM (ErrFull), …
	}
	var (
		op   *net.OpError
		dns  *net.DNSError
		cert *tls.CertificateVerificationError
		ua   x509.UnknownAuthorityError
		ne   net.Error
	)
	switch {
	case errors.Is(err, redis.ErrPoolTimeout):
		return "pool_timeout", true
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout", true
	case errors.As(err, &dns):
		return "dns", true
	case errors.As(err, &cert), errors.As(err, &ua):
		return "tls", true
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused", true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection_lost", true
	case errors.As(err, &op) && op.Op == "dial":
		return "dial", true
	}
	return "network", true
}

// failedAddr is the address of the failed connection, when err names it.
func failedAddr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		return op.Addr.String()
	}
	return ""
}
