package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// versionCountingStore is a memory store that counts the reads of its connections version.
type versionCountingStore struct {
	sessions.Store
	sessions.Connections
	sessions.Clients
	versionReads atomic.Int64
}

func newVersionCountingStore() *versionCountingStore {
	mem := sessions.NewMemory()
	return &versionCountingStore{Store: mem, Connections: mem.(sessions.Connections), Clients: mem.(sessions.Clients)}
}

func (s *versionCountingStore) ConnectionsVersion(ctx context.Context) (int64, error) {
	s.versionReads.Add(1)
	return s.Connections.ConnectionsVersion(ctx)
}

func TestBurstOfUnknownClientIDsCostsBoundedStoreReads(t *testing.T) {
	st := newVersionCountingStore()
	h := newHarness(t, harnessOpts{up: dpopUp, store: st})
	if rec := h.authorizeFrom("192.0.2.1:1", nil); rec.Code != http.StatusFound { // the snapshot is loaded
		t.Fatalf("warm-up /authorize: %d", rec.Code)
	}

	const tokens, authorizes = 150, 50
	codes := make(chan int, tokens+authorizes)
	var wg sync.WaitGroup
	before, start := st.versionReads.Load(), time.Now()
	for i := range tokens + authorizes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "unknown-" + strconv.Itoa(i)
			var req *http.Request
			if i < tokens {
				form := url.Values{"grant_type": {"authorization_code"}, "code": {"x"}, "client_id": {id}, "client_secret": {"guess"}}
				req = httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			} else {
				u, _ := url.Parse(h.authorizeURL(func(q url.Values) { q.Set("client_id", id) }))
				req = getRaw("/authorize", u.RawQuery)
			}
			codes <- h.serve(req).Code
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	reads := st.versionReads.Load() - before
	close(codes)
	for c := range codes {
		if c != http.StatusUnauthorized && c != http.StatusBadRequest {
			t.Fatalf("an unknown client_id was answered %d", c)
		}
	}
	// One read per coalesced miss check (at most one starts per missRecheck) and the periodic
	// re-check (at most one per registryRecheck), however many requests missed.
	if limit := 2 + int64(elapsed/missRecheck) + int64(elapsed/registryRecheck); reads < 1 || reads > limit {
		t.Fatalf("%d misses in %v read the store version %d times, want 1 to %d", tokens+authorizes, elapsed, reads, limit)
	}

	// A client created on another replica (straight into the store) is found at once, though
	// a miss check has just run: the next one starts after the request came.
	doc, err := json.Marshal(storedClientFor(&config.Client{ClientID: "made-elsewhere", Name: "Elsewhere",
		RedirectURIs: []string{h.app.URL + "/cb"}, Connections: []string{"corp"}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateClient(t.Context(), "made-elsewhere", doc); err != nil {
		t.Fatal(err)
	}
	if rec := h.authorizeFrom("192.0.2.2:1", func(q url.Values) { q.Set("client_id", "made-elsewhere") }); rec.Code != http.StatusFound ||
		!strings.HasPrefix(rec.Header().Get("Location"), h.up.URL) {
		t.Fatalf("a client created on another replica: %d Location %q", rec.Code, rec.Header().Get("Location"))
	}
}
