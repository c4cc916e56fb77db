package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// Bounds of store.memory.max_records.
const (
	minMemoryRecords = 100
	maxMemoryRecords = 100_000_000
)

// OpenStore opens the store the configuration selects.
func OpenStore(cfg *Config) (sessions.Store, error) {
	switch cfg.Store.Type {
	case "", "memory":
		return sessions.NewMemoryWithOptions(cfg.Store.Memory.Options()), nil
	case "redis":
		r := cfg.Store.Redis
		tlsCfg, err := redisTLSConfig(r.TLS)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		st, err := sessions.NewRedis(sessions.RedisConfig{
			Addrs: r.Addrs, MasterName: r.MasterName, Username: r.Username, Password: r.Password,
			SentinelUsername: r.SentinelUsername, SentinelPassword: r.SentinelPassword,
			DB: r.DB, Prefix: r.Prefix, Timeout: r.Timeout, TLS: tlsCfg,
		})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("store: unknown type %q", cfg.Store.Type)
}

// redisTLSConfig builds the TLS configuration toward Redis (nil when off). Errors are
// FieldErrors naming the key.
func redisTLSConfig(t RedisTLS) (*tls.Config, error) {
	const base = "store.redis.tls."
	if !t.Enabled {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" {
			return nil, FieldError{Key: base + "enabled", Reason: "must be true when other tls settings are given"}
		}
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, FieldError{Key: base + "ca_file", Reason: fmt.Sprintf("cannot read %s: %v", t.CAFile, errors.Unwrap(err))}
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, FieldError{Key: base + "ca_file", Reason: t.CAFile + " holds no PEM certificate"}
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return nil, FieldError{Key: base + "cert_file", Reason: "cert_file and key_file go together (client certificate)"}
	case t.CertFile != "":
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, FieldError{Key: base + "cert_file", Reason: fmt.Sprintf("client certificate: %v", err)}
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// The DPoP proof replay cache (RFC 9449 §11.1) stores one record per accepted proof at
// /userinfo and /oauth/token for dpop_server.max_age + max_future. Anyone holding one valid
// DPoP-bound token can grow it, so in the memory store it has its own budget
// (store.memory.max_replay_records, default half of max_records): when the budget is full,
// proofs are refused fail-closed (503 at the endpoint that checks them) while login
// transactions, codes, sessions and refresh tokens keep the rest of the room. The rate
// limits per session (/userinfo) and per refresh-token family (/oauth/token) bound how fast
// one login can fill it. Redis has no per-kind bound: size its maxmemory for the replay
// traffic (README, "Bounded state").

// replayRecords is the memory store's budget for proof jtis: max_replay_records, or half of
// max_records when it is 0.
func (m MemoryStore) replayRecords() int {
	if m.MaxReplayRecords > 0 {
		return m.MaxReplayRecords
	}
	return max(m.MaxRecords/2, 1)
}

// The operators' console's records (its sessions, at most 10 per operator) have their own
// share of the memory store too: one hundredth of max_records, at least 10. However many
// console sessions operators open, logins keep the rest of the room.

// consoleRecords is the memory store's budget for console records (sessions.KindConsole).
func (m MemoryStore) consoleRecords() int {
	return max(m.MaxRecords/100, 10)
}

// Options are the memory store's options: the record limit, the replay budget and the
// console's share.
func (m MemoryStore) Options() sessions.MemoryOptions {
	return sessions.MemoryOptions{
		MaxRecords: m.MaxRecords,
		KindLimits: map[sessions.Kind]int{sessions.KindJTI: m.replayRecords(), sessions.KindConsole: m.consoleRecords()},
	}
}

// replayRecords validates store.memory.max_replay_records: 0 (half of max_records) or at
// most max_records (equal: no budget of its own).
func (v *validator) replayRecords(m *MemoryStore) {
	if n := m.MaxReplayRecords; n < 0 || n > m.MaxRecords {
		v.add("store.memory.max_replay_records", "must be between 0 (half of max_records) and max_records (%d)", m.MaxRecords)
	}
}
