package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/logs"
)

// logsOptions are the flags of `broker logs`.
type logsOptions struct {
	url, token                       string
	typ, connection, client, errCode string
	q                                string
	limit                            int
	json, follow                     bool
}

// Follow polling: the interval between checkpoint reads, the page size, and the back-off
// ceiling after a transient failure.
const (
	followPoll    = 250 * time.Millisecond
	followTake    = logs.MaxTake
	followBackoff = 5 * time.Second
	maxLogsLimit  = logs.MaxReachable
)

// cmdLogs implements `broker logs`: a query or a live tail of GET /api/v2/logs.
func cmdLogs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("logs", stderr)
	var o logsOptions
	fs.StringVar(&o.url, "url", envOr("BROKER_URL", "http://127.0.0.1:8080"), "broker base URL (env BROKER_URL)")
	// The token's default is read after parsing, never given to the flag package: its usage
	// text (--help, any flag mistake) prints every flag's default.
	fs.StringVar(&o.token, "token", "", "management API token with read:logs (default $BROKER_MGMT_TOKEN)")
	fs.StringVar(&o.typ, "type", "", "event type (s, f, seacft, feacft, sapi, fapi, …)")
	fs.StringVar(&o.connection, "connection", "", "connection name")
	fs.StringVar(&o.client, "client", "", "client_id")
	fs.StringVar(&o.errCode, "error", "", "details.error code (e.g. use_dpop_nonce)")
	fs.StringVar(&o.q, "q", "", "raw query, AND-combined with the flags above (e.g. 'details.dpop_nonce_used:true')")
	fs.IntVar(&o.limit, "limit", 20, fmt.Sprintf("number of recent events to show (at most %d; with --follow, 0 shows only new events)", maxLogsLimit))
	fs.BoolVar(&o.json, "json", false, "print one JSON object per line instead of a table")
	fs.BoolVar(&o.follow, "follow", false, "keep printing new events until interrupted")
	if err := fs.Parse(args); err != nil {
		return flagExit(fs, err, stdout)
	}
	if o.token == "" {
		o.token = os.Getenv("BROKER_MGMT_TOKEN")
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "broker logs: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if o.typ != "" && logs.Description(o.typ) == "" {
		fmt.Fprintf(stderr, "broker logs: --type %q is not an event type the broker writes (README, \"Glossary\": s, f, seacft, fapi, …)\n", o.typ)
		return 2
	}
	if o.limit < 0 || o.limit > maxLogsLimit {
		fmt.Fprintf(stderr, "broker logs: --limit must be between 0 and %d\n", maxLogsLimit)
		return 2
	}
	c, err := newLogsClient(o)
	if err != nil {
		fmt.Fprintf(stderr, "broker logs: %v\n", err)
		return 2
	}
	c.warn = stderr
	if !flagSet(fs, "url") { // say which broker answers (stderr: stdout stays the events)
		from := "the default; set --url or BROKER_URL to read another"
		if os.Getenv("BROKER_URL") != "" {
			from = "from BROKER_URL"
		}
		fmt.Fprintf(stderr, "broker logs: reading %s (%s)\n", c.base.Redacted(), from)
	}
	p := &eventPrinter{w: stdout, json: o.json}
	if err := c.run(ctx, p); err != nil {
		if ctx.Err() != nil && o.follow { // interrupted: the normal end of a tail
			return 0
		}
		fmt.Fprintf(stderr, "broker logs: %v\n", err)
		return 1
	}
	return 0
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// logsClient reads the management API's log endpoint.
type logsClient struct {
	o      logsOptions
	base   *url.URL // broker base URL, path without trailing slash
	q      string   // the query built from the flags
	filter logs.Filter
	http   *http.Client
	poll   time.Duration
	warn   io.Writer // transient follow errors; nil = discard
}

func newLogsClient(o logsOptions) (*logsClient, error) {
	u, err := url.Parse(strings.TrimSuffix(o.url, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q must be an http(s) URL such as http://127.0.0.1:8080", o.url)
	}
	u.RawQuery, u.Fragment = "", ""
	q := buildLogsQuery(o)
	f, err := logs.ParseQuery(q) // checked here too: follow mode filters client-side
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", q, err)
	}
	return &logsClient{o: o, base: u, q: q, filter: f, http: &http.Client{Timeout: 15 * time.Second}, poll: followPoll}, nil
}

// buildLogsQuery AND-combines the flag filters and the raw --q.
func buildLogsQuery(o logsOptions) string {
	var terms []string
	for _, t := range []struct{ field, value string }{
		{"type", o.typ}, {"connection", o.connection}, {"client_id", o.client}, {"details.error", o.errCode},
	} {
		if t.value != "" {
			terms = append(terms, t.field+":"+quoteTerm(t.value))
		}
	}
	if q := strings.TrimSpace(o.q); q != "" {
		terms = append(terms, q)
	}
	return strings.Join(terms, " ")
}

// quoteTerm makes v an exact query value ("…" with \" and \\ escaped).
func quoteTerm(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

func (c *logsClient) run(ctx context.Context, p *eventPrinter) error {
	if !c.o.follow {
		evs, err := c.recent(ctx, c.o.limit, "")
		if err != nil {
			return err
		}
		if len(evs) == 0 && c.warn != nil { // say so on stderr; stdout stays empty for scripts
			fmt.Fprintln(c.warn, "broker logs: no events match")
		}
		return p.print(evs)
	}
	// The checkpoint is the newest event of any kind at start; history up to it comes from
	// search mode (filtered by the server), everything after it from checkpoint paging
	// (filtered here, as checkpoint mode ignores q): no gap, no duplicate.
	newest, err := c.search(ctx, url.Values{"sort": {"date:-1"}, "per_page": {"1"}})
	if err != nil {
		return err
	}
	cursor := ""
	if len(newest) > 0 {
		cursor = newest[0].ev.LogID
	}
	if c.o.limit > 0 && cursor != "" {
		evs, err := c.recent(ctx, c.o.limit, cursor)
		if err != nil {
			return err
		}
		if err := p.print(evs); err != nil {
			return err
		}
	}
	return c.follow(ctx, cursor, p)
}

// recent returns up to limit events matching the query, oldest first; when upTo is set only
// those with a log_id not above it.
func (c *logsClient) recent(ctx context.Context, limit int, upTo string) ([]apiEvent, error) {
	var out []apiEvent
	perPage := min(limit, logs.MaxPerPage)
	for page := 0; len(out) < limit && page*perPage < maxLogsLimit; page++ {
		v := url.Values{"sort": {"date:-1"}, "page": {strconv.Itoa(page)}, "per_page": {strconv.Itoa(perPage)}}
		if c.q != "" {
			v.Set("q", c.q)
		}
		evs, err := c.search(ctx, v)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if (upTo == "" || e.ev.LogID <= upTo) && len(out) < limit && !containsID(out, e.ev.LogID) {
				out = append(out, e)
			}
		}
		if len(evs) < perPage {
			break
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ev.LogID < out[j].ev.LogID })
	return out, nil
}

func containsID(evs []apiEvent, id string) bool {
	for _, e := range evs {
		if e.ev.LogID == id {
			return true
		}
	}
	return false
}

// follow polls checkpoint pages after cursor until ctx ends. Transient failures (network,
// 5xx, 429) are reported once and retried with back-off; other API errors end the tail.
func (c *logsClient) follow(ctx context.Context, cursor string, p *eventPrinter) error {
	wait, failing := time.Duration(0), false
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		v := url.Values{"take": {strconv.Itoa(followTake)}}
		if cursor != "" {
			v.Set("from", cursor)
		}
		evs, err := c.search(ctx, v)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ae *apiError
			if errors.As(err, &ae) && ae.Status != http.StatusTooManyRequests && ae.Status < 500 {
				return err
			}
			if !failing && c.warn != nil {
				fmt.Fprintf(c.warn, "broker logs: %v (retrying)\n", err)
			}
			failing, wait = true, min(max(2*wait, c.poll), followBackoff)
			continue
		}
		failing = false
		var match []apiEvent
		for _, e := range evs {
			if e.ev.LogID <= cursor && cursor != "" {
				continue // never print an event twice, whatever the server sends
			}
			cursor = e.ev.LogID
			if c.filter.Match(&e.ev) {
				match = append(match, e)
			}
		}
		if err := p.print(match); err != nil {
			return err
		}
		wait = c.poll
		if len(evs) == followTake {
			wait = 0 // more are waiting
		}
	}
}

// apiEvent is one event as the API sent it (raw, for --json) and decoded.
type apiEvent struct {
	raw json.RawMessage
	ev  logs.Event
}

// apiError is the management API's error body.
type apiError struct {
	Status    int    `json:"statusCode"`
	Err       string `json:"error"`
	Message   string `json:"message"`
	ErrorCode string `json:"errorCode"`
	Hint      string `json:"-"` // what to do, for the CLI's message
}

func (e *apiError) Error() string {
	code := e.ErrorCode
	if code == "" {
		code = e.Err
	}
	if code == "" {
		code = http.StatusText(e.Status)
	}
	msg := fmt.Sprintf("%d %s", e.Status, code)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// goNotFoundBody is the body of net/http's 404, which the broker's public listener answers
// for /api/v2 when admin_listen is set.
const goNotFoundBody = "404 page not found\n"

// servesBrokerDiscovery reports whether the base URL serves the broker's discovery document
// (an issuer, and the broker's token endpoint path below the base URL): there, a plain 404 for
// /api/v2 means the management API is on admin_listen.
func (c *logsClient) servesBrokerDiscovery(ctx context.Context) bool {
	u := *c.base
	u.Path += "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dpop-broker-cli")
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var doc struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&doc) != nil {
		return false
	}
	tok, err := url.Parse(doc.TokenEndpoint)
	return err == nil && doc.Issuer != "" && tok.Path == c.base.Path+"/oauth/token"
}

// search calls GET /api/v2/logs with params and decodes the array (or the include_totals
// object) of events.
func (c *logsClient) search(ctx context.Context, params url.Values) ([]apiEvent, error) {
	u := *c.base
	u.Path += "/api/v2/logs"
	u.RawQuery = params.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dpop-broker-cli")
	if c.o.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.o.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is named below
		}
		return nil, fmt.Errorf("GET %s: %w (is the broker running there? set BROKER_URL or --url)", u.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading the answer: %w", u.Redacted(), err)
	}
	if resp.StatusCode != http.StatusOK {
		ae := &apiError{}
		if json.Unmarshal(body, ae) != nil || (ae.Message == "" && ae.ErrorCode == "" && ae.Err == "") {
			// Not the management API's error shape: another server answered, or the broker's
			// public listener while admin_listen carries the management API.
			if resp.StatusCode == http.StatusNotFound && string(body) == goNotFoundBody && c.servesBrokerDiscovery(ctx) {
				return nil, fmt.Errorf("GET %s: %s from the broker's public listener, which does not serve the management API "+
					"(if this broker sets admin_listen, the management API is served there; point --url/BROKER_URL at it)",
					u.Redacted(), resp.Status)
			}
			return nil, fmt.Errorf("GET %s: %s from a server that is not dpop-broker's management API (is BROKER_URL or --url the broker's base URL?)",
				u.Redacted(), resp.Status)
		}
		ae.Status = resp.StatusCode
		if resp.StatusCode == http.StatusUnauthorized {
			ae.Hint = "set BROKER_MGMT_TOKEN or --token to a management token with read:logs"
		}
		return nil, ae
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		var wrapped struct {
			Logs []json.RawMessage `json:"logs"`
		}
		if err2 := json.Unmarshal(body, &wrapped); err2 != nil || wrapped.Logs == nil {
			return nil, fmt.Errorf("GET %s: the answer is not a list of events: %w", u.Redacted(), err)
		}
		raws = wrapped.Logs
	}
	out := make([]apiEvent, 0, len(raws))
	for _, r := range raws {
		var ev logs.Event
		if err := json.Unmarshal(r, &ev); err != nil {
			return nil, fmt.Errorf("GET %s: malformed event: %w", u.Redacted(), err)
		}
		var compact bytes.Buffer
		if json.Compact(&compact, r) == nil {
			r = compact.Bytes()
		}
		out = append(out, apiEvent{raw: r, ev: ev})
	}
	return out, nil
}

// eventPrinter writes events as JSON lines or as a table (header once).
type eventPrinter struct {
	w      io.Writer
	json   bool
	header bool
}

const tableFormat = "%-24s  %-6s  %-18s  %-32s  %-26s  %s\n"

func (p *eventPrinter) print(evs []apiEvent) error {
	var b strings.Builder
	for _, e := range evs {
		if p.json {
			b.Write(e.raw)
			b.WriteByte('\n')
			continue
		}
		if !p.header {
			fmt.Fprintf(&b, tableFormat, "DATE", "TYPE", "CONNECTION", "CLIENT", "USER", "ERROR / DPoP")
			p.header = true
		}
		ev := &e.ev
		user := ev.UserName
		if user == "" {
			user = ev.UserID
		}
		if user == "" {
			user = logs.Operator(ev) // a management API call or console action: who made it
		}
		// The type is never cut (it is what --type takes); a long one shifts its row.
		fmt.Fprintf(&b, tableFormat, cell(ev.Date, 24), cell(ev.Type, 64), cell(dash(ev.Connection), 18),
			cell(dash(ev.ClientID), 32), cell(dash(user), 26), summary(ev))
	}
	if b.Len() == 0 {
		return nil
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

// summary is the last column: the error code (and description) of a failure, else what
// DPoP did.
func summary(ev *logs.Event) string {
	d := ev.Details
	str := func(k string) string { s, _ := d[k].(string); return s }
	if e, ok := d["error"].(map[string]any); ok { // management API events (fapi)
		code, _ := e["errorCode"].(string)
		msg, _ := e["message"].(string)
		return cell(strings.TrimPrefix(code+": "+msg, ": "), 120)
	}
	if code := str("error"); code != "" {
		if desc := str("error_description"); desc != "" {
			return cell(code+": "+desc, 120)
		}
		return code
	}
	var parts []string
	if d["sso"] == true {
		parts = append(parts, "single sign-on (no upstream call)")
	}
	if r := str("reason"); r != "" { // slo: why the session ended
		parts = append(parts, cell(r, 80))
	}
	if alg := str("dpop_signing_alg"); alg != "" {
		parts = append(parts, "dpop "+alg)
	}
	if b, ok := d["dpop_returned_from_upstream"].(bool); ok {
		parts = append(parts, map[bool]string{true: "upstream token DPoP", false: "upstream token Bearer"}[b])
	}
	if n, ok := d["dpop_nonce_retries"].(float64); ok && n > 0 {
		parts = append(parts, fmt.Sprintf("nonce retries %d", int(n)))
	}
	if f, ok := d["upstream_userinfo_fetch"].(map[string]any); ok {
		s := fmt.Sprintf("userinfo %v", f["status"])
		if f["dpop_bound"] == true {
			s += " (DPoP)"
		}
		parts = append(parts, s)
	}
	if dp, ok := d["dpop"].(map[string]any); ok { // token-endpoint events
		if dp["bound"] == true {
			parts = append(parts, "token DPoP-bound")
		} else {
			parts = append(parts, "token Bearer")
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cell makes s one printable line of at most n runes.
func cell(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
