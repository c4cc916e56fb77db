package logs

import (
	"strings"
	"testing"
)

func TestTroubleshootingEntriesAreCompleteAndFitOneTableRow(t *testing.T) {
	for _, topic := range []TroubleshootingTopic{TopicLogin, TopicToken, TopicAPI} {
		seen := map[string]bool{}
		entries := TopicEntries(topic)
		if len(entries) == 0 {
			t.Errorf("topic %d has no entries", topic)
		}
		for i, e := range entries {
			if len(e.Codes) == 0 || e.Happened == "" || e.ToDo == "" {
				t.Errorf("topic %d entry %d %v: codes, what happened and what to do are all needed", topic, i, e.Codes)
			}
			for _, c := range e.Codes {
				if seen[c] {
					t.Errorf("topic %d: code %q has two entries", topic, c)
				}
				seen[c] = true
			}
			for _, text := range []string{e.Also, e.Happened, e.ToDo} {
				if strings.ContainsAny(text, "|\n<>") {
					t.Errorf("entry %v: %q has a |, a line break or HTML, which would break the README's table", e.Codes, text)
				}
				if strings.Count(text, "`")%2 != 0 {
					t.Errorf("entry %v: %q has an unclosed code span", e.Codes, text)
				}
			}
		}
	}
}

func TestTroubleshootingForPicksTheEntryByTheEventsTypeAndCode(t *testing.T) {
	tests := []struct {
		name      string
		ev        Event
		wantCode  string
		wantEntry string // first code of the entry found, "" for none
		wantExact bool
	}{
		{name: "failed login", ev: Event{Type: TypeFailedLogin, Details: map[string]any{"error": "invalid_state"}},
			wantCode: "invalid_state", wantEntry: "invalid_state", wantExact: true},
		{name: "failed silent login with an IdP's code", ev: Event{Type: TypeFailedSilentAuth, Details: map[string]any{"error": "consent_required"}},
			wantCode: "consent_required", wantEntry: "access_denied"},
		{name: "same code, token topic", ev: Event{Type: TypeFailedExchange, Details: map[string]any{"error": "access_denied"}},
			wantCode: "access_denied", wantEntry: "access_denied", wantExact: true},
		{name: "token code unknown", ev: Event{Type: TypeFailedRefresh, Details: map[string]any{"error": "consent_required"}},
			wantCode: "consent_required"},
		{name: "revocation", ev: Event{Type: TypeFailedRevocation, Details: map[string]any{"error": "unsupported_token_type"}},
			wantCode: "unsupported_token_type", wantEntry: "unsupported_token_type", wantExact: true},
		{name: "management refusal", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"error": map[string]any{"errorCode": "inexistent_client"}}},
			wantCode: "inexistent_client", wantEntry: "inexistent_connection", wantExact: true},
		{name: "management refusal with a string", ev: Event{Type: TypeFailedAPI, Details: map[string]any{"error": "invalid_body"}}},
		{name: "login with an object", ev: Event{Type: TypeFailedLogin, Details: map[string]any{"error": map[string]any{"errorCode": "invalid_body"}}}},
		{name: "a type no entry explains", ev: Event{Type: TypeFailedLogout, Details: map[string]any{"error": "invalid_request"}}, wantCode: "invalid_request"},
		{name: "no details", ev: Event{Type: TypeFailedExchange}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, code, exact, ok := TroubleshootingFor(&tt.ev)
			if code != tt.wantCode || exact != tt.wantExact || ok != (tt.wantEntry != "") {
				t.Fatalf("TroubleshootingFor = code %q exact %v ok %v, want %q %v %v", code, exact, ok, tt.wantCode, tt.wantExact, tt.wantEntry != "")
			}
			if ok && e.Codes[0] != tt.wantEntry {
				t.Errorf("entry %v, want the one for %q", e.Codes, tt.wantEntry)
			}
		})
	}
}

func TestLookupTroubleshootingFindsEachCodeAndFallsBackToTheIdPsRefusal(t *testing.T) {
	tests := []struct {
		name      string
		code      string
		wantCode  string // first code of the entry found
		wantExact bool
		wantOK    bool
	}{
		{name: "a code of its own", code: "dpop_not_supported", wantCode: "dpop_not_supported", wantExact: true, wantOK: true},
		{name: "one of several codes of an entry", code: "invalid_redirect_uri", wantCode: "invalid_client", wantExact: true, wantOK: true},
		{name: "an IdP's own error= code", code: "temporarily_unavailable", wantCode: "access_denied", wantOK: true},
		{name: "no code", code: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, exact, ok := LookupTroubleshooting(tt.code)
			if ok != tt.wantOK || exact != tt.wantExact {
				t.Fatalf("LookupTroubleshooting(%q): exact %v ok %v, want %v %v", tt.code, exact, ok, tt.wantExact, tt.wantOK)
			}
			if ok && (len(e.Codes) == 0 || e.Codes[0] != tt.wantCode) {
				t.Errorf("LookupTroubleshooting(%q) = entry %v, want the one for %q", tt.code, e.Codes, tt.wantCode)
			}
		})
	}
}

func TestTroubleshootingEntriesCannotBeChangedByTheirReader(t *testing.T) {
	e := TroubleshootingEntries()
	e[0].Codes[0] = "changed"
	if got, _, _ := LookupTroubleshooting("changed"); len(got.Codes) > 0 && got.Codes[0] == "changed" {
		t.Fatal("a caller changed the shared entries")
	}
}

func TestLoginNotesNameABearerDowngradeAndADroppedNonce(t *testing.T) {
	tests := []struct {
		name    string
		details map[string]any
		want    []string // Fact of each note
	}{
		{name: "DPoP-bound login", details: map[string]any{"dpop_signing_alg": "ES256", "dpop_returned_from_upstream": true}},
		{name: "connection without DPoP answered Bearer", details: map[string]any{"dpop_returned_from_upstream": false}},
		{name: "Bearer downgrade", details: map[string]any{"dpop_signing_alg": "ES256", "dpop_returned_from_upstream": false},
			want: []string{"dpop_returned_from_upstream: false"}},
		{name: "dropped nonce", details: map[string]any{"dpop_signing_alg": "ES256", "dpop_returned_from_upstream": true, "dpop_nonce_dropped": true},
			want: []string{"dpop_nonce_dropped: true"}},
		{name: "no details"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notes := LoginNotes(tt.details)
			var got []string
			for _, n := range notes {
				got = append(got, n.Fact)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("LoginNotes(%v) = %v, want %v", tt.details, got, tt.want)
			}
		})
	}
}
