package broker

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/dpop-broker/dpop-broker/config"
)

// GET and PATCH /api/v2/connections/{id}/clients: the apps a connection is enabled for, as
// the SaaS's endpoints of that name (its successor of the connection's enabled_clients).
// An app is enabled by the connection's own enabled_clients or by naming the connection in
// its own connections list; PATCH changes the former only.

// maxEnabledClientsPatch bounds the entries of one PATCH, as the SaaS does.
const maxEnabledClientsPatch = 50

// enabledClientChange is one entry of a PATCH body.
type enabledClientChange struct {
	ClientID *string `json:"client_id"`
	Status   *bool   `json:"status"`
}

// GET /api/v2/connections/{id}/clients: {"clients": [{"client_id": ...}], "next": CURSOR} by
// client_id, checkpoint paging with from (the previous page's next) and take (1 to 100,
// default 50); next is absent on the last page.
func (s *Server) listConnectionClients(c *mgmtCall) *apiError {
	doc, aerr := s.loadConnection(c)
	if aerr != nil {
		return aerr
	}
	ids := s.effectiveClients(&doc.Connection) // sorted, unique
	items := make([]map[string]string, len(ids))
	for i, id := range ids {
		items[i] = map[string]string{"client_id": id}
	}
	return checkpointPage(s, c, "clients", items, func(m map[string]string) string { return m["client_id"] })
}

// PATCH /api/v2/connections/{id}/clients: a body of 1 to 50 {"client_id", "status"} entries
// enables (true) or disables (false) the connection for each app; 204. An app that names the
// connection in its own connections list cannot be disabled here (400 naming it).
func (s *Server) patchConnectionClients(c *mgmtCall) *apiError {
	doc, aerr := s.loadConnection(c)
	if aerr != nil {
		return aerr
	}
	var changes []enabledClientChange
	if aerr := decodeJSONBody(c, &changes, true); aerr != nil {
		return aerr
	}
	if len(changes) == 0 || len(changes) > maxEnabledClientsPatch {
		return errBody(fmt.Sprintf("the body must list 1 to %d clients", maxEnabledClientsPatch))
	}
	cc := doc.Connection
	own := slices.Clone(cc.EnabledClients)
	// The apps that name the connection themselves: effectiveClients of the connection
	// without its own list.
	naming := s.effectiveClients(&config.Connection{Name: cc.Name})
	seen := map[string]bool{}
	for i, ch := range changes {
		if ch.ClientID == nil || *ch.ClientID == "" || ch.Status == nil {
			return errBody(fmt.Sprintf("[%d]: client_id and status are required", i))
		}
		id := *ch.ClientID
		if seen[id] {
			return errBody(fmt.Sprintf("[%d]: client %q is listed twice", i, clipName(id)))
		}
		seen[id] = true
		if *ch.Status {
			if !slices.Contains(own, id) && !slices.Contains(naming, id) {
				own = append(own, id)
			}
			continue
		}
		if slices.Contains(naming, id) {
			return errBody(fmt.Sprintf("[%d]: client %q names this connection in its own connections list: change that list (PATCH /api/v2/clients/%s, or clients[].connections in the YAML)", i, clipName(id), id))
		}
		own = slices.DeleteFunc(own, func(x string) bool { return x == id })
	}
	cc.EnabledClients = own
	if aerr := s.validateConnection(&cc); aerr != nil {
		return aerr
	}
	if aerr := s.updateConnection(c, doc, &cc); aerr != nil {
		return aerr
	}
	s.apiEmpty(c, http.StatusNoContent)
	return nil
}
