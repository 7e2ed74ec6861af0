package replication

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	walsenders *prometheus.GaugeVec
	hidden     prometheus.Gauge
	unexpected *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		walsenders: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_replication_walsenders",
			Help: "Walsenders (replication connections) at the last poll, by verdict: own (the WAL source's), allowed, unexpected, other_database (a logical stream of another database), pending (not judged yet).",
		}, []string{"verdict"}),
		hidden: f.NewGauge(prometheus.GaugeOpts{
			Name: "pgtripwire_replication_hidden_walsenders",
			Help: "Walsenders at the last poll whose client address and state the detector's role cannot see (it lacks pg_read_all_stats).",
		}),
		unexpected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_replication_unexpected_total",
			Help: "Walsenders that no replication.allowed entry matches, reported as events, by operation.",
		}, []string{"operation"}),
	}
	for _, v := range verdictNames {
		m.walsenders.WithLabelValues(v)
	}
	for _, op := range []string{OpPhysical, OpBackup, OpLogical} {
		m.unexpected.WithLabelValues(op)
	}
	return m
}

// observe sets the gauges from what the last poll saw.
func (m *metrics) observe(seen map[int32]tracked) {
	counts := make([]int, len(verdictNames))
	hidden := 0
	for _, t := range seen {
		counts[t.verdict]++
		if !t.last.visible {
			hidden++
		}
	}
	for v, n := range counts {
		m.walsenders.WithLabelValues(verdictNames[v]).Set(float64(n))
	}
	m.hidden.Set(float64(hidden))
}
