package logs

import (
	"strings"
	"testing"
)

func TestTroubleshootingEntriesAreCompleteAndFitOneTableRow(t *testing.T) {
	seen := map[string]bool{}
	for i, e := range TroubleshootingEntries() {
		if len(e.Codes) == 0 || e.Happened == "" || e.ToDo == "" {
			t.Errorf("entry %d %v: codes, what happened and what to do are all needed", i, e.Codes)
		}
		for _, c := range e.Codes {
			if seen[c] {
				t.Errorf("code %q has two entries", c)
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
