package broker

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/sessions/redistest"
)

var offlineScope = func(q url.Values) { q.Set("scope", "openid profile offline_access") }

// TestRefreshLoopKeepsTheStoreSize: a family is one record however often it rotates, so a
// client refreshing in a loop cannot fill the store: on a memory store capped at 40 records,
// 400 rotations all succeed and a new login still fits afterwards.
func TestRefreshLoopKeepsTheStoreSize(t *testing.T) {
	const maxRecords = 40
	h := newHarness(t, harnessOpts{up: dpopUp, store: sessions.NewMemoryWithOptions(sessions.MemoryOptions{MaxRecords: maxRecords})})
	rt := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, offlineScope))}).str("refresh_token")
	if rt == "" {
		t.Fatal("no refresh token")
	}
	for i := range 10 * maxRecords {
		r := h.tok(tokReq{client: appClient, form: refreshGrant(rt)})
		if r.status != http.StatusOK || r.str("refresh_token") == "" {
			t.Fatalf("rotation %d: %d %v", i, r.status, r.body)
		}
		rt = r.str("refresh_token")
	}
	if r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, offlineScope))}); r.status != http.StatusOK {
		t.Fatalf("a login after the loop: %d %v", r.status, r.body)
	}
}

// TestReuseRacingRotationsLeavesNoLiveToken: on Redis, a rotated-out token presented while
// the live token is being rotated concurrently revokes the family for good: no rotation that
// lost the race writes the family back, so afterwards no token of the family works.
func TestReuseRacingRotationsLeavesNoLiveToken(t *testing.T) {
	st, err := sessions.NewRedis(sessions.RedisConfig{Addrs: []string{redistest.Start(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := newHarness(t, harnessOpts{up: dpopUp, store: st})
	const rounds, presenters = 6, 8
	for round := range rounds {
		old := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, h.codeFor(appClient, offlineScope))}).str("refresh_token")
		live := h.tok(tokReq{client: appClient, form: refreshGrant(old)}).str("refresh_token")
		if old == "" || live == "" {
			t.Fatalf("round %d: no refresh tokens", round)
		}
		var mu sync.Mutex
		issued := []string{live}
		var reuses atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range presenters {
			tok := live
			if i%2 == 1 {
				tok = old
			}
			wg.Go(func() {
				<-start
				r := h.tok(tokReq{client: appClient, form: refreshGrant(tok)})
				switch {
				case r.status == http.StatusOK:
					mu.Lock()
					issued = append(issued, r.str("refresh_token"))
					mu.Unlock()
				case r.str("error_description") == "refresh token was already used: every token of its family is revoked":
					reuses.Add(1)
				case r.str("error") != "invalid_grant":
					t.Errorf("round %d: unexpected answer %d %v", round, r.status, r.body)
				}
			})
		}
		close(start)
		wg.Wait()
		if reuses.Load() == 0 {
			t.Fatalf("round %d: the rotated-out token was never detected as reuse", round)
		}
		for _, tok := range issued {
			if r := h.tok(tokReq{client: appClient, form: refreshGrant(tok)}); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
				t.Fatalf("round %d: a token of the revoked family still works: %d %v", round, r.status, r.body)
			}
		}
		if _, err := st.Get(t.Context(), sessions.KindRefresh, old[:22]+familySuffix); !errors.Is(err, sessions.ErrNotFound) {
			t.Fatalf("round %d: the family record is back: %v", round, err)
		}
	}
}

// hookStore runs a hook once, inside the next Swap, before the write: another request lands
// between a rotation's read of its family and its write.
type hookStore struct {
	sessions.Store
	hook atomic.Pointer[func()]
}

func (s *hookStore) Swap(ctx context.Context, kind sessions.Kind, id string, old []byte, put []sessions.Item, del []sessions.Ref) error {
	if f := s.hook.Swap(nil); f != nil {
		(*f)()
	}
	return s.Store.Swap(ctx, kind, id, old, put, del)
}

// TestRevocationDuringARotationIsFinal: a family revoked while one of its tokens is being
// rotated (after the rotation read the family, before it wrote) stays revoked: the rotation's
// conditional write fails, the rotation is answered as reuse, and no token of the family
// works afterwards, whichever way the family was revoked.
func TestRevocationDuringARotationIsFinal(t *testing.T) {
	hs := &hookStore{Store: sessions.NewMemory()}
	h := newHarness(t, harnessOpts{up: dpopUp, store: hs})
	reused := "refresh token was already used: every token of its family is revoked"
	for _, tc := range []struct {
		name   string
		revoke func(t *testing.T, code, old, live string)
	}{
		{name: "the rotated-out token is reused", revoke: func(t *testing.T, _, old, _ string) {
			wantOAuth(t, h.tok(tokReq{client: appClient, form: refreshGrant(old)}), http.StatusBadRequest, "invalid_grant", reused)
		}},
		{name: "the client revokes the live token", revoke: func(t *testing.T, _, _, live string) {
			if r := h.tok(tokReq{client: appClient, form: url.Values{"token": {live}}, path: "/oauth/revoke"}); r.status != http.StatusOK {
				t.Errorf("revoke: %d %v", r.status, r.body)
			}
		}},
		{name: "the code is replayed", revoke: func(t *testing.T, code, _, _ string) {
			wantOAuth(t, h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)}), http.StatusBadRequest, "invalid_grant",
				"authorization code was already used: the session and the tokens issued from it are revoked")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := h.codeFor(appClient, offlineScope)
			old := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)}).str("refresh_token")
			live := h.tok(tokReq{client: appClient, form: refreshGrant(old)}).str("refresh_token")
			if old == "" || live == "" {
				t.Fatal("no refresh tokens")
			}
			hook := func() { tc.revoke(t, code, old, live) }
			hs.hook.Store(&hook)
			r := h.tok(tokReq{client: appClient, form: refreshGrant(live)})
			if hs.hook.Load() != nil {
				t.Fatal("the rotation wrote nothing")
			}
			wantOAuth(t, r, http.StatusBadRequest, "invalid_grant", reused)
			if ev := h.lastEvent(); ev.Type != logs.TypeFailedRotatingRefresh {
				t.Errorf("event = %+v, want ferrt", ev)
			}
			for _, tok := range []string{old, live} {
				if r := h.tok(tokReq{client: appClient, form: refreshGrant(tok)}); r.status != http.StatusBadRequest {
					t.Errorf("a token of the revoked family: %d %v", r.status, r.body)
				}
			}
			if _, err := h.store.Get(t.Context(), sessions.KindRefresh, live[:22]+familySuffix); !errors.Is(err, sessions.ErrNotFound) {
				t.Errorf("the family record is back: %v", err)
			}
		})
	}
}

// flakyStore fails one Swap: full before applying it (ErrFull), or after applying it with a
// timeout (the answer lost), as a store under a flood or a network failure does.
type flakyStore struct {
	sessions.Store
	failAt atomic.Int64 // the number of the Swap to fail (1-based); 0 = none
	swaps  atomic.Int64
	after  bool // apply the failing Swap before failing it
}

func (f *flakyStore) Swap(ctx context.Context, kind sessions.Kind, id string, old []byte, put []sessions.Item, del []sessions.Ref) error {
	if f.swaps.Add(1) != f.failAt.Load() {
		return f.Store.Swap(ctx, kind, id, old, put, del)
	}
	if !f.after {
		return errors.Join(sessions.ErrFull, errors.New("injected: store full"))
	}
	if err := f.Store.Swap(ctx, kind, id, old, put, del); err != nil {
		return err
	}
	return errors.Join(sessions.ErrUnavailable, context.DeadlineExceeded, errors.New("injected: answer lost"))
}

// TestIssuingFailureLeavesTheGrantForTheRetry: when the store fails the write that redeems a
// code or rotates a refresh token (full under a flood, or a timeout after it wrote), the
// client gets 503 and its normal retry with the same code or token succeeds: nothing was
// consumed, or the write was rolled back. No reuse is recorded and the session lives.
func TestIssuingFailureLeavesTheGrantForTheRetry(t *testing.T) {
	for _, tc := range []struct {
		name    string
		after   bool   // the failing write was applied (answer lost) rather than refused
		refresh bool   // fail the rotation rather than the code redemption
		wantMsg string // the 503's description
	}{
		{name: "code redemption, store full", wantMsg: "the session store is full"},
		{name: "code redemption, answer lost after the write", after: true, wantMsg: "the session store is unavailable"},
		{name: "refresh rotation, store full", refresh: true, wantMsg: "the session store is full"},
		{name: "refresh rotation, answer lost after the write", refresh: true, after: true, wantMsg: "the session store is unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &flakyStore{Store: sessions.NewMemory(), after: tc.after}
			h := newHarness(t, harnessOpts{up: dpopUp, store: fs})
			code := h.codeFor(appClient, offlineScope)
			form := h.codeGrant(appClient, code)
			if tc.refresh {
				rt := h.tok(tokReq{client: appClient, form: form}).str("refresh_token")
				if rt == "" {
					t.Fatal("no refresh token")
				}
				form = refreshGrant(rt)
			}
			fs.failAt.Store(fs.swaps.Load() + 1)
			wantOAuth(t, h.tok(tokReq{client: appClient, form: form}), http.StatusServiceUnavailable, "temporarily_unavailable", tc.wantMsg)
			retry := h.tok(tokReq{client: appClient, form: form})
			if retry.status != http.StatusOK || retry.str("refresh_token") == "" {
				t.Fatalf("retry: %d %v", retry.status, retry.body)
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeSuccessExchange && ev.Type != logs.TypeSuccessRefresh {
				t.Errorf("event after the retry = %+v", ev)
			}
			if !h.sessionAlive(t, retry.str("access_token")) {
				t.Error("the session ended")
			}
			if r := h.tok(tokReq{client: appClient, form: refreshGrant(retry.str("refresh_token"))}); r.status != http.StatusOK {
				t.Errorf("the retry's refresh token: %d %v", r.status, r.body)
			}
		})
	}
}

// legacyFamily stores a refresh-token family the way brokers before the single-record
// families did: the family record {current, client_id}, the live token's own record and an
// issued marker for every token the family minted. It returns the rotated-out and the live
// token.
func legacyFamily(t *testing.T, h *harness, sid string) (old, live string) {
	t.Helper()
	fam := randomString(16)
	s0, s1 := randomString(32), randomString(32)
	rec, _ := json.Marshal(refreshRecord{
		ClientID: appClient, UserID: "oidc|corp|alice", SID: sid, Scope: "openid profile offline_access",
		AuthTime: h.clock.Now().Unix(), Expires: h.clock.Now().Add(time.Hour).UnixMilli(),
	})
	f, _ := json.Marshal(map[string]string{"current": hashString(s1), "client_id": appClient})
	items := []sessions.Item{
		{Kind: sessions.KindRefresh, ID: fam + familySuffix, Value: f, TTL: time.Hour},
		{Kind: sessions.KindRefresh, ID: fam + "." + hashString(s1), Value: rec, TTL: time.Hour},
		{Kind: sessions.KindRefresh, ID: fam + issuedInfix + hashString(s0), Value: []byte("1"), TTL: time.Hour},
		{Kind: sessions.KindRefresh, ID: fam + issuedInfix + hashString(s1), Value: []byte("1"), TTL: time.Hour},
	}
	if err := h.store.PutAll(t.Context(), items...); err != nil {
		t.Fatal(err)
	}
	return fam + "." + s0, fam + "." + s1
}

// TestRefreshFamiliesStoredBeforeTheUpgrade: families stored in the earlier format keep
// working: the live token rotates (converting the family), the new tokens rotate, reuse of a
// token minted before or after the conversion still revokes the family, a made-up secret
// changes nothing, and /oauth/revoke ends such a family.
func TestRefreshFamiliesStoredBeforeTheUpgrade(t *testing.T) {
	h := newHarness(t, harnessOpts{up: dpopUp})
	reused := "refresh token was already used: every token of its family is revoked"
	sid := func(t *testing.T) string {
		code := h.codeFor(appClient, nil) // a live session for the family
		if r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)}); r.status != http.StatusOK {
			t.Fatalf("login: %d %v", r.status, r.body)
		}
		return code[:22]
	}
	dead := func(t *testing.T, toks ...string) {
		t.Helper()
		for _, tok := range toks {
			wantOAuth(t, h.tok(tokReq{client: appClient, form: refreshGrant(tok)}), http.StatusBadRequest, "invalid_grant", "refresh token is invalid, expired or revoked")
		}
	}
	t.Run("a rotated-out token before the conversion revokes the family", func(t *testing.T) {
		old, live := legacyFamily(t, h, sid(t))
		wantOAuth(t, h.tok(tokReq{client: appClient, form: refreshGrant(old)}), http.StatusBadRequest, "invalid_grant", reused)
		dead(t, live)
	})
	t.Run("the live token rotates; tokens from before and after the conversion are detected as reuse", func(t *testing.T) {
		for _, reuse := range []string{"before", "after"} {
			old, live := legacyFamily(t, h, sid(t))
			r := h.tok(tokReq{client: appClient, form: refreshGrant(live)})
			if r.status != http.StatusOK {
				t.Fatalf("rotation of the legacy live token: %d %v", r.status, r.body)
			}
			next := h.tok(tokReq{client: appClient, form: refreshGrant(r.str("refresh_token"))})
			if next.status != http.StatusOK {
				t.Fatalf("rotation of the converted family: %d %v", next.status, next.body)
			}
			again := map[string]string{"before": old, "after": r.str("refresh_token")}[reuse]
			wantOAuth(t, h.tok(tokReq{client: appClient, form: refreshGrant(again)}), http.StatusBadRequest, "invalid_grant", reused)
			dead(t, live, next.str("refresh_token"))
		}
	})
	t.Run("a made-up secret under the family changes nothing", func(t *testing.T) {
		_, live := legacyFamily(t, h, sid(t))
		dead(t, live[:22]+"."+randomString(32))
		if r := h.tok(tokReq{client: appClient, form: refreshGrant(live)}); r.status != http.StatusOK {
			t.Fatalf("the live token afterwards: %d %v", r.status, r.body)
		}
	})
	t.Run("revocation ends the family", func(t *testing.T) {
		_, live := legacyFamily(t, h, sid(t))
		if r := h.tok(tokReq{client: appClient, form: url.Values{"token": {live}}, path: "/oauth/revoke"}); r.status != http.StatusOK {
			t.Fatalf("revoke: %d %v", r.status, r.body)
		}
		if ev := h.lastEvent(); ev.Type != logs.TypeSuccessRevocation {
			t.Errorf("event = %+v, want srrt", ev)
		}
		dead(t, live)
		if _, err := h.store.Get(t.Context(), sessions.KindRefresh, live[:22]+"."+hashString(live[23:])); !errors.Is(err, sessions.ErrNotFound) {
			t.Errorf("the legacy live record is still stored: %v", err)
		}
	})
}

// countingStore counts the store operations of the requests it sees.
type countingStore struct {
	sessions.Store
	mu  sync.Mutex
	ops map[string]int
}

func (c *countingStore) count(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops[op]++
}

func (c *countingStore) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	ops := c.ops
	c.ops = map[string]int{}
	return ops
}

func (c *countingStore) Get(ctx context.Context, k sessions.Kind, id string) ([]byte, error) {
	c.count("get " + string(k))
	return c.Store.Get(ctx, k, id)
}

func (c *countingStore) Take(ctx context.Context, k sessions.Kind, id string) ([]byte, error) {
	c.count("take " + string(k))
	return c.Store.Take(ctx, k, id)
}

func (c *countingStore) Create(ctx context.Context, k sessions.Kind, id string, v []byte, ttl time.Duration) error {
	c.count("create " + string(k))
	return c.Store.Create(ctx, k, id, v, ttl)
}

func (c *countingStore) Put(ctx context.Context, k sessions.Kind, id string, v []byte, ttl time.Duration) error {
	c.count("put " + string(k))
	return c.Store.Put(ctx, k, id, v, ttl)
}

func (c *countingStore) PutAll(ctx context.Context, items ...sessions.Item) error {
	c.count("put_all")
	return c.Store.PutAll(ctx, items...)
}

func (c *countingStore) Delete(ctx context.Context, k sessions.Kind, id string) error {
	c.count("delete " + string(k))
	return c.Store.Delete(ctx, k, id)
}

func (c *countingStore) Swap(ctx context.Context, k sessions.Kind, id string, old []byte, put []sessions.Item, del []sessions.Ref) error {
	c.count("swap " + string(k))
	return c.Store.Swap(ctx, k, id, old, put, del)
}

// TestTokenRequestsStoreRoundTrips: a code exchange (with a refresh token) reads the code and
// its session and writes once (one conditional write); a refresh reads the family and the
// session and writes once (a DPoP proof adds its replay claim).
func TestTokenRequestsStoreRoundTrips(t *testing.T) {
	cs := &countingStore{Store: sessions.NewMemory(), ops: map[string]int{}}
	h := newHarness(t, harnessOpts{up: dpopUp, store: cs})
	code := h.codeFor(appClient, offlineScope)
	cs.take()
	r := h.tok(tokReq{client: appClient, form: h.codeGrant(appClient, code)})
	if ops := cs.take(); r.status != http.StatusOK || len(ops) != 3 || ops["get code"] != 1 || ops["get sess"] != 1 || ops["swap code"] != 1 {
		t.Errorf("code exchange: %d, store operations %v, want code and session reads and one swap", r.status, ops)
	}
	r = h.tok(tokReq{client: appClient, form: refreshGrant(r.str("refresh_token"))})
	if ops := cs.take(); r.status != http.StatusOK || len(ops) != 3 || ops["get rt"] != 1 || ops["get sess"] != 1 || ops["swap rt"] != 1 {
		t.Errorf("refresh: %d, store operations %v, want family and session reads and one swap", r.status, ops)
	}
}

// batchingCountingStore is a countingStore with the capabilities of Redis single node: it
// reads several records in one round trip and writes a batch or a swap with its event.
type batchingCountingStore struct{ *countingStore }

func (c batchingCountingStore) GetMany(ctx context.Context, refs ...sessions.Ref) ([][]byte, error) {
	c.count("get_many")
	return c.Store.(sessions.MultiGetter).GetMany(ctx, refs...)
}

func (c batchingCountingStore) PutAllAndLog(ctx context.Context, logID string, event []byte, maxLen int, items ...sessions.Item) error {
	c.count("put_all_and_log")
	return c.Store.(sessions.LogBatcher).PutAllAndLog(ctx, logID, event, maxLen, items...)
}

func (c batchingCountingStore) SwapAndLog(ctx context.Context, k sessions.Kind, id string, old []byte, put []sessions.Item, del []sessions.Ref, logID string, event []byte, maxLen int) error {
	c.count("swap_and_log " + string(k))
	return c.Store.(sessions.LogBatcher).SwapAndLog(ctx, k, id, old, put, del, logID, event, maxLen)
}

// TestCodeExchangeTakesTwoRoundTripsOnABatchingStore: on a store that reads several records
// at once and writes a swap with its event, a code exchange reads the code with its session
// (the code names it) and claims the code with its seacft event: two round trips, for the code
// of the login that created the session and for a single sign-on code. A code whose session
// the code does not name (issued before codes named it) reads its session on its own.
func TestCodeExchangeTakesTwoRoundTripsOnABatchingStore(t *testing.T) {
	cs := batchingCountingStore{&countingStore{Store: sessions.NewMemory(), ops: map[string]int{}}}
	h := newHarness(t, harnessOpts{up: dpopUp, store: cs, eventStore: cs})
	b := h.browser()
	first := h.codeIn(b, appClient, nil)
	sso := h.codeIn(b, spaClient, func(q url.Values) { q.Del("connection") })
	rec, err := h.store.Get(t.Context(), sessions.KindCode, sso)
	if err != nil {
		t.Fatal(err)
	}
	legacy := randomString(16) + "." + randomString(32)
	if err := h.store.Put(t.Context(), sessions.KindCode, legacy, rec, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		client string
		code   string
		want   map[string]int
	}{
		{name: "code of the login that created the session", client: appClient, code: first,
			want: map[string]int{"get_many": 1, "swap_and_log code": 1}},
		{name: "single sign-on code", client: spaClient, code: sso,
			want: map[string]int{"get_many": 1, "swap_and_log code": 1}},
		{name: "code that does not name its session", client: spaClient, code: legacy,
			want: map[string]int{"get_many": 1, "get sess": 1, "swap_and_log code": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs.take()
			r := h.tok(tokReq{client: tc.client, form: h.codeGrant(tc.client, tc.code)})
			if ops := cs.take(); r.status != http.StatusOK || !maps.Equal(ops, tc.want) {
				t.Errorf("code exchange: %d, store operations %v, want %v", r.status, ops, tc.want)
			}
			if ev := h.lastEvent(); ev.Type != logs.TypeSuccessExchange || ev.ClientID != tc.client {
				t.Errorf("last event %+v, want seacft for %s", ev, tc.client)
			}
		})
	}
}
