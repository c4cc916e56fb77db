package broker

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// The console overview's numbers: the login counters of logintally.go read back for the last
// hour, day or week (never a scan of the event log, so they outlive trimmed events).

// overviewSpan is one time range the overview shows.
type overviewSpan struct {
	Name  string        // "hour", "day", "week"
	Range time.Duration // how far back
	Step  sessions.TallyStep
	Group int // buckets per chart point
}

// overviewSpans are the ranges the overview offers: the last hour minute by minute, the last
// day in 15-minute points (from minute buckets), the last week hour by hour.
var overviewSpans = []overviewSpan{
	{Name: "hour", Range: time.Hour, Step: sessions.TallyMinute, Group: 1},
	{Name: "day", Range: 24 * time.Hour, Step: sessions.TallyMinute, Group: 15},
	{Name: "week", Range: 7 * 24 * time.Hour, Step: sessions.TallyHour, Group: 1},
}

// spanNamed returns the span called name ("" is the hour), or false.
func spanNamed(name string) (overviewSpan, bool) {
	if name == "" {
		return overviewSpans[0], true
	}
	for _, sp := range overviewSpans {
		if sp.Name == name {
			return sp, true
		}
	}
	return overviewSpan{}, false
}

// PointWidth is the time one chart point covers.
func (sp overviewSpan) PointWidth() time.Duration {
	return time.Duration(sp.Group) * sp.Step.Duration()
}

// overviewPoint is one chart point: what happened in [Start, Start+PointWidth).
type overviewPoint struct {
	Start            time.Time
	Success, Failure int64
	Retries          int64
}

// codeCount is a failure code and how often it was seen.
type codeCount struct {
	Code  string
	Count int64
}

// connOverview is one connection's numbers over the span.
type connOverview struct {
	Name             string
	Success, Failure int64
	Tokens, DPoP     int64 // upstream token answers with a token_type, of which DPoP-bound
	Downgrades       int64 // Bearer although DPoP is configured
	Retries          int64
	RequiresDPoP     int64                         // failures upstream_requires_dpop: DPoP off, the upstream requires it
	Latency          [len(latencyBounds) + 1]int64 // exchanges by latency bucket
	// Per chart point: logins (s and f), failures, token answers and downgrades.
	Logins, Failures, TokenSeries, DowngradeSeries []int64
	// Jumps says why the connection needs a look now (empty when it does not): its failures
	// or its Bearer downgrades in the last sixth of the span are well above the rest.
	Jumps []string
}

// SuccessRate is the share of logins that succeeded, -1 without logins.
func (c *connOverview) SuccessRate() float64 { return share(c.Success, c.Success+c.Failure) }

// DPoPShare is the share of upstream tokens that were DPoP-bound, -1 without tokens.
func (c *connOverview) DPoPShare() float64 { return share(c.DPoP, c.Tokens) }

// P50 and P95 are the exchange-latency quantiles in milliseconds, -1 without exchanges.
func (c *connOverview) P50() float64 { return latencyQuantile(c.Latency[:], 0.50) }
func (c *connOverview) P95() float64 { return latencyQuantile(c.Latency[:], 0.95) }

func share(n, of int64) float64 {
	if of <= 0 {
		return -1
	}
	return float64(n) / float64(of)
}

// latencyQuantile estimates quantile q (0..1) of the exchange latency in milliseconds from
// bucket counts, interpolating linearly inside the bucket it falls in (the open last bucket
// answers its lower bound). -1 without exchanges.
func latencyQuantile(counts []int64, q float64) float64 {
	var total int64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return -1
	}
	rank := q * float64(total)
	var cum int64
	for i, n := range counts {
		if n == 0 || float64(cum+n) < rank {
			cum += n
			continue
		}
		lo := 0.0
		if i > 0 {
			lo = float64(latencyBounds[i-1])
		}
		if i == len(latencyBounds) {
			return lo
		}
		hi := float64(latencyBounds[i])
		return lo + (hi-lo)*(rank-float64(cum))/float64(n)
	}
	return float64(latencyBounds[len(latencyBounds)-1])
}

// loginOverview is what the overview shows for one span.
type loginOverview struct {
	Span        overviewSpan
	From, To    time.Time
	Points      []overviewPoint
	Success     int64
	Failure     int64
	Retries     int64
	Errors      []codeCount // failures by code, most frequent first
	Connections []*connOverview
}

// maxOverviewConnections bounds the connections one overview lists (the busiest ones).
const maxOverviewConnections = 200

// overview reads the login counters of the span ending at now.
func (s *Server) overview(ctx context.Context, sp overviewSpan, now time.Time) (*loginOverview, error) {
	step := sp.Step.Duration()
	width := sp.PointWidth()
	// The last point ends with the current bucket; points are aligned on their width.
	end := now.Truncate(step).Add(step)
	from := end.Add(-sp.Range).Truncate(width)
	bs, err := s.events.Tallies(ctx, sp.Step, from, end)
	if err != nil {
		return nil, fmt.Errorf("overview: %w", err)
	}
	return summarize(sp, from, end, bs), nil
}

// summarize turns the buckets of [from, to) into the overview of span sp.
func summarize(sp overviewSpan, from, to time.Time, bs []sessions.TallyBucket) *loginOverview {
	width := sp.PointWidth()
	n := int((to.Sub(from) + width - 1) / width)
	o := &loginOverview{Span: sp, From: from, To: to, Points: make([]overviewPoint, n)}
	for i := range o.Points {
		o.Points[i].Start = from.Add(time.Duration(i) * width)
	}
	codes := map[string]int64{}
	conns := map[string]*connOverview{}
	conn := func(name string) *connOverview {
		c := conns[name]
		if c == nil {
			c = &connOverview{Name: name, Logins: make([]int64, n), Failures: make([]int64, n),
				TokenSeries: make([]int64, n), DowngradeSeries: make([]int64, n)}
			conns[name] = c
		}
		return c
	}
	for _, b := range bs {
		i := int(b.Start.Sub(from) / width)
		if i < 0 || i >= n {
			continue
		}
		p := &o.Points[i]
		for name, v := range b.Counts {
			switch {
			case name == tallySuccess:
				p.Success += v
			case name == tallyFailure:
				p.Failure += v
			case name == tallyRetries:
				p.Retries += v
			case strings.HasPrefix(name, tallyErr):
				codes[name[len(tallyErr):]] += v
			case strings.HasPrefix(name, tallyConn):
				cn, metric, ok := strings.Cut(name[len(tallyConn):], ":")
				if !ok || cn == "" {
					continue
				}
				addConn(conn(cn), i, metric, v)
			}
		}
	}
	for _, p := range o.Points {
		o.Success += p.Success
		o.Failure += p.Failure
		o.Retries += p.Retries
	}
	for code, v := range codes {
		o.Errors = append(o.Errors, codeCount{Code: code, Count: v})
	}
	slices.SortFunc(o.Errors, func(a, b codeCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Code, b.Code))
	})
	for _, c := range conns {
		c.Jumps = jumps(c)
		o.Connections = append(o.Connections, c)
	}
	// Connections that need a look first, then the busiest, then by name.
	slices.SortFunc(o.Connections, func(a, b *connOverview) int {
		return cmp.Or(cmp.Compare(len(b.Jumps), len(a.Jumps)),
			cmp.Compare(b.Success+b.Failure, a.Success+a.Failure), cmp.Compare(a.Name, b.Name))
	})
	if len(o.Connections) > maxOverviewConnections {
		o.Connections = o.Connections[:maxOverviewConnections]
	}
	return o
}

// addConn adds counter metric (the part after "c:NAME:") of value v at point i to c.
func addConn(c *connOverview, i int, metric string, v int64) {
	switch metric {
	case "s":
		c.Success += v
		c.Logins[i] += v
	case "f":
		c.Failure += v
		c.Logins[i] += v
		c.Failures[i] += v
	case "tok":
		c.Tokens += v
		c.TokenSeries[i] += v
	case "dpop":
		c.DPoP += v
	case "down":
		c.Downgrades += v
		c.DowngradeSeries[i] += v
	case "r":
		c.Retries += v
	case "nodpop":
		c.RequiresDPoP += v
	default:
		if b, ok := strings.CutPrefix(metric, "l"); ok {
			if k, err := strconv.Atoi(b); err == nil && k >= 0 && k < len(c.Latency) {
				c.Latency[k] += v
			}
		}
	}
}

// jumps reports a connection whose failure rate, or Bearer-downgrade rate, in the last sixth
// of the span is at least 20 % over at least 3 events, and at least twice the rate of the
// rest plus 10 points: a change an on-call engineer should see at a glance.
func jumps(c *connOverview) []string {
	cut := len(c.Failures) - max(1, len(c.Failures)/6)
	var out []string
	if jumped(c.Failures, c.Logins, cut) {
		out = append(out, "failures jumped")
	}
	if jumped(c.DowngradeSeries, c.TokenSeries, cut) {
		out = append(out, "Bearer downgrades jumped")
	}
	return out
}

// jumped compares the rate events/trials of the points at and after cut with the rate
// before it.
func jumped(events, trials []int64, cut int) bool {
	var ev, tr [2]int64 // before, after
	for i := range events {
		k := 0
		if i >= cut {
			k = 1
		}
		ev[k] += events[i]
		tr[k] += trials[i]
	}
	if ev[1] < 3 || tr[1] == 0 {
		return false
	}
	recent, older := float64(ev[1])/float64(tr[1]), 0.0
	if tr[0] > 0 {
		older = float64(ev[0]) / float64(tr[0])
	}
	return recent >= 0.2 && recent >= 2*older+0.1
}
