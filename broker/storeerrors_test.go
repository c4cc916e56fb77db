package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// brokenStore is a memory store whose record, connection and client operations fail with
// err while fail is set.
type brokenStore struct {
	sessions.Store
	sessions.Connections
	sessions.Clients
	fail atomic.Bool
	err  error
}

func newBrokenStore(err error) *brokenStore {
	m := sessions.NewMemory()
	return &brokenStore{Store: m, Connections: m.(sessions.Connections), Clients: m.(sessions.Clients), err: err}
}

func (f *brokenStore) failed() error {
	if f.fail.Load() {
		return f.err
	}
	return nil
}

func (f *brokenStore) Get(ctx context.Context, k sessions.Kind, id string) ([]byte, error) {
	if err := f.failed(); err != nil {
		return nil, err
	}
	return f.Store.Get(ctx, k, id)
}

func (f *brokenStore) Take(ctx context.Context, k sessions.Kind, id string) ([]byte, error) {
	if err := f.failed(); err != nil {
		return nil, err
	}
	return f.Store.Take(ctx, k, id)
}

func (f *brokenStore) Create(ctx context.Context, k sessions.Kind, id string, v []byte, ttl time.Duration) error {
	if err := f.failed(); err != nil {
		return err
	}
	return f.Store.Create(ctx, k, id, v, ttl)
}

func (f *brokenStore) Put(ctx context.Context, k sessions.Kind, id string, v []byte, ttl time.Duration) error {
	if err := f.failed(); err != nil {
		return err
	}
	return f.Store.Put(ctx, k, id, v, ttl)
}

func (f *brokenStore) PutAll(ctx context.Context, items ...sessions.Item) error {
	if err := f.failed(); err != nil {
		return err
	}
	return f.Store.PutAll(ctx, items...)
}

func (f *brokenStore) Swap(ctx context.Context, k sessions.Kind, id string, old []byte, put []sessions.Item, del []sessions.Ref) error {
	if err := f.failed(); err != nil {
		return err
	}
	return f.Store.Swap(ctx, k, id, old, put, del)
}

func (f *brokenStore) ConnectionsVersion(ctx context.Context) (int64, error) {
	if err := f.failed(); err != nil {
		return 0, err
	}
	return f.Connections.ConnectionsVersion(ctx)
}

func (f *brokenStore) ListConnections(ctx context.Context) ([][]byte, error) {
	if err := f.failed(); err != nil {
		return nil, err
	}
	return f.Connections.ListConnections(ctx)
}

func (f *brokenStore) GetConnection(ctx context.Context, id string) ([]byte, error) {
	if err := f.failed(); err != nil {
		return nil, err
	}
	return f.Connections.GetConnection(ctx, id)
}

func (f *brokenStore) LogsAfter(ctx context.Context, after string, limit int) ([]sessions.LogEntry, error) {
	if err := f.failed(); err != nil {
		return nil, err
	}
	return f.Store.LogsAfter(ctx, after, limit)
}

func (f *brokenStore) LogsBefore(ctx context.Context, before string, limit int) ([]sessions.LogEntry, error) {
	if err := f.failed(); err != nil {
		return nil, err
	}
	return f.Store.LogsBefore(ctx, before, limit)
}

func (f *brokenStore) Log(ctx context.Context, id string) (sessions.LogEntry, error) {
	if err := f.failed(); err != nil {
		return sessions.LogEntry{}, err
	}
	return f.Store.Log(ctx, id)
}

// TestStoreFailuresAnswer503NeverA500: whatever a store operation fails with (an outage the
// Redis backend maps to ErrUnavailable: a refused connection, MOVED or ASK past the redirect
// budget, CLUSTERDOWN, TRYAGAIN, LOADING; or a failure it does not classify), the login pages,
// the token and userinfo endpoints and the management API answer 503 (store_unavailable;
// temporarily_unavailable at the OAuth endpoints, in their own error format), never 500.
func TestStoreFailuresAnswer503NeverA500(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{name: "a slot that kept moving (MOVED past the redirect budget)", err: fmt.Errorf("sessions: redis get sess: %w: MOVED 3999 127.0.0.1:7002", sessions.ErrUnavailable)},
		{name: "cluster down", err: fmt.Errorf("sessions: redis take code: %w: CLUSTERDOWN The cluster is down", sessions.ErrUnavailable)},
		{name: "a failure the backend does not classify", err: errors.New("sessions: redis get sess: WRONGTYPE Operation against a key holding the wrong kind of value")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newBrokenStore(tc.err)
			// The event log reads st itself, not the server's metered view of it.
			h := newHarness(t, harnessOpts{up: dpopUp, store: st, eventStore: st, mutate: withMgmt})
			// A code and an access token from before the failure.
			q := h.login()
			code := q.Get("code")
			status, tok, _ := h.token(h.codeForm(h.login().Get("code")), true)
			if status != http.StatusOK {
				t.Fatalf("token before the failure: %d %v", status, tok)
			}
			at, _ := tok["access_token"].(string)
			st.fail.Store(true)

			resp, body := get(t, h.browser(), h.authorizeURL(nil))
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, codeStoreUnavailable) {
				t.Errorf("/authorize: %d, want 503 %s:\n%s", resp.StatusCode, codeStoreUnavailable, body)
			}
			if status, body, _ := h.token(h.codeForm(code), true); status != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" {
				t.Errorf("/oauth/token: %d %v, want 503 temporarily_unavailable", status, body)
			}
			if r := h.userinfo("Bearer "+at, ""); r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" {
				t.Errorf("/userinfo: %d %v, want 503 temporarily_unavailable", r.status, r.body)
			}
			if r := api(t, h.srv.URL, http.MethodGet, "/api/v2/connections", tokRead, nil); r.status != http.StatusServiceUnavailable || r.obj()["errorCode"] != codeStoreUnavailable {
				t.Errorf("GET /api/v2/connections: %d %s, want 503 %s", r.status, r.raw, codeStoreUnavailable)
			}
			for _, path := range []string{"/api/v2/logs", "/api/v2/logs?q=type:f&include_totals=true"} {
				if r := api(t, h.srv.URL, http.MethodGet, path, tokLogs, nil); r.status != http.StatusServiceUnavailable || r.obj()["errorCode"] != codeStoreUnavailable {
					t.Errorf("GET %s: %d %s, want 503 %s", path, r.status, r.raw, codeStoreUnavailable)
				}
			}
		})
	}
}

// The console's Logs page answers 400 for its own filter or search, and 503 for anything the
// event log's store fails with, classified or not: never 500.
func TestConsoleLogsProblemIsA503ForEveryStoreFailure(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name       string
		err        error
		wantStatus int
	}{
		{name: "a refused filter", err: fmt.Errorf("%w: from is not a time", errLogsFilter), wantStatus: http.StatusBadRequest},
		{name: "a refused search", err: fmt.Errorf("%w: at offset 3", logs.ErrInvalidQuery), wantStatus: http.StatusBadRequest},
		{name: "an outage", err: fmt.Errorf("sessions: redis logs: %w", sessions.ErrUnavailable), wantStatus: http.StatusServiceUnavailable},
		{name: "a failure the backend does not classify", err: errors.New("sessions: redis logs: WRONGTYPE"), wantStatus: http.StatusServiceUnavailable},
	} {
		if status, msg := s.consoleLogsProblem(tc.err); status != tc.wantStatus || strings.Contains(msg, "WRONGTYPE") {
			t.Errorf("%s: %d %q, want %d without the store's text", tc.name, status, msg, tc.wantStatus)
		}
	}
}
