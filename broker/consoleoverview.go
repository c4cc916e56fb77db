package broker

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/dpop-broker/dpop-broker/sessions"
)

// The console's Overview page: the login counters (overview.go) of the last hour, day or week
// as charts drawn on the server as SVG (no chart library, no script; the CSP allows neither
// inline style nor inline script, so shapes carry classes the console stylesheet colours).
// Every chart has a text equivalent: a title and description for screen readers and its
// numbers in a table one click away.

// svgChart is one chart: shapes in a viewBox of W×H, drawn by the "chart" template.
type svgChart struct {
	ID, Title, Desc string
	W, H            float64
	Rects           []svgRect
	Lines           []svgLine
	Texts           []svgText
}

type svgRect struct {
	X, Y, W, H float64
	Class      string
	Tip        string // the shape's <title>: its numbers in words
}

type svgLine struct {
	X1, Y1, X2, Y2 float64
	Class          string
}

type svgText struct {
	X, Y   float64
	Anchor string // start, middle, end
	Class  string
	Text   string
}

// Layout of the charts (viewBox units; the charts scale with their card, so a small viewBox
// keeps the text readable at phone width): a plot area inside margins for the axis labels.
const (
	chartW, chartH          = 480.0, 180.0
	plotL, plotR            = 36.0, 6.0
	plotT, plotB            = 14.0, 24.0
	barLabelH, barH, barGap = 22.0, 18.0, 10.0 // a bar chart row: label line, bars, gap
	barValueW               = 80.0             // room after the longest bar for its value
	maxErrorCodesInOverview = 12
)

// niceMax rounds v up to 1, 2 or 5 times a power of ten (at least 1), the top of an axis.
func niceMax(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// pointLabel names a chart point's time (UTC): the time for the hour, with the date for the
// day (it spans two dates), with the weekday for the week.
func pointLabel(sp overviewSpan, t time.Time) string {
	switch {
	case sp.Step == sessions.TallyHour:
		return t.UTC().Format("Mon 15:04")
	case sp.Range > time.Hour:
		return t.UTC().Format("Jan 2 15:04")
	}
	return t.UTC().Format("15:04")
}

// timeChart draws one or two stacked series per point of o (bottom first) with a y axis and
// time labels at the start, middle and end.
func timeChart(id, title, desc string, o *loginOverview, series []timeSeries) svgChart {
	c := svgChart{ID: id, Title: title, Desc: desc, W: chartW, H: chartH}
	n := len(o.Points)
	var top int64
	for i := range n {
		var sum int64
		for _, s := range series {
			sum += s.values[i]
		}
		top = max(top, sum)
	}
	ymax := niceMax(float64(top))
	pw, ph := chartW-plotL-plotR, chartH-plotT-plotB
	for _, f := range []float64{0, 0.5, 1} {
		if v := ymax * f; v != math.Trunc(v) {
			continue // counts: whole-number ticks only (no 0.5 login)
		}
		y := plotT + ph*(1-f)
		c.Lines = append(c.Lines, svgLine{X1: plotL, Y1: y, X2: chartW - plotR, Y2: y, Class: "grid"})
		c.Texts = append(c.Texts, svgText{X: plotL - 6, Y: y + 4, Anchor: "end", Class: "axis", Text: formatCount(ymax * f)})
	}
	slot := pw / float64(max(n, 1))
	gap := min(slot*0.2, 2)
	for i, p := range o.Points {
		x := plotL + float64(i)*slot
		base := plotT + ph
		for _, s := range series {
			v := s.values[i]
			if v == 0 {
				continue
			}
			h := ph * float64(v) / ymax
			base -= h
			c.Rects = append(c.Rects, svgRect{X: x + gap/2, Y: base, W: slot - gap, H: h, Class: s.class,
				Tip: fmt.Sprintf("%s: %d %s", pointLabel(o.Span, p.Start), v, s.label)})
		}
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if i < 0 || i >= n {
			continue
		}
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case n - 1:
			anchor = "end"
		}
		x := plotL + float64(i)*slot
		if anchor == "end" {
			x += slot
		}
		c.Texts = append(c.Texts, svgText{X: x, Y: chartH - 8, Anchor: anchor, Class: "axis", Text: pointLabel(o.Span, o.Points[i].Start)})
	}
	return c
}

// timeSeries is one series of a time chart: its value per point, CSS class and unit in words.
type timeSeries struct {
	values []int64
	class  string
	label  string
}

// hbar is one row of a horizontal bar chart.
type hbar struct {
	label  string
	values []float64 // one bar per series, on the chart's scale
	texts  []string  // the value printed after each bar
}

// barChart draws rows of horizontal bars (one per series and row) on a scale of 0..scale,
// each row's label above its bars and each bar's value after it.
func barChart(id, title, desc string, rows []hbar, classes []string, scale float64) svgChart {
	rowH := barLabelH + barH*float64(len(classes)) + barGap
	c := svgChart{ID: id, Title: title, Desc: desc, W: chartW, H: max(plotT+rowH*float64(len(rows)), 40)}
	pw := chartW - barValueW
	for i, r := range rows {
		y := plotT + rowH*float64(i)
		c.Texts = append(c.Texts, svgText{X: 0, Y: y + barLabelH - 4, Anchor: "start", Class: "label", Text: clip(r.label, 60)})
		for k, v := range r.values {
			if v < 0 {
				continue // no data
			}
			w := max(pw*min(v/scale, 1), 1)
			by := y + barLabelH + barH*float64(k)
			c.Rects = append(c.Rects, svgRect{X: 0, Y: by, W: w, H: barH - 2, Class: classes[k], Tip: r.label + ": " + r.texts[k]})
			c.Texts = append(c.Texts, svgText{X: w + 4, Y: by + barH - 5, Anchor: "start", Class: "value", Text: r.texts[k]})
		}
	}
	if len(rows) == 0 {
		c.Texts = append(c.Texts, svgText{X: chartW / 2, Y: 28, Anchor: "middle", Class: "axis", Text: "nothing to show in this period"})
	}
	return c
}

// formatCount prints an axis value: whole numbers, k above 10000.
func formatCount(v float64) string {
	if v >= 10000 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// percent prints a share (-1 = no data) as "97 %".
func percent(v float64) string {
	if v < 0 {
		return "no data"
	}
	return strconv.FormatFloat(math.Round(v*1000)/10, 'f', -1, 64) + " %"
}

// millis prints a latency estimate (-1 = no exchanges).
func millis(v float64) string {
	if v < 0 {
		return "no exchanges"
	}
	return strconv.FormatFloat(math.Round(v), 'f', -1, 64) + " ms"
}

// overviewPage is the Overview page's data.
type overviewPage struct {
	Spans          []consoleNavLink // hour, day, week
	Span           string
	From, To       string
	Success        int64
	Failure        int64
	SuccessRate    string
	Retries        int64
	Logins         svgChart
	Failures       svgChart
	Retry          svgChart
	Rates          svgChart
	Latency        svgChart
	Connections    []overviewConnRow
	Attention      []overviewConnRow // the connections whose failures or downgrades jumped
	Points         []overviewPointRow
	Errors         []codeCount
	PointWidthText string
	LastPointEnds  string            // the last point is still running, until this time ("" = it ended)
	ConnIDs        map[string]string // connection name → id, for links (nil: no links)
}

type overviewConnRow struct {
	Name                   string
	Success, Failure       int64
	SuccessRate, DPoPShare string
	Downgrades, Retries    int64
	P50, P95               string
	Jumps                  []string
	Spark                  svgChart
}

type overviewPointRow struct {
	Time                      string
	Success, Failure, Retries int64
}

// consoleOverview renders the Overview for ?span=hour|day|week (default hour).
func (s *Server) consoleOverview(c *consoleRequest) {
	sp, ok := spanNamed(c.query().Get("span"))
	if !ok {
		c.consoleBadRequest("unknown overview period")
		c.renderView(http.StatusBadRequest, "overview", &consoleView{Title: "Overview", Problem: "Unknown period: choose the last hour, day or week."})
		return
	}
	o, err := s.cachedOverview(c.r.Context(), sp)
	if err != nil {
		s.log.Warn("console overview: counters not read", "err", err)
		c.renderView(http.StatusServiceUnavailable, "overview", &consoleView{Title: "Overview",
			Problem: "The login counters could not be read from the store. Try again shortly; /readyz tells whether the store is reachable."})
		return
	}
	p := s.overviewPage(o, s.now())
	p.ConnIDs = s.consoleConnIDs(c)
	c.render(http.StatusOK, "overview", "Overview", p)
}

// overviewPage builds the page's charts and tables from o, read at now. The period ends at
// now: its last point, the current bucket, runs until o.To, which the page says when it is
// later than now.
func (s *Server) overviewPage(o *loginOverview, now time.Time) *overviewPage {
	to := o.To
	var running string
	if now.Before(to) {
		to, running = now, o.To.UTC().Format("15:04")
	}
	p := &overviewPage{Span: o.Span.Name, From: o.From.UTC().Format("2006-01-02 15:04"), To: to.UTC().Format("2006-01-02 15:04 UTC"), LastPointEnds: running,
		Success: o.Success, Failure: o.Failure, Retries: o.Retries, SuccessRate: percent(share(o.Success, o.Success+o.Failure)),
		Errors: o.Errors, PointWidthText: shortDuration(o.Span.PointWidth())}
	for _, sp := range overviewSpans {
		p.Spans = append(p.Spans, consoleNavLink{URL: "?span=" + sp.Name, Label: "Last " + sp.Name, Current: sp.Name == o.Span.Name})
	}
	succ, fail, retr := make([]int64, len(o.Points)), make([]int64, len(o.Points)), make([]int64, len(o.Points))
	for i, pt := range o.Points {
		succ[i], fail[i], retr[i] = pt.Success, pt.Failure, pt.Retries
		if pt.Success+pt.Failure+pt.Retries > 0 {
			p.Points = append(p.Points, overviewPointRow{Time: pointLabel(o.Span, pt.Start), Success: pt.Success, Failure: pt.Failure, Retries: pt.Retries})
		}
	}
	per := "per " + shortDuration(o.Span.PointWidth())
	p.Logins = timeChart("logins", "Logins "+per+" by result",
		fmt.Sprintf("%d succeeded and %d failed from %s to %s.", o.Success, o.Failure, p.From, p.To), o,
		[]timeSeries{{succ, "s", "succeeded"}, {fail, "f", "failed"}})
	p.Retry = timeChart("retries", "DPoP nonce retries "+per,
		fmt.Sprintf("%d nonce retries in the upstream code exchanges from %s to %s.", o.Retries, p.From, p.To), o,
		[]timeSeries{{retr, "r", "nonce retries"}})
	var errRows []hbar
	var errMax int64
	for i, e := range o.Errors {
		if i == maxErrorCodesInOverview {
			break
		}
		errMax = max(errMax, e.Count)
		errRows = append(errRows, hbar{label: e.Code, values: []float64{float64(e.Count)}, texts: []string{strconv.FormatInt(e.Count, 10)}})
	}
	p.Failures = barChart("errors", "Failures by error code", fmt.Sprintf("%d failed logins by details.error, most frequent first.", o.Failure),
		errRows, []string{"f"}, niceMax(float64(errMax)))
	var rateRows, latRows []hbar
	var latMax float64
	for _, c := range o.Connections {
		row := overviewConnRow{Name: c.Name, Success: c.Success, Failure: c.Failure, SuccessRate: percent(c.SuccessRate()),
			DPoPShare: percent(c.DPoPShare()), Downgrades: c.Downgrades, Retries: c.Retries, P50: millis(c.P50()), P95: millis(c.P95()),
			Jumps: c.Jumps, Spark: sparkline(c)}
		p.Connections = append(p.Connections, row)
		if len(c.Jumps) > 0 {
			p.Attention = append(p.Attention, row)
		}
		rateRows = append(rateRows, hbar{label: c.Name, values: []float64{c.SuccessRate(), c.DPoPShare()},
			texts: []string{percent(c.SuccessRate()), percent(c.DPoPShare())}})
		if c.P95() >= 0 {
			latMax = max(latMax, c.P95())
			latRows = append(latRows, hbar{label: c.Name, values: []float64{c.P50(), c.P95()},
				texts: []string{millis(c.P50()), millis(c.P95())}})
		}
	}
	p.Rates = barChart("rates", "Success rate and DPoP-bound share per connection",
		"For each connection: the share of logins that succeeded, and the share of upstream tokens that were DPoP-bound.",
		rateRows, []string{"s", "d"}, 1)
	p.Latency = barChart("latency", "Upstream code exchange latency per connection (p50, p95)",
		"For each connection: the median and 95th percentile of the code exchange's duration, estimated from latency buckets.",
		latRows, []string{"p50", "p95"}, niceMax(latMax))
	return p
}

// sparkline is a connection's failures (and Bearer downgrades) per point, small.
func sparkline(c *connOverview) svgChart {
	const w, h = 160.0, 28.0
	sc := svgChart{ID: "spark-" + c.Name, Title: "Failures and Bearer downgrades of " + c.Name, W: w, H: h,
		Desc: fmt.Sprintf("%d failures and %d Bearer downgrades in this period.", c.Failure, c.Downgrades)}
	n := len(c.Failures)
	var top int64
	for i := range n {
		top = max(top, c.Failures[i]+c.DowngradeSeries[i])
	}
	sc.Lines = append(sc.Lines, svgLine{X1: 0, Y1: h - 0.5, X2: w, Y2: h - 0.5, Class: "grid"})
	if top == 0 || n == 0 {
		return sc
	}
	slot := w / float64(n)
	for i := range n {
		base := h - 1
		for _, v := range []struct {
			n     int64
			class string
		}{{c.Failures[i], "f"}, {c.DowngradeSeries[i], "down"}} {
			if v.n == 0 {
				continue
			}
			bh := (h - 2) * float64(v.n) / float64(top)
			base -= bh
			sc.Rects = append(sc.Rects, svgRect{X: float64(i) * slot, Y: base, W: max(slot, 1), H: bh, Class: v.class})
		}
	}
	return sc
}

// shortDuration prints 1m0s as "minute", 15m0s as "15 minutes", 1h0m0s as "hour".
func shortDuration(d time.Duration) string {
	switch {
	case d == time.Minute:
		return "minute"
	case d == time.Hour:
		return "hour"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + " hours"
	}
	return strconv.Itoa(int(d/time.Minute)) + " minutes"
}
