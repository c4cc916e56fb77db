package broker

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logstream"
)

// Reloading the configuration without a restart (Reload; `broker serve` calls it on SIGHUP).
//
// A Server is one view of the configuration. Reload validates the new file completely, builds
// the next view as a copy of the current one that shares every piece of state (the store, the
// registry, the event writer, the metrics, the back-channel queue, the console's caches, the
// keys and the upstream HTTP client), with its own configuration, APIs, management tokens,
// rate limiters and routes, and swaps it in with one atomic store. Handler and AdminHandler
// dispatch each request to the view current when it arrives, and that view serves the whole
// request: a request in flight finishes on the configuration it started with, and one that
// starts after Reload returned sees the new one (a management token removed from the file is
// refused from then on). Any error leaves the running view as it was.
//
// What changes live (liveSettings): clients, connections, apis, management, rate_limits,
// trusted_proxies, lifetimes, sessions, dpop, allow_insecure_http, console and log_streams.
// Rate-limit tables whose rate, burst and max_keys are unchanged are kept with their buckets
// (nextGuard). The console's settings are the view's: every console request re-checks its
// session against them (consoleRecheck), the issuer pins are the new file's (consolePinsOf),
// and the registry's next snapshot carries the console's built-in client of the new file. The
// log streams are shared by the views (logStreams): a reload that changes log_streams stops
// them all and starts the file's after the swap, each resuming at its stored position. Every
// other setting (listen, admin_listen, public_url, issuer, store, keys, dpop_server, logs,
// upstream_timeout, upstream_allowed_networks, and any key added later until it is made live)
// needs a restart: a change to one is logged at WARN by its key, and the running value is
// kept (the new view carries it over, so it describes what runs).
//
// Clients and connections of the file are applied to the store by the seeding rule of
// registry.go, exactly as a restart with the new file would: a new entry is created, a
// changed one overwrites the stored one (an API edit of it is lost), an unchanged one leaves
// the stored one (API edits survive), and an entry removed from the file stays in the store
// (delete it through the management API; the reload logs it). The store's watch carries the
// change to the other replicas; each replica's own file decides its local settings.

// Results of a reload: the result label of dpop_broker_config_reloads_total.
const (
	reloadSuccess = "success"
	reloadFailure = "failure"
)

// liveSettings are the top-level configuration keys Reload applies.
var liveSettings = map[string]bool{
	"clients": true, "connections": true, "apis": true, "management": true, "rate_limits": true,
	"trusted_proxies": true, "lifetimes": true, "sessions": true, "dpop": true, "allow_insecure_http": true,
	"console": true, "log_streams": true,
}

// views holds the view requests are served by; every view of a Server shares it.
type views struct {
	cur          atomic.Pointer[Server]
	handler      http.Handler // dispatches to cur's handler
	adminHandler http.Handler // to cur's adminHandler; nil without admin_listen (not live)
	// keysGiven: the Server was built with Deps.Keys, so the configuration's keys are never
	// loaded (ValidateExceptKeys).
	keysGiven bool
	mu        sync.Mutex // one reload at a time
}

func newViews(s *Server, keysGiven bool) *views {
	v := &views{keysGiven: keysGiven}
	v.cur.Store(s)
	v.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { v.cur.Load().handler.ServeHTTP(w, r) })
	if s.adminHandler != nil {
		v.adminHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { v.cur.Load().adminHandler.ServeHTTP(w, r) })
	}
	return v
}

// ReloadError is a refused reload: every reason, one per element (configuration keys first).
type ReloadError struct{ Problems []string }

func (e *ReloadError) Error() string {
	return "configuration not reloaded: " + strings.Join(e.Problems, "; ")
}

// Reload reads the configuration with load (a file's contents, validated: see
// config.LoadAndValidate) and applies it as described above. It logs one line, "configuration
// reloaded" with what changed (names and counts, never a value) or "configuration reload
// failed" with every error, plus one line per setting that changed but needs a restart and
// one per kind of entry removed from the file but kept in the store; it counts the reload in
// dpop_broker_config_reloads_total. A refused reload returns a *ReloadError and leaves the
// running configuration as it was. ctx bounds the store work (at most 10 s of it).
func (s *Server) Reload(ctx context.Context, load func() (*config.Config, error)) error {
	v := s.views
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.cur.Load()
	next, sum, err := cur.nextView(ctx, load)
	if err != nil {
		problems := problemList(err)
		cur.metrics.reloads.WithLabelValues(reloadFailure).Inc()
		cur.log.Error("configuration reload failed; the running configuration is kept", "errors", problems)
		return &ReloadError{Problems: problems}
	}
	v.cur.Store(next)
	if sum.streams != nil {
		// After the swap: the streams now running are the new file's.
		next.streams.replace(sum.streams.streams, sum.streams.collectors)
	}
	cur.metrics.reloads.WithLabelValues(reloadSuccess).Inc()
	for _, key := range sum.notLive {
		cur.log.Warn("configuration setting changed but needs a restart; the running value is kept", "setting", key)
	}
	for _, w := range next.cfg.Warnings() {
		cur.log.Warn("insecure configuration", "key", w.Key, "warning", w.Reason)
	}
	if len(sum.clients.removed) > 0 {
		cur.log.Warn("clients removed from the configuration file stay in the store; delete them through the management API (DELETE /api/v2/clients/{id})",
			"clients", sum.clients.removed)
	}
	if len(sum.connections.removed) > 0 {
		cur.log.Warn("connections removed from the configuration file stay in the store; delete them through the management API (DELETE /api/v2/connections/{id})",
			"connections", sum.connections.removed)
	}
	cur.log.Info("configuration reloaded", sum.attrs()...)
	return nil
}

// problemList returns err's reasons one by one: each configuration problem, or each joined
// error.
func problemList(err error) []string {
	var fe config.FieldErrors
	if errors.As(err, &fe) {
		out := make([]string, len(fe))
		for i, e := range fe {
			out[i] = e.Error()
		}
		return out
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, problemList(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// reloadSummary is what a reload changed, for its log line.
type reloadSummary struct {
	changed, notLive                  []string // top-level keys, and settings that need a restart
	clients, connections, apis, token entryChanges
	rateLimits                        []string // configuration keys of the limits whose tables are new
	pending                           error    // the store could not be seeded now (the next lookup does)
	nClients, nConnections            int
	// consolePins names the connections whose console pin changed (added, changed, removed).
	consolePins []string
	// logStreams names the streams added, changed and removed, and streams are the file's
	// streams that replace the running ones (nil: log_streams unchanged).
	logStreams entryChanges
	streams    *builtStreams
}

// builtStreams are the log streams built for a reload, not yet running (streams nil: none).
type builtStreams struct {
	streams    *logstream.Streams
	collectors []prometheus.Collector
}

// entryChanges are the names of the entries of one list that were added, changed, removed.
type entryChanges struct{ added, changed, removed []string }

// attrs are the summary's log attributes (empty lists left out).
func (sum *reloadSummary) attrs() []any {
	a := []any{"changed", nonNil(sum.changed), "clients", sum.nClients, "connections", sum.nConnections}
	for _, e := range []struct {
		name string
		c    entryChanges
	}{{"clients", sum.clients}, {"connections", sum.connections}, {"apis", sum.apis}, {"management_tokens", sum.token}, {"log_streams", sum.logStreams}} {
		for _, l := range []struct {
			what  string
			names []string
		}{{"added", e.c.added}, {"changed", e.c.changed}, {"removed", e.c.removed}} {
			if len(l.names) > 0 {
				a = append(a, e.name+"_"+l.what, l.names)
			}
		}
	}
	if len(sum.rateLimits) > 0 {
		a = append(a, "rate_limits_changed", sum.rateLimits)
	}
	if len(sum.consolePins) > 0 {
		a = append(a, "console_pins_changed", sum.consolePins)
	}
	if len(sum.notLive) > 0 {
		a = append(a, "not_applied", sum.notLive)
	}
	if sum.pending != nil {
		a = append(a, "store", "clients and connections will be applied when the store is reachable", "err", sum.pending)
	}
	return a
}

// nextView loads and validates the next configuration and returns the view that serves it,
// having applied its clients and connections to the store. Nothing is changed when it fails.
func (s *Server) nextView(ctx context.Context, load func() (*config.Config, error)) (*Server, *reloadSummary, error) {
	next, err := load()
	if err != nil {
		return nil, nil, err
	}
	sum := &reloadSummary{}
	sum.changed, sum.notLive = carryOver(s.cfg, next)
	validate := next.Validate
	if s.views.keysGiven {
		validate = next.ValidateExceptKeys
	}
	if errs := validate(); len(errs) > 0 { // with the running values of what needs a restart
		return nil, nil, config.FieldErrors(errs)
	}
	g, err := nextGuard(next, s.guard)
	if err != nil {
		return nil, nil, err
	}
	opts := s.reg.options()
	if !reflect.DeepEqual(s.cfg.DPoP, next.DPoP) || !reflect.DeepEqual(apiClaimNames(s.cfg.APIs), apiClaimNames(next.APIs)) {
		o := withConfigOptions(next, *opts)
		opts = &o
	}
	if err := checkConnections(next, *opts); err != nil {
		return nil, nil, err
	}
	// The console's issuer pins are the new file's (consolepin.go): a connection it no longer
	// names admits no administrator from the next request on, and one whose identity options
	// changed admits only sign-ins made with them.
	pins, err := consolePinsOf(next)
	if err != nil {
		return nil, nil, err
	}
	sum.consolePins = pinDiff(s.consolePins, pins)
	consoleURL, err := url.Parse(next.ConsoleURL())
	if err != nil {
		consoleURL = nil // the console answers nowhere (consoleHostProblem), as New leaves it
	}
	// The file's log streams are built now (nothing runs before the swap) so that a stream
	// the logstream package refuses refuses the reload.
	if !reflect.DeepEqual(s.cfg.LogStreams, next.LogStreams) {
		streams, collectors, err := s.buildLogStreams(s.streams, next)
		if err != nil {
			return nil, nil, err
		}
		sum.streams = &builtStreams{streams: streams, collectors: collectors}
		sum.logStreams = diffEntries(s.cfg.LogStreams, next.LogStreams, func(c *config.LogStream) string { return c.Name })
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	problems, pending := s.reg.reconfigure(sctx, next.Connections, next.Clients, opts, next)
	cancel()
	if len(problems) > 0 {
		if sum.streams != nil && sum.streams.streams != nil {
			sum.streams.streams.Close() // never started: only its idle connections
		}
		return nil, nil, errors.Join(problems...)
	}
	sum.pending = pending
	sum.clients = diffEntries(s.cfg.Clients, next.Clients, func(c *config.Client) string { return c.ClientID })
	sum.connections = diffEntries(s.cfg.Connections, next.Connections, func(c *config.Connection) string { return c.Name })
	sum.apis = diffEntries(s.cfg.APIs, next.APIs, func(a *config.API) string { return a.Audience })
	sum.rateLimits = g.changedLimits(s.guard)
	sum.nClients, sum.nConnections = len(next.Clients), len(next.Connections)

	v := *s // shares every pointer: only what follows is the new view's own
	v.cfg = next
	v.apis = apisByAudience(next)
	v.mgmt = newMgmtAuth(next.Management)
	// By the names their events give them (newMgmtAuth); a token is compared by its hash.
	sum.token = diffEntries(s.mgmt.tokens, v.mgmt.tokens, func(t *mgmtToken) string { return t.name })
	v.guard = g
	v.consolePins, v.consoleURL = pins, consoleURL
	v.routes()
	if v.events.Secrets != nil {
		v.events.Secrets.Set(secretsConfig, configSecrets(next)...)
	}
	return &v, sum, nil
}

// carryOver compares the top-level settings of cur and next: it returns the live ones that
// changed, and the others that changed (as precise keys), whose running values it copies into
// next.
func carryOver(cur, next *config.Config) (changed, notLive []string) {
	cv, nv := reflect.ValueOf(cur).Elem(), reflect.ValueOf(next).Elem()
	t := cv.Type()
	for i := range t.NumField() {
		if !t.Field(i).IsExported() {
			continue // derived by config itself, never set from outside
		}
		key := yamlKey(t.Field(i))
		if key == "" { // not from the file (generate_missing_keys): always the running value
			nv.Field(i).Set(cv.Field(i))
			continue
		}
		if reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		if liveSettings[key] {
			changed = append(changed, key)
			continue
		}
		notLive = append(notLive, changedKeys(key, cv.Field(i), nv.Field(i), 3)...)
		nv.Field(i).Set(cv.Field(i))
	}
	return changed, notLive
}

// yamlKey is f's configuration key ("" when it has none).
func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

// changedKeys names where a and b (different) differ: key itself, or, for a struct and up to
// depth levels down, the keys of its fields that differ. Never a value.
func changedKeys(key string, a, b reflect.Value, depth int) []string {
	if depth == 0 || a.Kind() != reflect.Struct {
		return []string{key}
	}
	var out []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		if !f.IsExported() || reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			continue
		}
		if _, opts, _ := strings.Cut(f.Tag.Get("yaml"), ","); opts == "inline" {
			out = append(out, changedKeys(key, a.Field(i), b.Field(i), depth)...)
			continue
		}
		if k := yamlKey(f); k != "" {
			out = append(out, changedKeys(key+"."+k, a.Field(i), b.Field(i), depth-1)...)
		}
	}
	if len(out) == 0 {
		return []string{key}
	}
	return out
}

// diffEntries names the entries of next that cur lacks, that differ, and the entries of cur
// that next lacks, each by name.
func diffEntries[T any](cur, next []T, name func(*T) string) entryChanges {
	var c entryChanges
	old := make(map[string]*T, len(cur))
	for i := range cur {
		old[name(&cur[i])] = &cur[i]
	}
	seen := map[string]bool{}
	for i := range next {
		n := name(&next[i])
		seen[n] = true
		switch o := old[n]; {
		case o == nil:
			c.added = append(c.added, n)
		case !reflect.DeepEqual(*o, next[i]):
			c.changed = append(c.changed, n)
		}
	}
	for i := range cur {
		if n := name(&cur[i]); !seen[n] {
			c.removed = append(c.removed, n)
		}
	}
	return c
}

// pinDiff names the connections whose console pin differs between a and b.
func pinDiff(a, b map[string]consolePin) []string {
	var out []string
	for n, p := range a {
		if q, ok := b[n]; !ok || !reflect.DeepEqual(p, q) {
			out = append(out, n)
		}
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
