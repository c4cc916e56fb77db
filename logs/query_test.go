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
		{"A4 empty q matches all", "", true},
		{"A4 type", "type:f", true},
		{"A4 type other", "type:s", false},
		{"A4 type is not a prefix match", "type:fe", false},
		{"A4 connection quoted", `connection:"corp oidc"`, true},
		{"A4 connection partial quoted is exact", `connection:"corp"`, false},
		{"A4 connection_id", "connection_id:con_abc123", true},
		{"A4 client_id", "client_id:app1", true},
		{"A4 client_id other", "client_id:app2", false},
		{"A4 client_name", `client_name:"App One"`, true},
		{"A4 case-sensitive", `client_name:"app one"`, false},
		{"A4 user_id with pipes", "user_id:oidc|corp|u1", true},
		{"A4 user_name", "user_name:u1@example.com", true},
		{"A4 ip with colons", "ip:::1", true},
		{"A4 log_id", "log_id:00000001705314600000000000000001000000000000000000000042", true},
		{"A4 description", `description:"Failed Login"`, true},
		{"A4 strategy", "strategy:oidc", true},
		{"A4 strategy_type", "strategy_type:enterprise", true},
		{"A4 hostname", "hostname:broker.example.com", true},
		{"A4 user_agent", `user_agent:"Mozilla/5.0"`, true},
		{"A4 date prefix is the day", "date:2024-01-15", true},
		{"A4 date other day", "date:2024-01-16", false},
		{"A4 details.error", "details.error:access_denied", true},
		{"A4 details.error other", "details.error:login_required", false},
		{"A4 details bool", "details.dpop_returned_from_upstream:false", true},
		{"A4 details number", "details.dpop_nonce_retries:2", true},
		{"A4 details nested", "details.upstream.status:FAILED", true},
		{"A4 details missing", "details.nope:x", false},
		{"A4 details array not matchable", "details.list:a", false},
		{"A4 AND whitespace", "type:f client_id:app1", true},
		{"A4 AND explicit", "type:f AND client_id:app1 AND details.error:access_denied", true},
		{"A4 AND one fails", "type:f AND client_id:other", false},
		{"A4 && is AND", "type:f && client_id:app1", true},
		{"A4 prefix wildcard", "client_id:app*", true},
		{"A4 prefix wildcard miss", "client_id:web*", false},
		{"A4 suffix wildcard", "user_name:*example.com", true},
		{"A4 present wildcard", "user_id:*", true},
		{"A4 present wildcard empty field", "details.nope:*", false},
		{"A4 quoted star is literal", `client_id:"app*"`, false},
		{"A4 escaped space", `connection:corp\ oidc`, true},
		{"A4 escaped quote in quotes", `description:"Failed \"Login\""`, false},
		{"A4 bare term searches type", "f", true},
		{"A4 bare term searches client_name", `"App One"`, true},
		{"A4 bare term not in client_id", "app1", false},
		{"A4 range inclusive date", "date:[2024-01-01 TO 2024-01-15]", true},
		{"A4 range exclusive date end", "date:[2024-01-01 TO 2024-01-15}", false},
		{"A4 range open end", "date:{2024-01-14 TO *]", true},
		{"A4 range open start", "date:[* TO 2024-01-14]", false},
		{"A4 range on strings", "client_id:[app0 TO app2]", true},
		{"A4 range quoted bounds", `user_name:["u0" TO "u2"]`, true},
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
		{"A4 unknown field named", "colour:red", `unknown field "colour"`},
		{"A4 organization_id not stored", "organization_id:org_1", `unknown field "organization_id"`},
		{"A4 empty details key", "details.:x", `unknown field "details."`},
		{"A4 empty details path element", "details.a..b:x", "empty path element"},
		{"A4 bare details", "details:x", `unknown field "details"`},
		{"A4 missing value", "type: f", `no value for field "type"`},
		{"A4 missing value at end", "type:", `no value for field "type"`},
		{"A4 unterminated quote", `connection:"corp`, "unterminated quoted value"},
		{"A4 empty quotes", `connection:""`, "empty quoted value"},
		{"A4 junk after quote", `connection:"a"b`, "after a value"},
		{"A4 OR unsupported", "type:s OR type:f", "operator OR"},
		{"A4 NOT unsupported", "NOT type:s", "operator NOT"},
		{"A4 negation unsupported", "-type:s", "not supported"},
		{"A4 parentheses unsupported", "(type:s)", "parentheses"},
		{"A4 leading AND", "AND type:s", "AND without a term before"},
		{"A4 trailing AND", "type:s AND", "AND without a term after"},
		{"A4 double AND", "type:s AND AND type:f", "AND without a term before"},
		{"A4 ? wildcard", "type:s?", "? wildcard"},
		{"A4 inner wildcard", "client_id:a*p", "start or end"},
		{"A4 short suffix", "user_name:*om", "at least 3"},
		{"A4 both-ends wildcard", "user_name:*exam*", "one end only"},
		{"A4 range without TO", "date:[a b]", "lo TO hi"},
		{"A4 unterminated range", "date:[a TO b", "unterminated range"},
		{"A4 wildcard inside range", "date:[a* TO b]", "inside a range"},
		{"A4 dangling backslash", `type:s\`, "dangling backslash"},
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
	t.Run("A4 over-long q", func(t *testing.T) {
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
