package broker

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/config/configtest"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestInsecureHTTPSwitchIsWarnedAtEveryStart: New logs every warning of a configuration that
// uses allow_insecure_http (config.Warnings) at every start.
func TestInsecureHTTPSwitchIsWarnedAtEveryStart(t *testing.T) {
	configtest.SetEnv(t)
	cfg, err := config.Parse([]byte(strings.Replace(configtest.ValidYAML, `issuer: "http://127.0.0.1:8080/"`,
		"issuer: \"http://192.168.1.10:8080/\"\nallow_insecure_http: true", 1)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Clients[0].RedirectURIs = append(cfg.Clients[0].RedirectURIs, "http://192.168.1.10:8082/callback")
	if errs := cfg.Validate(); len(errs) != 0 {
		t.Fatalf("Validate: %v", config.FieldErrors(errs))
	}
	var logBuf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logBuf, nil))
	if _, err := New(cfg, Deps{Store: sessions.NewMemory(), Logger: logger}); err != nil {
		t.Fatal(err)
	}
	var warned []string
	for line := range strings.Lines(logBuf.String()) {
		var rec struct{ Level, Msg, Key string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "WARN" && rec.Msg == "insecure configuration" {
			warned = append(warned, rec.Key)
		}
	}
	if !slices.Equal(warned, []string{"allow_insecure_http", "issuer", "clients[0].redirect_uris[1]"}) {
		t.Fatalf("start-up warnings for keys %v, want every warning logged:\n%s", warned, logBuf.String())
	}
}
