package activity

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	sampleDuration *prometheus.HistogramVec
	events         *prometheus.CounterVec
	errors         prometheus.Counter
	running        prometheus.Gauge
	attributed     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		sampleDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgtripwire_live_sample_duration_seconds",
			Help:    "Time of one successful sample of running statements, including evaluation of its events, by source.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"source"}),
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_live_events_total",
			Help: "Events about statements on sensitive data observed while running, by source.",
		}, []string{"source"}),
		errors: f.NewCounter(prometheus.CounterOpts{
			Name:        "pgtripwire_source_errors_total",
			Help:        "Failed connections or polls of a source; each is followed by a reconnect with backoff.",
			ConstLabels: prometheus.Labels{"source": Component},
		}),
		running: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_activity_long_running_statements",
			Help: "Statements running longer than sources.activity.min_running at the last sample.",
		}),
		attributed: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_activity_attributed_queries",
			Help: "(query id, role) pairs whose client address and application are remembered for statement events.",
		}),
	}
	for _, c := range []string{Component, CopyComponent} {
		m.sampleDuration.WithLabelValues(c)
		m.events.WithLabelValues(c)
	}
	return m
}
