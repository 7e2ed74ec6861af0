package notify

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the remote sinks' delivery metrics, registered only when a remote sink
// is configured; the alert log's own live with it.
type metrics struct {
	sent, failed, dropped *prometheus.CounterVec
	queued                *prometheus.GaugeVec
	latency               *prometheus.HistogramVec
	requestSeconds        *prometheus.HistogramVec
	spoolEntries          prometheus.Gauge
	resends               *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, sinks []string) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		sent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_notify_sent_total",
			Help: "Alert transitions a sink acknowledged.",
		}, []string{"sink"}),
		failed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_notify_failed_total",
			Help: "Failed delivery attempts (each is retried).",
		}, []string{"sink"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_notify_dropped_total",
			Help: "Transitions dropped undelivered because the spool was full: pages lost.",
		}, []string{"sink"}),
		queued: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_notify_queued",
			Help: "Transitions in the spool waiting for the sink.",
		}, []string{"sink"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgtripwire_notify_latency_seconds",
			Help:    "Time from a transition's spooling to the sink's acknowledgement.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900},
		}, []string{"sink"}),
		requestSeconds: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgtripwire_notify_request_duration_seconds",
			Help:    "Duration of successful delivery requests.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"sink"}),
		spoolEntries: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_spool_entries",
			Help: "Transitions in the spool not yet acknowledged by every sink.",
		}),
		resends: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_notify_resends_total",
			Help: "Periodic re-sends of active alerts to Alertmanager, by outcome.",
		}, []string{"sink", "outcome"}),
	}
	for _, s := range sinks {
		m.sent.WithLabelValues(s)
		m.failed.WithLabelValues(s)
		m.dropped.WithLabelValues(s)
		m.queued.WithLabelValues(s)
	}
	return m
}
