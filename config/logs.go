package config

import (
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
)

// UnauthenticatedLogs is logs.unauthenticated: retention and limits of the events that
// anyone can cause without credentials.
type UnauthenticatedLogs struct {
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
func defaultUnauthenticatedLogs() UnauthenticatedLogs {
	return UnauthenticatedLogs{
		MaxEvents: logs.DefaultUnauthenticatedMaxLen, MaxAge: logs.DefaultUnauthenticatedMaxAge,
		PerIP:   RateLimit{Rate: "1/s", Burst: 20},
		Global:  RateLimit{Rate: "20/s", Burst: 200},
		MaxKeys: 10000,
	}
}

// unauthenticatedLogs validates logs.unauthenticated.
func (v *validator) unauthenticatedLogs(u *UnauthenticatedLogs) {
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

// AdminLogs is logs.admin: retention of the administrative actions (sapi, and the fapi
// of a management write by a token whose scope allowed it).
type AdminLogs struct {
	MaxEvents int           `yaml:"max_events"`
	MaxAge    time.Duration `yaml:"max_age"`
}

// defaultAdminLogs is the default of logs.admin.
func defaultAdminLogs() AdminLogs {
	return AdminLogs{MaxEvents: logs.DefaultAdminMaxLen, MaxAge: logs.DefaultAdminMaxAge}
}

// adminLogs validates logs.admin.
func (v *validator) adminLogs(a *AdminLogs) {
	const p = "logs.admin."
	if a.MaxEvents < 1 || a.MaxEvents > 10_000_000 {
		v.add(p+"max_events", "must be between 1 and 10000000")
	}
	if a.MaxAge <= 0 {
		v.add(p+"max_age", "must be a positive duration such as 8760h")
	}
}
