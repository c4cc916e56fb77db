package broker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
)

// The console's Connections page: every connection with its upstream, strategy and DPoP
// setting; a connection's page adds a live discovery check (what the upstream offers, and
// whether DPoP works, with the management API's reasons) and the DPoP switch, which goes
// through PATCH /api/v2/connections/{id} in-process: the same validation, the same stored
// change every replica's next login uses, and a sapi/fapi event naming the operator.

func (s *Server) consoleConnectionRoutes(h func(string, http.HandlerFunc)) {
	h("GET /console/connections", s.consolePage(config.ScopeReadConnections, s.consoleConnections))
	h("GET /console/connections/{id}", s.consolePage(config.ScopeReadConnections, s.consoleConnection))
	h("POST /console/connections/{id}/dpop", s.consolePage(config.ScopeUpdateConnections, s.consoleSetDPoP))
}

// consoleConnRow is one connection as the console shows it (never its client secret).
type consoleConnRow struct {
	ID, Name, DisplayName, Strategy string
	Upstream                        string // issuer, discovery URL or Okta domain
	DPoPAlg                         string // "" = DPoP off
	Problem                         string // why the stored connection cannot be used
	Clients                         []string
	Live                            *consoleCheck // the list's live check (nil: not checked)
}

func (s *Server) consoleConnRow(c *connection) consoleConnRow {
	o := &c.cfg.Options
	row := consoleConnRow{
		ID: c.id, Name: c.cfg.Name, DisplayName: c.cfg.DisplayName, Strategy: c.cfg.Strategy, DPoPAlg: o.DPoPSigningAlg,
		Clients: s.effectiveClients(c.cfg),
	}
	switch {
	case c.up != nil:
		row.Upstream = c.up.Config().Issuer
	case o.Issuer != "":
		row.Upstream = o.Issuer
	case o.DiscoveryURL != "":
		row.Upstream = o.DiscoveryURL
	default:
		row.Upstream = o.Domain
	}
	if c.err != nil {
		row.Problem = clip(c.err.Error(), 512)
	}
	return row
}

func (s *Server) consoleConnections(c *consoleRequest) {
	snap, ok := c.snapshot("connections", "Connections")
	if !ok {
		return
	}
	rows := make([]consoleConnRow, 0, len(snap.list))
	for _, conn := range snap.list {
		rows = append(rows, s.consoleConnRow(conn))
	}
	s.consoleLiveChecks(c, snap.list, rows)
	c.render(http.StatusOK, "connections", "Connections", consoleConnsView{Rows: rows})
}

// The list's live checks: at most consoleListChecks connections, consoleCheckWorkers at a
// time, all within consoleListCheckTime (a slow upstream shows as a failed check, and the
// page still answers).
const (
	consoleListChecks    = 50
	consoleCheckWorkers  = 4
	consoleListCheckTime = 10 * time.Second
)

// consoleLiveChecks fills each row's Live with a discovery check of its connection.
func (s *Server) consoleLiveChecks(c *consoleRequest, conns []*connection, rows []consoleConnRow) {
	ctx, cancel := context.WithTimeout(c.r.Context(), consoleListCheckTime)
	defer cancel()
	cr := *c
	cr.r = c.r.WithContext(ctx)
	sem := make(chan struct{}, consoleCheckWorkers)
	var wg sync.WaitGroup
	for i := range rows[:min(len(rows), consoleListChecks)] {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ck := s.consoleDiscoveryCheck(&cr, conns[i])
			rows[i].Live = &ck
		}()
	}
	wg.Wait()
}

type consoleConnsView struct {
	Rows []consoleConnRow
}

// consoleCheck is the live discovery check of one connection.
type consoleCheck struct {
	Fetched bool
	Problem string // the document could not be used (the API's reason)
	Detail  string // why, for operators who may read the logs (the fapi event's detail)
	Doc     *discovery.Document
	Current string // "" when DPoP is off or works with the current alg; else the API's 400 reason
	Choices []consoleAlgChoice
	// Checked says when the discovery document was fetched and how long that took, e.g.
	// "3 s ago, took 41 ms" (one fetch serves the checks of consoleDiscoveryTTL).
	Checked string
}

// checkedText says when a discovery fetch that started at was made, relative to now, and how
// long it took.
func checkedText(at, now time.Time, took time.Duration) string {
	ago := "just now"
	if s := int(now.Sub(at).Round(time.Second) / time.Second); s > 0 {
		ago = strconv.Itoa(s) + " s ago"
	}
	return ago + ", took " + strconv.FormatInt(took.Milliseconds(), 10) + " ms"
}

// consoleAlgChoice is one DPoP alg the broker has a key for, and whether the upstream takes it.
type consoleAlgChoice struct {
	Alg      string
	Selected bool
	Problem  string // the API's 400 reason when the upstream does not offer it
}

type consoleConnView struct {
	Row       consoleConnRow
	Check     consoleCheck
	CanUpdate bool
	// RequiresDPoP counts the logins through the connection that failed with
	// upstream_requires_dpop in the last hour (the Overview's counters, never a log scan).
	RequiresDPoP int64
	// ConfirmOff asks the operator to confirm turning DPoP off (?confirm=off after a save
	// of "Off" without the confirmation).
	ConfirmOff bool
	// AdminSignIn: operators can sign in through the broker (console.admins), with every
	// console permission.
	AdminSignIn bool
}

// consoleConnection shows one connection with a live discovery check.
func (s *Server) consoleConnection(c *consoleRequest) {
	s.renderConnection(c, http.StatusOK, "")
}

// renderConnection renders the connection page of the path's id with problem (a refused
// write) and status.
func (s *Server) renderConnection(c *consoleRequest, status int, problem string) {
	conn, ok := s.consoleFindConnection(c)
	if !ok {
		return
	}
	v := consoleConnView{Row: s.consoleConnRow(conn), CanUpdate: c.sess.allows(config.ScopeUpdateConnections), AdminSignIn: s.cfg.ConsoleSignIn()}
	v.Check = s.consoleDiscoveryCheck(c, conn)
	v.Check.Choices = s.consoleAlgChoices(conn, v.Check.Doc)
	v.RequiresDPoP = s.recentRequiresDPoP(c, conn.cfg.Name)
	v.ConfirmOff = v.CanUpdate && v.Row.DPoPAlg != "" && c.query().Get("confirm") == "off"
	if problem == "" {
		problem = s.dpopRefusal(c.query(), v.Check)
	}
	title := "Connection " + conn.cfg.Name
	vw := &consoleView{Title: title, Problem: problem, Data: v}
	c.renderView(status, "connection", vw)
}

// dpopRefusal is the problem a refused DPoP save redirects to (?refused=KEY, and alg for an
// algorithm the upstream does not offer), worded from the page's own check: fixed texts and an
// alg the broker has a key for, so a crafted link cannot put words on the page.
func (s *Server) dpopRefusal(q url.Values, ck consoleCheck) string {
	switch q.Get("refused") {
	case "form":
		return "Choose one DPoP setting."
	case "alg":
		if alg := q.Get("alg"); s.keys.DPoP[alg] != nil && ck.Doc != nil {
			if p := s.consoleDPoPProblem(ck.Doc, alg, false); p != "" {
				return "Not saved. " + p
			}
		}
		return "Not saved: the upstream does not offer that DPoP algorithm (the check above lists what it offers)."
	case "discovery":
		return "Not saved: the upstream's discovery document could not be used, so the DPoP setting cannot be checked against it (the check above says why)."
	case "save":
		return "Not saved: the management API refused the change; its fapi event on the Logs page says why."
	}
	return ""
}

// recentRequiresDPoP is how many logins through the connection called name failed with
// upstream_requires_dpop in the last hour, from the Overview's cached counters (0 when they
// cannot be read: the page does without).
func (s *Server) recentRequiresDPoP(c *consoleRequest, name string) int64 {
	o, err := s.cachedOverview(c.r.Context(), overviewSpans[0])
	if err != nil {
		s.log.Warn("console: login counters not read for a connection page", "connection", name, "err", err)
		return 0
	}
	for _, co := range o.Connections {
		if co.Name == name {
			return co.RequiresDPoP
		}
	}
	return 0
}

// consoleConnIDs maps each connection's name to its id, for pages that link a connection's
// name to its page; nil when the operator may not read connections or the store cannot be
// read (the names are shown without links).
func (s *Server) consoleConnIDs(c *consoleRequest) map[string]string {
	if !c.sess.allows(config.ScopeReadConnections) {
		return nil
	}
	snap, err := s.reg.current(c.r.Context(), false)
	if err != nil {
		return nil
	}
	ids := make(map[string]string, len(snap.byName))
	for name, conn := range snap.byName {
		ids[name] = conn.id
	}
	return ids
}

// consoleFindConnection returns the connection of the path's id, or answers 404 / 503.
func (s *Server) consoleFindConnection(c *consoleRequest) (*connection, bool) {
	snap, err := s.reg.current(c.r.Context(), false)
	if err != nil {
		s.log.Error("console: connections could not be read", "err", err)
		c.render(http.StatusServiceUnavailable, "refused", "Store unavailable", nil)
		return nil, false
	}
	conn := snap.byID[c.r.PathValue("id")]
	if conn == nil {
		c.render(http.StatusNotFound, "refused", "No such connection", nil)
		return nil, false
	}
	return conn, true
}

// consoleDiscoveryCheck fetches the upstream's discovery document (at most once every
// consoleDiscoveryTTL on a replica: consolecost.go) and says
// what it offers and whether DPoP works with each alg the broker has a key for.
func (s *Server) consoleDiscoveryCheck(c *consoleRequest, conn *connection) consoleCheck {
	var ck consoleCheck
	if conn.up == nil {
		ck.Problem = "The stored connection cannot be used, so it cannot be checked."
		return ck
	}
	uc := conn.up.Config()
	f := s.cachedDiscovery(c.r.Context(), uc.Issuer, uc.DiscoveryURL)
	doc, err := f.doc, f.err
	if !f.at.IsZero() {
		ck.Checked = checkedText(f.at, s.now(), f.duration)
	}
	if err != nil {
		mc := &mgmtCall{r: c.r, conn: conn.cfg.Name}
		_ = s.discoveryAPIError(mc, uc.Issuer, err) // logs it
		ck.Problem = "The upstream's discovery document could not be used: " + discoveryFailureReason(err) + "."
		if c.sess.allows(config.ScopeReadLogs) {
			ck.Detail = clip(mc.detail, 1024)
		}
		return ck
	}
	ck.Fetched, ck.Doc = true, doc
	ck.Current = s.consoleDPoPProblem(doc, conn.cfg.Options.DPoPSigningAlg, true)
	return ck
}

// consoleUpstreamDoc is the upstream's discovery document of conn from the console's cache
// (consoleDiscoveryCheck's fetch), nil when the connection cannot be used or the fetch failed.
// It logs nothing: the PATCH that needed it already logged the failure, and the page the
// caller redirects to checks again.
func (s *Server) consoleUpstreamDoc(ctx context.Context, conn *connection) *discovery.Document {
	if conn.up == nil {
		return nil
	}
	uc := conn.up.Config()
	if f := s.cachedDiscovery(ctx, uc.Issuer, uc.DiscoveryURL); f.err == nil {
		return f.doc
	}
	return nil
}

// discoveryFailureReason says in a few words why a discovery fetch failed, for the console's
// operators: the kind of network failure (never the address tried) or what is wrong with the
// document. The management API answers every such failure alike (errDiscoveryAPI), so it
// cannot be used to probe internal hosts; an operator signed in to the console sees why.
func discoveryFailureReason(err error) string {
	var (
		refused *AddressRefusedError
		dnsErr  *net.DNSError
		netErr  net.Error
		ue      *url.Error
		certErr *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &refused):
		return "the broker's address policy refused the upstream's address (" + refused.Reason + ", not in upstream_allowed_networks)"
	case errors.Is(err, context.Canceled):
		return "the check was interrupted"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout: the upstream did not answer in time"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: nothing accepts connections at the upstream's address and port"
	case errors.Is(err, syscall.ECONNRESET):
		return "the upstream reset the connection"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "the upstream's host name does not resolve (DNS: no such host)"
		}
		return "the upstream's host name could not be looked up (DNS)"
	case errors.As(err, &certErr):
		return "TLS: the upstream's certificate is not trusted (" + clip(certErr.Err.Error(), 200) + ")"
	case errors.As(err, &ue):
		return "the request failed (" + clip(transportReason(err), 200) + ")"
	}
	return clip(strings.TrimPrefix(err.Error(), "discovery: "), 300)
}

// consoleDPoPProblem says, for people, what is wrong with DPoP alg toward the upstream of doc
// and what to do ("" when the upstream offers it, or alg is "" for off). current: alg is the
// connection's setting (so logins fail now), not a choice on the switch.
func (s *Server) consoleDPoPProblem(doc *discovery.Document, alg string, current bool) string {
	if alg == "" {
		return ""
	}
	_, err := doc.CheckDPoP(alg)
	if err == nil {
		return ""
	}
	var ce *discovery.CapabilityError
	if !errors.As(err, &ce) {
		return "DPoP with " + alg + " cannot be used with this upstream: " + clip(err.Error(), 300) + "."
	}
	var b strings.Builder
	if ce.Offered == nil {
		b.WriteString("The upstream does not offer DPoP (its discovery document has no dpop_signing_alg_values_supported).")
		if current {
			b.WriteString(" Logins through this connection fail while DPoP is on here. To fix it: turn DPoP off, or have DPoP enabled for the broker's client at the upstream.")
		}
		return b.String()
	}
	b.WriteString("The upstream does not accept " + alg + " DPoP proofs; it offers " + strings.Join(ce.Offered, ", ") + ".")
	if current {
		b.WriteString(" Logins through this connection fail until this is fixed.")
	}
	var keyed, unkeyed []string
	for _, a := range ce.Offered {
		if s.keys.DPoP[a] != nil {
			keyed = append(keyed, a)
		} else if a != "EdDSA" || s.keys.DPoP["Ed25519"] == nil {
			unkeyed = append(unkeyed, a)
		}
	}
	var todo []string
	if len(keyed) > 0 {
		todo = append(todo, "choose "+strings.Join(keyed, " or ")+" (the broker has a key for it)")
	}
	// Each keys.dpop entry that would let the broker use an offered alg, once, with the
	// choices it adds (EdDSA is chosen as Ed25519); an alg no entry holds is not advised.
	var entries []string
	algsOf := map[string][]string{}
	for _, a := range unkeyed {
		if a == "EdDSA" {
			a = "Ed25519"
		}
		name := config.DPoPKeyName(a)
		if name == "" {
			continue
		}
		if _, seen := algsOf[name]; !seen {
			entries = append(entries, name)
		}
		if !slices.Contains(algsOf[name], a) {
			algsOf[name] = append(algsOf[name], a)
		}
	}
	for _, name := range entries {
		kind := "a"
		if name == "rsa" {
			kind = "an RSA"
		}
		todo = append(todo, "add "+kind+" DPoP key under keys.dpop."+name+" (then "+strings.Join(algsOf[name], " or ")+" can be chosen)")
	}
	if current {
		todo = append(todo, "turn DPoP off (only if the upstream does not require DPoP)")
	}
	if len(todo) > 0 {
		b.WriteString(" To fix it: " + strings.Join(todo, "; or ") + ".")
	}
	return b.String()
}

// consoleAlgChoices are the DPoP algs the broker has a key for, each with the API's reason
// when the upstream of doc (nil: not fetched) does not offer it.
func (s *Server) consoleAlgChoices(conn *connection, doc *discovery.Document) []consoleAlgChoice {
	var out []consoleAlgChoice
	for _, alg := range slices.Sorted(maps.Keys(s.keys.DPoP)) {
		ch := consoleAlgChoice{Alg: alg, Selected: alg == conn.cfg.Options.DPoPSigningAlg}
		if doc != nil {
			ch.Problem = s.consoleDPoPProblem(doc, alg, false)
		}
		out = append(out, ch)
	}
	return out
}

// consoleSetDPoP turns DPoP off or sets its alg through the management API's PATCH.
func (s *Server) consoleSetDPoP(c *consoleRequest) {
	conn, ok := s.consoleFindConnection(c)
	if !ok {
		return
	}
	alg := c.r.PostForm.Get("dpop_signing_alg")
	page := s.consolePath() + "/connections/" + url.PathEscape(conn.id)
	// A refusal redirects to the connection page saying why (POST-redirect-GET: a reload
	// shows the page again and submits nothing).
	refused := func(v url.Values) { http.Redirect(c.w, c.r, page+"?"+v.Encode(), http.StatusSeeOther) }
	if len(c.r.PostForm["dpop_signing_alg"]) != 1 || len(alg) > 16 {
		c.consoleBadRequest("not one DPoP setting")
		refused(url.Values{"refused": {"form"}})
		return
	}
	if alg == "" && conn.cfg.Options.DPoPSigningAlg != "" && c.r.PostForm.Get("confirm") != "off" {
		// Turning DPoP off breaks every login through an upstream that requires it: the
		// page asks first (a GET, so a reload asks again and saves nothing).
		http.Redirect(c.w, c.r, page+"?confirm=off#conn-dpop", http.StatusSeeOther)
		return
	}
	// The whole options object, as PATCH replaces it; the secret is left out (PATCH keeps
	// the stored one) and so is dpop_signing_alg when DPoP goes off.
	raw, _ := json.Marshal(conn.cfg.Options)
	var opts map[string]any
	_ = json.Unmarshal(raw, &opts)
	delete(opts, "client_secret")
	delete(opts, "dpop_signing_alg")
	if alg != "" {
		opts["dpop_signing_alg"] = alg
	}
	status, msg := s.consoleMgmt(c, http.MethodPatch, "/api/v2/connections/"+conn.id, map[string]string{"id": conn.id},
		map[string]any{"options": opts}, s.patchConnection)
	if status != http.StatusOK {
		s.log.Info("console: DPoP change refused", "connection", conn.cfg.Name, "operator", c.sess.Operator, "status", status, "reason", clip(msg, 512))
		doc := s.consoleUpstreamDoc(c.r.Context(), conn)
		switch {
		case doc == nil:
			refused(url.Values{"refused": {"discovery"}})
		case s.consoleDPoPProblem(doc, alg, false) != "":
			refused(url.Values{"refused": {"alg"}, "alg": {alg}})
		default:
			refused(url.Values{"refused": {"save"}})
		}
		return
	}
	http.Redirect(c.w, c.r, page+"?done=dpop", http.StatusSeeOther)
}

// consoleMgmt runs management handler h in-process for the operator of c, as if it had
// called method path with body: the API's own validation, storage and sapi/fapi event, whose
// details.request.auth names the operator ("console:" + operator). It returns the answer's
// status and, for a refusal, the API's message.
func (s *Server) consoleMgmt(c *consoleRequest, method, path string, pathValues map[string]string, body any, h mgmtHandler) (int, string) {
	b, err := json.Marshal(body)
	if err != nil {
		return http.StatusInternalServerError, "The change could not be encoded."
	}
	r := s.inProcessRequest(c.r, method, path, "application/json", b)
	for k, v := range pathValues {
		r.SetPathValue(k, v)
	}
	rec := &capturedResponse{header: http.Header{}}
	mc := &mgmtCall{w: rec, r: r, authorized: true,
		token:   &mgmtToken{name: "console:" + c.sess.Operator, scopes: c.sess.Scopes},
		details: map[string]any{"console": map[string]any{"operator": c.sess.Operator, "via": c.sess.Via}},
	}
	if aerr := h(mc); aerr != nil {
		s.apiFail(mc, aerr)
	}
	if rec.status >= 200 && rec.status < 300 {
		return rec.status, ""
	}
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(rec.body.Bytes(), &e)
	if e.Message == "" {
		e.Message = http.StatusText(rec.status)
	}
	return rec.status, e.Message
}
