package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// The console's Logs page, its data side: the filter a page URL carries (the API's q, filter
// chips, a time range, a paging cursor), the rows of a page, the live tail's step, and the
// event view (DPoP facts labelled, the troubleshooting entry of a failed login, the raw JSON).
// Everything shown comes from stored events, which never carry a token, code, proof or
// secret (logs.Redact, Writer.Scrub).

// consoleLogsPerPage is the Logs page's page size; consoleTailTake bounds one tail step.
const (
	consoleLogsPerPage = 50
	consoleTailTake    = 50
)

// logsChipKinds are the filter chips: URL parameter, label, and the event field it matches
// exactly.
var logsChipKinds = []struct {
	param, label, field string
}{
	{"type", "type", "type"},
	{"connection", "connection", "connection"},
	{"client", "client", "client_id"},
	{"error", "error code", "details.error"},
	// a management API or console refusal's code (fapi: details.error is an object); its
	// rows' error cells link here
	{"api_error", "API error code", "details.error.errorCode"},
	{"user", "user", "user_id"},
}

// logsRanges are the time ranges the page offers, by URL value.
var logsRanges = []struct {
	value, label string
	span         time.Duration
}{
	{"15m", "last 15 minutes", 15 * time.Minute},
	{"1h", "last hour", time.Hour},
	{"24h", "last 24 hours", 24 * time.Hour},
	{"7d", "last 7 days", 7 * 24 * time.Hour},
	{"", "all retained", 0},
	{logsRangeCustom, "from / before the times below", 0},
}

// logsRangeCustom is the range of a page with from or until times.
const logsRangeCustom = "custom"

// logsTimeLayouts are the forms a from / until time may take (UTC; a datetime-local input
// sends the first).
var logsTimeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02"}

// The years a Logs time range may name: every event has a log id of Unix nanoseconds since
// 1970, which int64 holds until 2262.
const logsMinYear, logsMaxYear = 1970, 2200

// parseLogsTime reads a from / until time ("" = none); label is the field's label on the
// page (From, Before), which the refusal names.
func parseLogsTime(label, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, l := range logsTimeLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			if y := t.Year(); y < logsMinYear || y > logsMaxYear {
				// A log id holds Unix nanoseconds (logs.MinLogID): outside about 1678-2262
				// they overflow and the range would select the wrong events.
				return time.Time{}, fmt.Errorf("%w: %s must be a time between the years %d and %d", errLogsFilter, label, logsMinYear, logsMaxYear)
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: %s is not a time like 2024-01-15T14:05 (UTC)", errLogsFilter, label)
}

// maxChipValue bounds a chip's value (ids, names and codes are far shorter).
const maxChipValue = 256

// logsFilter is what a Logs page URL asks for.
type logsFilter struct {
	Q     string            // the API's q syntax, as typed
	Chips map[string]string // chip param → value
	Range string            // a logsRanges value
	// From and Until bound a custom range (zero: open), as typed (FromText, UntilText).
	From, Until         time.Time
	FromText, UntilText string
	Before              string // paging cursor: show events older than this log id
	// search is lucene() parsed, once, by parseLogsFilter (nil in a filter made otherwise:
	// the search then parses lucene()), or searchErr why the API's parser refused it (the
	// page answers it as the search's refusal, keeping the filter's chips).
	search    *logs.Filter
	searchErr error
}

// errLogsFilter wraps a filter the page refuses; its text is shown to the operator.
var errLogsFilter = errors.New("logs filter")

// parseLogsFilter reads a Logs page URL's query. Unknown parameters are ignored (a page link,
// not an API); malformed known ones are refused with a message for the page.
func parseLogsFilter(v url.Values) (logsFilter, error) {
	f := logsFilter{Q: strings.TrimSpace(v.Get("q")), Chips: map[string]string{}, Range: v.Get("range"), Before: v.Get("before")}
	if len(f.Q) > logs.MaxQueryLen {
		return logsFilter{}, fmt.Errorf("%w: the search is longer than %d bytes", errLogsFilter, logs.MaxQueryLen)
	}
	for _, k := range logsChipKinds {
		val := v.Get(k.param)
		if val == "" {
			continue
		}
		if len(val) > maxChipValue {
			return logsFilter{}, fmt.Errorf("%w: the %s filter is longer than %d bytes", errLogsFilter, k.label, maxChipValue)
		}
		if !utf8.ValidString(val) {
			return logsFilter{}, fmt.Errorf("%w: the %s filter is not UTF-8 text", errLogsFilter, k.label)
		}
		f.Chips[k.param] = val
	}
	// The chips are added to q as quoted terms: checked together, the refusal names them. The
	// search is parsed here, once: the page and the tail search with the parsed filter.
	if len(f.Chips) > 0 && len(f.lucene()) > logs.MaxQueryLen {
		return logsFilter{}, fmt.Errorf("%w: the search is longer than %d bytes with the filters added; remove a filter or shorten the search", errLogsFilter, logs.MaxQueryLen)
	}
	search, err := logs.ParseQuery(f.lucene())
	switch {
	case err == nil:
		f.search = &search
	case len(f.Chips) > 0 && parses(f.Q): // parsed again only to say why
		return logsFilter{}, fmt.Errorf("%w: too many terms with the filters added; remove a filter or a term of the search", errLogsFilter)
	default:
		f.searchErr = err
	}
	if _, ok := logsRangeSpan(f.Range); !ok {
		return logsFilter{}, fmt.Errorf("%w: unknown time range %q", errLogsFilter, clip(f.Range, 32))
	}
	f.FromText, f.UntilText = strings.TrimSpace(v.Get("from")), strings.TrimSpace(v.Get("until"))
	if f.From, err = parseLogsTime("From", f.FromText); err != nil {
		return logsFilter{}, err
	}
	if f.Until, err = parseLogsTime("Before", f.UntilText); err != nil {
		return logsFilter{}, err
	}
	if !f.From.IsZero() && !f.Until.IsZero() && !f.From.Before(f.Until) {
		return logsFilter{}, fmt.Errorf("%w: From must be earlier than Before", errLogsFilter)
	}
	if f.FromText != "" || f.UntilText != "" {
		f.Range = logsRangeCustom // the times win over a preset range
	}
	if f.Before != "" && (len(f.Before) != sessions.LogIDLen || strings.Trim(f.Before, "0123456789") != "") {
		return logsFilter{}, fmt.Errorf("%w: the paging cursor is not a log id", errLogsFilter)
	}
	return f, nil
}

// parses reports whether the API's parser takes q.
func parses(q string) bool {
	_, err := logs.ParseQuery(q)
	return err == nil
}

// typedLogsFilter is what the operator typed in a query parseLogsFilter refused, for the page
// to show again (nothing is searched with it): the search, the filters, the time range and
// the From / Before times as typed, each bounded.
func typedLogsFilter(v url.Values) logsFilter {
	f := logsFilter{Q: clip(v.Get("q"), logs.MaxQueryLen), Chips: map[string]string{},
		FromText: clip(strings.TrimSpace(v.Get("from")), 64), UntilText: clip(strings.TrimSpace(v.Get("until")), 64)}
	for _, k := range logsChipKinds {
		if val := v.Get(k.param); val != "" && len(val) <= maxChipValue && utf8.ValidString(val) {
			f.Chips[k.param] = val
		}
	}
	if _, ok := logsRangeSpan(v.Get("range")); ok {
		f.Range = v.Get("range")
	}
	if f.FromText != "" || f.UntilText != "" {
		f.Range = logsRangeCustom
	}
	return f
}

func logsRangeSpan(value string) (time.Duration, bool) {
	for _, r := range logsRanges {
		if r.value == value {
			return r.span, true
		}
	}
	return 0, false
}

// lucene is the q the filter searches with: the typed q AND each chip as an exact term.
func (f logsFilter) lucene() string {
	parts := make([]string, 0, 1+len(f.Chips))
	if f.Q != "" {
		parts = append(parts, f.Q)
	}
	for _, k := range logsChipKinds {
		if val, ok := f.Chips[k.param]; ok {
			parts = append(parts, logs.QuoteTerm(k.field, val))
		}
	}
	return strings.Join(parts, " ")
}

// query is the page's search: newest first, one page below the cursor, within the range.
func (f logsFilter) query(now time.Time) logs.Query {
	q := logs.Query{Q: f.lucene(), Filter: f.search, PerPage: consoleLogsPerPage, Before: f.Before}
	if span, _ := logsRangeSpan(f.Range); span > 0 {
		q.After = logs.MinLogID(now.Add(-span))
	}
	if !f.From.IsZero() {
		q.After = logs.MinLogID(f.From)
	}
	if !f.Until.IsZero() {
		if until := logs.MinLogID(f.Until); q.Before == "" || until < q.Before {
			q.Before = until
		}
	}
	return q
}

// values is the filter as URL parameters (without the cursor), for links that keep it.
func (f logsFilter) values() url.Values {
	v := url.Values{}
	if f.Q != "" {
		v.Set("q", f.Q)
	}
	for param, val := range f.Chips {
		v.Set(param, val)
	}
	if f.Range != "" && f.Range != logsRangeCustom {
		v.Set("range", f.Range)
	}
	if f.FromText != "" {
		v.Set("from", f.FromText)
	}
	if f.UntilText != "" {
		v.Set("until", f.UntilText)
	}
	return v
}

// with returns the filter's URL query with param set to val ("" removes it).
func (f logsFilter) with(param, val string) string {
	v := f.values()
	if val == "" {
		v.Del(param)
	} else {
		v.Set(param, val)
	}
	return v.Encode()
}

// logsChip is one active filter chip and the link that removes it.
type logsChip struct {
	Label, Value, Remove string
}

// logsRangeOption is one choice of the time range.
type logsRangeOption struct {
	Value, Label string
	Selected     bool
}

// logRow is one event in the Logs page's table and in the live tail's answer.
type logRow struct {
	LogID       string `json:"log_id"`
	Date        string `json:"date"`
	Type        string `json:"type"`
	Description string `json:"description"`
	Failed      bool   `json:"failed"`
	Connection  string `json:"connection,omitempty"`
	ClientID    string `json:"client_id,omitempty"`
	Client      string `json:"client,omitempty"` // client_name, else client_id
	UserID      string `json:"user_id,omitempty"`
	// User is the User column's text: the user id (user_name when there is none), or who
	// made a management API call; UserName is user_name beside a user id, as secondary text.
	User     string `json:"user,omitempty"`
	UserName string `json:"user_name,omitempty"`
	Error    string `json:"error,omitempty"`
	// Message is a management API or console refusal's own message (details.error.message,
	// clipped), shown beside its code.
	Message string `json:"message,omitempty"`
	// DPoP is the upstream token's binding for a login through a DPoP connection: "DPoP",
	// "Bearer" (a downgrade) or "" (no DPoP, or not known).
	DPoP string `json:"dpop,omitempty"`
	// Hint is what happened, from a failed login's troubleshooting entry (plain text).
	Hint string `json:"hint,omitempty"`
	Href string `json:"href"` // the event view
	// Filters are the links that add a chip for one of the row's values, by chip param
	// (none in the event view).
	Filters map[string]string `json:"filters,omitempty"`
}

// logCell is one value of a row in the Logs page's table: its text, and the link that adds
// its chip.
type logCell struct {
	Kind, Text, URL, Class string
}

// Cell returns the row's cell for a chip param (type, connection, client, user, error,
// api_error). The error cell ("error") links to the chip that finds its code: error
// (details.error), or api_error (details.error.errorCode) for a management or console refusal.
func (r logRow) Cell(param string) logCell {
	c := logCell{Kind: param, URL: r.Filters[param]}
	for _, k := range logsChipKinds {
		if k.param == param {
			c.Kind = k.label
		}
	}
	switch param {
	case "type":
		c.Text, c.Class = r.Type, "badge ok"
		if r.Failed {
			c.Class = "badge bad"
		}
	case "connection":
		c.Text = r.Connection
	case "client":
		c.Text = r.Client
	case "user":
		c.Text = r.User
	case "error":
		c.Text, c.Class, c.URL = r.Error, "badge bad", cmp.Or(r.Filters["error"], r.Filters["api_error"]) // one of them at most
	case "api_error":
		c.Text, c.Class = r.Error, "badge bad"
	}
	return c
}

// maxRowMessage bounds a refusal's message in a Logs row (the event view shows it whole).
const maxRowMessage = 160

// failedTypes are the event types shown as failures.
var failedTypes = map[string]bool{
	logs.TypeFailedLogin: true, logs.TypeFailedSilentAuth: true, logs.TypeFailedExchange: true,
	logs.TypeFailedRefresh: true, logs.TypeFailedRotatingRefresh: true, logs.TypeFailedLogout: true,
	logs.TypeFailedRevocation: true, logs.TypeFailedAPI: true, logs.TypeFederatedLogoutFailed: true,
	logs.TypeBackchannelLogoutFailed: true, logs.TypeAPILimit: true,
}

// newLogRow lays out ev for the console at base; with f, each value links to the page with
// that value's chip added to f.
func newLogRow(base string, ev *logs.Event, f *logsFilter) logRow {
	r := logRow{
		LogID: ev.LogID, Date: ev.Date, Type: ev.Type, Description: ev.Description, Failed: failedTypes[ev.Type],
		Connection: ev.Connection, ClientID: ev.ClientID, Client: cmp.Or(ev.ClientName, ev.ClientID),
		UserID: ev.UserID, User: cmp.Or(ev.UserID, ev.UserName),
		Href: base + "/logs/" + url.PathEscape(ev.LogID),
	}
	if ev.UserID != "" && ev.UserName != ev.UserID {
		r.UserName = ev.UserName
	}
	r.Error, _ = ev.Details["error"].(string)
	errorChip := "error" // the chip that finds r.Error: details.error
	if ev.Type == logs.TypeFailedAPI {
		r.Error, errorChip = logs.TroubleshootingCode(ev), "api_error" // details.error.errorCode
		if e, _ := ev.Details["error"].(map[string]any); e != nil {
			m, _ := e["message"].(string)
			r.Message = clip(strings.TrimSpace(m), maxRowMessage)
		}
	}
	if op := logs.Operator(ev); op != "" {
		r.User, r.UserID, r.UserName = op, "", "" // the operator: no user_id chip to filter by
	}
	if t, _, _, ok := logs.TroubleshootingFor(ev); ok {
		r.Hint = markdownText(t.Happened)
	}
	if f != nil {
		r.Filters = map[string]string{}
		for param, val := range map[string]string{"type": r.Type, "connection": r.Connection,
			"client": r.ClientID, errorChip: r.Error, "user": r.UserID} {
			if val != "" && len(val) <= maxChipValue {
				r.Filters[param] = base + "/logs?" + f.with(param, val)
			}
		}
	}
	if _, dpop := ev.Details["dpop_signing_alg"]; dpop {
		switch ev.Details["dpop_returned_from_upstream"] {
		case true:
			r.DPoP = "DPoP"
		case false:
			r.DPoP = "Bearer"
		}
	}
	return r
}

// logsPageData is the Logs page.
type logsPageData struct {
	Q       string
	From    string // the custom range's times, as typed
	Until   string
	Chips   []logsChip
	Hidden  []logsHidden // the chips as hidden fields of the search form
	Ranges  []logsRangeOption
	Rows    []logRow
	Older   string // the next (older) page, "" at the end
	Newest  string // the first page, "" on it
	TailURL string // the live tail's JSON, with the filter
	// TailFrom is where the live tail starts: the newest event before the page was searched
	// (an event written meanwhile may show in both; the tail skips the ids on the page).
	TailFrom string
	Problem  string // why the filter was refused
	// BareOnly: q has words but no field:value term, and nothing matched (the page says how
	// the API treats a bare word, logs.ParseQuery).
	BareOnly bool
}

// fieldTerm finds a field:value term in q (a field name at the start of a word).
var fieldTerm = regexp.MustCompile(`(^|\s)[A-Za-z0-9_.-]+:`)

// bareOnly reports whether q has words but none of them names a field.
func bareOnly(q string) bool {
	return strings.TrimSpace(q) != "" && !fieldTerm.MatchString(q)
}

// logsHidden is one hidden form field.
type logsHidden struct{ Name, Value string }

// newLogsPageData lays out a page of events found for f, for the console at base.
func newLogsPageData(base string, f logsFilter, evs []logs.Event) *logsPageData {
	d := &logsPageData{Q: f.Q, From: f.FromText, Until: f.UntilText, TailURL: base + "/logs/tail?" + f.withoutRange()}
	for _, k := range logsChipKinds {
		if val, ok := f.Chips[k.param]; ok {
			d.Chips = append(d.Chips, logsChip{Label: k.label, Value: val, Remove: base + "/logs?" + f.with(k.param, "")})
			d.Hidden = append(d.Hidden, logsHidden{Name: k.param, Value: val})
		}
	}
	for _, r := range logsRanges {
		d.Ranges = append(d.Ranges, logsRangeOption{Value: r.value, Label: r.label, Selected: r.value == f.Range})
	}
	for i := range evs {
		d.Rows = append(d.Rows, newLogRow(base, &evs[i], &f))
	}
	if len(evs) == consoleLogsPerPage {
		v := f.values()
		v.Set("before", evs[len(evs)-1].LogID)
		d.Older = base + "/logs?" + v.Encode()
	}
	if f.Before != "" {
		d.Newest = base + "/logs?" + f.values().Encode()
	}
	return d
}

// withoutRange is the filter's query for the tail: q and chips (new events have no range).
func (f logsFilter) withoutRange() string {
	v := f.values()
	v.Del("range")
	v.Del("from")
	v.Del("until")
	return v.Encode()
}

// logFact is one labelled fact of the event view.
type logFact struct {
	Label, Value string
}

// dpopFacts are the DPoP facts of a login, in the order shown, with their labels; a login
// event shows the always ones even when it did not record them (a login that failed before
// the upstream exchange).
var dpopFacts = []struct {
	key, label string
	always     bool
}{
	{"dpop_signing_alg", "DPoP signing algorithm", true},
	{"dpop_returned_from_upstream", "DPoP-bound token from the upstream", true},
	{"idp_token_type", "Upstream token type", true},
	{"dpop_nonce_used", "Upstream DPoP nonce used", true},
	{"dpop_nonce_retries", "DPoP nonce retries", true},
	{"dpop_nonce_dropped", "Remembered nonce dropped", false},
	{"code_exchange_ms", "Upstream code exchange", true},
	{"upstream_userinfo_fetch", "Upstream userinfo", false},
}

// notRecorded is shown for a DPoP fact a login event does not carry (it ended before the
// upstream exchange).
const notRecorded = "not recorded"

// loginTypes are the events of a login, interactive or silent.
var loginTypes = map[string]bool{
	logs.TypeSuccessLogin: true, logs.TypeFailedLogin: true,
	logs.TypeSuccessSilentAuth: true, logs.TypeFailedSilentAuth: true,
}

// detailErrorFrom is details.error_from; errorFromRedirect says a login's error and
// error_description came with the browser's redirect to /login/callback (not authenticated:
// anyone holding a login's state can send any text), so the event view labels the
// description unverified.
const (
	detailErrorFrom   = "error_from"
	errorFromRedirect = "redirect"
)

// otherFacts are further details shown as facts when present.
var otherFacts = []struct{ key, label string }{
	{"error", "Error code"},
	{"error_description", "Error description"},
	{"token_endpoint_auth_method", "Upstream client authentication"},
	{"upstream_par", "Pushed authorization request"},
	{"id_token_signing_alg", "Upstream ID token algorithm"},
	{"grant_type", "Grant type"},
	{"audience", "Audience"},
	{"rate_limit", "Rate limit"},
}

// factValue shows a detail value: yes/no for booleans, milliseconds for code_exchange_ms,
// status and binding for userinfo, else the JSON of the value.
func factValue(key string, v any) string {
	switch x := v.(type) {
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case string:
		return x
	case float64:
		s := strconv.FormatFloat(x, 'f', -1, 64)
		if key == "code_exchange_ms" {
			return s + " ms"
		}
		return s
	case map[string]any:
		if key == "upstream_userinfo_fetch" {
			s, _ := x["status"].(string)
			if x["dpop_bound"] == true {
				return s + ", DPoP-bound"
			}
			return s
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "?"
	}
	return string(b)
}

// logTrouble is a failed event's troubleshooting entry (logs.TroubleshootingFor), rendered.
type logTrouble struct {
	Codes    []string
	Exact    bool // false: the code has no entry of its own (an IdP's error=)
	Code     string
	Happened template.HTML
	ToDo     template.HTML
	// Connection and ConnectionURL link the event's connection page (its DPoP switch when
	// What to do names it); "" when the event has no connection.
	Connection, ConnectionURL string
	DPoPSwitch                bool // the link goes to the connection's DPoP switch
}

// logEventData is the event view.
type logEventData struct {
	Row     logRow
	Event   []logFact // who, where, when
	DPoP    []logFact // empty for events without DPoP facts
	Other   []logFact
	Trouble *logTrouble
	Notes   []template.HTML // logs.LoginNotes
	RawJSON string
	Related []logRelated // the Logs page filtered by one of the event's values
}

// logRelated is a link from the event view to the events sharing one of its values.
type logRelated struct {
	Label, Value, URL string
}

// newLogEventData lays out the event view of ev, for the console at base.
func newLogEventData(base string, ev *logs.Event) *logEventData {
	d := &logEventData{Row: newLogRow(base, ev, &logsFilter{})}
	for _, k := range logsChipKinds {
		if u := d.Row.Filters[k.param]; u != "" && k.param != "type" {
			d.Related = append(d.Related, logRelated{Label: "Events of this " + k.label, Value: d.Row.Cell(k.param).Text, URL: u})
		}
	}
	add := func(facts *[]logFact, label, value string) {
		if value != "" {
			*facts = append(*facts, logFact{Label: label, Value: value})
		}
	}
	add(&d.Event, "Date", ev.Date)
	add(&d.Event, "Type", ev.Type+" ("+ev.Description+")")
	add(&d.Event, "Connection", ev.Connection)
	add(&d.Event, "Connection id", ev.ConnectionID)
	add(&d.Event, "Strategy", ev.Strategy)
	add(&d.Event, "Client", ev.ClientName)
	add(&d.Event, "Client id", ev.ClientID)
	add(&d.Event, "User", ev.UserName)
	add(&d.Event, "User id", ev.UserID)
	add(&d.Event, "IP address", ev.IP)
	add(&d.Event, "User agent", ev.UserAgent)
	add(&d.Event, "Broker host", ev.Hostname)
	add(&d.Event, "Log id", ev.LogID)
	_, dpopOn := ev.Details["dpop_signing_alg"]
	for _, f := range dpopFacts {
		v, ok := ev.Details[f.key]
		switch {
		case ok:
			add(&d.DPoP, f.label, factValue(f.key, v))
		case !f.always || !loginTypes[ev.Type]:
		case f.key == "dpop_signing_alg":
			add(&d.DPoP, f.label, "none: the connection does not use DPoP")
		case !dpopOn && (f.key == "dpop_nonce_used" || f.key == "dpop_nonce_retries"):
		default:
			add(&d.DPoP, f.label, notRecorded)
		}
	}
	d.Other = append(d.Other, apiEventFacts(ev)...)
	for _, f := range otherFacts {
		v, ok := ev.Details[f.key]
		if apiErr, isMap := v.(map[string]any); isMap && f.key == "error" {
			// a management or console refusal (fapi): {errorCode, message, detail}
			for _, part := range []struct{ key, label string }{
				{"errorCode", "Error code"}, {"message", "Error message"}, {"detail", "Reason"},
			} {
				if pv, ok := apiErr[part.key].(string); ok {
					add(&d.Other, part.label, pv)
				}
			}
			continue
		}
		if ok {
			label := f.label
			if f.key == "error_description" && ev.Details[detailErrorFrom] == errorFromRedirect {
				label = "Error description (unverified text from the browser's redirect)"
			}
			add(&d.Other, label, factValue(f.key, v))
		}
	}
	if t, code, exact, ok := logs.TroubleshootingFor(ev); ok {
		d.Trouble = &logTrouble{Codes: t.Codes, Exact: exact, Code: code,
			Happened: inlineMarkdown(t.Happened), ToDo: inlineMarkdown(t.ToDo)}
		if ev.Connection != "" && config.ValidConnectionID(ev.ConnectionID) {
			d.Trouble.Connection = ev.Connection
			d.Trouble.ConnectionURL = base + "/connections/" + url.PathEscape(ev.ConnectionID)
			if strings.Contains(t.ToDo, "DPoP switch") {
				d.Trouble.ConnectionURL += "#conn-dpop"
				d.Trouble.DPoPSwitch = true
			}
		}
	}
	if ev.UserID != "" {
		d.Related = append(d.Related, logRelated{Label: relatedSessions, Value: ev.UserID,
			URL: base + "/sessions?" + url.Values{"user_id": {ev.UserID}}.Encode()})
	}
	if ev.Type == logs.TypeSuccessLogin || ev.Type == logs.TypeSuccessSilentAuth {
		for _, n := range logs.LoginNotes(ev.Details) {
			d.Notes = append(d.Notes, inlineMarkdown(n.Text))
		}
	}
	if b, err := json.MarshalIndent(ev, "", "  "); err == nil {
		d.RawJSON = string(b)
	}
	return d
}

// markdownSpan is a piece of the troubleshooting entries' Markdown inline text.
type markdownSpan struct {
	text string
	code bool
}

// markdownSpans splits s into text and `code` spans; a [text](target) link keeps its text
// only (the README's relative links lead nowhere on the broker).
func markdownSpans(s string) []markdownSpan {
	var out []markdownSpan
	var text strings.Builder
	for len(s) > 0 {
		i := strings.IndexAny(s, "`[")
		if i < 0 {
			text.WriteString(s)
			break
		}
		text.WriteString(s[:i])
		s = s[i:]
		if s[0] == '`' {
			if j := strings.IndexByte(s[1:], '`'); j >= 0 {
				out = append(out, markdownSpan{text: text.String()}, markdownSpan{text: s[1 : 1+j], code: true})
				text.Reset()
				s = s[j+2:]
				continue
			}
		} else if j := strings.Index(s, "]("); j > 0 {
			if k := strings.IndexByte(s[j:], ')'); k > 0 {
				text.WriteString(s[1:j])
				s = s[j+k+1:]
				continue
			}
		}
		text.WriteByte(s[0])
		s = s[1:]
	}
	return append(out, markdownSpan{text: text.String()})
}

// inlineMarkdown renders Markdown inline text as HTML: code spans become <code>, everything
// is escaped.
func inlineMarkdown(s string) template.HTML {
	var b strings.Builder
	for _, sp := range markdownSpans(s) {
		if sp.code {
			b.WriteString("<code>" + template.HTMLEscapeString(sp.text) + "</code>")
		} else {
			b.WriteString(template.HTMLEscapeString(sp.text))
		}
	}
	return template.HTML(b.String()) //nolint:gosec // every span was escaped above
}

// markdownText is Markdown inline text as plain text.
func markdownText(s string) string {
	var b strings.Builder
	for _, sp := range markdownSpans(s) {
		b.WriteString(sp.text)
	}
	return b.String()
}

// consoleLogsProblem turns a refused filter or search, or a store failure, into the status and
// the sentence the page shows (400, or 503 for any store failure). A store failure is logged;
// its error never reaches the page.
func (s *Server) consoleLogsProblem(err error) (int, string) {
	switch {
	case errors.Is(err, errLogsFilter):
		return http.StatusBadRequest, strings.TrimPrefix(err.Error(), errLogsFilter.Error()+": ")
	case errors.Is(err, logs.ErrInvalidQuery):
		return http.StatusBadRequest, "The search is not valid: " + strings.TrimPrefix(err.Error(), logs.ErrInvalidQuery.Error()+": ")
	}
	// Anything else failed reading the event log's store: 503, never 500 (the event log
	// need not be the server's metered store, so storeDown may not know the error).
	s.log.Error("console: reading the event log failed", "err", err)
	return http.StatusServiceUnavailable, "The store is unavailable. Try again shortly."
}

// consoleLogsPage finds the Logs page for the URL query v, for the console at base: the
// status to answer and the page (with Problem set when the filter or the store refused).
func (s *Server) consoleLogsPage(ctx context.Context, base string, v url.Values) (int, *logsPageData) {
	f, err := parseLogsFilter(v)
	if err != nil {
		status, problem := s.consoleLogsProblem(err)
		d := newLogsPageData(base, typedLogsFilter(v), nil)
		d.Problem = problem
		return status, d
	}
	var from string
	err = f.searchErr
	if err == nil && f.Before == "" && f.Until.IsZero() { // the newest events are on the page: tail them
		_, from, err = s.events.TailFilter(ctx, "", logs.Filter{}, 1)
	}
	var evs []logs.Event
	if err == nil {
		evs, err = s.events.Search(ctx, f.query(s.now()))
	}
	if err != nil {
		status, problem := s.consoleLogsProblem(err)
		d := newLogsPageData(base, f, nil)
		d.Problem = problem
		return status, d
	}
	d := newLogsPageData(base, f, evs)
	d.TailFrom = from
	d.BareOnly = len(evs) == 0 && bareOnly(f.Q)
	return http.StatusOK, d
}

// logsTailAnswer is one step of the live tail, as JSON.
type logsTailAnswer struct {
	Cursor string   `json:"cursor,omitempty"` // the after of the next step
	Events []logRow `json:"events"`           // oldest first
	More   bool     `json:"more,omitempty"`   // the step was full: ask again without waiting
	Error  string   `json:"error,omitempty"`
}

// consoleLogsTail is one step of the live tail for the URL query v: the events after v's
// after ("" = from now on) that match its q and chips (not its range or cursor), at most
// consoleTailTake of them.
func (s *Server) consoleLogsTail(ctx context.Context, base string, v url.Values) (int, logsTailAnswer) {
	f, err := parseLogsFilter(v)
	if err == nil {
		err = f.searchErr
	}
	if err != nil {
		status, problem := s.consoleLogsProblem(err)
		return status, logsTailAnswer{Events: []logRow{}, Error: problem}
	}
	f.Range, f.Before, f.From, f.Until, f.FromText, f.UntilText = "", "", time.Time{}, time.Time{}, "", ""
	evs, cursor, err := s.events.TailFilter(ctx, v.Get("after"), *f.search, consoleTailTake)
	if err != nil {
		status, problem := s.consoleLogsProblem(err)
		return status, logsTailAnswer{Events: []logRow{}, Error: problem}
	}
	a := logsTailAnswer{Cursor: cursor, Events: make([]logRow, 0, len(evs)), More: len(evs) == consoleTailTake}
	for i := range evs {
		a.Events = append(a.Events, newLogRow(base, &evs[i], &f))
	}
	return http.StatusOK, a
}

// linkOnlyWhatTheOperatorMayOpen drops the links to pages the operator's scopes do not open:
// the troubleshooting entry's connection (read:connections) and the user's sessions
// (read:sessions); the text stays.
func (d *logEventData) linkOnlyWhatTheOperatorMayOpen(sess *consoleSession) {
	if d.Trouble != nil && !sess.allows(config.ScopeReadConnections) {
		d.Trouble.ConnectionURL, d.Trouble.DPoPSwitch = "", false
	}
	if !sess.allows(config.ScopeReadSessions) {
		d.Related = slices.DeleteFunc(d.Related, func(r logRelated) bool { return r.Label == relatedSessions })
	}
}

// relatedSessions is the label of the event view's link to the user's sessions.
const relatedSessions = "Sessions of this user"

// consoleLogEvent finds the event view of id: 404 with no page for an unknown or malformed
// id.
func (s *Server) consoleLogEvent(ctx context.Context, base, id string) (int, *logEventData, string) {
	ev, err := s.events.Get(ctx, id)
	switch {
	case errors.Is(err, logs.ErrInvalidQuery), errors.Is(err, sessions.ErrNotFound):
		return http.StatusNotFound, nil, "There is no such event (it may have aged out of the log)."
	case err != nil:
		status, problem := s.consoleLogsProblem(err)
		return status, nil, problem
	}
	return http.StatusOK, newLogEventData(base, ev), ""
}

// consoleLogRoutes registers the Logs page, its live tail and the event view.
func (s *Server) consoleLogRoutes(h func(string, http.HandlerFunc)) {
	h("GET /console/logs", s.consolePage(config.ScopeReadLogs, s.consoleLogsHandler))
	h("GET /console/logs/tail", s.consolePage(config.ScopeReadLogs, s.consoleLogsTailHandler))
	h("GET /console/logs/{id}", s.consolePage(config.ScopeReadLogs, s.consoleLogEventHandler))
}

func (s *Server) consoleLogsHandler(c *consoleRequest) {
	status, d := s.consoleLogsPage(c.r.Context(), s.consolePath(), c.query())
	if status == http.StatusBadRequest {
		c.consoleBadRequest(d.Problem)
	}
	c.render(status, "logs", "Logs", d)
}

func (s *Server) consoleLogEventHandler(c *consoleRequest) {
	status, d, problem := s.consoleLogEvent(c.r.Context(), s.consolePath(), c.r.PathValue("id"))
	if d == nil {
		c.renderView(status, "logevent", &consoleView{Title: "Event", Problem: problem})
		return
	}
	d.linkOnlyWhatTheOperatorMayOpen(c.sess)
	c.render(status, "logevent", "Event "+d.Row.Type+" · "+d.Row.Date, d)
}

// consoleLogsTailHandler answers one step of the live tail as JSON (never cached).
func (s *Server) consoleLogsTailHandler(c *consoleRequest) {
	status, a := s.consoleLogsTail(c.r.Context(), s.consolePath(), c.query())
	if status == http.StatusBadRequest {
		c.consoleBadRequest(a.Error)
	}
	consoleHeaders(c.w)
	c.w.Header().Set("Content-Type", "application/json")
	c.w.WriteHeader(status)
	_ = json.NewEncoder(c.w).Encode(a)
}
