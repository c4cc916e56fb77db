package logs

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestEncodeDetailsMatchesRedact: the plain-value walk gives byte for byte the JSON of
// Redact's round trip (secret names dropped, JWT-like strings replaced, numbers kept).
func TestEncodeDetailsMatchesRedact(t *testing.T) {
	const jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	type st struct {
		Status string `json:"status"`
		Token  string `json:"token"`
	}
	cases := []map[string]any{
		{"dpop_signing_alg": "ES256", "dpop_nonce_used": true, "dpop_nonce_retries": 1, "code_exchange_ms": int64(12),
			"session_id": "abc", "idp_token_type": "dpop", "upstream_userinfo_fetch": map[string]any{"status": "SUCCESS", "dpop_bound": true}},
		{"dpop": map[string]any{"bound": true, "policy": "allowed", "jkt": "x", "alg": "ES256"}, "audience": "https://api"},
		{"access_token": "at", "code": "c", "token_refreshed": true, "code_len": 3, "note": jwt, "html": "<a&b>"},
		{"nested": map[string]any{"client_secret": "s", "list": []any{jwt, 1.5, nil, "ok"}}, "strs": []string{jwt, "x"}},
		{"m": map[string]string{"password": "p", "kind": jwt, "name": "n"}, "f32": float32(0.1), "u": uint8(7)},
		{"struct": st{Status: "SUCCESS", Token: "tok"}}, // takes the JSON path
		{"nan": math.NaN()},              // not encodable: redaction_error either way
		{"access_token": "only secrets"}, // nothing left
		{"n": json.Number("42"), "b": false},
	}
	for i, in := range cases {
		got := encodeDetails(in, nil)
		want := []byte(nil)
		if red := Redact(in); len(red) > 0 {
			want, _ = json.Marshal(red)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("case %d: got %s, want %s", i, got, want)
		}
		if bytes.Contains(got, []byte(jwt)) || bytes.Contains(got, []byte(`"at"`)) {
			t.Errorf("case %d: secret survived: %s", i, got)
		}
	}
	if encodeDetails(nil, nil) != nil || encodeDetails(map[string]any{}, nil) != nil {
		t.Error("empty details must encode to nothing")
	}
}

// TestWriteEncodesOnce: the stored JSON and the slog line carry the same redacted details,
// and the stored JSON decodes to the event.
func TestWriteEncodesOnce(t *testing.T) {
	st := sessions.NewMemory()
	defer st.Close()
	var buf bytes.Buffer
	w := &Writer{Logger: slog.New(slog.NewJSONHandler(&buf, nil)), Store: st, Hostname: "h"}
	ev := &Event{Type: TypeSuccessLogin, ClientID: "app", Details: map[string]any{"dpop_signing_alg": "ES256", "access_token": "SECRET", "n": 2}}
	if err := w.Write(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	e, err := st.Log(t.Context(), ev.LogID)
	if err != nil {
		t.Fatal(err)
	}
	raw := e.Event
	var stored Event
	if err := json.Unmarshal(raw, &stored); err != nil || stored.LogID != ev.LogID || stored.Hostname != "h" ||
		stored.Details["dpop_signing_alg"] != "ES256" || stored.Details["n"] != 2.0 || stored.Details["access_token"] != nil {
		t.Fatalf("stored %s (%v)", raw, err)
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("slog line %s: %v", buf.Bytes(), err)
	}
	if d, _ := line["details"].(map[string]any); d["dpop_signing_alg"] != "ES256" || d["access_token"] != nil || line["log_id"] != ev.LogID {
		t.Errorf("slog line %s", buf.Bytes())
	}
	if strings.Contains(buf.String()+string(raw), "SECRET") {
		t.Error("secret written")
	}
	if ev.Details["access_token"] != "SECRET" {
		t.Error("caller's details changed")
	}
}

func TestNewLogIDShape(t *testing.T) {
	now := time.Now()
	a, b := NewLogID(now), NewLogID(now)
	if len(a) != sessions.LogIDLen || strings.Trim(a, "0123456789") != "" || !(a < b) || a[:20] != b[:20] {
		t.Errorf("ids %s %s", a, b)
	}
}
