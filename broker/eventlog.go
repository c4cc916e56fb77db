package broker

import (
	"context"
	"errors"
	"net/http"
	"time"

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

// UnauthenticatedLogsConfig is logs.unauthenticated: retention and limits of the events that
// anyone can cause without credentials.
type UnauthenticatedLogsConfig struct {
	MaxEvents int           `yaml:"max_events"`
	MaxAge    time.Duration `yaml:"max_age"`
	// PerIP and Global are token buckets on these events: per client IP (IPv6 by /64) and
	// for all IPs together. Rate "0" is unlimited.
	PerIP  RateLimit `yaml:"per_ip"`
	Global RateLimit `yaml:"global"`
	// MaxKeys caps the client IPs the per-IP table remembers (least recently seen forgotten).
	MaxKeys int `yaml:"max_keys"`
}

// defaultUnauthenticatedLogs is the default of logs.unauthenticated.
func defaultUnauthenticatedLogs() UnauthenticatedLogsConfig {
	return UnauthenticatedLogsConfig{
		MaxEvents: logs.DefaultUnauthenticatedMaxLen, MaxAge: logs.DefaultUnauthenticatedMaxAge,
		PerIP:   RateLimit{Rate: "1/s", Burst: 20},
		Global:  RateLimit{Rate: "20/s", Burst: 200},
		MaxKeys: 10000,
	}
}

// unauthenticatedLogs validates logs.unauthenticated.
func (v *validator) unauthenticatedLogs(u *UnauthenticatedLogsConfig) {
	const p = "logs.unauthenticated."
	if u.MaxEvents < 1 || u.MaxEvents > 10_000_000 {
		v.add(p+"max_events", "must be between 1 and 10000000")
	}
	if u.MaxAge <= 0 {
		v.add(p+"max_age", "must be a positive duration such as 168h")
	}
	if u.MaxKeys < 1 || u.MaxKeys > 10_000_000 {
		v.add(p+"max_keys", "must be between 1 and 10000000")
	}
	v.rateLimit(p+"per_ip", u.PerIP)
	v.rateLimit(p+"global", u.Global)
}

// AdminLogsConfig is logs.admin: retention of the administrative actions (sapi, and the fapi
// of a management write by a token whose scope allowed it).
type AdminLogsConfig struct {
	MaxEvents int           `yaml:"max_events"`
	MaxAge    time.Duration `yaml:"max_age"`
}

// defaultAdminLogs is the default of logs.admin.
func defaultAdminLogs() AdminLogsConfig {
	return AdminLogsConfig{MaxEvents: logs.DefaultAdminMaxLen, MaxAge: logs.DefaultAdminMaxAge}
}

// adminLogs validates logs.admin.
func (v *validator) adminLogs(a *AdminLogsConfig) {
	const p = "logs.admin."
	if a.MaxEvents < 1 || a.MaxEvents > 10_000_000 {
		v.add(p+"max_events", "must be between 1 and 10000000")
	}
	if a.MaxAge <= 0 {
		v.add(p+"max_age", "must be a positive duration such as 8760h")
	}
}

// eventLimiter builds the limiter of logs.unauthenticated (validated: a bad rate is
// unlimited here).
func eventLimiter(u *UnauthenticatedLogsConfig) *logs.Limiter {
	perIP, _ := parseRate(u.PerIP.Rate)
	global, _ := parseRate(u.Global.Rate)
	return logs.NewLimiter(logs.LimiterConfig{
		PerIPRate: perIP, PerIPBurst: u.PerIP.Burst,
		GlobalRate: global, GlobalBurst: u.Global.Burst,
		MaxKeys: u.MaxKeys,
	})
}

// configSecrets are the secrets of the configuration that no event may carry.
func configSecrets(cfg *Config) []string {
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
func clientClass(c *ClientConfig) logs.Class {
	if c.Public() {
		return logs.ClassByType
	}
	return logs.ClassAudit
}

// write records ev; a store failure is logged by the writer and does not fail the request.
// dpop_broker_events_total counts every event the broker produced, including those the
// limits on unauthenticated events dropped (dpop_broker_events_dropped_total).
func (s *Server) write(r *http.Request, ev *logs.Event) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 3*time.Second)
	defer cancel()
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
