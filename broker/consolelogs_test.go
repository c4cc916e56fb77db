package broker

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// Every code a failed login can carry has a troubleshooting entry of its own, so the
// console's event view and the README explain it (an IdP's own error= codes excepted).
func TestEveryFailedLoginCodeHasATroubleshootingEntry(t *testing.T) {
	codes := []string{
		codeInvalidClient, codeInvalidRedirectURI, codeInvalidRequest, codeInvalidState, codeInvalidIss,
		codeStoreUnavailable, codeStoreBusy, codeStoreFull, codeConnectionUnusable, codeCallbackMismatch,
		codeTooManyRequests, "server_error", "login_required", "unsupported_response_type",
		upstream.CodeUseDPoPNonce, upstream.CodeInvalidDPoPProof, upstream.CodeUpstreamRequiresDPoP, upstream.CodeUpstreamError, upstream.CodeIDTokenInvalid,
		upstream.CodeDiscovery, upstream.CodeUserinfo, upstream.CodePARNotSupported, upstream.CodePARBusy, upstream.CodeClaimsTooLarge,
		upstream.CodeClientAuthUnsupported, discovery.CodeDPoPNotSupported, discovery.CodeDPoPAlgMismatch,
	}
	for _, c := range codes {
		if _, exact, _ := logs.LookupTroubleshooting(c); !exact {
			t.Errorf("details.error %q has no troubleshooting entry in logs/troubleshoot.go", c)
		}
	}
}

func TestLogEventViewShowsTheEntryOfATokenOrManagementRefusal(t *testing.T) {
	apiErr := func(code string) map[string]any {
		return map[string]any{"error": map[string]any{"message": "m", "errorCode": code}}
	}
	tests := []struct {
		name     string
		typ      string
		details  map[string]any
		wantCode string // "" for no entry
		wantText string // part of what happened
	}{
		{name: "a refused code exchange", typ: logs.TypeFailedExchange, details: map[string]any{"error": "invalid_grant"},
			wantCode: "invalid_grant", wantText: "PKCE verifier"},
		{name: "a refused refresh", typ: logs.TypeFailedRefresh, details: map[string]any{"error": "invalid_scope"},
			wantCode: "invalid_scope", wantText: "not granted"},
		{name: "a reused refresh token", typ: logs.TypeFailedRotatingRefresh, details: map[string]any{"error": "invalid_grant"},
			wantCode: "invalid_grant", wantText: "revokes its family"},
		{name: "a refused revocation", typ: logs.TypeFailedRevocation, details: map[string]any{"error": "unsupported_token_type"},
			wantCode: "unsupported_token_type", wantText: "access token"},
		{name: "a refused connection check", typ: logs.TypeFailedAPI, details: apiErr("dpop_alg_mismatch"),
			wantCode: "dpop_alg_mismatch", wantText: "offers"},
		{name: "a console refusal", typ: logs.TypeFailedAPI, details: apiErr("console_refused"),
			wantCode: "console_refused", wantText: "console.admins"},
		{name: "a token code without an entry", typ: logs.TypeFailedExchange, details: map[string]any{"error": "made_up"}},
		{name: "a management refusal without a code", typ: logs.TypeFailedAPI, details: map[string]any{"error": map[string]any{"message": "m"}}},
		{name: "a management error as a plain string", typ: logs.TypeFailedAPI, details: map[string]any{"error": "invalid_body"}},
		{name: "a successful exchange", typ: logs.TypeSuccessExchange, details: map[string]any{"error": "invalid_grant"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newLogEventData("/console", &logs.Event{LogID: logs.MinLogID(time.Unix(1, 0)), Type: tt.typ, Details: tt.details})
			if tt.wantCode == "" {
				if d.Trouble != nil || d.Row.Hint != "" {
					t.Fatalf("Trouble = %+v, hint %q, want none", d.Trouble, d.Row.Hint)
				}
				return
			}
			if d.Trouble == nil || !d.Trouble.Exact || d.Trouble.Code != tt.wantCode || !strings.Contains(string(d.Trouble.Happened), tt.wantText) {
				t.Fatalf("Trouble = %+v, want the entry of %s saying %q", d.Trouble, tt.wantCode, tt.wantText)
			}
			if d.Trouble.ToDo == "" || !strings.Contains(d.Row.Hint, tt.wantText) || strings.Contains(d.Row.Hint, "`") {
				t.Errorf("ToDo %q, row hint %q: want what to do, and what happened as plain text", d.Trouble.ToDo, d.Row.Hint)
			}
			if tt.typ == logs.TypeFailedAPI && !slices.Equal(d.Other, []logFact{{"Error code", tt.wantCode}, {"Error message", "m"}}) {
				t.Errorf("facts = %+v, want the refusal's errorCode and message labelled", d.Other)
			}
		})
	}
}

func TestLogsFilterCombinesTheSearchWithItsChips(t *testing.T) {
	tests := []struct {
		name      string
		query     string
		wantQ     string
		wantError string // part of the refusal, "" for none
		// wantSearchError: the filter is taken, its search is refused by the API's parser
		// (the page answers it with the filter's chips kept)
		wantSearchError string
	}{
		{name: "nothing", query: "", wantQ: ""},
		{name: "the API's q alone", query: "q=type:f+details.error:dpop*", wantQ: "type:f details.error:dpop*"},
		{name: "chips in a fixed order", query: "user=u1&type=f&connection=corp&client=app&error=invalid_state",
			wantQ: `type:"f" connection:"corp" client_id:"app" details.error:"invalid_state" user_id:"u1"`},
		{name: "q and a chip", query: "q=ip:10.0.0.1&type=s", wantQ: `ip:10.0.0.1 type:"s"`},
		{name: "a chip cannot add a term", query: "connection=" + url.QueryEscape(`x" type:"s`), wantQ: `connection:"x\" type:\"s"`},
		{name: "unknown parameters are ignored", query: "page=3&foo=bar", wantQ: ""},
		{name: "known time range", query: "range=24h", wantQ: ""},
		{name: "unknown time range", query: "range=1y", wantError: "unknown time range"},
		{name: "from and before", query: "from=2026-12-02T14:00&until=2026-12-02T15:00", wantQ: ""},
		{name: "from not a time", query: "from=yesterday", wantError: "From is not a time"},
		{name: "until before the log ids' first year", query: "until=0001-01-01", wantError: "between the years 1970 and 2200"},
		{name: "from after the log ids' last year", query: "from=9999-01-01", wantError: "between the years 1970 and 2200"},
		{name: "until in the year 2200", query: "until=2200-12-31T23:59", wantQ: ""},
		{name: "from after before", query: "from=2026-12-02T15:00&until=2026-12-02T14:00", wantError: "From must be earlier than Before"},
		{name: "cursor not a log id", query: "before=yesterday", wantError: "not a log id"},
		{name: "q too long", query: "q=" + strings.Repeat("a", logs.MaxQueryLen+1), wantError: "longer than"},
		{name: "a search of the longest length plus a chip", query: "q=" + strings.Repeat("a", logs.MaxQueryLen) + "&type=f", wantError: "longer than 2048 bytes with the filters added"},
		{name: "a search of the most terms plus a chip", query: "q=" + url.QueryEscape(strings.TrimSpace(strings.Repeat("type:f ", 64))) + "&type=f", wantError: "too many terms with the filters added"},
		{name: "chip not UTF-8", query: "connection=%C0", wantError: "connection filter is not UTF-8"},
		{name: "a search the API refuses", query: "q=" + url.QueryEscape("type:f OR type:s"), wantQ: "type:f OR type:s", wantSearchError: "operator OR"},
		{name: "a search the API refuses, with a chip", query: "q=" + url.QueryEscape("type:f OR type:s") + "&connection=corp", wantQ: `type:f OR type:s connection:"corp"`, wantSearchError: "operator OR"},
		{name: "chip too long", query: "user=" + strings.Repeat("a", maxChipValue+1), wantError: "user filter is longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parseLogsFilter(v)
			if tt.wantError != "" {
				if !errors.Is(err, errLogsFilter) || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("parseLogsFilter(%q) = %v, want a refusal saying %q", tt.query, err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseLogsFilter(%q): %v", tt.query, err)
			}
			if got := f.lucene(); got != tt.wantQ {
				t.Errorf("lucene() = %q, want %q", got, tt.wantQ)
			}
			if tt.wantSearchError != "" {
				if f.search != nil || !errors.Is(f.searchErr, logs.ErrInvalidQuery) || !strings.Contains(f.searchErr.Error(), tt.wantSearchError) {
					t.Fatalf("search %v, searchErr %v: want the parser's refusal saying %q", f.search, f.searchErr, tt.wantSearchError)
				}
				return
			}
			if _, err := logs.ParseQuery(f.lucene()); err != nil && tt.wantQ != "" {
				t.Errorf("the combined q does not parse: %v", err)
			}
			// The search is parsed once, here: the page's query carries the parsed filter.
			if f.search == nil || f.searchErr != nil || f.query(time.Now()).Filter != f.search {
				t.Errorf("search %v, searchErr %v: want the parsed search in the page's query", f.search, f.searchErr)
			}
		})
	}
}

func TestLogsFilterTimeRangeAndCursorBoundTheSearch(t *testing.T) {
	now := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	f, err := parseLogsFilter(url.Values{"range": {"1h"}, "before": {logs.MinLogID(now.Add(-time.Minute))}})
	if err != nil {
		t.Fatal(err)
	}
	q := f.query(now)
	if q.After != logs.MinLogID(now.Add(-time.Hour)) || q.Before != f.Before || q.PerPage != consoleLogsPerPage {
		t.Errorf("query = %+v, want after an hour ago, before the cursor, %d per page", q, consoleLogsPerPage)
	}
	custom, err := parseLogsFilter(url.Values{"range": {"7d"}, "from": {"2026-12-02T14:00"}, "until": {"2026-12-02T14:30:15"}})
	if err != nil {
		t.Fatal(err)
	}
	cq := custom.query(now)
	if cq.After != logs.MinLogID(time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)) || cq.Before != logs.MinLogID(time.Date(2026, 12, 2, 14, 30, 15, 0, time.UTC)) {
		t.Errorf("custom query = %+v, want from 14:00 to before 14:30:15 (the preset range overridden)", cq)
	}
	if v := custom.values(); v.Get("range") != "" || v.Get("from") != "2026-12-02T14:00" {
		t.Errorf("custom range links = %v, want from/until and no preset", v)
	}
	paged := custom
	paged.Before = logs.MinLogID(time.Date(2026, 12, 2, 14, 10, 0, 0, time.UTC))
	if pq := paged.query(now); pq.Before != paged.Before {
		t.Errorf("a cursor inside the custom range: Before = %s, want the cursor", pq.Before)
	}
	if all := (logsFilter{}).query(now); all.After != "" || all.Before != "" {
		t.Errorf("query without range or cursor = %+v, want no bounds", all)
	}
}

func TestLogsPageLinksKeepTheFilterAndPageOlderByCursor(t *testing.T) {
	f := logsFilter{Q: "type:f", Chips: map[string]string{"connection": "corp"}, Range: "24h"}
	evs := make([]logs.Event, consoleLogsPerPage)
	for i := range evs {
		evs[i] = logs.Event{LogID: logs.MinLogID(time.Unix(int64(1000-i), 0)), Type: "f", Connection: "corp"}
	}
	d := newLogsPageData("/console", f, evs)
	older, err := url.ParseQuery(strings.TrimPrefix(d.Older, "/console/logs?"))
	if err != nil || older.Get("before") != evs[len(evs)-1].LogID || older.Get("q") != "type:f" ||
		older.Get("connection") != "corp" || older.Get("range") != "24h" {
		t.Errorf("Older = %q (%v), want the filter and the last event's id as before", d.Older, err)
	}
	if d.Newest != "" {
		t.Errorf("Newest = %q on the first page, want none", d.Newest)
	}
	if !strings.HasPrefix(d.Older, "/console/logs?") {
		t.Errorf("Older = %q, want a link to the console's Logs page", d.Older)
	}
	if len(d.Chips) != 1 || d.Chips[0].Value != "corp" || strings.Contains(d.Chips[0].Remove, "connection=") {
		t.Errorf("chips = %+v, want connection corp with a link without it", d.Chips)
	}
	if got := d.Rows[0].Filters["type"]; got != "/console/logs?"+f.with("type", "f") {
		t.Errorf("the row's type link = %q, want the page with the type chip", got)
	}
	tail, _ := url.ParseQuery(strings.TrimPrefix(d.TailURL, "/console/logs/tail?"))
	if tail.Get("range") != "" || tail.Get("q") != "type:f" || tail.Get("connection") != "corp" {
		t.Errorf("TailURL = %q, want the search and chips without the range", d.TailURL)
	}
	if short := newLogsPageData("/console", f, evs[:3]); short.Older != "" {
		t.Errorf("Older = %q on a short page, want none", short.Older)
	}
}

func TestLogEventViewShowsDPoPFactsAndTheTroubleshootingEntry(t *testing.T) {
	failed := &logs.Event{LogID: logs.MinLogID(time.Unix(1, 0)), Type: logs.TypeFailedLogin, Description: "Failed Login",
		Connection: "corp", Details: map[string]any{
			"error": "dpop_not_supported", "error_description": "no DPoP <here>", "dpop_signing_alg": "ES256",
		}}
	d := newLogEventData("/console", failed)
	if d.Trouble == nil || !d.Trouble.Exact || !strings.Contains(string(d.Trouble.Happened), "<code>dpop_signing_alg_values_supported</code>") {
		t.Fatalf("Trouble = %+v, want the dpop_not_supported entry with code spans", d.Trouble)
	}
	want, _, _ := logs.LookupTroubleshooting("dpop_not_supported")
	if d.Trouble.ToDo != inlineMarkdown(want.ToDo) {
		t.Errorf("ToDo = %q, want the entry's text %q", d.Trouble.ToDo, want.ToDo)
	}
	if !slices.Contains(d.DPoP, logFact{Label: "DPoP signing algorithm", Value: "ES256"}) {
		t.Errorf("DPoP facts = %+v, want the signing algorithm labelled", d.DPoP)
	}
	if !slices.Contains(d.DPoP, logFact{Label: "Upstream token type", Value: notRecorded}) {
		t.Errorf("DPoP facts = %+v, want the token type shown as not recorded (no exchange)", d.DPoP)
	}
	if !slices.Contains(d.Other, logFact{Label: "Error description", Value: "no DPoP <here>"}) {
		t.Errorf("other facts = %+v, want the description as text (escaped by the template)", d.Other)
	}
	if d.Row.Hint != markdownText(want.Happened) || strings.Contains(d.Row.Hint, "`") {
		t.Errorf("row hint = %q, want what happened as plain text", d.Row.Hint)
	}
	if d.Row.Href != "/console/logs/"+failed.LogID {
		t.Errorf("Href = %q", d.Row.Href)
	}
	if len(d.Related) != 2 || d.Related[0].URL != "/console/logs?connection=corp" || d.Related[1].URL != "/console/logs?error=dpop_not_supported" {
		t.Errorf("related = %+v, want the connection's and the error code's events", d.Related)
	}
	if !strings.Contains(d.RawJSON, `"error": "dpop_not_supported"`) {
		t.Errorf("RawJSON = %s, want the event's JSON", d.RawJSON)
	}

	idp := newLogEventData("/console", &logs.Event{Type: logs.TypeFailedLogin, Details: map[string]any{"error": "temporarily_unavailable"}})
	if idp.Trouble == nil || idp.Trouble.Exact || idp.Trouble.Code != "temporarily_unavailable" {
		t.Errorf("Trouble = %+v, want the IdP refusal's entry, marked as not the code's own", idp.Trouble)
	}

	plain := newLogEventData("/console", &logs.Event{Type: logs.TypeSuccessLogin, Details: map[string]any{
		"dpop_returned_from_upstream": false, "idp_token_type": "bearer", "code_exchange_ms": float64(7)}})
	wantPlain := []logFact{{"DPoP signing algorithm", "none: the connection does not use DPoP"},
		{"DPoP-bound token from the upstream", "no"}, {"Upstream token type", "bearer"}, {"Upstream code exchange", "7 ms"}}
	if !slices.Equal(plain.DPoP, wantPlain) || len(plain.Notes) != 0 {
		t.Errorf("a login without DPoP: facts %+v notes %q, want %+v and no Bearer-downgrade note", plain.DPoP, plain.Notes, wantPlain)
	}
	if api := newLogEventData("/console", &logs.Event{Type: logs.TypeSuccessAPI}); len(api.DPoP) != 0 {
		t.Errorf("a management event shows DPoP facts %+v", api.DPoP)
	}

	bearer := newLogEventData("/console", &logs.Event{Type: logs.TypeSuccessLogin, Details: map[string]any{
		"dpop_signing_alg": "ES256", "dpop_returned_from_upstream": false, "idp_token_type": "bearer",
		"dpop_nonce_used": true, "dpop_nonce_retries": float64(1), "code_exchange_ms": float64(42),
		"upstream_userinfo_fetch": map[string]any{"status": "ok", "dpop_bound": true},
	}})
	wantFacts := []logFact{
		{"DPoP signing algorithm", "ES256"}, {"DPoP-bound token from the upstream", "no"}, {"Upstream token type", "bearer"},
		{"Upstream DPoP nonce used", "yes"}, {"DPoP nonce retries", "1"}, {"Upstream code exchange", "42 ms"},
		{"Upstream userinfo", "ok, DPoP-bound"},
	}
	if !slices.Equal(bearer.DPoP, wantFacts) {
		t.Errorf("DPoP facts = %+v, want %+v", bearer.DPoP, wantFacts)
	}
	if bearer.Trouble != nil || len(bearer.Notes) != 1 || !strings.Contains(string(bearer.Notes[0]), "plain bearer token") {
		t.Errorf("success view: trouble %+v, notes %q; want no entry and the Bearer downgrade note", bearer.Trouble, bearer.Notes)
	}
	if bearer.Row.DPoP != "Bearer" {
		t.Errorf("row DPoP = %q, want Bearer", bearer.Row.DPoP)
	}
}

func TestInlineMarkdownEscapesEverythingButCodeSpans(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "a & b", want: "a &amp; b"},
		{name: "code span", in: "set `a<b>` now", want: "set <code>a&lt;b&gt;</code> now"},
		{name: "link shows its text", in: "see [docs/claims.md](docs/claims.md).", want: "see docs/claims.md."},
		{name: "unclosed backtick", in: "a ` b <", want: "a ` b &lt;"},
		{name: "bracket without link", in: "[x] <y>", want: "[x] &lt;y&gt;"},
		{name: "html in link text", in: "[<b>](x)", want: "&lt;b&gt;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(inlineMarkdown(tt.in)); got != tt.want {
				t.Errorf("inlineMarkdown(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// consoleLogsHarness is a console harness whose connection "other" asks for DPoP from an
// upstream without it (a login through it fails dpop_not_supported), and whose management
// token can sign in to the console without read:logs.
func consoleLogsHarness(t *testing.T) *harness {
	t.Helper()
	return consoleHarness(t, func(c *config.Config) {
		c.Connections[1].Options.DPoPSigningAlg = "ES256"
		c.Clients[0].Connections = []string{"corp", "other"}
	})
}

// failDPoPLogin starts a login through "other": the broker refuses it, dpop_not_supported.
func (h *harness) failDPoPLogin() logs.Event {
	h.t.Helper()
	get(h.t, h.browser(), h.authorizeURL(func(q url.Values) { q.Set("connection", "other") }))
	ev := h.lastEventOf(logs.TypeFailedLogin)
	if ev.Details["error"] != "dpop_not_supported" {
		h.t.Fatalf("the login through other failed with %v, want dpop_not_supported", ev.Details["error"])
	}
	return ev
}

func TestConsoleLogsPageSearchesAndShowsAFailedLoginWithItsTroubleshooting(t *testing.T) {
	h := consoleLogsHarness(t)
	browser := h.browser()
	if resp, body := h.consoleSignIn(browser); resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d\n%s", resp.StatusCode, body)
	}
	failed := h.failDPoPLogin()

	resp, body := get(t, browser, h.srv.URL+"/console/logs?type=f")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-id="`+failed.LogID+`"`) {
		t.Fatalf("Logs page with the f chip: %d, want the failed login's row:\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, `<td data-label="Type"><a class="badge ok"`) {
		t.Errorf("the f chip shows a success row:\n%s", body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP = %q, want the console's strict policy", csp)
	}
	for _, want := range []string{`aria-current="page">Logs`, "Remove the type filter f", "no login was started", "/console/assets/logs.js"} {
		if !strings.Contains(body, want) {
			t.Errorf("Logs page lacks %q", want)
		}
	}
	if _, body := get(t, browser, h.srv.URL+"/console/logs?error=invalid_state"); strings.Contains(body, `data-id="`+failed.LogID) {
		t.Errorf("the error chip invalid_state shows the dpop_not_supported event")
	}
	if _, body := get(t, browser, h.srv.URL+"/console/logs?q="+url.QueryEscape("connection:other details.error:dpop*")); !strings.Contains(body, `data-id="`+failed.LogID) {
		t.Errorf("the API's q syntax does not find the event")
	}

	resp, body = get(t, browser, h.srv.URL+"/console/logs/"+failed.LogID)
	entry, _, _ := logs.LookupTroubleshooting("dpop_not_supported")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, string(inlineMarkdown(entry.Happened))) ||
		!strings.Contains(body, string(inlineMarkdown(entry.ToDo))) {
		t.Fatalf("event view: %d, want the troubleshooting entry's text:\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{"DPoP signing algorithm", "<summary>Raw JSON</summary>", "&#34;log_id&#34;: &#34;" + failed.LogID,
		`href="/console/connections/` + config.DeriveConnectionID("other")} {
		if !strings.Contains(body, want) {
			t.Errorf("event view lacks %q", want)
		}
	}

	// A user's event links to the user's sessions.
	get(t, h.browser(), h.authorizeURL(func(q url.Values) { q.Set("connection", "corp") }))
	ok := h.lastEventOf(logs.TypeSuccessLogin)
	_, body = get(t, browser, h.srv.URL+"/console/logs/"+ok.LogID)
	if want := `href="/console/sessions?user_id=` + url.QueryEscape(ok.UserID) + `">Sessions of this user</a>`; ok.UserID == "" || !strings.Contains(body, want) {
		t.Errorf("the event of user %q lacks %s", ok.UserID, want)
	}
}

func TestConsoleLogsTailShowsANewFailedLoginOnce(t *testing.T) {
	h := consoleLogsHarness(t)
	browser := h.browser()
	h.consoleSignIn(browser)
	tail := func(after string) logsTailAnswer {
		t.Helper()
		resp, body := get(t, browser, h.srv.URL+"/console/logs/tail?type=f&after="+after)
		var a logsTailAnswer
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &a) != nil {
			t.Fatalf("tail: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		return a
	}
	start := tail("")
	if start.Cursor == "" || len(start.Events) != 0 {
		t.Fatalf("the tail's start = %+v, want a cursor and no old events", start)
	}
	h.consoleSignIn(h.browser()) // an s event: not shown with the f chip
	failed := h.failDPoPLogin()
	a := tail(start.Cursor)
	if len(a.Events) != 1 || a.Events[0].LogID != failed.LogID || a.Events[0].Error != "dpop_not_supported" ||
		!strings.Contains(a.Events[0].Hint, "no login was started") || a.Events[0].Href != "/console/logs/"+failed.LogID {
		t.Fatalf("tail = %+v, want the failed login with what happened", a)
	}
	if again := tail(a.Cursor); len(again.Events) != 0 || again.Cursor != a.Cursor {
		t.Errorf("the next step = %+v, want nothing new", again)
	}
}

// TestConsoleLogsKeepWhatWasTypedAfterARefusal: a refused time range or search comes back
// with the operator's input in its fields (From, Before, the range, the search, the filters),
// and the message names the fields by their labels.
func TestConsoleLogsKeepWhatWasTypedAfterARefusal(t *testing.T) {
	h := consoleLogsHarness(t)
	browser := h.browser()
	h.consoleSignIn(browser)
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{name: "From later than Before", query: "q=type:f&connection=corp&from=2026-12-02T15:00&until=2026-12-02T14:00",
			want: []string{"From must be earlier than Before", `value="2026-12-02T15:00"`, `value="2026-12-02T14:00"`, `value="custom" selected`, `value="type:f"`, `name="connection" value="corp"`}},
		{name: "From not a time", query: "range=24h&from=yesterday",
			want: []string{"From is not a time", `id="logs-from" name="from" value="yesterday"`, `value="custom" selected`}},
		{name: "a search the API refuses", query: "q=foo:bar&range=24h",
			want: []string{"The search is not valid", `value="foo:bar"`, `value="24h" selected`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, browser, h.srv.URL+"/console/logs?"+tt.query)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("GET ?%s = %d, want 400", tt.query, resp.StatusCode)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("the refused page lacks %q", w)
				}
			}
		})
	}
}

func TestConsoleLogsRefusals(t *testing.T) {
	h := consoleLogsHarness(t)
	browser := h.browser()
	h.consoleSignIn(browser)
	tests := []struct {
		name       string
		path       string
		wantStatus int
		want       string
	}{
		{name: "q the API refuses", path: "/console/logs?q=" + url.QueryEscape("type:f OR type:s"), wantStatus: 400, want: "The search is not valid"},
		{name: "q the API refuses keeps the chips", path: "/console/logs?connection=corp&q=" + url.QueryEscape("type:f OR type:s"), wantStatus: 400, want: "Remove the connection filter corp"},
		{name: "q the API refuses in the tail", path: "/console/logs/tail?q=" + url.QueryEscape("type:f OR type:s"), wantStatus: 400, want: "The search is not valid"},
		{name: "unknown range", path: "/console/logs?range=1y", wantStatus: 400, want: "unknown time range"},
		{name: "tail after something else than a log id", path: "/console/logs/tail?after=1", wantStatus: 400, want: "not a log_id"},
		{name: "unknown event", path: "/console/logs/" + logs.MinLogID(time.Unix(1, 0)), wantStatus: 404, want: "no such event"},
		{name: "malformed event id", path: "/console/logs/%3Cscript%3E", wantStatus: 404, want: "no such event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, browser, h.srv.URL+tt.path)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.want) {
				t.Fatalf("GET %s = %d, want %d with %q:\n%s", tt.path, resp.StatusCode, tt.wantStatus, tt.want, body)
			}
			if strings.Contains(body, "<script>") {
				t.Errorf("the page echoes markup")
			}
		})
	}
}

func TestConsoleLogsNeedReadLogs(t *testing.T) {
	h := consoleLogsHarness(t) // the break-glass token has read:connections only
	browser := h.browser()
	resp, body := consoleTokenSignInAs(t, browser, h.srv.URL, consoleTestToken, "same-origin")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token sign-in: %d\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, ">Logs</a>") {
		t.Errorf("the nav offers Logs to an operator without read:logs")
	}
	for _, path := range []string{"/console/logs", "/console/logs/tail", "/console/logs/" + logs.MinLogID(time.Unix(1, 0))} {
		if resp, _ := get(t, browser, h.srv.URL+path); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s = %d, want 403", path, resp.StatusCode)
		}
	}
	if resp, _ := get(t, h.browser(), h.srv.URL+"/console/logs/tail"); resp.Request.URL.Path != "/console/signin" {
		t.Errorf("the tail without a session ended at %s, want the sign-in page", resp.Request.URL.Path)
	}
}

// FuzzConsoleLogsFilter: any Logs page query string is refused with a sentence or becomes a
// search; chips alone always make a q the API's parser takes, each as one exact term.
func FuzzConsoleLogsFilter(f *testing.F) {
	f.Add("q=type:f&connection=corp&range=1h")
	f.Add("user=" + url.QueryEscape(`a" OR type:"s`) + "&error=%5C")
	f.Add("before=00000000000000000000000000000000000000000000000000000001&client=%22")
	f.Add("api_error=console_refused&type=fapi&error=x")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		lf, err := parseLogsFilter(v)
		if err != nil {
			if !errors.Is(err, errLogsFilter) {
				t.Fatalf("parseLogsFilter(%q) refused with %v, not a page sentence", raw, err)
			}
			return
		}
		lf.Q = ""
		filter, err := logs.ParseQuery(lf.lucene())
		if err != nil && len(lf.lucene()) <= logs.MaxQueryLen {
			t.Fatalf("chips %v make a q the parser refuses: %q: %v", lf.Chips, lf.lucene(), err)
		}
		_, both := lf.Chips["api_error"]
		both = both && lf.Chips["error"] != "" // details.error is a string or an object, not both
		if err == nil && !both {
			ev := &logs.Event{Type: lf.Chips["type"], Connection: lf.Chips["connection"], ClientID: lf.Chips["client"],
				UserID: lf.Chips["user"], Details: map[string]any{"error": lf.Chips["error"]}}
			if code, ok := lf.Chips["api_error"]; ok {
				ev.Details["error"] = map[string]any{"errorCode": code}
			}
			if !filter.Match(ev) {
				t.Fatalf("chips %v do not match the event that has exactly their values", lf.Chips)
			}
		}
		_ = newLogsPageData("/console", lf, nil)
	})
}

// FuzzInlineMarkdown: the rendered troubleshooting text has no markup but <code>.
func FuzzInlineMarkdown(f *testing.F) {
	for _, topic := range []logs.TroubleshootingTopic{logs.TopicLogin, logs.TopicToken, logs.TopicAPI} {
		for _, e := range logs.TopicEntries(topic) {
			f.Add(e.Happened + e.ToDo)
		}
	}
	f.Add("[<script>](x) `<b>` <i>")
	f.Fuzz(func(t *testing.T, s string) {
		out := strings.NewReplacer("<code>", "", "</code>", "").Replace(string(inlineMarkdown(s)))
		if strings.ContainsAny(out, "<>") {
			t.Fatalf("inlineMarkdown(%q) = %q has markup", s, inlineMarkdown(s))
		}
	})
}

// TestLoginErrorFromTheBrowsersRedirectIsShownAsUnverifiedText: an error and description
// anyone holding a login's state can send to /login/callback are recorded as coming from the
// redirect, and the event view labels the description unverified; the broker's own
// descriptions keep their label.
func TestLoginErrorFromTheBrowsersRedirectIsShownAsUnverifiedText(t *testing.T) {
	h := newHarness(t, harnessOpts{dpopAlg: "-"})
	browser := h.browser()
	cb, err := url.Parse(h.toCallback(browser, h.authorizeURL(nil)))
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"state": {cb.Query().Get("state")}, "error": {"server_error"}, "error_description": {"Call +1-555-0100 to restore access"}}
	get(t, browser, h.srv.URL+"/login/callback?"+q.Encode())
	ev := h.lastEventOf(logs.TypeFailedLogin)
	if ev.Details[detailErrorFrom] != errorFromRedirect {
		t.Fatalf("the failed login's details %+v do not say the error came from the redirect", ev.Details)
	}
	d := newLogEventData("/console", &ev)
	want := logFact{Label: "Error description (unverified text from the browser's redirect)", Value: "Call +1-555-0100 to restore access"}
	if !slices.Contains(d.Other, want) {
		t.Errorf("other facts = %+v, want %+v", d.Other, want)
	}
	if d.Trouble == nil || !strings.Contains(string(d.Trouble.Happened), "unverified") {
		t.Errorf("troubleshooting %+v does not say the redirect's text is unverified", d.Trouble)
	}
}

// TestConsoleEventViewLinksOnlyPagesTheOperatorMayOpen: the event view links a failed login's
// connection only for an operator with read:connections and the user's sessions only with
// read:sessions; without them the text stays and the link goes (the page would answer 403).
func TestConsoleEventViewLinksOnlyPagesTheOperatorMayOpen(t *testing.T) {
	ev := &logs.Event{LogID: logs.MinLogID(time.Unix(1, 0)), Type: logs.TypeFailedLogin, UserID: "oidc|corp|alice",
		Connection: "corp", ConnectionID: config.DeriveConnectionID("corp"), Details: map[string]any{"error": "upstream_requires_dpop"}}
	tests := []struct {
		name                      string
		scopes                    []string
		wantConnection, wantUsers bool
	}{
		{name: "logs only", scopes: []string{config.ScopeReadLogs}},
		{name: "logs and connections", scopes: []string{config.ScopeReadLogs, config.ScopeReadConnections}, wantConnection: true},
		{name: "logs and sessions", scopes: []string{config.ScopeReadLogs, config.ScopeReadSessions}, wantUsers: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newLogEventData("/console", ev)
			if d.Trouble == nil || d.Trouble.ConnectionURL == "" || !slices.ContainsFunc(d.Related, func(r logRelated) bool { return r.Label == relatedSessions }) {
				t.Fatalf("the view before the scope check lacks its links: trouble %+v, related %+v", d.Trouble, d.Related)
			}
			d.linkOnlyWhatTheOperatorMayOpen(&consoleSession{Scopes: tt.scopes})
			if got := d.Trouble.ConnectionURL != ""; got != tt.wantConnection {
				t.Errorf("connection link %q, want one: %v", d.Trouble.ConnectionURL, tt.wantConnection)
			}
			if d.Trouble.Connection != "corp" {
				t.Errorf("the connection's name went with its link: %+v", d.Trouble)
			}
			if got := slices.ContainsFunc(d.Related, func(r logRelated) bool { return r.Label == relatedSessions }); got != tt.wantUsers {
				t.Errorf("sessions link in %+v, want one: %v", d.Related, tt.wantUsers)
			}
		})
	}
}
