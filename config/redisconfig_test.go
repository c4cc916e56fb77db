package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

// TestRedisSentinelConfig: store.redis with master_name and the Sentinel's own password
// reaches the master through a real Sentinel (OpenStore); the password without master_name is
// a validation error.
func TestRedisSentinelConfig(t *testing.T) {
	master := redistest.Start(t)
	cfg := Default()
	cfg.Store.Type = "redis"
	cfg.Store.Redis.Addrs = []string{redistest.StartSentinel(t, master, "broker-master", "sentinel-secret")}
	cfg.Store.Redis.MasterName, cfg.Store.Redis.SentinelPassword = "broker-master", "sentinel-secret"
	st, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.Put(ctx, sessions.KindSession, "s1.s", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Put through the Sentinel: %v", err)
	}
	if v, err := st.Get(ctx, sessions.KindSession, "s1.s"); err != nil || string(v) != "v" {
		t.Fatalf("Get through the Sentinel: %q %v", v, err)
	}
	c := *cfg
	c.Store.Redis.MasterName = ""
	v := &validator{}
	v.store(&c.Store)
	if want := (FieldError{Key: "store.redis.sentinel_password", Reason: "only applies with master_name (Sentinel)"}); len(v.errs) != 1 || v.errs[0] != want {
		t.Errorf("got %v, want %v", v.errs, want)
	}
}

// TestRedisTLSConfig: store.redis.tls reaches a TLS-only redis-server that requires client
// certificates (OpenStore), and each misconfiguration is a validation error naming its key.
func TestRedisTLSConfig(t *testing.T) {
	srv, files := redistest.StartTLS(t)
	cfg := Default()
	cfg.Store.Type = "redis"
	cfg.Store.Redis.Addrs = []string{srv.Addr}
	cfg.Store.Redis.TLS = RedisTLS{Enabled: true, CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey}
	st, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Ping(context.Background()); err != nil {
		t.Fatalf("Ping over TLS: %v", err)
	}

	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  RedisTLS
		want FieldError
	}{
		{name: "settings without enabled", tls: RedisTLS{CAFile: files.CA}, want: FieldError{Key: "store.redis.tls.enabled", Reason: "must be true when other tls settings are given"}},
		{name: "CA file without a certificate", tls: RedisTLS{Enabled: true, CAFile: notPEM}, want: FieldError{Key: "store.redis.tls.ca_file", Reason: notPEM + " holds no PEM certificate"}},
		{name: "client certificate without its key", tls: RedisTLS{Enabled: true, CertFile: files.ClientCert}, want: FieldError{Key: "store.redis.tls.cert_file", Reason: "cert_file and key_file go together (client certificate)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *cfg
			c.Store.Redis.TLS = tc.tls
			v := &validator{}
			v.store(&c.Store)
			if len(v.errs) != 1 || v.errs[0] != tc.want {
				t.Fatalf("got %v, want %v", v.errs, tc.want)
			}
		})
	}
}
