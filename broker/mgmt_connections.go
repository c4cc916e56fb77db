package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/discovery"
	"github.com/dpop-broker/dpop-broker/sessions"
	"github.com/dpop-broker/dpop-broker/upstream"
)

// apiConnection is the connection object of the management API (the identity SaaS's shape).
// options.client_secret is write-only: it is never part of a response.
type apiConnection struct {
	ID                 string                   `json:"id"`
	Name               string                   `json:"name"`
	DisplayName        string                   `json:"display_name,omitempty"`
	Strategy           string                   `json:"strategy"`
	Options            config.ConnectionOptions `json:"options"`
	Realms             []string                 `json:"realms"`
	IsDomainConnection bool                     `json:"is_domain_connection"`
	ShowAsButton       bool                     `json:"show_as_button"`
	Metadata           map[string]string        `json:"metadata,omitempty"`
	EnabledClients     *[]string                `json:"enabled_clients,omitempty"` // by id only
}

// view returns the API object of cc, with enabled_clients when withClients.
func (s *Server) view(cc *config.Connection, withClients bool) apiConnection {
	o := cc.Options
	o.ClientSecret = "" // write-only
	v := apiConnection{
		ID: cc.ID, Name: cc.Name, DisplayName: cc.DisplayName, Strategy: cc.Strategy, Options: o,
		Realms: realmsOf(cc), ShowAsButton: cc.ButtonShown(), IsDomainConnection: cc.IsDomainConnection,
		Metadata: cc.Metadata,
	}
	if withClients {
		ec := s.effectiveClients(cc)
		if ec == nil {
			ec = []string{}
		}
		v.EnabledClients = &ec
	}
	return v
}

// realmsOf is the connection's realms: its name unless others were set (as in the SaaS).
func realmsOf(cc *config.Connection) []string {
	if len(cc.Realms) == 0 {
		return []string{cc.Name}
	}
	return cc.Realms
}

// connectionBody is a POST or PATCH body. Options is kept raw so that PATCH can tell an
// absent options from a given one (which replaces the whole object, as in the identity SaaS).
// id is accepted by PATCH only, equal to the path's: a connection read with GET can be sent
// back whole.
type connectionBody struct {
	ID                 *string         `json:"id"`
	Name               *string         `json:"name"`
	Strategy           *string         `json:"strategy"`
	DisplayName        *string         `json:"display_name"`
	Options            json.RawMessage `json:"options"`
	EnabledClients     *[]string       `json:"enabled_clients"`
	Realms             *[]string       `json:"realms"`
	IsDomainConnection *bool           `json:"is_domain_connection"`
	Metadata           json.RawMessage `json:"metadata"`
	ShowAsButton       *bool           `json:"show_as_button"`
}

// decodeMetadata reads metadata: an object of strings, where null drops the member; null
// (the whole member) clears it.
func decodeMetadata(raw json.RawMessage) (map[string]string, *apiError) {
	if string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, errBody("Expected type object on property metadata")
	}
	var m map[string]*string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errBody("metadata: the values must be strings (or null to remove one)")
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if v != nil {
			out[k] = *v
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// applyExtras sets the members kept for the SaaS's tools from body. realms and
// enabled_clients equal to what GET answers (realms defaulted to the name; enabled_clients
// with the clients whose own list names the connection) are what is stored already, so a
// connection read with GET and sent back whole keeps its stored values.
func (s *Server) applyExtras(cc *config.Connection, body *connectionBody) *apiError {
	if body.EnabledClients != nil && !sameSet(*body.EnabledClients, s.effectiveClients(cc)) {
		cc.EnabledClients = *body.EnabledClients
	}
	if body.Realms != nil && !slices.Equal(*body.Realms, realmsOf(cc)) {
		cc.Realms = *body.Realms
	}
	if body.IsDomainConnection != nil {
		cc.IsDomainConnection = *body.IsDomainConnection
	}
	if len(body.Metadata) > 0 {
		m, aerr := decodeMetadata(body.Metadata)
		if aerr != nil {
			return aerr
		}
		cc.Metadata = m
	}
	return nil
}

// sameSet reports whether a and b hold the same strings.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func decodeOptions(raw json.RawMessage) (*config.ConnectionOptions, *apiError) {
	if len(raw) == 0 {
		return nil, nil
	}
	if string(raw) == "null" || raw[0] != '{' {
		return nil, errBody("Expected type object on property options")
	}
	if err := strictMembers(raw, reflect.TypeFor[config.ConnectionOptions](), "options"); err != nil {
		return nil, errBody(err.Error())
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	var o config.ConnectionOptions
	if err := dec.Decode(&o); err != nil {
		return nil, errBody("options: " + jsonProblem(err))
	}
	return &o, nil
}

// checkConnection validates cc like the YAML, then the rules that need keys and the network:
// for DPoP a key for the alg and the upstream's discovery listing it (RFC 9449 §5.1,
// docs/conformance.md#discovery-dpop-gate); for a configured token_endpoint_auth_method the
// upstream listing it (and a client-authentication key for private_key_jwt); for use_par a
// pushed_authorization_request_endpoint.
func (s *Server) checkConnection(c *mgmtCall, cc *config.Connection) *apiError {
	ctx := c.r.Context()
	if aerr := s.validateConnection(cc); aerr != nil {
		return aerr
	}
	if aerr := s.domainAliasClash(ctx, cc); aerr != nil {
		return aerr
	}
	up, err := upstream.New(upstreamConfig(cc), *s.reg.options())
	alg := cc.Options.DPoPSigningAlg
	if err != nil && alg != "" && s.keys.DPoP[alg] == nil {
		return &apiError{http.StatusBadRequest, "dpop_key_missing", fmt.Sprintf(
			"Payload validation error: options.dpop_signing_alg: the broker has no DPoP private key for %s; configure keys.dpop.%s and restart the broker", alg, config.DPoPKeyName(alg))}
	}
	if cam := cc.Options.ClientAuthAlg(); err != nil && cam != "" && s.reg.options().ClientAuthKeys[cam].Key == nil {
		return &apiError{http.StatusBadRequest, "client_auth_key_missing", fmt.Sprintf(
			"Payload validation error: options.token_endpoint_auth_method: the broker has no client-authentication key for %s (private_key_jwt); configure keys.client_auth with alg %s and restart the broker", cam, cam)}
	}
	if err != nil {
		return errBody(strings.TrimPrefix(err.Error(), "upstream: "))
	}
	uc := up.Config()
	if aerr := s.consolePinnedConnectionProblem(&uc); aerr != nil {
		return aerr // a connection admitting console administrators (consolepin.go)
	}
	o := &cc.Options
	if alg == "" && o.TokenEndpointAuthMethod == "" && !o.UsePAR {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// A fresh client: the check must see the upstream's current document, not a cached one.
	doc, err := (&discovery.Client{HTTP: s.discoveryHTTP, Now: s.now}).Get(ctx, uc.Issuer, uc.DiscoveryURL)
	if err != nil {
		return s.discoveryAPIError(c, uc.Issuer, err)
	}
	if aerr := checkDPoPCapability(doc, uc.Issuer, alg); aerr != nil {
		return aerr
	}
	return checkUpstreamOffers(doc, &uc)
}

// checkDPoPCapability refuses DPoP with alg ("" = off) when the upstream of doc does not offer
// it (RFC 9449 §5.1).
func checkDPoPCapability(doc *discovery.Document, issuer, alg string) *apiError {
	if alg == "" {
		return nil
	}
	if _, err := doc.CheckDPoP(alg); err != nil {
		var ce *discovery.CapabilityError
		if !errors.As(err, &ce) {
			return errBody("cannot enable DPoP: " + err.Error())
		}
		if ce.Offered == nil {
			return &apiError{http.StatusBadRequest, ce.Code(), fmt.Sprintf(
				"Payload validation error: cannot enable DPoP: the upstream %s does not support DPoP (dpop_signing_alg_values_supported is absent from its discovery document)", issuer)}
		}
		return &apiError{http.StatusBadRequest, ce.Code(), fmt.Sprintf(
			"Payload validation error: cannot enable DPoP: the upstream %s does not offer %s; it offers dpop_signing_alg_values_supported [%s]",
			issuer, alg, strings.Join(ce.Offered, ", "))}
	}
	return nil
}

// checkUpstreamOffers refuses a client authentication method the upstream of doc does not
// list in token_endpoint_auth_methods_supported (or a private_key_jwt alg missing from
// token_endpoint_auth_signing_alg_values_supported), and use_par without a
// pushed_authorization_request_endpoint (RFC 9126 §5).
func checkUpstreamOffers(doc *discovery.Document, uc *upstream.Config) *apiError {
	if m := uc.TokenEndpointAuthMethod; m != "" {
		if err := upstream.CheckAuthMethod(doc, m, uc.TokenEndpointAuthSigningAlg); err != nil {
			return &apiError{http.StatusBadRequest, upstream.CodeClientAuthUnsupported,
				"Payload validation error: options.token_endpoint_auth_method: " + err.Error()}
		}
	}
	if uc.UsePAR {
		if err := upstream.CheckPAR(doc); err != nil {
			return &apiError{http.StatusBadRequest, upstream.CodePARNotSupported, "Payload validation error: options.use_par: " + err.Error()}
		}
	}
	return nil
}

// validateConnection checks cc as `config validate` checks a YAML entry, with its messages.
func (s *Server) validateConnection(cc *config.Connection) *apiError {
	errs := s.cfg.ValidateConnection(cc, s.storeClientIDs()...)
	if len(errs) == 0 {
		return nil
	}
	code := "invalid_body"
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
		if strings.HasPrefix(e.Key, "options.federated_connections_access_tokens") || e.Key == "options.upstream_params.offline_access" {
			code = "token_vault_conflict"
		}
	}
	return &apiError{http.StatusBadRequest, code, "Payload validation error: " + strings.Join(msgs, "; ")}
}

// errDiscoveryAPI is the answer to every discovery failure while a connection is checked.
// It is the same whatever went wrong (connection refused, timeout, refused by the upstream
// address policy, redirect, invalid document), so the management API cannot be used to probe
// which internal hosts and ports exist; the reason goes to the log and the fapi event.
var errDiscoveryAPI = &apiError{http.StatusBadRequest, upstream.CodeDiscovery,
	"Payload validation error: the connection cannot be checked against the upstream: its discovery document could not be used: it could not be fetched or is invalid (the reason is in the broker's log)"}

// discoveryAPIError logs why the discovery document of issuer could not be used, keeps the
// reason for the call's fapi event (read:logs only) and returns the generic answer.
func (s *Server) discoveryAPIError(c *mgmtCall, issuer string, err error) *apiError {
	s.log.Warn("management API: upstream discovery failed", "connection", c.conn, "issuer", issuer, "err", err)
	c.detail = fmt.Sprintf("discovery of %s: %v", issuer, err)
	return errDiscoveryAPI
}

// connStore returns the connection store after making sure the YAML connections are seeded.
func (s *Server) connStore(ctx context.Context) (sessions.Connections, *apiError) {
	if _, err := s.reg.current(ctx, false); err != nil {
		return nil, s.storeAPIError(err)
	}
	return s.reg.conns, nil
}

// loadConnection returns the stored document of the path's id.
func (s *Server) loadConnection(c *mgmtCall) (*storedConnection, *apiError) {
	id := c.r.PathValue("id")
	if !config.ValidConnectionID(id) {
		return nil, &apiError{http.StatusBadRequest, "invalid_uri", "Path validation error: id must be con_ followed by letters and digits"}
	}
	doc, aerr := loadStored[storedConnection](s, c, id, "connection", s.reg.conns.GetConnection, errNoConnection)
	if aerr != nil {
		return nil, aerr
	}
	c.connID, c.conn = doc.ID, doc.Name
	return doc, nil
}

// refreshAfterWrite makes this replica use a change at once (the others follow within the
// registry's recheck interval, or at their next login).
func (s *Server) refreshAfterWrite(ctx context.Context) {
	if _, err := s.reg.current(ctx, true); err != nil {
		s.log.Warn("connections not reloaded after a management write", "err", err)
	}
}

// GET /api/v2/connections: strategy (repeatable) and name filters; legacy page/per_page
// (+ include_totals) or checkpoint from/take; fields / include_fields. The list omits
// enabled_clients.
func (s *Server) listConnections(c *mgmtCall) *apiError {
	q := c.r.URL.Query()
	st, aerr := s.connStore(c.r.Context())
	if aerr != nil {
		return aerr
	}
	docs, err := st.ListConnections(c.r.Context())
	if err != nil {
		return s.storeAPIError(err)
	}
	strategies, name := q["strategy"], q.Get("name")
	var all []apiConnection
	for _, raw := range docs {
		var doc storedConnection
		if json.Unmarshal(raw, &doc) != nil {
			continue
		}
		if len(strategies) > 0 && !slices.Contains(strategies, doc.Strategy) || name != "" && doc.Name != name {
			continue
		}
		all = append(all, s.view(&doc.Connection, false))
	}
	if all == nil {
		all = []apiConnection{}
	}
	return pagedList(s, c, "connections", all, func(v apiConnection) string { return v.Name })
}

// pagedList answers all (sorted by key) in the management API's list forms: checkpoint
// from/take ({field: page, next: cursor}), or page/per_page as an array, or with
// include_totals as {total, start, limit, field: page}.
func pagedList[T any](s *Server, c *mgmtCall, field string, all []T, key func(T) string) *apiError {
	q := c.r.URL.Query()
	if q.Has("from") || q.Has("take") {
		return checkpointPage(s, c, field, all, key)
	}
	pageN, aerr := pageParam(q)
	if aerr != nil {
		return aerr
	}
	perPage, aerr := intParam(q, "per_page", 50, 1, 100)
	if aerr != nil {
		return aerr
	}
	page, start := pageOf(all, pageN, perPage)
	items, aerr := selectEach(s, c, page)
	if aerr != nil {
		return aerr
	}
	if b, _ := strconv.ParseBool(q.Get("include_totals")); b {
		s.apiJSON(c, http.StatusOK, map[string]any{"total": len(all), "start": start, "limit": perPage, field: items})
		return nil
	}
	s.apiJSON(c, http.StatusOK, items)
	return nil
}

// pageParam is a list's page number (from 0; default 0).
func pageParam(q url.Values) (int, *apiError) { return intParam(q, "page", 0, 0, 1<<20) }

// pageOf is the page-th (from 0) page of perPage items of all, and the index of its first
// item (len(all) past the last page).
func pageOf[T any](all []T, page, perPage int) (items []T, start int) {
	start = min(page*perPage, len(all))
	return all[start:min(start+perPage, len(all))], start
}

// checkpointPage answers the take (1 to 100, default 50) items of all (sorted by key) after
// the cursor from as {field: page, next: cursor}; next is absent on the last page.
func checkpointPage[T any](s *Server, c *mgmtCall, field string, all []T, key func(T) string) *apiError {
	q := c.r.URL.Query()
	take, aerr := intParam(q, "take", 50, 1, 100)
	if aerr != nil {
		return aerr
	}
	start := 0
	if from := q.Get("from"); from != "" {
		after, err := base64.RawURLEncoding.DecodeString(from)
		if err != nil {
			return errQuery("from is not a cursor returned by this API")
		}
		start = len(all)
		for i, v := range all {
			if key(v) > string(after) {
				start = i
				break
			}
		}
	}
	page := all[start:min(start+take, len(all))]
	items, aerr := selectEach(s, c, page)
	if aerr != nil {
		return aerr
	}
	out := map[string]any{field: items}
	if start+take < len(all) {
		out["next"] = base64.RawURLEncoding.EncodeToString([]byte(key(page[len(page)-1])))
	}
	s.apiJSON(c, http.StatusOK, out)
	return nil
}

// intParam parses an optional integer query parameter within [lo, hi].
func intParam(q map[string][]string, name string, def, lo, hi int) (int, *apiError) {
	vs := q[name]
	if len(vs) == 0 || vs[0] == "" {
		return def, nil
	}
	if len(vs) > 1 {
		return 0, errQuery(name + " must not be repeated")
	}
	n, err := strconv.Atoi(vs[0])
	if err != nil || n < lo || n > hi {
		return 0, errQuery(fmt.Sprintf("%s must be an integer from %d to %d", name, lo, hi))
	}
	return n, nil
}

// GET /api/v2/connections/{id}: fields / include_fields. Its enabled_clients include the
// clients whose connections name it, read from the store's current version (a client created
// through another replica a moment ago included).
func (s *Server) getConnection(c *mgmtCall) *apiError {
	doc, aerr := s.loadConnection(c)
	if aerr != nil {
		return aerr
	}
	if _, err := s.reg.current(c.r.Context(), true); err != nil {
		return s.storeAPIError(err)
	}
	v, aerr := s.selectFields(c, s.view(&doc.Connection, true))
	if aerr != nil {
		return aerr
	}
	s.apiJSON(c, http.StatusOK, v)
	return nil
}

// POST /api/v2/connections: 201 and the object; id "con_" + 16 random characters.
func (s *Server) createConnection(c *mgmtCall) *apiError {
	var body connectionBody
	if aerr := decodeBody(c, &body); aerr != nil {
		return aerr
	}
	var missing []string
	if body.Name == nil {
		missing = append(missing, "name")
	}
	if body.Strategy == nil {
		missing = append(missing, "strategy")
	}
	if len(body.Options) == 0 {
		missing = append(missing, "options")
	}
	if len(missing) > 0 {
		return errBody("Missing required property: " + strings.Join(missing, ", "))
	}
	if body.ID != nil {
		return errBody("Additional properties not allowed: id (the broker draws it)")
	}
	opts, aerr := decodeOptions(body.Options)
	if aerr != nil {
		return aerr
	}
	opts.ApplyDefaults()
	cc := config.Connection{Name: *body.Name, Strategy: *body.Strategy, Options: *opts}
	if body.DisplayName != nil {
		cc.DisplayName = *body.DisplayName
	}
	if aerr := s.applyExtras(&cc, &body); aerr != nil {
		return aerr
	}
	if body.ShowAsButton != nil {
		cc.ShowAsButton = body.ShowAsButton
	}
	c.conn = cc.Name
	if aerr := s.checkConnection(c, &cc); aerr != nil {
		return aerr
	}
	st, aerr := s.connStore(c.r.Context())
	if aerr != nil {
		return aerr
	}
	for range 3 {
		cc.ID = newConnectionID()
		raw, err := json.Marshal(storedConnection{Connection: cc})
		if err != nil {
			return s.storeAPIError(err)
		}
		err = st.CreateConnection(c.r.Context(), cc.ID, cc.Name, raw)
		if errors.Is(err, sessions.ErrExists) {
			if _, _, e := st.ConnectionByName(c.r.Context(), cc.Name); e == nil {
				return &apiError{http.StatusConflict, "connection_conflict", "A connection with the same name already exists"}
			}
			continue // id collision: draw another
		}
		if err != nil {
			return s.storeAPIError(err)
		}
		c.connID = cc.ID
		s.refreshAfterWrite(c.r.Context())
		s.apiJSON(c, http.StatusCreated, s.view(&cc, true))
		return nil
	}
	return s.storeAPIError(errors.New("could not draw a free connection id"))
}

// newConnectionID returns "con_" + 16 random letters and digits.
func newConnectionID() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 16)
	for i := range b {
		for {
			var x [1]byte
			_, _ = rand.Read(x[:])
			if int(x[0]) < 4*len(alphabet) { // 248: unbiased
				b[i] = alphabet[int(x[0])%len(alphabet)]
				break
			}
		}
	}
	return "con_" + string(b)
}

// PATCH /api/v2/connections/{id}: display_name, enabled_clients, show_as_button, options,
// realms, is_domain_connection, metadata. options replaces the whole object: without
// dpop_signing_alg DPoP is off. client_secret is write-only, so options without it keep the
// stored secret. id, name and strategy cannot change; sent unchanged (a connection read with
// GET and sent back whole) they are accepted.
func (s *Server) patchConnection(c *mgmtCall) *apiError {
	doc, aerr := s.loadConnection(c)
	if aerr != nil {
		return aerr
	}
	var body connectionBody
	if aerr := decodeBody(c, &body); aerr != nil {
		return aerr
	}
	if body.ID != nil && *body.ID != doc.ID {
		return errBody("id cannot be changed (Additional properties not allowed: id)")
	}
	if body.Name != nil && *body.Name != doc.Name {
		return errBody("name cannot be changed (Additional properties not allowed: name)")
	}
	if body.Strategy != nil && *body.Strategy != doc.Strategy {
		return errBody("strategy cannot be changed (Additional properties not allowed: strategy)")
	}
	cc := doc.Connection
	if body.DisplayName != nil {
		cc.DisplayName = *body.DisplayName
	}
	if aerr := s.applyExtras(&cc, &body); aerr != nil {
		return aerr
	}
	if body.ShowAsButton != nil {
		cc.ShowAsButton = body.ShowAsButton
	}
	if len(body.Options) > 0 {
		opts, aerr := decodeOptions(body.Options)
		if aerr != nil {
			return aerr
		}
		if opts.ClientSecret == "" && opts.TokenEndpointAuthMethod != config.AuthPrivateKeyJWT {
			opts.ClientSecret = doc.Options.ClientSecret // write-only: kept unless private_key_jwt replaces it
		}
		opts.ApplyDefaults()
		cc.Options = *opts
	}
	if aerr := s.checkConnection(c, &cc); aerr != nil {
		return aerr
	}
	if aerr := s.updateConnection(c, doc, &cc); aerr != nil {
		return aerr
	}
	s.apiJSON(c, http.StatusOK, s.view(&cc, true))
	return nil
}

// updateConnection stores cc as the new version of doc (keeping its config_hash) and makes
// this replica use it.
func (s *Server) updateConnection(c *mgmtCall, doc *storedConnection, cc *config.Connection) *apiError {
	recordChanges(c, flatJSON(doc.Connection), flatJSON(cc))
	raw, err := json.Marshal(storedConnection{Connection: *cc, ConfigHash: doc.ConfigHash})
	if err != nil {
		return s.storeAPIError(err)
	}
	if aerr := s.storeResult(s.reg.conns.UpdateConnection(c.r.Context(), cc.ID, raw), errNoConnection); aerr != nil {
		return aerr
	}
	s.refreshAfterWrite(c.r.Context())
	return nil
}

// DELETE /api/v2/connections/{id}: 202, as the identity SaaS answers. A connection seeded from the YAML leaves a
// tombstone (its config_hash), so restarts with the same YAML entry do not bring it back;
// editing that entry applies it again (the seeding rule in registry.go).
func (s *Server) deleteConnection(c *mgmtCall) *apiError {
	doc, aerr := s.loadConnection(c)
	if aerr != nil {
		return aerr
	}
	if aerr := s.consolePinnedDeleteProblem(doc.Name); aerr != nil {
		return aerr
	}
	if aerr := s.storeResult(s.reg.conns.DeleteConnection(c.r.Context(), doc.ID, []byte(doc.ConfigHash)), errNoConnection); aerr != nil {
		return aerr
	}
	s.refreshAfterWrite(c.r.Context())
	s.apiJSON(c, http.StatusAccepted, map[string]string{"message": "The connection is being deleted."})
	return nil
}

// readLimited reads at most limit bytes of the body; more is an error.
func readLimited(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, errors.New("body too large")
	}
	return b, nil
}
