package broker

import (
	"fmt"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logstream"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// newLogStreams prepares log_streams (package logstream): each stream reads the event log
// through the server's writer (so it never passes an event this replica is still storing)
// and keeps its position in the log's store. Its requests go through a client of its own
// with the upstream address policy (egress.go): the URL is the operator's, yet its host's
// addresses are checked when dialled, so a name that comes to resolve to an internal address
// (cloud metadata, the store, …) reaches nothing; log_streams[].allowed_networks admits an
// endpoint on the internal network, for that stream only. The streams start with Init.
func (s *Server) newLogStreams(cfg *config.Config, deps Deps, raw sessions.Store) (*logstream.Streams, error) {
	if len(cfg.LogStreams) == 0 {
		return nil, nil
	}
	cursors, ok := s.events.Store.(sessions.LogCursors)
	if !ok && sameStore(s.events.Store, s.store) { // the writer New built on the metered store
		cursors, ok = raw.(sessions.LogCursors)
	}
	if !ok {
		return nil, fmt.Errorf("log_streams: the event log's store (%T) keeps no stream positions", s.events.Store)
	}
	streams := make([]logstream.Stream, len(cfg.LogStreams))
	for i := range cfg.LogStreams {
		c := &cfg.LogStreams[i]
		key := fmt.Sprintf("log_streams[%d].allowed_networks", i)
		policy, err := newEgressPolicy(c.AllowedNetworks)
		if err != nil {
			return nil, fmt.Errorf("log_streams[%d]: %w", i, err)
		}
		policy.setting = key
		client, err := upstreamClient(nil, upstreamHTTPOptions{timeout: c.Timeout, policy: policy, resolver: deps.Resolver})
		if err != nil {
			return nil, err
		}
		streams[i] = logstream.Stream{
			Name: c.Name, URL: c.URL, Types: c.Types, BatchSize: c.BatchSize, StartOldest: c.Start == "oldest",
			Timeout: c.Timeout, MaxBackoff: c.MaxBackoff, LateWindow: c.LateWindow, HTTP: client,
		}
		switch c.Auth.Type {
		case config.LogStreamBearer:
			streams[i].BearerToken = c.Auth.Token
		case config.LogStreamHMAC:
			streams[i].HMACKey = c.Auth.HMACKey()
		}
	}
	ls, err := logstream.New(logstream.Options{
		Events: s.events, Cursors: cursors, Logger: s.log, Metrics: s.metrics.reg,
	}, streams...)
	if err != nil {
		return nil, fmt.Errorf("log_streams: %w", err)
	}
	return ls, nil
}

// startLogStreams starts the log streams (once; nothing without log_streams).
func (s *Server) startLogStreams() {
	if s.streams != nil {
		s.streams.Start()
	}
}

// closeLogStreams stops the log streams, releasing their leases to the other replicas.
func (s *Server) closeLogStreams() {
	if s.streams != nil {
		s.streams.Close()
	}
}
