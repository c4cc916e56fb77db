package broker

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
)

// The event log has three retention classes (logs.Class): the audit trail (successes, and
// what an authenticated party did) under logs.max_events/max_age, the administrative actions
// (management writes by a token allowed to make them) under logs.admin, and the events anyone
// can cause without credentials under logs.unauthenticated, which also limits them per client
// IP and in all before they reach stdout or the store. So a flood of anonymous requests can
// neither evict the audit trail nor flood the SIEM behind stdout (what it loses is counted in
// dpop_broker_events_dropped_total and summed up in a "login_events_dropped" warning), and
// neither end users nor a management token without a write scope can evict the record of what
// operators changed.

// eventLimiter builds the limiter of logs.unauthenticated (validated: a bad rate is
// unlimited here).
func eventLimiter(u *config.UnauthenticatedLogs) *logs.Limiter {
	perIP, _ := config.ParseRate(u.PerIP.Rate)
	global, _ := config.ParseRate(u.Global.Rate)
	return logs.NewLimiter(logs.LimiterConfig{
		PerIPRate: perIP, PerIPBurst: u.PerIP.Burst,
		GlobalRate: global, GlobalBurst: u.Global.Burst,
		MaxKeys: u.MaxKeys,
	})
}

// configSecrets are the secrets of the configuration that no event may carry.
func configSecrets(cfg *config.Config) []string {
	out := []string{cfg.DPoPServer.NonceSecret, cfg.Store.Redis.Password, cfg.Store.Redis.SentinelPassword}
	for _, t := range cfg.Management.Tokens {
		out = append(out, t.Token)
	}
	for _, c := range cfg.Clients {
		out = append(out, c.ClientSecret)
	}
	for _, c := range cfg.Connections {
		out = append(out, c.Options.ClientSecret)
	}
	for _, ls := range cfg.LogStreams {
		out = append(out, ls.Auth.Token, ls.Auth.Secret)
	}
	return out
}

// connectionSecrets are the client secrets of the connections of snap (the store's, which the
// management API may have changed since the configuration was read).
func connectionSecrets(snap *connSnapshot) []string {
	out := make([]string, 0, len(snap.list))
	for _, c := range snap.list {
		out = append(out, c.cfg.Options.ClientSecret)
	}
	return out
}

// Secret groups of the event writer's logs.Secrets.
const (
	secretsConfig      = "config"
	secretsConnections = "connections"
)

// clientClass is the class of a token-endpoint or revocation event once client
// authenticated: a confidential client proved its secret, so what it did is audit; naming a
// public client proves nothing, so its failures stay unauthenticated.
func clientClass(c *config.Client) logs.Class {
	if c.Public() {
		return logs.ClassByType
	}
	return logs.ClassAudit
}

// write records ev for request r; a store failure is logged by the writer and does not fail
// the request, and neither does a client that goes away meanwhile.
func (s *Server) write(r *http.Request, ev *logs.Event) {
	s.writeEvent(context.WithoutCancel(r.Context()), ev)
}

// writeEvent records ev within 3 seconds of ctx, which only work the broker does on its own
// (back-channel logout deliveries) passes directly: the event of a request goes through write.
// dpop_broker_events_total counts every event the broker produced, including those the
// limits on unauthenticated events dropped (dpop_broker_events_dropped_total).
func (s *Server) writeEvent(ctx context.Context, ev *logs.Event) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	traceEvent(ctx, ev) // details.trace_id of a traced request
	s.metrics.events.WithLabelValues(ev.Type).Inc()
	err := s.events.Write(ctx, ev)
	var drop *logs.DropError
	switch {
	case err == nil:
	case errors.As(err, &drop):
		s.metrics.eventsDropped.WithLabelValues(drop.Type, drop.Reason).Inc()
	default:
		s.log.Warn("login event not stored", "type", ev.Type, "err", err)
	}
}
