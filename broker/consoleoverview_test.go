package broker

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpop-broker/dpop-broker/config"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// TestConsoleOverviewChartsTheLoginsJustMade: after a DPoP login through corp and a callback
// with a state nobody issued, the Overview (the console's landing page for an operator who
// may read the logs) counts both, charts them as SVG under the console's CSP (no inline style
// or script), names the failure's code and corp, and shows no code or token; the week and
// day views render too, an unknown period is a 400.
func TestConsoleOverviewChartsTheLoginsJustMade(t *testing.T) {
	h := dpopConsoleHarness(t)
	q := h.login()
	resp, _ := get(t, h.browser(), h.srv.URL+"/login/callback?code=x&state=nobody-issued-this")
	if resp.StatusCode < 400 {
		t.Fatalf("a callback with an unknown state answered %d", resp.StatusCode)
	}
	browser := h.browser()
	body := consoleTokenSignIn(t, browser, h.srv.URL)
	for _, want := range []string{
		"Logins per minute by result", "Failures by error code", "DPoP nonce retries per minute",
		"Success rate and DPoP-bound share per connection", "Upstream code exchange latency per connection (p50, p95)",
		`<span class="num">1</span> logins succeeded`, `<span class="num bad">1</span> failed`,
		"invalid_state", `<strong><a href="/console/connections/` + config.DeriveConnectionID("corp") + `">corp</a></strong>`, `role="img"`, `aria-current="page">Last hour`,
		`class="spark"><span class="muted">none</span>`, // corp: no failure, no downgrade
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the overview lacks %q", want)
		}
	}
	if !regexp.MustCompile(`<rect [^>]*class="s"><title>[0-9:]+: 1 succeeded</title>`).MatchString(body) ||
		!regexp.MustCompile(`<rect [^>]*class="f"><title>[0-9:]+: 1 failed</title>`).MatchString(body) {
		t.Error("the logins chart has no bar for the success and the failure")
	}
	for _, banned := range []string{" style=", "<style", "<script>", q.Get("code")} {
		if strings.Contains(body, banned) {
			t.Errorf("the overview contains %q", banned)
		}
	}
	for _, span := range []string{"day", "week"} {
		resp, body := get(t, browser, h.srv.URL+"/console/?span="+span)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<span class="num">1</span> logins succeeded`) {
			t.Errorf("span %s: %d\n%s", span, resp.StatusCode, body)
		}
	}
	if resp, body := get(t, browser, h.srv.URL+"/console/?span=year"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Unknown period") {
		t.Errorf("span year: %d\n%s", resp.StatusCode, body)
	}
}

// TestConsoleOverviewNeedsTheLogsPermission: an operator whose token may not read the logs
// gets the list of sections instead of the charts.
func TestConsoleOverviewNeedsTheLogsPermission(t *testing.T) {
	h := consoleHarness(t, nil) // its token has read:connections only
	body := consoleTokenSignIn(t, h.browser(), h.srv.URL)
	if strings.Contains(body, "Logins per minute") || !strings.Contains(body, "Choose a section") {
		t.Errorf("an operator without read:logs sees:\n%s", body)
	}
}

// TestConsoleOverviewPutsAJumpingConnectionOnTop: a connection whose failures jumped in the
// last part of the hour is named in a "Needs a look" box above the charts and its row is
// marked, a steady one is not.
func TestConsoleOverviewPutsAJumpingConnectionOnTop(t *testing.T) {
	sp, _ := spanNamed("hour")
	from := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	var bs []sessions.TallyBucket
	for i := range 60 {
		c := map[string]int64{"login:s": 2, "c:steady:s": 1, "c:breaking:s": 1}
		if i >= 55 {
			c["c:breaking:f"], c["login:f"], c["err:upstream_error"] = 3, 3, 3
		}
		bs = append(bs, sessions.TallyBucket{Start: from.Add(time.Duration(i) * time.Minute), Counts: c})
	}
	s := &Server{}
	var buf bytes.Buffer
	v := &consoleView{Title: "Overview", Data: s.overviewPage(summarize(sp, from, from.Add(time.Hour), bs), from.Add(time.Hour))}
	if err := consolePages["overview"].ExecuteTemplate(&buf, "layout.html", v); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	box, _, _ := strings.Cut(page, `<div class="charts">`)
	if !strings.Contains(box, "Needs a look") || !strings.Contains(box, "<strong>breaking</strong>") || strings.Contains(box, "steady") {
		t.Errorf("the box above the charts:\n%s", box)
	}
	if !regexp.MustCompile(`<tr class="alert">\s*<td data-label="Connection"><strong>breaking</strong>`).MatchString(page) {
		t.Error("breaking's row is not marked")
	}
}

func TestOverviewTimeAxisLabelsCarryTheDateOverADay(t *testing.T) {
	at := time.Date(2026, 12, 1, 23, 45, 0, 0, time.UTC)
	tests := []struct {
		span, want string
	}{
		{span: "hour", want: "23:45"},
		{span: "day", want: "Dec 1 23:45"},
		{span: "week", want: "Tue 23:45"},
	}
	for _, tt := range tests {
		sp, ok := spanNamed(tt.span)
		if !ok {
			t.Fatalf("no span %q", tt.span)
		}
		if got := pointLabel(sp, at); got != tt.want {
			t.Errorf("the %s view labels %v as %q, want %q", tt.span, at, got, tt.want)
		}
	}
}

func TestOverviewCountAxesHaveWholeNumberTicks(t *testing.T) {
	sp, _ := spanNamed("hour")
	from := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		logins int64
		want   []string
	}{
		{name: "one login: 0 and 1, no 0.5", logins: 1, want: []string{"0", "1"}},
		{name: "three logins: 0 and 5, no 2.5", logins: 3, want: []string{"0", "5"}},
		{name: "eight logins: 0, 5 and 10", logins: 8, want: []string{"0", "5", "10"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := summarize(sp, from, from.Add(time.Hour), []sessions.TallyBucket{{Start: from, Counts: map[string]int64{"login:s": tt.logins}}})
			c := (&Server{}).overviewPage(o, from.Add(time.Hour)).Logins
			var ticks []string
			for _, tx := range c.Texts {
				if tx.Anchor == "end" && tx.X < plotL {
					ticks = append(ticks, tx.Text)
				}
			}
			if strings.Join(ticks, " ") != strings.Join(tt.want, " ") {
				t.Errorf("y ticks %q, want %q", ticks, tt.want)
			}
		})
	}
}

func TestOverviewPeriodEndsNowAndSaysTheLastPointIsRunning(t *testing.T) {
	sp, _ := spanNamed("week")
	now := time.Date(2026, 12, 2, 17, 17, 0, 0, time.UTC)
	from := time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	p := (&Server{}).overviewPage(summarize(sp, from, time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC), nil), now)
	if p.To != "2026-12-02 17:17 UTC" || p.LastPointEnds != "18:00" {
		t.Errorf("period to %q, last point until %q; want now (17:17) and 18:00", p.To, p.LastPointEnds)
	}
	var buf bytes.Buffer
	if err := consolePages["overview"].ExecuteTemplate(&buf, "layout.html", &consoleView{Title: "Overview", Data: p}); err != nil {
		t.Fatal(err)
	}
	if want := "to now (2026-12-02 17:17 UTC), one point per hour; the last point is still running (until 18:00)."; !strings.Contains(buf.String(), want) {
		t.Errorf("the page does not say %q:\n%s", want, buf.String())
	}
}
