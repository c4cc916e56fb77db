package logs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

func TestDescription(t *testing.T) {
	for typ, want := range map[string]string{
		TypeSuccessLogin:    "Success Login",
		TypeFailedLogin:     "Failed Login",
		TypeSuccessExchange: "Success Exchange",
		TypeFailedExchange:  "Failed Exchange",
		TypeSuccessLogout:   "Success Logout",
		TypeSuccessAPI:      "Success API Operation",
		TypeFailedAPI:       "Failed API Operation",
		"nope":              "",
		"":                  "",

		TypeBackchannelLogoutSucceeded: "OIDC Back-Channel Logout Succeeded",
		TypeBackchannelLogoutFailed:    "OIDC Back-Channel Logout Failed",
	} {
		t.Run(typ, func(t *testing.T) {
			if got := Description(typ); got != want {
				t.Fatalf("Description(%q) = %q, want %q", typ, got, want)
			}
		})
	}
}

var logIDRe = regexp.MustCompile(`^[0-9]{56}$`)

func TestNewLogIDOrder(t *testing.T) {
	t0 := time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)
	tests := []struct {
		name string
		next func(i int) time.Time
	}{
		{name: "same nanosecond", next: func(int) time.Time { return t0 }},
		{name: "advancing clock", next: func(i int) time.Time { return t0.Add(time.Duration(i) * time.Nanosecond) }},
		{name: "real clock", next: func(int) time.Time { return time.Now() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev := ""
			for i := range 5000 {
				id := NewLogID(tc.next(i))
				if !logIDRe.MatchString(id) {
					t.Fatalf("NewLogID = %q, want 56 digits", id)
				}
				if id <= prev {
					t.Fatalf("id %d %q not above previous %q", i, id, prev)
				}
				prev = id
			}
		})
	}
	t.Run("time first", func(t *testing.T) {
		later := NewLogID(t0.Add(time.Millisecond))
		earlier := NewLogID(t0)
		if earlier >= later {
			t.Fatalf("id for earlier time %q sorts after %q", earlier, later)
		}
		if got := NewLogID(t0)[:20]; got != fmt.Sprintf("%020d", t0.UnixNano()) {
			t.Fatalf("time prefix = %q", got)
		}
	})
	t.Run("unique across goroutines", func(t *testing.T) {
		var mu sync.Mutex
		seen := map[string]bool{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				ids := make([]string, 0, 1000)
				for range 1000 {
					ids = append(ids, NewLogID(t0))
				}
				if !slices.IsSorted(ids) {
					t.Error("ids from one goroutine not increasing")
				}
				mu.Lock()
				defer mu.Unlock()
				for _, id := range ids {
					if seen[id] {
						t.Errorf("duplicate id %s", id)
					}
					seen[id] = true
				}
			})
		}
		wg.Wait()
	})
}

// newWriter returns a Writer with a JSON slog handler into buf and a fixed clock.
func newWriter(store sessions.Store) (*Writer, *bytes.Buffer) {
	buf := &bytes.Buffer{}
	return &Writer{
		Logger:   slog.New(slog.NewJSONHandler(buf, nil)),
		Store:    store,
		Hostname: "broker.example.com",
		Now:      func() time.Time { return time.Date(2024, 1, 15, 10, 30, 0, 0, time.FixedZone("X", 3600)) },
	}, buf
}

func successEvent() *Event {
	return &Event{
		Type:         TypeSuccessLogin,
		Connection:   "corp-oidc",
		ConnectionID: "con_123",
		Strategy:     "oidc",
		ClientID:     "app1",
		ClientName:   "App One",
		IP:           "127.0.0.1",
		UserAgent:    "test",
		UserID:       "oidc|corp-oidc|u1",
		UserName:     "u1@example.com",
		Details: map[string]any{
			"dpop_signing_alg":            "ES256",
			"dpop_returned_from_upstream": true,
			"idp_token_type":              "dpop",
			"dpop_nonce_used":             true,
			"dpop_nonce_retries":          1,
			"upstream_userinfo_fetch":     map[string]any{"status": "SUCCESS", "dpop_bound": true},
			"code_exchange_ms":            12,
		},
	}
}

func TestWriteSchema(t *testing.T) {
	store := sessions.NewMemory()
	defer store.Close()
	w, buf := newWriter(store)
	if err := w.Write(t.Context(), successEvent()); err != nil {
		t.Fatalf("Write: %v", err)
	}

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one slog line, got %d:\n%s", len(lines), buf)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatalf("slog line is not JSON: %v", err)
	}
	stored, err := store.Logs(t.Context(), "", 10)
	if err != nil || len(stored) != 1 {
		t.Fatalf("store Logs = %d entries, %v", len(stored), err)
	}
	var entry map[string]any
	if err := json.Unmarshal(stored[0], &entry); err != nil {
		t.Fatal(err)
	}

	want := map[string]any{
		"type": "s", "description": "Success Login", "date": "2024-01-15T09:30:00.000Z",
		"connection": "corp-oidc", "connection_id": "con_123", "strategy": "oidc",
		"strategy_type": "enterprise", "client_id": "app1", "client_name": "App One",
		"ip": "127.0.0.1", "user_agent": "test", "user_id": "oidc|corp-oidc|u1",
		"user_name": "u1@example.com", "hostname": "broker.example.com",
	}
	for name, got := range map[string]map[string]any{"slog line": line, "store entry": entry} {
		t.Run("DESIGN §4 "+name, func(t *testing.T) {
			if line["msg"] != "login_event" || line["level"] != "INFO" {
				t.Errorf("slog msg/level = %v/%v", line["msg"], line["level"])
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			if id, _ := got["log_id"].(string); !logIDRe.MatchString(id) {
				t.Errorf("log_id = %v", got["log_id"])
			}
			d, _ := got["details"].(map[string]any)
			for k, v := range map[string]any{
				"dpop_signing_alg": "ES256", "dpop_returned_from_upstream": true, "idp_token_type": "dpop",
				"dpop_nonce_used": true, "dpop_nonce_retries": 1.0, "code_exchange_ms": 12.0,
			} {
				if d[k] != v {
					t.Errorf("details.%s = %v, want %v", k, d[k], v)
				}
			}
			uf, _ := d["upstream_userinfo_fetch"].(map[string]any)
			if uf["status"] != "SUCCESS" || uf["dpop_bound"] != true {
				t.Errorf("details.upstream_userinfo_fetch = %v", d["upstream_userinfo_fetch"])
			}
		})
	}
	if line["log_id"] != entry["log_id"] {
		t.Errorf("slog log_id %v != stored %v", line["log_id"], entry["log_id"])
	}

	got, err := w.Recent(t.Context(), "", 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("Recent = %v, %v", got, err)
	}
	if got[0].LogID != line["log_id"] || got[0].StrategyType != "enterprise" || got[0].Details["idp_token_type"] != "dpop" {
		t.Errorf("Recent event = %+v", got[0])
	}
}

func TestWriteKeepsCallerFields(t *testing.T) {
	w, _ := newWriter(nil)
	ev := &Event{LogID: strings.Repeat("1", 56), Date: "2020-01-01T00:00:00.000Z", Type: "custom",
		Description: "Mine", Hostname: "h", Strategy: "okta", StrategyType: "social"}
	if err := w.Write(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if ev.LogID != strings.Repeat("1", 56) || ev.Date != "2020-01-01T00:00:00.000Z" || ev.Description != "Mine" ||
		ev.Hostname != "h" || ev.StrategyType != "social" {
		t.Fatalf("Write overwrote caller fields: %+v", ev)
	}
	ev2 := &Event{Type: TypeFailedLogin}
	if err := w.Write(t.Context(), ev2); err != nil {
		t.Fatal(err)
	}
	if ev2.StrategyType != "" || ev2.Description != "Failed Login" {
		t.Fatalf("event without strategy: %+v", ev2)
	}
}

func TestRecentOrderAndPaging(t *testing.T) {
	store := sessions.NewMemory()
	defer store.Close()
	w, _ := newWriter(store)
	w.UnauthenticatedMaxLen = 3
	var ids []string
	for i := range 5 {
		ev := &Event{Type: TypeFailedLogin, Details: map[string]any{"error": fmt.Sprint("e", i)}}
		if err := w.Write(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.LogID)
	}
	got, err := w.Recent(t.Context(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, ev := range got {
		gotIDs = append(gotIDs, ev.LogID)
	}
	if want := []string{ids[4], ids[3], ids[2]}; !slices.Equal(gotIDs, want) {
		t.Fatalf("Recent ids = %v, want newest 3 %v", gotIDs, want)
	}
	page, err := w.Recent(t.Context(), ids[3], 10)
	if err != nil || len(page) != 1 || page[0].LogID != ids[2] {
		t.Fatalf("Recent(before %s) = %+v, %v", ids[3], page, err)
	}
}

func TestRedact(t *testing.T) {
	const jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
	tests := []struct {
		name     string
		in       map[string]any
		drop     []string
		keep     map[string]any
		redacted []string
	}{
		{
			name: "secrets dropped",
			in: map[string]any{
				"access_token": "at", "id_token": "it", "refresh_token": "rt", "code": "c",
				"code_verifier": "v", "dpop_proof": "p", "client_secret": "s", "password": "pw",
				"private_key": "k", "client_assertion": "a", "accessToken": "x", "Authorization": "DPoP x",
				"cookie": "c", "d": "jwk-d",
			},
			drop: []string{"access_token", "id_token", "refresh_token", "code", "code_verifier", "dpop_proof",
				"client_secret", "password", "private_key", "client_assertion", "accessToken", "Authorization", "cookie", "d"},
		},
		{
			name: "secret names under Unicode case folding dropped",
			in:   map[string]any{"client_ſecret": "s", "CLIENT_SECRET": "s", "api_Key": "k", "name": "n"},
			drop: []string{"client_ſecret", "CLIENT_SECRET", "api_Key"},
			keep: map[string]any{"name": "n"},
		},
		{
			name: "known safe DPoP fields kept",
			in: map[string]any{
				"dpop_signing_alg": "ES256", "idp_token_type": "dpop", "dpop_nonce_used": true,
				"dpop_nonce_retries": 2, "dpop_returned_from_upstream": false, "error": "use_dpop_nonce",
				"error_description": "nonce required", "token_endpoint_auth_method": "client_secret_basic",
				"id_token_signing_alg": "RS256", "code_exchange_ms": 15, "code_length": 43,
				"upstream_userinfo_fetch": map[string]any{"status": "FAILURE"},
			},
			keep: map[string]any{
				"dpop_signing_alg": "ES256", "idp_token_type": "dpop", "dpop_nonce_used": true,
				"dpop_nonce_retries": json.Number("2"), "dpop_returned_from_upstream": false,
				"error": "use_dpop_nonce", "error_description": "nonce required",
				"token_endpoint_auth_method": "client_secret_basic", "id_token_signing_alg": "RS256",
				"code_exchange_ms": json.Number("15"), "code_length": json.Number("43"),
			},
		},
		{
			name:     "nested secrets and JWT values",
			in:       map[string]any{"upstream": map[string]any{"access_token": "at", "status": 200, "note": jwt}, "list": []any{jwt, "ok"}},
			keep:     map[string]any{},
			redacted: []string{"upstream.note", "list.0"},
		},
		{
			name: "numbers and booleans under secret names kept",
			in:   map[string]any{"token_refreshed": true, "code": 3},
			keep: map[string]any{"token_refreshed": true, "code": json.Number("3")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := Redact(tc.in)
			for _, k := range tc.drop {
				if _, ok := out[k]; ok {
					t.Errorf("%s kept", k)
				}
			}
			for k, v := range tc.keep {
				if out[k] != v {
					t.Errorf("%s = %#v, want %#v", k, out[k], v)
				}
			}
			b, _ := json.Marshal(out)
			if strings.Contains(string(b), jwt) {
				t.Errorf("JWT survived: %s", b)
			}
			for _, path := range tc.redacted {
				if !strings.Contains(string(b), `"[redacted]"`) {
					t.Errorf("%s not replaced by [redacted]: %s", path, b)
				}
			}
		})
	}
	if nested := Redact(map[string]any{"upstream": map[string]any{"access_token": "at", "status": 200}}); fmt.Sprint(nested) != "map[upstream:map[status:200]]" {
		t.Errorf("nested redaction = %v", nested)
	}
	type fetch struct {
		Status string `json:"status"`
		Token  string `json:"token"`
	}
	if s := Redact(map[string]any{"upstream_userinfo_fetch": fetch{Status: "SUCCESS", Token: "tok"}}); fmt.Sprint(s) != "map[upstream_userinfo_fetch:map[status:SUCCESS]]" {
		t.Errorf("struct value redaction = %v", s)
	}
	if s := Redact(map[string]any{"ch": make(chan int)}); s["redaction_error"] == nil {
		t.Errorf("unencodable details = %v", s)
	}
	if Redact(nil) != nil {
		t.Error("Redact(nil) != nil")
	}
}

func TestWriteNeverLogsSecrets(t *testing.T) {
	store := sessions.NewMemory()
	defer store.Close()
	w, buf := newWriter(store)
	ev := successEvent()
	ev.Details["access_token"] = "AT-SECRET-VALUE"
	ev.Details["code"] = "CODE-SECRET-VALUE"
	ev.Details["dpop_proof"] = "eyJ0eXAiOiJkcG9wK2p3dCJ9.eyJqdGkiOiIxIn0.c2ln"
	if err := w.Write(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	stored, _ := store.Logs(t.Context(), "", 1)
	for name, out := range map[string]string{"slog": buf.String(), "store": string(bytes.Join(stored, nil))} {
		for _, s := range []string{"AT-SECRET-VALUE", "CODE-SECRET-VALUE", "eyJ0eXAi"} {
			if strings.Contains(out, s) {
				t.Errorf("%s output contains %q: %s", name, s, out)
			}
		}
	}
}

// failingStore fails every AppendLog with ErrUnavailable.
type failingStore struct{ sessions.Store }

func (failingStore) AppendLog(context.Context, sessions.LogClass, string, []byte, int) error {
	return fmt.Errorf("redis down: %w", sessions.ErrUnavailable)
}

func (failingStore) Logs(context.Context, string, int) ([][]byte, error) {
	return nil, fmt.Errorf("redis down: %w", sessions.ErrUnavailable)
}

func TestWriteFailingStore(t *testing.T) {
	w, buf := newWriter(failingStore{})
	ev := &Event{Type: TypeFailedLogin, Details: map[string]any{"error": "upstream_error"}}
	err := w.Write(t.Context(), ev)
	if !errors.Is(err, sessions.ErrUnavailable) {
		t.Fatalf("Write = %v, want wrapped ErrUnavailable", err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"msg":"login_event"`) || !strings.Contains(lines[0], `"error":"upstream_error"`) {
		t.Fatalf("want the event line then the failure line, got:\n%s", buf)
	}
	if !strings.Contains(lines[1], "login_event_store_failed") || !strings.Contains(lines[1], ev.LogID) {
		t.Fatalf("failure line = %s", lines[1])
	}
	if _, err := w.Recent(t.Context(), "", 1); !errors.Is(err, sessions.ErrUnavailable) {
		t.Fatalf("Recent = %v, want wrapped ErrUnavailable", err)
	}
}

func TestRecentSkipsUndecodable(t *testing.T) {
	store := sessions.NewMemory()
	defer store.Close()
	w, _ := newWriter(store)
	if err := store.AppendLog(t.Context(), sessions.LogAudit, NewLogID(time.Now()), []byte("not json"), 10); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(t.Context(), &Event{Type: TypeSuccessLogout}); err != nil {
		t.Fatal(err)
	}
	got, err := w.Recent(t.Context(), "", 10)
	if err != nil || len(got) != 1 || got[0].Type != TypeSuccessLogout {
		t.Fatalf("Recent = %+v, %v", got, err)
	}
	if _, err := (&Writer{}).Recent(t.Context(), "", 1); err == nil {
		t.Fatal("Recent without store succeeded")
	}
	if err := (&Writer{Logger: slog.New(slog.DiscardHandler)}).Write(t.Context(), nil); err == nil {
		t.Fatal("Write(nil) succeeded")
	}
}

func TestWriteLeavesCallerDetails(t *testing.T) {
	w, buf := newWriter(nil)
	ev := &Event{Type: TypeSuccessLogin, Details: map[string]any{"dpop_nonce_retries": 1, "access_token": "AT-SECRET"}}
	if err := w.Write(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if ev.Details["dpop_nonce_retries"] != 1 || ev.Details["access_token"] != "AT-SECRET" {
		t.Fatalf("caller's details changed: %v", ev.Details)
	}
	if strings.Contains(buf.String(), "AT-SECRET") || !strings.Contains(buf.String(), `"dpop_nonce_retries":1`) {
		t.Fatalf("slog line = %s", buf)
	}
}
