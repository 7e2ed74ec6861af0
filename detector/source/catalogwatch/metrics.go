package catalogwatch

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	changes *prometheus.CounterVec
}

// kinds are the label values of pgtripwire_catalog_changes_total, created at zero.
var kinds = []string{
	KindSlotCreated, KindSlotUsed, KindOwnSlotUsed, KindPublicationSensitive, KindRoleAttribute, KindRoleMembership,
	KindStatsReset, KindStatementsEvicted, KindExtensionDropped, KindSettingChanged,
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
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
