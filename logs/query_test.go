package logs

import (
	"errors"
	"strings"
	"testing"
)

// queryEvent is the event the parser table matches against.
func queryEvent() *Event {
	return &Event{
		LogID:        "00000001705314600000000000000001000000000000000000000042",
		Date:         "2024-01-15T10:30:00.000Z",
		Type:         "f",
		Description:  "Failed Login",
		Connection:   "corp oidc",
		ConnectionID: "con_abc123",
		Strategy:     "oidc",
		StrategyType: "enterprise",
		ClientID:     "app1",
		ClientName:   "App One",
		IP:           "::1",
		UserAgent:    "Mozilla/5.0",
		UserID:       "oidc|corp|u1",
		UserName:     "u1@example.com",
		Hostname:     "broker.example.com",
		Details: map[string]any{
			"error":                       "access_denied",
			"dpop_returned_from_upstream": false,
			"dpop_nonce_retries":          float64(2),
			"upstream":                    map[string]any{"status": "FAILED"},
			"list":                        []any{"a"},
		},
	}
}

func TestParseQueryMatch(t *testing.T) {
	ev := queryEvent()
	tests := []struct {
		name, q string
		want    bool
	}{
		{name: "empty q matches all", q: "", want: true},
		{name: "type", q: "type:f", want: true},
		{name: "type other", q: "type:s", want: false},
		{name: "type is not a prefix match", q: "type:fe", want: false},
		{name: "connection quoted", q: `connection:"corp oidc"`, want: true},
		{name: "connection partial quoted is exact", q: `connection:"corp"`, want: false},
		{name: "connection_id", q: "connection_id:con_abc123", want: true},
		{name: "client_id", q: "client_id:app1", want: true},
		{name: "client_id other", q: "client_id:app2", want: false},
		{name: "client_name", q: `client_name:"App One"`, want: true},
		{name: "case-sensitive", q: `client_name:"app one"`, want: false},
		{name: "user_id with pipes", q: "user_id:oidc|corp|u1", want: true},
		{name: "user_name", q: "user_name:u1@example.com", want: true},
		{name: "ip with colons", q: "ip:::1", want: true},
		{name: "log_id", q: "log_id:00000001705314600000000000000001000000000000000000000042", want: true},
		{name: "description", q: `description:"Failed Login"`, want: true},
		{name: "strategy", q: "strategy:oidc", want: true},
		{name: "strategy_type", q: "strategy_type:enterprise", want: true},
		{name: "hostname", q: "hostname:broker.example.com", want: true},
		{name: "user_agent", q: `user_agent:"Mozilla/5.0"`, want: true},
		{name: "date prefix is the day", q: "date:2024-01-15", want: true},
		{name: "date other day", q: "date:2024-01-16", want: false},
		{name: "details.error", q: "details.error:access_denied", want: true},
		{name: "details.error other", q: "details.error:login_required", want: false},
		{name: "details bool", q: "details.dpop_returned_from_upstream:false", want: true},
		{name: "details number", q: "details.dpop_nonce_retries:2", want: true},
		{name: "details nested", q: "details.upstream.status:FAILED", want: true},
		{name: "details missing", q: "details.nope:x", want: false},
		{name: "details array not matchable", q: "details.list:a", want: false},
		{name: "AND whitespace", q: "type:f client_id:app1", want: true},
		{name: "AND explicit", q: "type:f AND client_id:app1 AND details.error:access_denied", want: true},
		{name: "AND one fails", q: "type:f AND client_id:other", want: false},
		{name: "&& is AND", q: "type:f && client_id:app1", want: true},
		{name: "prefix wildcard", q: "client_id:app*", want: true},
		{name: "prefix wildcard miss", q: "client_id:web*", want: false},
		{name: "suffix wildcard", q: "user_name:*example.com", want: true},
		{name: "present wildcard", q: "user_id:*", want: true},
		{name: "present wildcard empty field", q: "details.nope:*", want: false},
		{name: "quoted star is literal", q: `client_id:"app*"`, want: false},
		{name: "escaped space", q: `connection:corp\ oidc`, want: true},
		{name: "escaped quote in quotes", q: `description:"Failed \"Login\""`, want: false},
		{name: "bare term searches type", q: "f", want: true},
		{name: "bare term searches client_name", q: `"App One"`, want: true},
		{name: "bare term not in client_id", q: "app1", want: false},
		{name: "range inclusive date", q: "date:[2024-01-01 TO 2024-01-15]", want: true},
		{name: "range exclusive date end", q: "date:[2024-01-01 TO 2024-01-15}", want: false},
		{name: "range open end", q: "date:{2024-01-14 TO *]", want: true},
		{name: "range open start", q: "date:[* TO 2024-01-14]", want: false},
		{name: "range on strings", q: "client_id:[app0 TO app2]", want: true},
		{name: "range quoted bounds", q: `user_name:["u0" TO "u2"]`, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseQuery(tc.q)
			if err != nil {
				t.Fatalf("ParseQuery(%q): %v", tc.q, err)
			}
			if got := f.Match(ev); got != tc.want {
				t.Fatalf("ParseQuery(%q).Match = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestParseQueryErrors(t *testing.T) {
	tests := []struct {
		name, q, want string // want: substring of the error
	}{
		{name: "unknown field named", q: "colour:red", want: `unknown field "colour"`},
		{name: "organization_id not stored", q: "organization_id:org_1", want: `unknown field "organization_id"`},
		{name: "empty details key", q: "details.:x", want: `unknown field "details."`},
		{name: "empty details path element", q: "details.a..b:x", want: "empty path element"},
		{name: "bare details", q: "details:x", want: `unknown field "details"`},
		{name: "missing value", q: "type: f", want: `no value for field "type"`},
		{name: "missing value at end", q: "type:", want: `no value for field "type"`},
		{name: "unterminated quote", q: `connection:"corp`, want: "unterminated quoted value"},
		{name: "empty quotes", q: `connection:""`, want: "empty quoted value"},
		{name: "junk after quote", q: `connection:"a"b`, want: "after a value"},
		{name: "OR unsupported", q: "type:s OR type:f", want: "operator OR"},
		{name: "NOT unsupported", q: "NOT type:s", want: "operator NOT"},
		{name: "negation unsupported", q: "-type:s", want: "not supported"},
		{name: "parentheses unsupported", q: "(type:s)", want: "parentheses"},
		{name: "leading AND", q: "AND type:s", want: "AND without a term before"},
		{name: "trailing AND", q: "type:s AND", want: "AND without a term after"},
		{name: "double AND", q: "type:s AND AND type:f", want: "AND without a term before"},
		{name: "? wildcard", q: "type:s?", want: "? wildcard"},
		{name: "inner wildcard", q: "client_id:a*p", want: "start or end"},
		{name: "short suffix", q: "user_name:*om", want: "at least 3"},
		{name: "both-ends wildcard", q: "user_name:*exam*", want: "one end only"},
		{name: "range without TO", q: "date:[a b]", want: "lo TO hi"},
		{name: "unterminated range", q: "date:[a TO b", want: "unterminated range"},
		{name: "wildcard inside range", q: "date:[a* TO b]", want: "inside a range"},
		{name: "dangling backslash", q: `type:s\`, want: "dangling backslash"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseQuery(tc.q)
			if err == nil {
				t.Fatalf("ParseQuery(%q) succeeded", tc.q)
			}
			if !errors.Is(err, ErrInvalidQuery) {
				t.Fatalf("ParseQuery(%q) = %v, not ErrInvalidQuery", tc.q, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseQuery(%q) = %q, want it to mention %q", tc.q, err, tc.want)
			}
		})
	}
	t.Run("over-long q", func(t *testing.T) {
		_, err := ParseQuery("type:" + strings.Repeat("x", MaxQueryLen))
		if !errors.Is(err, ErrQueryTooLong) || !errors.Is(err, ErrInvalidQuery) {
			t.Fatalf("over-long q = %v, want ErrQueryTooLong", err)
		}
	})
	t.Run("too many terms", func(t *testing.T) {
		if _, err := ParseQuery(strings.Repeat("type:s ", maxTerms+1)); !errors.Is(err, ErrInvalidQuery) {
			t.Fatalf("%d terms = %v, want ErrInvalidQuery", maxTerms+1, err)
		}
	})
}

func TestQuoteTerm(t *testing.T) {
	ev := queryEvent()
	ev.ClientName = `He said "hi" \o/`
	for _, v := range []string{ev.ClientName, "App One", "x*", "a OR b"} {
		q := QuoteTerm("client_name", v)
		f, err := ParseQuery(q)
		if err != nil {
			t.Fatalf("ParseQuery(QuoteTerm(%q) = %q): %v", v, q, err)
		}
		if got := f.Match(ev); got != (v == ev.ClientName) {
			t.Fatalf("QuoteTerm(%q) = %q matches %v", v, q, got)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"type:f", `connection:"a b" AND details.error:x*`, "date:[a TO *}", `\`} {
		f.Add(s)
	}
	ev := queryEvent()
	f.Fuzz(func(t *testing.T, q string) {
		flt, err := ParseQuery(q)
		if err != nil {
			if !errors.Is(err, ErrInvalidQuery) {
				t.Fatalf("ParseQuery(%q) error %v does not wrap ErrInvalidQuery", q, err)
			}
			return
		}
		flt.Match(ev)
	})
}
