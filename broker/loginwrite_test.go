package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// batchStore is a memory store whose LogBatcher answers with err when set.
type batchStore struct {
	sessions.Store
	err     error
	batches atomic.Int32
}

func (b *batchStore) PutAllAndLog(ctx context.Context, logID string, event []byte, maxLen int, items ...sessions.Item) error {
	b.batches.Add(1)
	if b.err != nil {
		return b.err
	}
	return b.Store.(sessions.LogBatcher).PutAllAndLog(ctx, logID, event, maxLen, items...)
}

// TestLoginRecordsAndEventInOneWrite: with the event log in the session store, the callback
// stores the session, the code and the s event in one batch; a failed batch leaves neither
// records nor an s event (a store_unavailable f event instead); a store that cannot batch
// falls back to PutAll and a separate event.
func TestLoginRecordsAndEventInOneWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		wantOK  bool
		wantTyp string
	}{
		{name: "one batch", err: nil, wantOK: true, wantTyp: logs.TypeSuccessLogin},
		{name: "batch fails: no records, f event", err: fmt.Errorf("down: %w", sessions.ErrUnavailable), wantOK: false, wantTyp: logs.TypeFailedLogin},
		{name: "batch unsupported: PutAll then the event", err: fmt.Errorf("cluster: %w", errors.ErrUnsupported), wantOK: true, wantTyp: logs.TypeSuccessLogin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &batchStore{Store: sessions.NewMemory(), err: tc.err}
			h := newHarness(t, harnessOpts{up: dpopUp, store: st, eventStore: st})
			resp, body := get(t, h.browser(), h.authorizeURL(nil))
			if st.batches.Load() != 1 {
				t.Fatalf("batches = %d, want 1 (%d %s %s)", st.batches.Load(), resp.StatusCode, body, resp.Request.URL)
			}
			evs, err := h.events.Recent(context.Background(), "", 10)
			if err != nil || len(evs) != 1 {
				t.Fatalf("events %+v %v", evs, err)
			}
			ev := evs[0]
			if ev.Type != tc.wantTyp {
				t.Fatalf("event %+v", ev)
			}
			if !tc.wantOK {
				if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, codeStoreUnavailable) {
					t.Errorf("failed batch answered %d %s", resp.StatusCode, body)
				}
				if ev.Details["error"] != codeStoreUnavailable || ev.Details["session_id"] != nil || ev.Description != "Failed Login" {
					t.Errorf("f event %+v", ev)
				}
				return
			}
			code := appResult(t, resp, h.app.URL+"/cb").Get("code")
			tag, _, _ := strings.Cut(code, ".")
			if ev.Details["session_id"] != tag || ev.UserID != "oidc|corp|alice" {
				t.Errorf("s event %+v", ev)
			}
			if _, err := h.store.Get(context.Background(), sessions.KindSession, tag+".s"); err != nil {
				t.Errorf("session not stored: %v", err)
			}
			if status, tok, _ := h.token(h.codeForm(code), true); status != http.StatusOK || tok["id_token"] == nil {
				t.Errorf("token: %d %v", status, tok)
			}
		})
	}
}
