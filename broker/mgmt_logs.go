package broker

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/dpop-broker/dpop-broker/logs"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// GET /api/v2/logs (the identity SaaS's log API). Search mode: q (or search, its other name,
// which the SaaS's Node SDK sends), page, per_page, sort, include_totals; fields /
// include_fields in both modes.
// Checkpoint mode (from or take given): the search parameters, q included, are ignored; the
// events come in log_id order and the Link header's rel="next" continues after the last one
// (the same URL again when the page is empty).
func (s *Server) searchLogs(c *mgmtCall) *apiError {
	q := c.r.URL.Query()
	ctx := c.r.Context()
	if q.Has("from") || q.Has("take") {
		take, aerr := intParam(q, "take", logs.DefaultTake, 1, logs.MaxTake)
		if aerr != nil {
			return aerr
		}
		from := q.Get("from")
		evs, err := s.events.Search(ctx, logs.Query{From: from, Take: take, Checkpoint: true})
		if err != nil {
			return s.logsError(err)
		}
		next := from
		if len(evs) > 0 {
			next = evs[len(evs)-1].LogID
		}
		nq := url.Values{"take": {strconv.Itoa(take)}}
		if next != "" {
			nq.Set("from", next)
		}
		items, aerr := selectEach(s, c, evs)
		if aerr != nil {
			return aerr
		}
		c.w.Header().Set("Link", "<"+s.publicOrigin()+c.r.URL.Path+"?"+nq.Encode()+`>; rel="next"`)
		s.apiJSON(c, http.StatusOK, items)
		return nil
	}
	page, aerr := intParam(q, "page", 0, 0, logs.MaxReachable)
	if aerr != nil {
		return aerr
	}
	perPage, aerr := intParam(q, "per_page", logs.DefaultPerPage, 1, logs.MaxPerPage)
	if aerr != nil {
		return aerr
	}
	lucene := q.Get("q")
	if q.Has("search") {
		if q.Has("q") && q.Get("search") != lucene {
			return errQuery("search is another name of q: send one of them")
		}
		lucene = q.Get("search")
	}
	query := logs.Query{Q: lucene, Page: page, PerPage: perPage, Sort: q.Get("sort")}
	evs, err := s.events.Search(ctx, query)
	if err != nil {
		return s.logsError(err)
	}
	items, aerr := selectEach(s, c, evs)
	if aerr != nil {
		return aerr
	}
	if b, _ := strconv.ParseBool(q.Get("include_totals")); b {
		total, err := s.countLogs(c, query)
		if err != nil {
			return s.logsError(err)
		}
		s.apiJSON(c, http.StatusOK, map[string]any{
			"start": page * perPage, "limit": perPage, "length": len(evs), "total": total, "logs": items,
		})
		return nil
	}
	s.apiJSON(c, http.StatusOK, items)
	return nil
}

// countLogs counts the reachable matches of query (at most logs.MaxReachable).
func (s *Server) countLogs(c *mgmtCall, query logs.Query) (int, error) {
	query.PerPage, query.Sort = logs.MaxPerPage, ""
	total := 0
	for p := range logs.MaxReachable / logs.MaxPerPage {
		query.Page = p
		evs, err := s.events.Search(c.r.Context(), query)
		if err != nil {
			return 0, err
		}
		total += len(evs)
		if len(evs) < logs.MaxPerPage {
			break
		}
	}
	return total, nil
}

// GET /api/v2/logs/{id}
func (s *Server) getLog(c *mgmtCall) *apiError {
	ev, err := s.events.Get(c.r.Context(), c.r.PathValue("id"))
	switch {
	case errors.Is(err, logs.ErrInvalidQuery):
		return &apiError{http.StatusBadRequest, "invalid_uri", "Path validation error: id must be a log_id (56 digits)"}
	case errors.Is(err, sessions.ErrNotFound):
		return &apiError{http.StatusNotFound, "inexistent_log", "The log does not exist."}
	case err != nil:
		return s.logsError(err)
	}
	s.apiJSON(c, http.StatusOK, ev)
	return nil
}

// logsError maps a Search/Get error: 414 for an over-long q, 400 for malformed input, else
// 503 store_unavailable.
func (s *Server) logsError(err error) *apiError {
	switch {
	case errors.Is(err, logs.ErrQueryTooLong):
		return &apiError{http.StatusRequestURITooLong, "invalid_query_string", "Query validation error: q is too long"}
	case errors.Is(err, logs.ErrInvalidQuery):
		return errQuery(err.Error())
	}
	// Anything else failed reading the event log's store (which need not be the server's
	// own, metered one): 503, never 500.
	s.log.Error("management API: reading the event log failed", "err", err)
	return errStoreUnavailableAPI
}

// publicOrigin is the scheme and host of the public URL (paths come from the request).
func (s *Server) publicOrigin() string {
	u, err := url.Parse(s.base)
	if err != nil {
		return s.base
	}
	return u.Scheme + "://" + u.Host
}

// nonNil returns v, or an empty slice for nil (answered [] rather than null).
func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}
