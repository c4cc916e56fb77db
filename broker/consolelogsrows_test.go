package broker

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
)

func TestLogsRowLinksEveryErrorCodeToItsChipAndShowsARefusalsMessage(t *testing.T) {
	long := strings.Repeat("x", maxRowMessage+40)
	tests := []struct {
		name        string
		ev          logs.Event
		wantError   string
		wantParam   string // the chip the error cell's link adds ("" = no link)
		wantMessage string
	}{
		{name: "a refused management call: its errorCode and message",
			ev: logs.Event{Type: logs.TypeFailedAPI, Details: map[string]any{
				"error": map[string]any{"errorCode": "console_refused", "message": "the operator lacks the read:clients permission"}}},
			wantError: "console_refused", wantParam: "api_error", wantMessage: "the operator lacks the read:clients permission"},
		{name: "a long message is clipped",
			ev: logs.Event{Type: logs.TypeFailedAPI, Details: map[string]any{
				"error": map[string]any{"errorCode": "invalid_body", "message": long}}},
			wantError: "invalid_body", wantParam: "api_error", wantMessage: logs.Clip(long, maxRowMessage)},
		{name: "a refused login: details.error's chip, no message",
			ev:        logs.Event{Type: logs.TypeFailedLogin, Details: map[string]any{"error": "invalid_state", "error_description": "from the IdP"}},
			wantError: "invalid_state", wantParam: "error"},
		{name: "a successful management call: no error",
			ev: logs.Event{Type: logs.TypeSuccessAPI, Details: map[string]any{}}},
		{name: "a management call with a string details.error: details.error's chip",
			ev:        logs.Event{Type: logs.TypeSuccessAPI, Details: map[string]any{"error": "partial"}},
			wantError: "partial", wantParam: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newLogRow("/console", &tt.ev, &logsFilter{})
			if r.Error != tt.wantError || r.Message != tt.wantMessage {
				t.Errorf("row error %q message %q, want %q and %q", r.Error, r.Message, tt.wantError, tt.wantMessage)
			}
			link := r.Cell("error").URL
			if tt.wantParam == "" {
				if link != "" {
					t.Errorf("the error cell links to %q, want no link", link)
				}
				return
			}
			v, err := url.ParseQuery(strings.TrimPrefix(link, "/console/logs?"))
			if err != nil || v.Get(tt.wantParam) != tt.wantError || len(v) != 1 {
				t.Fatalf("the error cell links to %q, want the page with the %s chip %s", link, tt.wantParam, tt.wantError)
			}
			f, err := parseLogsFilter(v)
			if err != nil {
				t.Fatal(err)
			}
			q, err := logs.ParseQuery(f.lucene())
			if err != nil || !q.Match(&tt.ev) {
				t.Errorf("the chip's search %q (%v) does not find the row's event", f.lucene(), err)
			}
			// The row's filters hold the link under the chip it adds, and only there.
			other := map[string]string{"error": "api_error", "api_error": "error"}[tt.wantParam]
			if r.Filters[tt.wantParam] != link || r.Filters[other] != "" {
				t.Errorf("filters %v: want the error code's link under %s only", r.Filters, tt.wantParam)
			}
			if c := r.Cell(tt.wantParam); c.URL != link || c.Text != tt.wantError {
				t.Errorf("the %s cell = %+v, want %s linking to %s", tt.wantParam, c, tt.wantError, link)
			}
		})
	}
}

// TestLogEventViewRelatesARefusalToTheEventsOfItsAPIErrorCode: the event view of a refused
// management call links to the events of its errorCode through the api_error chip, labelled so.
func TestLogEventViewRelatesARefusalToTheEventsOfItsAPIErrorCode(t *testing.T) {
	ev := &logs.Event{LogID: logs.MinLogID(time.Unix(1, 0)), Type: logs.TypeFailedAPI, Details: map[string]any{
		"error": map[string]any{"errorCode": "console_refused", "message": "m"}}}
	d := newLogEventData("/console", ev)
	want := logRelated{Label: "Events of this API error code", Value: "console_refused", URL: "/console/logs?api_error=console_refused"}
	if !slices.Contains(d.Related, want) {
		t.Fatalf("related = %+v, want %+v", d.Related, want)
	}
	for _, r := range d.Related {
		if strings.Contains(r.URL, "?error=") || strings.Contains(r.URL, "&error=") {
			t.Errorf("related %+v filters details.error, which is an object here", r)
		}
	}
}

func TestLogsUserColumnShowsTheUserIDWithTheNameBesideIt(t *testing.T) {
	tests := []struct {
		name         string
		ev           logs.Event
		wantUser     string
		wantUserName string
		wantLink     bool // the user chip (user_id) is offered
	}{
		{name: "a login: the id, the email beside it",
			ev:       logs.Event{Type: logs.TypeSuccessLogin, UserID: "oidc|corp|alice", UserName: "alice@example.com"},
			wantUser: "oidc|corp|alice", wantUserName: "alice@example.com", wantLink: true},
		{name: "a code exchange: the id only",
			ev:       logs.Event{Type: logs.TypeSuccessExchange, UserID: "oidc|corp|alice"},
			wantUser: "oidc|corp|alice", wantLink: true},
		{name: "a name equal to the id is not repeated",
			ev:       logs.Event{Type: logs.TypeSuccessLogin, UserID: "alice", UserName: "alice"},
			wantUser: "alice", wantLink: true},
		{name: "a name without an id: the name, no chip",
			ev:       logs.Event{Type: logs.TypeFailedLogin, UserName: "alice@example.com"},
			wantUser: "alice@example.com"},
		{name: "a management call: the operator",
			ev: logs.Event{Type: logs.TypeSuccessAPI, UserID: "oidc|corp|bob", UserName: "bob@example.com", Details: map[string]any{
				"request": map[string]any{"auth": map[string]any{"user": "ops"}}}},
			wantUser: "ops (management API token)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newLogRow("/console", &tt.ev, &logsFilter{})
			if r.User != tt.wantUser || r.UserName != tt.wantUserName {
				t.Errorf("user %q name %q, want %q and %q", r.User, r.UserName, tt.wantUser, tt.wantUserName)
			}
			if got := r.Cell("user").URL != ""; got != tt.wantLink {
				t.Errorf("user chip link %q, want one: %v", r.Cell("user").URL, tt.wantLink)
			}
		})
	}
}

func TestConsoleLogsPageLinksARefusalsCodeAndShowsItsMessageEscaped(t *testing.T) {
	h := consoleLogsHarness(t)
	ev := &logs.Event{Type: logs.TypeFailedAPI, Description: "Failed API Operation", Details: map[string]any{
		"error": map[string]any{"errorCode": "console_refused", "message": "the operator <b>lacks</b> read:clients"}}}
	if err := h.events.Write(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	other := &logs.Event{Type: logs.TypeFailedAPI, Description: "Failed API Operation", Details: map[string]any{
		"error": map[string]any{"errorCode": "invalid_body", "message": "m"}}}
	if err := h.events.Write(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	browser := h.browser()
	if resp, body := h.consoleSignIn(browser); resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d\n%s", resp.StatusCode, body)
	}
	_, body := get(t, browser, h.srv.URL+"/console/logs?type=fapi")
	for _, want := range []string{
		`<a href="/console/logs?api_error=console_refused&amp;type=fapi" class="badge bad" title="Filter by error code console_refused">console_refused</a>`,
		`<span class="logs-message">the operator &lt;b&gt;lacks&lt;/b&gt; read:clients</span>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the Logs page lacks %s:\n%s", want, body)
		}
	}
	resp, body := get(t, browser, h.srv.URL+"/console/logs?api_error=console_refused")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-id="`+ev.LogID+`"`) || strings.Contains(body, `data-id="`+other.LogID+`"`) ||
		!strings.Contains(body, "Remove the API error code filter console_refused") {
		t.Errorf("the api_error chip: %d, want the console_refused event only, with its chip:\n%s", resp.StatusCode, html.UnescapeString(body))
	}
}

func TestLogsPageExplainsABareWordThatMatchedNothing(t *testing.T) {
	alice := logs.Event{Type: logs.TypeSuccessLogin, UserID: "oidc|corp|alice", UserName: "alice@example.com"}
	tests := []struct {
		name     string
		q        string
		bare     bool // the page explains bare words when nothing matched
		matchesA bool // the API's parser finds alice's event
	}{
		{name: "a bare word is a whole value: no match", q: "alice", bare: true},
		{name: "two bare words", q: "alice AND bob", bare: true},
		{name: "the hint's prefix example finds it", q: "user_name:alice*", matchesA: true},
		{name: "the hint's suffix example finds it", q: "user_id:*alice", matchesA: true},
		{name: "a field term is no bare search", q: "type:f"},
		{name: "a quoted word with a colon is bare", q: `"a:b"`, bare: true},
		{name: "no search", q: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bareOnly(tt.q); got != tt.bare {
				t.Errorf("bareOnly(%q) = %v, want %v", tt.q, got, tt.bare)
			}
			if tt.q == "" {
				return
			}
			f, err := logs.ParseQuery(tt.q)
			if err != nil {
				t.Fatalf("ParseQuery(%q): %v", tt.q, err)
			}
			if got := f.Match(&alice); got != tt.matchesA {
				t.Errorf("%q matches alice's event: %v, want %v", tt.q, got, tt.matchesA)
			}
		})
	}

	h := consoleLogsHarness(t)
	browser := h.browser()
	h.consoleSignIn(browser)
	_, body := get(t, browser, h.srv.URL+"/console/logs?q=nosuchword")
	if !strings.Contains(body, `id="logs-bare-hint"`) || !strings.Contains(body, "<code>user_name:alice*</code>") {
		t.Errorf("a bare word that matched nothing: no hint:\n%s", body)
	}
	if _, body := get(t, browser, h.srv.URL+"/console/logs?q=type:nosuch"); strings.Contains(body, `id="logs-bare-hint"`) {
		t.Errorf("a field term that matched nothing shows the bare-word hint")
	}
}
