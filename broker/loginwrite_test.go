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

// batchStore is a memory store whose LogBatcher answers with err (PutAllAndLog) or swapErr
// (SwapAndLog) when set.
type batchStore struct {
	sessions.Store
	err, swapErr error
	batches      atomic.Int32
	swaps        atomic.Int32
}

func (b *batchStore) SwapAndLog(ctx context.Context, kind sessions.Kind, id string, old []byte, put []sessions.Item, del []sessions.Ref, logID string, event []byte, maxLen int) error {
	b.swaps.Add(1)
	if b.swapErr != nil {
		return b.swapErr
	}
	return b.Store.(sessions.LogBatcher).SwapAndLog(ctx, kind, id, old, put, del, logID, event, maxLen)
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

// TestCodeClaimAndEventInOneWrite: with the event log in the session store, /oauth/token
// claims the code and stores its seacft event in one write; a failed write issues no tokens,
// leaves the code redeemable and records feacft; a store that cannot do it claims the code
// and then stores the event.
func TestCodeClaimAndEventInOneWrite(t *testing.T) {
	for _, tc := range []struct {
		name       string
		swapErr    error
		wantStatus int
		wantTyp    string
	}{
		{name: "one write", wantStatus: http.StatusOK, wantTyp: logs.TypeSuccessExchange},
		{name: "write fails: no tokens, feacft", swapErr: fmt.Errorf("down: %w", sessions.ErrUnavailable), wantStatus: http.StatusServiceUnavailable, wantTyp: logs.TypeFailedExchange},
		{name: "write unsupported: swap then the event", swapErr: fmt.Errorf("cluster: %w", errors.ErrUnsupported), wantStatus: http.StatusOK, wantTyp: logs.TypeSuccessExchange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &batchStore{Store: sessions.NewMemory(), swapErr: tc.swapErr}
			h := newHarness(t, harnessOpts{up: dpopUp, store: st, eventStore: st})
			code := h.login().Get("code")
			status, tok, _ := h.token(h.codeForm(code), true)
			if st.swaps.Load() != 1 || status != tc.wantStatus {
				t.Fatalf("swaps = %d, token %d %v; want 1 write and %d", st.swaps.Load(), status, tok, tc.wantStatus)
			}
			evs, err := h.events.Recent(context.Background(), "", 10)
			if err != nil || len(evs) != 2 || evs[0].Type != tc.wantTyp {
				t.Fatalf("events %+v %v, want the login's and %s", evs, err, tc.wantTyp)
			}
			if tc.wantStatus == http.StatusOK {
				if evs[0].UserID != "oidc|corp|alice" || evs[0].Details["dpop"] == nil {
					t.Errorf("seacft %+v", evs[0])
				}
				if status, _, _ := h.token(h.codeForm(code), true); status != http.StatusBadRequest {
					t.Errorf("code redeemed twice: %d", status)
				}
				return
			}
			st.swapErr = nil
			if status, tok, _ := h.token(h.codeForm(code), true); status != http.StatusOK {
				t.Errorf("code not redeemable after a failed claim: %d %v", status, tok)
			}
		})
	}
}
