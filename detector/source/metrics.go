package source

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the metrics every source has, labelled by source; a source's own metrics
// (what only it counts) stay in its package. Create one per registry with NewMetrics.
type Metrics struct {
	errors   *prometheus.CounterVec
	polls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// serverChanges counts the rebaselines of a polling source that found another
	// server behind its connection (Loop.follow).
	serverChanges *prometheus.CounterVec
}

// NewMetrics registers the sources' shared metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_source_errors_total",
			Help: "Failed connections or polls of a source; each is followed by a reconnect with backoff.",
		}, []string{"source"}),
		polls: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_source_polls_total",
			Help: "Successful polls of a polling source, the first (a baseline for some sources) included.",
		}, []string{"source"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pgtripwire_source_poll_duration_seconds",
			Help:    "Time of one successful poll of a polling source, including classification and the evaluation of its events.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"source"}),
		serverChanges: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_source_server_changes_total",
			Help: "Times a polling source reconnected to another server than before (a failover behind a multi-host DSN or a moving address) and counted its statistics from a new baseline.",
		}, []string{"source"}),
	}
}

// Precreate makes a source's series exist at zero (polling: its poll series too), so
// that a dashboard tells a source that never failed from one that does not run.
func (m *Metrics) Precreate(source string, polling bool) {
	m.errors.WithLabelValues(source)
	if polling {
		m.polls.WithLabelValues(source)
		m.duration.WithLabelValues(source)
	}
}
