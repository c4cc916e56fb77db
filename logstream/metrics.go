package logstream

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the streams' collectors, labelled by stream name.
type metrics struct {
	lagEvents  *prometheus.GaugeVec
	lagSeconds *prometheus.GaugeVec
	active     *prometheus.GaugeVec
	requests   *prometheus.CounterVec
	events     *prometheus.CounterVec
	late       *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dpop_broker_log_stream_lag_events",
			Help: "Event-log entries after the log stream's position (of every type: those its filter drops count until it passed them): the position read on the sending replica, the stored one, up to late_window behind, on the others.",
		}, []string{"stream"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dpop_broker_log_stream_lag_seconds",
			Help: "Age of the oldest event-log entry after the log stream's position (0 when none; the position as for the lag in events).",
		}, []string{"stream"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dpop_broker_log_stream_active",
			Help: "1 on the replica holding the log stream's lease (the one sending), 0 on the others.",
		}, []string{"stream"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_log_stream_requests_total",
			Help: "Batches POSTed to the log stream's endpoint, by result: delivered (2xx) or failed (retried).",
		}, []string{"stream", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_log_stream_events_total",
			Help: "Events the log stream's endpoint took (2xx), redeliveries included.",
		}, []string{"stream"}),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpop_broker_log_stream_late_events_total",
			Help: "Event-log entries the log stream found below what it had read (written late: a replica's clock behind, a slow write) and sent then (unless its types left them out).",
		}, []string{"stream"}),
	}
}

// register adds the collectors to r.
func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.lagEvents, m.lagSeconds, m.active, m.requests, m.events, m.late} {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

// streamMetrics are one stream's series.
type streamMetrics struct {
	lagEvents, lagSeconds, active prometheus.Gauge
	delivered, failed, events     prometheus.Counter
	late                          prometheus.Counter
}

// stream returns the series of stream name, created at zero.
func (m *metrics) stream(name string) streamMetrics {
	return streamMetrics{
		lagEvents:  m.lagEvents.WithLabelValues(name),
		lagSeconds: m.lagSeconds.WithLabelValues(name),
		active:     m.active.WithLabelValues(name),
		delivered:  m.requests.WithLabelValues(name, "delivered"),
		failed:     m.requests.WithLabelValues(name, "failed"),
		events:     m.events.WithLabelValues(name),
		late:       m.late.WithLabelValues(name),
	}
}
