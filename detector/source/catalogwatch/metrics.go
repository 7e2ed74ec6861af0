package catalogwatch

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	pollDuration prometheus.Histogram
	polls        prometheus.Counter
	errors       prometheus.Counter
	changes      *prometheus.CounterVec
}

// kinds are the label values of pgtripwire_catalog_changes_total, created at zero.
var kinds = []string{
	KindSlotCreated, KindSlotUsed, KindOwnSlotUsed, KindPublicationSensitive, KindRoleAttribute, KindRoleMembership,
	KindStatsReset, KindStatementsEvicted, KindExtensionDropped, KindSettingChanged,
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		pollDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgtripwire_catalog_poll_duration_seconds",
			Help:    "Time of one successful poll of the watched catalog state, including evaluation of its events.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		polls: f.NewCounter(prometheus.CounterOpts{
			Name: "pgtripwire_catalog_polls_total",
			Help: "Successful polls of the watched catalog state, the first (the baseline) included: a change made before one began is in the state it read.",
		}),
		errors: f.NewCounter(prometheus.CounterOpts{
			Name:        "pgtripwire_source_errors_total",
			Help:        "Failed connections or polls of a source; each is followed by a reconnect with backoff.",
			ConstLabels: prometheus.Labels{"source": Component},
		}),
		changes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_catalog_changes_total",
			Help: "Changes of watched server state reported as events, by kind.",
		}, []string{"kind"}),
	}
	for _, k := range kinds {
		m.changes.WithLabelValues(k)
	}
	return m
}
