package logs

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// BenchmarkWrite is one login event written the way the broker writes it: the slog JSON line
// and the store-backed log (memory store, so the figure is the encoding and redaction work).
func BenchmarkWrite(b *testing.B) {
	w := &Writer{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Store: sessions.NewMemory(), Hostname: "broker-1"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ev := &Event{
			Type: TypeSuccessLogin, Connection: "corp", ConnectionID: "con_0123456789abcdef", Strategy: "oidc",
			ClientID: "app", ClientName: "App", IP: "127.0.0.1", UserAgent: "Mozilla/5.0 (X11; Linux x86_64)",
			UserID: "oidc|corp|alice", UserName: "alice@example.com",
			Details: map[string]any{
				"dpop_signing_alg": "ES256", "dpop_returned_from_upstream": true, "idp_token_type": "dpop",
				"dpop_nonce_used": true, "dpop_nonce_retries": 0, "id_token_signing_alg": "RS256", "code_exchange_ms": 3,
				"upstream_userinfo_fetch": map[string]any{"status": "SUCCESS", "dpop_bound": true},
			},
		}
		if err := w.Write(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}
