package broker

import (
	"fmt"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dpop-broker/dpop-broker/config"
	"github.com/dpop-broker/dpop-broker/logstream"
	"github.com/dpop-broker/dpop-broker/sessions"
)

// logStreams runs log_streams (package logstream): each stream reads the event log through
// the server's writer (so it never passes an event this replica is still storing) and keeps
// its position in the log's store under its name. Its requests go through a client of its own
// with the upstream address policy (egress.go): the URL is the operator's, yet its host's
// addresses are checked when dialled, so a name that comes to resolve to an internal address
// (cloud metadata, the store, …) reaches nothing; log_streams[].allowed_networks admits an
// endpoint on the internal network, for that stream only.
//
// Every view of a Server shares one logStreams. The streams start with Init and stop with
// Close; a reload that changes log_streams replaces them (replace): the running streams are
// stopped (their leases released, an attempt in flight abandoned and sent again later), and
// the file's streams started, each resuming at the position stored under its name as after a
// restart, so a stream removed from the file or given another endpoint, token or secret sends
// nothing more the old way, and one whose settings changed under the same name loses nothing
// (at least once: it may send its late window again, as after a restart).
type logStreams struct {
	reg      *prometheus.Registry
	resolver *net.Resolver
	// cursors keeps the streams' positions and leases: the event log's store; nil when it
	// keeps none (then no stream can be configured).
	cursors sessions.LogCursors
	// eventsStore names the event log's store in the error of a configuration with streams
	// but no cursors.
	eventsStore sessions.Store

	mu         sync.Mutex
	cur        *logstream.Streams // nil: no stream configured
	collectors []prometheus.Collector
	started    bool
	closed     bool
}

// collectorList is a prometheus.Registerer that only keeps what is registered: the
// collectors of streams built for a reload are registered when they replace the running
// ones, not before (a refused reload leaves the running streams' series alone).
type collectorList struct{ cs []prometheus.Collector }

func (l *collectorList) Register(c prometheus.Collector) error   { l.cs = append(l.cs, c); return nil }
func (l *collectorList) MustRegister(cs ...prometheus.Collector) { l.cs = append(l.cs, cs...) }
func (l *collectorList) Unregister(prometheus.Collector) bool    { return false }

// newLogStreams prepares the shared log streams of the server and builds cfg's (started by
// Init).
func (s *Server) newLogStreams(cfg *config.Config, deps Deps, raw sessions.Store) (*logStreams, error) {
	ls := &logStreams{reg: s.metrics.reg, resolver: deps.Resolver, eventsStore: s.events.Store}
	cursors, ok := s.events.Store.(sessions.LogCursors)
	if !ok && sameStore(s.events.Store, s.store) { // the writer New built on the metered store
		cursors, ok = raw.(sessions.LogCursors)
	}
	if ok {
		ls.cursors = cursors
	}
	streams, collectors, err := s.buildLogStreams(ls, cfg)
	if err != nil {
		return nil, err
	}
	ls.replace(streams, collectors)
	return ls, nil
}

// buildLogStreams builds cfg's log streams on ls (nil without any), with their metric
// collectors, registered by replace. Nothing runs or is registered yet.
func (s *Server) buildLogStreams(ls *logStreams, cfg *config.Config) (*logstream.Streams, []prometheus.Collector, error) {
	if len(cfg.LogStreams) == 0 {
		return nil, nil, nil
	}
	if ls.cursors == nil {
		return nil, nil, fmt.Errorf("log_streams: the event log's store (%T) keeps no stream positions", ls.eventsStore)
	}
	streams := make([]logstream.Stream, len(cfg.LogStreams))
	for i := range cfg.LogStreams {
		c := &cfg.LogStreams[i]
		key := fmt.Sprintf("log_streams[%d].allowed_networks", i)
		policy, err := newEgressPolicy(c.AllowedNetworks)
		if err != nil {
			return nil, nil, fmt.Errorf("log_streams[%d]: %w", i, err)
		}
		policy.setting = key
		client, err := upstreamClient(nil, upstreamHTTPOptions{timeout: c.Timeout, policy: policy, resolver: ls.resolver})
		if err != nil {
			return nil, nil, err
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
	reg := &collectorList{}
	st, err := logstream.New(logstream.Options{
		Events: s.events, Cursors: ls.cursors, Logger: s.log, Metrics: reg,
	}, streams...)
	if err != nil {
		return nil, nil, fmt.Errorf("log_streams: %w", err)
	}
	return st, reg.cs, nil
}

// replace stops the running streams and puts next (nil: none) with its collectors in their
// place, started when the streams have been started and not closed. After Close it only
// discards next.
func (ls *logStreams) replace(next *logstream.Streams, collectors []prometheus.Collector) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		if next != nil {
			next.Close()
		}
		return
	}
	if ls.cur != nil {
		ls.cur.Close() // waits for its senders: none sends once this returns
	}
	for _, c := range ls.collectors {
		ls.reg.Unregister(c)
	}
	ls.cur, ls.collectors = next, nil
	for _, c := range collectors {
		if err := ls.reg.Register(c); err == nil {
			ls.collectors = append(ls.collectors, c)
		}
	}
	if ls.started && next != nil {
		next.Start()
	}
}

// start starts the streams (once; nothing without log_streams).
func (ls *logStreams) start() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.started || ls.closed {
		return
	}
	ls.started = true
	if ls.cur != nil {
		ls.cur.Start()
	}
}

// close stops the streams, releasing their leases to the other replicas; a later replace
// starts nothing.
func (ls *logStreams) close() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.closed = true
	if ls.cur != nil {
		ls.cur.Close()
	}
}

// names are the running streams' names (nil without any).
func (ls *logStreams) names() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.cur == nil {
		return nil
	}
	return ls.cur.Names()
}

// startLogStreams starts the log streams (once; nothing without log_streams).
func (s *Server) startLogStreams() { s.streams.start() }

// closeLogStreams stops the log streams, releasing their leases to the other replicas.
func (s *Server) closeLogStreams() { s.streams.close() }
